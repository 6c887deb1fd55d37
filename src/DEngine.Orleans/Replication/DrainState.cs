using Microsoft.Extensions.Options;
using Orleans;

namespace DEngine.Orleans.Replication;

/// <summary>
/// This silo's view of the draining silos (the durable list is <see cref="ISiloDrainGrain"/>): read
/// at most once a heartbeat interval, and updated at once by a change made through this silo. A
/// primary asks it every maintenance round; anything that places primaries (the balancer) must skip
/// the silos <see cref="IsDraining"/> names.
/// </summary>
/// <remarks>Thread-safe: the set is replaced whole, never changed in place.</remarks>
public sealed class DrainState(IGrainFactory grains, TimeProvider time, IOptions<DEngineOptions> options)
{
    private readonly TimeSpan _maxAge = options.Value.Replication.HeartbeatInterval;
    private volatile IReadOnlySet<string> _draining = new HashSet<string>(StringComparer.Ordinal);
    private long _readAt = long.MinValue;

    /// <summary>True when <paramref name="silo"/> was draining at the last read (at most about a heartbeat interval old once <see cref="CurrentAsync"/> runs).</summary>
    public bool IsDraining(string silo) => _draining.Contains(silo);

    /// <summary>The draining silos, read again from the durable list when the last read is older than a heartbeat interval.</summary>
    public async Task<IReadOnlySet<string>> CurrentAsync()
    {
        var readAt = Interlocked.Read(ref _readAt);
        if (readAt != long.MinValue && time.GetElapsedTime(readAt) < _maxAge)
        {
            return _draining;
        }
        return await ReadAsync();
    }

    /// <summary>
    /// The draining silos as the durable list has them now. For an operator's command, which must
    /// not act on a list a `silo drain` or `silo undrain` made through another silo just changed
    /// (the cached one can be a heartbeat interval old).
    /// </summary>
    public async Task<IReadOnlySet<string>> ReadAsync()
    {
        var started = time.GetTimestamp();
        Set(await grains.GetGrain<ISiloDrainGrain>(0).GetDraining(), started);
        return _draining;
    }

    /// <summary>Takes <paramref name="draining"/> as the current list (read or written at <paramref name="at"/>).</summary>
    internal void Set(IEnumerable<string> draining, long at)
    {
        _draining = new HashSet<string>(draining, StringComparer.Ordinal);
        Interlocked.Exchange(ref _readAt, at);
    }
}
