using Orleans;
using Orleans.Concurrency;

namespace DEngine.Orleans;

/// <summary>
/// The durable list of draining silos (key 0): a draining silo gets no new replica and no primary
/// role, and every primary moves its replicas off it, so it can be stopped with no partition
/// affected. Kept in the record store beside the partition configurations.
/// </summary>
public interface ISiloDrainGrain : IGrainWithIntegerKey
{
    /// <summary>The draining silos, in name order.</summary>
    [ReadOnly]
    Task<string[]> GetDraining();

    /// <summary>
    /// Marks <paramref name="silo"/> draining (or, with <paramref name="draining"/> false, no longer)
    /// once durable, and returns the draining silos after the change. Idempotent.
    /// </summary>
    /// <exception cref="DEngineException">
    /// InvalidArgument when no silo of that name is in the cluster, or when draining it would leave
    /// fewer active, non-draining silos than DEngine:Replication:MinReplicas (writes would stop).
    /// FeatureNotEnabled with Factor 1 (no replicas to move).
    /// </exception>
    Task<string[]> SetDraining(string silo, bool draining);
}
