using RocksDbSharp;

namespace DEngine.StateMachine;

// Reads: point reads, multi-key reads and prefix scans through the read view (see
// RocksDbStateMachine.ReadView.cs), expiry lookups and key counts. Every read holds the lifecycle
// read lock (EnterServing) for as long as it touches the native database.
public sealed partial class RocksDbStateMachine
{
    /// <inheritdoc />
    public byte[]? Get(ReadOnlySpan<byte> key)
    {
        using var _ = EnterServing();
        using var view = EnterReadView();
        return ReadPoint(key, view.Options, view.NowUnixMs);
    }

    private static readonly ReadOptions PointReadOptions = new();

    /// <summary>
    /// One point read of the data family through a pinned slice: the value is copied once, from
    /// RocksDB's memtable or cached block straight into the result, without its expiry header (no
    /// native result buffer to allocate, copy and free, no second managed copy). Callers hold the
    /// lifecycle read lock (and the read view that <paramref name="options"/> reads).
    /// </summary>
    private unsafe byte[]? ReadPoint(ReadOnlySpan<byte> key, ReadOptions options, ulong now)
    {
        IntPtr slice;
        IntPtr error;
        fixed (byte* k = key)
        {
            slice = Native.Instance.rocksdb_get_pinned_cf(_db!.Handle, options.Handle, _data.Handle, k, (UIntPtr)key.Length, out error);
        }
        if (error != IntPtr.Zero)
        {
            throw new RocksDbException(error);
        }
        if (slice == IntPtr.Zero)
        {
            return null;
        }
        try
        {
            var data = Native.Instance.rocksdb_pinnableslice_value(slice, out var length);
            var value = StoredValue.Decode(new ReadOnlySpan<byte>((void*)data, checked((int)length)), out var expiry);
            return StoredValue.IsExpired(expiry, now) ? null : value.ToArray();
        }
        finally
        {
            Native.Instance.rocksdb_pinnableslice_destroy(slice);
        }
    }

    /// <inheritdoc />
    public IReadOnlyList<byte[]?> GetMulti(IReadOnlyList<byte[]> keys)
    {
        ArgumentNullException.ThrowIfNull(keys);
        if (keys.Count == 0)
        {
            return [];
        }
        using var _ = EnterServing();
        // One snapshot for all keys: the read view's, or (reading live state) one taken now.
        using var view = EnterReadView(consistent: true);
        var values = new byte[]?[keys.Count];
        for (var i = 0; i < values.Length; i++)
        {
            var stored = _db!.Get(keys[i], _data, view.Options);
            values[i] = stored is null ? null : LiveValue(stored, view.NowUnixMs);
        }
        return values;
    }

    /// <inheritdoc />
    public ScanResult ScanPrefix(ReadOnlySpan<byte> prefix)
    {
        using var _ = EnterServing();
        using var view = EnterReadView(consistent: true);
        // Own options (the upper bound is per scan) on the view's snapshot.
        var readOptions = new ReadOptions().SetSnapshot(view.Snapshot!);
        // The revision is read from the same snapshot as the entries, so it describes them exactly.
        var revision = ReadU64(_db!.Get(LastAppliedIndexKey, _meta, readOptions));
        if (prefix.IsEmpty)
        {
            return new ScanResult([], revision);
        }
        var upper = PrefixRange.Successor(prefix);
        if (upper is not null)
        {
            readOptions.SetIterateUpperBound(upper);
        }
        var now = view.NowUnixMs;
        var entries = new List<KeyValue>();
        using var iterator = _db.NewIterator(_data, readOptions);
        for (iterator.Seek(prefix); iterator.Valid(); iterator.Next())
        {
            var key = iterator.GetKeySpan();
            if (!key.StartsWith(prefix))
            {
                break; // only reachable without an upper bound (all-0xFF prefix)
            }
            var value = StoredValue.Decode(iterator.GetValueSpan(), out var expiry);
            if (!StoredValue.IsExpired(expiry, now))
            {
                entries.Add(new KeyValue(key.ToArray(), value.ToArray()));
            }
        }
        // The iterator uses the options' native upper bound, which the options' finalizer frees:
        // keep them reachable until the scan is done.
        GC.KeepAlive(readOptions);
        return new ScanResult(entries, revision);
    }

    /// <inheritdoc />
    public bool TryGetExpiry(ReadOnlySpan<byte> key, out ulong? expiresAtUnixMs) => TryGetExpiry(key, out expiresAtUnixMs, out _);

    /// <summary>
    /// As <see cref="TryGetExpiry(ReadOnlySpan{byte}, out ulong?)"/>, and gives the instant the key was
    /// judged at (see <see cref="EffectiveNowUnixMs"/>): a key reported present expires strictly after
    /// <paramref name="asOfUnixMs"/>, so <c>expiry - asOf</c> is its positive remaining time. One clock read.
    /// </summary>
    public bool TryGetExpiry(ReadOnlySpan<byte> key, out ulong? expiresAtUnixMs, out ulong asOfUnixMs)
    {
        using var _ = EnterServing();
        using var view = EnterReadView();
        expiresAtUnixMs = null;
        asOfUnixMs = view.NowUnixMs;
        var stored = _db!.Get(key, _data, view.Options);
        if (stored is null)
        {
            return false;
        }
        StoredValue.Decode(stored, out var expiry);
        if (StoredValue.IsExpired(expiry, asOfUnixMs))
        {
            return false;
        }
        expiresAtUnixMs = expiry == 0 ? null : expiry;
        return true;
    }

    /// <inheritdoc />
    public long Count()
    {
        using var _ = EnterServing();
        var now = NowUnixMs;
        long count = 0;
        using var iterator = _db!.NewIterator(_data);
        for (iterator.SeekToFirst(); iterator.Valid(); iterator.Next())
        {
            StoredValue.Decode(iterator.GetValueSpan(), out var expiry);
            if (!StoredValue.IsExpired(expiry, now))
            {
                count++;
            }
        }
        return count;
    }

    /// <inheritdoc />
    public long EstimatedCount
    {
        get
        {
            using var _ = EnterUse();
            return long.TryParse(_db!.GetProperty("rocksdb.estimate-num-keys", _data), out var n) ? n : 0;
        }
    }

    private static byte[]? LiveValue(byte[] stored, ulong now)
    {
        var value = StoredValue.Decode(stored, out var expiry);
        return StoredValue.IsExpired(expiry, now) ? null : value.ToArray();
    }
}
