using Orleans;
using Orleans.Concurrency;

namespace DEngine.Benchmarks.Grains;

/// <summary>
/// The Orleans floor: same arguments and results as the partition grain's Put and Get, no work.
/// Interleaving like Put, so it measures the call path, not a grain's serial turn.
/// </summary>
public interface INoopGrain : IGrainWithIntegerKey
{
    [AlwaysInterleave]
    Task<ulong> Put([Immutable] byte[] key, [Immutable] byte[] value, ulong ttlSeconds);

    [AlwaysInterleave]
    Task<byte[]?> Get([Immutable] byte[] key);
}

public sealed class NoopGrain : Grain, INoopGrain
{
    // A value of the benchmark's size, so Get returns as many bytes as the real one does.
    private static readonly byte[] Value = new byte[100];
    private static readonly Task<byte[]?> ValueTask = Task.FromResult<byte[]?>(Value);
    private ulong _count;

    public Task<ulong> Put(byte[] key, byte[] value, ulong ttlSeconds) => Task.FromResult(++_count);

    public Task<byte[]?> Get(byte[] key) => ValueTask;
}
