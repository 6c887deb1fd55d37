using System.Buffers.Binary;
using RocksDbSharp;

namespace DEngine.StateMachine;

// TTL: the time floor expiry is judged at, and the scans of the TTL index that plan expiries (they
// start at the scan floor, see RocksDbStateMachine.TtlScanFloor.cs).
public sealed partial class RocksDbStateMachine
{
    /// <summary>
    /// The partition's time floor: the highest clock stamp (Unix ms) of any applied entry (the
    /// <c>as_of_unix_ms</c> fields the sequencer writes). Persisted with the applied position in the
    /// same WriteBatch, so it survives restarts and travels with snapshots to other silos.
    /// </summary>
    public ulong TimeFloor => Volatile.Read(ref _timeFloor);

    /// <summary>
    /// The instant expiry is judged at on this engine: max(clock, floor), where the floor counts only
    /// up to clock + <see cref="RocksDbStateMachineOptions.MaxClockSkew"/>. So time never runs
    /// backwards for the partition (a silo whose clock is behind the one that stamped the entries
    /// still sees keys reported expired as expired), while a floor stamped by a silo whose clock runs
    /// ahead expires keys here at most MaxClockSkew early. The floor itself is never lowered: it is
    /// replicated state, the cap is this silo's local judgement.
    /// </summary>
    public ulong EffectiveNowUnixMs => Effective(TtlClock.NowUnixMs(_options.TimeProvider), TimeFloor);

    private ulong NowUnixMs => EffectiveNowUnixMs;

    private ulong Effective(ulong clock, ulong floor)
    {
        var skew = (ulong)_options.MaxClockSkew.TotalMilliseconds;
        var cap = clock > ulong.MaxValue - skew ? ulong.MaxValue : clock + skew;
        return Math.Max(clock, Math.Min(floor, cap));
    }

    /// <summary>
    /// Up to <paramref name="max"/> keys whose TTL index entry is at or before <paramref name="asOfUnixMs"/>,
    /// oldest expiry first, with the expiry they were indexed under (the input of an ExpireKeys
    /// command). Entries left behind by an overwrite are included; the command discards them.
    /// </summary>
    /// <param name="asOfUnixMs">The instant the keys must have expired by.</param>
    /// <param name="max">Most keys returned.</param>
    /// <param name="budget">Optional time budget of the scan; it stops early (with what it found) when spent.</param>
    public IReadOnlyList<ExpiredKey> FindExpired(ulong asOfUnixMs, int max, TimeSpan? budget = null)
    {
        var started = _options.TimeProvider.GetTimestamp();
        using var _ = EnterServing();
        var found = new List<ExpiredKey>();
        if (max <= 0)
        {
            return found;
        }
        var readOptions = new ReadOptions();
        if (asOfUnixMs != ulong.MaxValue)
        {
            // Index keys start with the 8-byte expiry, so expiry + 1 bounds every entry at or before asOf.
            readOptions.SetIterateUpperBound(RocksDbStateMachine.U64(asOfUnixMs + 1));
        }
        var ticket = BeginTtlScan(out var floor);
        byte[]? proven = null;
        try
        {
            using var iterator = _db!.NewIterator(_ttl, readOptions);
            TtlScanStarted?.Invoke();
            // Start at the floor: every index key below it is known to be gone, so the scan does not
            // walk the tombstones that earlier cleanup rounds left there.
            SeekFloor(iterator, floor);
            if (iterator.Valid())
            {
                proven = iterator.GetKeySpan().ToArray();
            }
            else if (asOfUnixMs != ulong.MaxValue)
            {
                proven = RocksDbStateMachine.U64(asOfUnixMs + 1); // nothing at or before asOf
            }
            ScanExpired(iterator, found, max, budget, started, _options.TimeProvider);
        }
        finally
        {
            EndTtlScan(ticket, proven);
        }
        // The iterator uses the options' native upper bound, which the options' finalizer frees:
        // keep them reachable until the scan is done.
        GC.KeepAlive(readOptions);
        return found;
    }

    private static void ScanExpired(Iterator iterator, List<ExpiredKey> found, int max, TimeSpan? budget, long started, TimeProvider time)
    {
        for (; iterator.Valid() && found.Count < max; iterator.Next())
        {
            var indexKey = iterator.GetKeySpan();
            var expiry = BinaryPrimitives.ReadUInt64BigEndian(indexKey);
            found.Add(new ExpiredKey(indexKey[8..].ToArray(), expiry));
            // Checking the clock every 256 keys keeps its cost out of the scan.
            if (budget is { } limit && (found.Count & 255) == 0 && time.GetElapsedTime(started) >= limit)
            {
                break;
            }
        }
    }

    /// <summary>
    /// RocksDB's estimate of the TTL index size: about the number of keys with a TTL (it also counts
    /// index entries an overwrite left behind, until cleanup drops them). Cheap; for metrics.
    /// </summary>
    public long TtlIndexEstimate
    {
        get
        {
            using var _ = EnterUse();
            return long.TryParse(_db!.GetProperty("rocksdb.estimate-num-keys", _ttl), out var n) ? n : 0;
        }
    }

    /// <summary>The earliest expiry in the TTL index (possibly of an entry an overwrite left behind), or null when there is none.</summary>
    public ulong? EarliestExpiry()
    {
        using var _ = EnterServing();
        var ticket = BeginTtlScan(out var floor);
        byte[]? proven = null;
        try
        {
            using var iterator = _db!.NewIterator(_ttl);
            SeekFloor(iterator, floor);
            if (!iterator.Valid())
            {
                return null;
            }
            proven = iterator.GetKeySpan().ToArray();
            return BinaryPrimitives.ReadUInt64BigEndian(proven);
        }
        finally
        {
            EndTtlScan(ticket, proven);
        }
    }

    /// <summary>Number of entries in the TTL index (an upper bound of the keys with a TTL).</summary>
    public long TtlIndexCount()
    {
        using var _ = EnterServing();
        long n = 0;
        using var iterator = _db!.NewIterator(_ttl);
        for (iterator.SeekToFirst(); iterator.Valid(); iterator.Next())
        {
            n++;
        }
        return n;
    }
}
