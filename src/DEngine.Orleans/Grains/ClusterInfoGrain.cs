using Microsoft.Extensions.Options;
using Orleans;
using Orleans.Concurrency;

namespace DEngine.Orleans.Grains;

/// <summary>Answers cluster facts from the local silo's options; a stateless worker on every silo.</summary>
[StatelessWorker]
public sealed class ClusterInfoGrain(IOptions<DEngineOptions> options) : Grain, IClusterInfoGrain
{
    /// <inheritdoc />
    public Task<ClusterInfo> GetInfo() => Task.FromResult(new ClusterInfo(options.Value.Partitions));
}
