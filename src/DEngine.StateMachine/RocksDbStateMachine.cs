using System.Buffers.Binary;
using DEngine.Protos.Client;
using DEngine.Protos.Common;
using DEngine.Protos.Storage;
using DEngine.StateMachine.Snapshots;
using Google.Protobuf;
using RocksDbSharp;

namespace DEngine.StateMachine;

/// <summary>
/// <see cref="IStateMachine"/> on RocksDB. Column families: <c>state_machine</c> (user data, each value
/// prefixed by its expiry header, see <see cref="StoredValue"/>), <c>state_machine_meta</c> (applied
/// position, snapshot metadata) and <c>state_machine_ttl</c> (TTL index: expiry + key, for finding
/// expired keys by a range scan). Every chunk is one WriteBatch that carries its data, TTL-index
/// changes and the new applied position.
/// </summary>
/// <remarks>
/// The path given to the constructor is the partition directory (see <see cref="PartitionLayout"/>):
/// the live database is <c>db-{generation}/</c> inside it, named by the pointer file <c>CURRENT-DB</c>,
/// and snapshots live in <c>snapshots/</c>. Installing a snapshot prepares a new generation and switches
/// the pointer atomically.
/// </remarks>
public sealed partial class RocksDbStateMachine : IStateMachine
{
    internal const string DataFamily = "state_machine";
    internal const string MetaFamily = "state_machine_meta";
    internal const string TtlFamily = "state_machine_ttl";

    private static readonly byte[] LastAppliedIndexKey = "last_applied_index"u8.ToArray();
    private static readonly byte[] LastAppliedTermKey = "last_applied_term"u8.ToArray();
    private static readonly byte[] SnapshotMetadataKey = "snapshot_metadata"u8.ToArray();
    private static readonly byte[] TimeFloorKey = "time_floor"u8.ToArray();

    private readonly string _path;
    private readonly PartitionLayout _layout;
    private readonly FileStream _partitionLock;
    private readonly RocksDbStateMachineOptions _options;
    private readonly Cache _blockCache;

    // Open/close/reset take the write side; every use of the database takes the read side, so a
    // background sync or a read can never touch a closed native handle.
    private readonly ReaderWriterLockSlim _lifecycle = new(LockRecursionPolicy.NoRecursion);
    private readonly Lock _applyGate = new();
    private readonly WriteOptions _syncWrite = new WriteOptions().SetSync(true); // mutation: synced-write
    private readonly WriteOptions _bufferedWrite = new WriteOptions().SetSync(false);

    private RocksDb? _db;
    private ColumnFamilyHandle _data = null!;
    private ColumnFamilyHandle _meta = null!;
    private ColumnFamilyHandle _ttl = null!;
    private volatile bool _serving;
    private volatile bool _writeFailed;
    // Set by a failed WAL sync (see Fence): applies and reads are refused and the durable index never
    // moves again until RecoverFromFence has re-synced every file and reopened the database.
    private volatile DEngineException? _fence;
    private bool _disposed;
    private LogPosition _lastApplied;
    private ulong _durableIndex;
    private ulong _timeFloor;
    private SnapshotMetadata? _snapshotMetadata;
    private long _generation;

    /// <summary>
    /// Opens (creating if missing) the state machine of the partition directory <paramref name="path"/>.
    /// Generation directories the pointer file does not name (an interrupted install) are deleted. It serves at once.
    /// </summary>
    /// <exception cref="DEngineException">StorageFailure when the directory cannot be opened (for example another process holds its lock).</exception>
    public RocksDbStateMachine(string path, RocksDbStateMachineOptions? options = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(path);
        _path = Path.GetFullPath(path);
        _options = options ?? new RocksDbStateMachineOptions();
        _options.Validate();
        _layout = new PartitionLayout(_path, _options.PartitionId);
        _partitionLock = _layout.Lock();
        try
        {
            _generation = _layout.Recover();
            _blockCache = _options.SharedBlockCache ?? Cache.CreateLru(_options.BlockCacheBytes);
            Open();
        }
        catch
        {
            _partitionLock.Dispose();
            throw;
        }
        _serving = true;
    }

    /// <inheritdoc />
    public int PartitionId => _options.PartitionId;

    /// <summary>The partition directory given to the constructor (same as <see cref="PartitionPath"/>).</summary>
    public string DataPath => _path;

    /// <summary>The partition directory: pointer file, database generations and snapshots.</summary>
    public string PartitionPath => _path;

    /// <summary>The directory of the live RocksDB database (<c>{PartitionPath}/db-{generation}</c>); changes when a snapshot is installed or the machine is reset.</summary>
    public string DatabasePath => _layout.GenerationPath(Volatile.Read(ref _generation));

    /// <summary>The live database generation (the number in <see cref="DatabasePath"/>).</summary>
    public long Generation => Volatile.Read(ref _generation);

    /// <inheritdoc />
    public bool IsRunning => _serving && _db is not null && _fence is null;

    /// <summary>
    /// True after a WAL sync failed: the database refuses applies and reads (the page cache may hold
    /// writes that never reach the disk, so what it would read is not proof) until
    /// <see cref="RecoverFromFence"/> succeeds.
    /// </summary>
    public bool IsFenced => _fence is not null;

    /// <inheritdoc />
    public LogPosition LastApplied => ReadPosition();

    /// <inheritdoc />
    public ulong DurableIndex => Volatile.Read(ref _durableIndex);

    /// <inheritdoc />
    public SnapshotMetadata? SnapshotMetadata => Volatile.Read(ref _snapshotMetadata);

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

    /// <inheritdoc />
    public void Start()
    {
        using var _ = EnterUse();
        _serving = true;
    }

    /// <inheritdoc />
    public void Stop() => _serving = false;

    // ---------------------------------------------------------------- reads

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

    // ---------------------------------------------------------------- writes

    /// <inheritdoc />
    public IReadOnlyList<ApplyResult> ApplyChunk(IReadOnlyList<Entry> entries, ApplyDurability durability = ApplyDurability.Default) =>
        ApplyCommands(EntryDecoder.Decode(entries, PartitionId), durability);

    /// <inheritdoc />
    public IReadOnlyList<ApplyResult> ApplyCommands(IReadOnlyList<ApplyEntry> entries, ApplyDurability durability = ApplyDurability.Default)
    {
        ArgumentNullException.ThrowIfNull(entries);
        lock (_applyGate)
        {
            if (_writeFailed)
            {
                RecoverAfterWriteFailure();
            }
            using var _ = EnterServing();
            var applied = _lastApplied;
            var firstNew = ValidateOrder(entries, applied);
            var results = new ApplyResult[entries.Count];
            for (var i = 0; i < firstNew; i++)
            {
                results[i] = new ApplyResult(entries[i].Index, ApplyStatus.AlreadyApplied);
            }
            if (firstNew == entries.Count)
            {
                return results; // pure redelivery: nothing to write
            }
            for (var i = firstNew; i < entries.Count; i++)
            {
                ValidateCommand(entries[i]);
            }

            using var batch = new WriteBatch();
            var chunk = new ChunkWriter(this, batch, NeedsOverlay(entries, firstNew));
            for (var i = firstNew; i < entries.Count; i++)
            {
                results[i] = chunk.Apply(entries[i]);
            }
            var last = entries[^1];
            batch.Put(LastAppliedIndexKey, U64(last.Index), _meta);
            batch.Put(LastAppliedTermKey, U64(last.Term), _meta);
            var floor = Math.Max(_timeFloor, chunk.HighestStamp);
            if (floor != _timeFloor)
            {
                batch.Put(TimeFloorKey, U64(floor), _meta);
            }

            var sync = durability == ApplyDurability.Default && _options.Durability == DurabilityMode.Synced;
            try
            {
                _db!.Write(batch, sync ? _syncWrite : _bufferedWrite);
            }
            catch (RocksDbException ex) when (sync && IsSyncFailure(ex))
            {
                // The WAL bytes were written but their fsync failed: they may or may not reach the
                // disk, so the chunk's outcome is unknown, never "not applied".
                throw Fence(ex, entries[firstNew].Index);
            }
            catch (RocksDbException ex)
            {
                // RocksDB now refuses writes (a background error) until the database is reopened;
                // reads keep working. The next apply reopens once there is room again.
                _writeFailed = true;
                throw new DEngineException(DEngineErrorCode.StorageFailure, $"RocksDB rejected the chunk's write ({ex.Message}). Nothing of the chunk was applied; check disk space and the data directory, then retry.", PartitionId, entries[firstNew].Index, ex);
            }
            WritePosition(new LogPosition(last.Index, last.Term));
            Volatile.Write(ref _timeFloor, floor);
            if (chunk.LowestTtlKeyWritten is { } lowest)
            {
                // After the write (see NoteTtlInserted): a scan that could not see this entry either
                // learns of it through its ticket or has its floor lowered again here.
                NoteTtlInserted(lowest);
            }
            if (sync)
            {
                // Still under the apply gate: the view taken now is exactly this chunk.
                Publish(TakeView());
            }
            return results;
        }
    }

    /// <inheritdoc />
    public ulong SyncWal()
    {
        ThrowIfFenced();
        using var _ = EnterUse();
        return SyncAndPublish();
    }

    /// <summary>
    /// One fsync of the WAL, then (Synced durability) the read view it covers is published. Callers
    /// hold the lifecycle read lock.
    /// </summary>
    /// <remarks>
    /// The view is fixed before the fsync: RocksDB makes a write visible only after appending it to
    /// the WAL, so everything the snapshot shows is in the WAL's OS buffers and the fsync makes
    /// exactly that durable. Its index is read from the snapshot itself, so index and data match
    /// without holding the apply gate (the apply that runs meanwhile is simply not in this view).
    /// </remarks>
    private ulong SyncAndPublish()
    {
        var view = UsesReadViews ? TakeView() : null;
        var covered = view?.Index ?? ReadPosition().Index;
        try
        {
            Native.Instance.rocksdb_flush_wal(_db!.Handle, 1); // mutation: wal-flush-sync
        }
        catch (RocksDbException ex)
        {
            view?.Release();
            throw Fence(ex, DurableIndex + 1);
        }
        if (view is not null)
        {
            Publish(view);
        }
        else
        {
            AdvanceDurable(covered);
        }
        return covered;
    }

    /// <summary>
    /// Enters the fenced state after a failed fsync and returns the OutcomeUnknown error for the
    /// writers of every chunk above the durable index. On Linux a failed fsync may drop the dirty
    /// pages (marked clean, never written) while reads still see them, and a later fsync succeeds
    /// without writing them: so nothing applied since the last good sync may be acknowledged, served
    /// or counted as durable, whatever a later sync reports.
    /// </summary>
    private DEngineException Fence(Exception cause, ulong firstUnsynced)
    {
        var fence = new DEngineException(
            DEngineErrorCode.OutcomeUnknown,
            $"Syncing the write-ahead log failed ({cause.Message}). Writes from index {firstUnsynced} on may or may not be on disk: their outcome is unknown. The partition stopped serving; it reopens after every file of its database has been synced again. Read the keys then to learn the outcome.",
            PartitionId,
            firstUnsynced,
            cause);
        _fence ??= fence;
        return fence;
    }

    private static bool IsSyncFailure(RocksDbException ex) =>
        ex.Message.Contains("sync", StringComparison.OrdinalIgnoreCase)
        && !ex.Message.Contains("No space", StringComparison.OrdinalIgnoreCase);

    private void ThrowIfFenced()
    {
        if (_fence is { } fence)
        {
            throw new DEngineException(DEngineErrorCode.OutcomeUnknown, fence.Detail, PartitionId, fence.Index, fence);
        }
    }

    /// <summary>
    /// Leaves the fenced state: closes the database, makes every file of the live generation durable
    /// by rewriting it (a copy fsynced and renamed over the original, then the directory synced), and
    /// reopens. Rewriting rather than fsyncing: after a failed fsync the kernel may have marked lost
    /// pages clean, so an fsync of the same file now succeeds without writing them, while a read still
    /// returns them; a copy writes what a read returns, so what the reopened database serves is what
    /// the disk holds. Throws StorageFailure (and stays fenced) when any step fails; call again later.
    /// Does nothing when not fenced.
    /// </summary>
    public void RecoverFromFence()
    {
        lock (_applyGate)
        {
            if (_fence is null)
            {
                return;
            }
            _lifecycle.EnterWriteLock();
            try
            {
                if (_disposed)
                {
                    ThrowIfClosed();
                }
                Close();
                try
                {
                    RewriteDurably(DatabasePath);
                    DurableFiles.SyncDirectory(_path);
                    Open();
                }
                catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or DEngineException)
                {
                    Close();
                    throw new DEngineException(DEngineErrorCode.StorageFailure, $"Re-syncing the database files of '{DatabasePath}' after a failed fsync failed ({ex.Message}). The partition stays fenced; retry later.", PartitionId, inner: ex);
                }
                _writeFailed = false;
                _fence = null;
            }
            finally
            {
                _lifecycle.ExitWriteLock();
            }
        }
    }

    /// <summary>Rewrites every file under <paramref name="directory"/> through a synced copy renamed over it, then syncs each directory.</summary>
    private static void RewriteDurably(string directory)
    {
        foreach (var sub in Directory.GetDirectories(directory))
        {
            RewriteDurably(sub);
        }
        foreach (var file in Directory.GetFiles(directory))
        {
            if (file.EndsWith(".rewrite", StringComparison.Ordinal))
            {
                File.Delete(file); // left by an earlier attempt that failed
                continue;
            }
            var copy = file + ".rewrite";
            using (var source = new FileStream(file, FileMode.Open, FileAccess.Read, FileShare.ReadWrite))
            using (var target = new FileStream(copy, FileMode.Create, FileAccess.Write, FileShare.None))
            {
                source.CopyTo(target);
                target.Flush(flushToDisk: true); // mutation: fence-rewrite-sync
            }
            File.Move(copy, file, overwrite: true);
        }
        DurableFiles.SyncDirectory(directory); // mutation: fence-dir-sync
    }

    private void AdvanceDurable(ulong index)
    {
        if (_fence is not null)
        {
            return; // a sync after a failed one proves nothing about the pages the failure dropped
        }
        var seen = Volatile.Read(ref _durableIndex);
        while (index > seen)
        {
            var prior = Interlocked.CompareExchange(ref _durableIndex, index, seen);
            if (prior == seen)
            {
                return;
            }
            seen = prior;
        }
    }

    /// <summary>
    /// Returns the position of the first entry above <paramref name="applied"/>; throws if the chunk
    /// is out of order, leaves a gap, or carries a term below one already applied (the writer is a
    /// stale activation: a newer epoch has written here since).
    /// </summary>
    private int ValidateOrder(IReadOnlyList<ApplyEntry> entries, LogPosition applied)
    {
        var appliedIndex = applied.Index;
        if (entries.Count == 0)
        {
            throw new DEngineException(DEngineErrorCode.InvalidArgument, "An empty chunk cannot be applied; send at least one entry.", PartitionId);
        }
        for (var i = 1; i < entries.Count; i++)
        {
            if (entries[i].Index <= entries[i - 1].Index)
            {
                throw new DEngineException(DEngineErrorCode.ChunkOutOfOrder, $"Index {entries[i].Index} follows {entries[i - 1].Index}: indexes in a chunk must strictly increase. Nothing of the chunk was applied.", PartitionId, entries[i].Index);
            }
        }
        var firstNew = 0;
        while (firstNew < entries.Count && entries[firstNew].Index <= appliedIndex)
        {
            firstNew++;
        }
        if (firstNew < entries.Count)
        {
            var expected = appliedIndex + 1;
            if (entries[firstNew].Index != expected)
            {
                throw new DEngineException(DEngineErrorCode.ChunkGap, $"The next index to apply is {expected} but the chunk continues with {entries[firstNew].Index}. Send the missing entries first; nothing of the chunk was applied.", PartitionId, entries[firstNew].Index);
            }
            for (var i = firstNew + 1; i < entries.Count; i++)
            {
                if (entries[i].Index != entries[i - 1].Index + 1)
                {
                    throw new DEngineException(DEngineErrorCode.ChunkGap, $"Index {entries[i].Index} follows {entries[i - 1].Index}: entries are missing in between. Nothing of the chunk was applied.", PartitionId, entries[i].Index);
                }
            }
            var term = applied.Term;
            for (var i = firstNew; i < entries.Count; i++)
            {
                if (entries[i].Term < term)
                {
                    throw new DEngineException(DEngineErrorCode.StaleEpoch, $"Entry {entries[i].Index} has term {entries[i].Term}, below term {term} already applied: its writer is a stale activation (a newer epoch has written this partition). Nothing of the chunk was applied.", PartitionId, entries[i].Index);
                }
                term = entries[i].Term;
            }
        }
        return firstNew;
    }

    /// <summary>
    /// Structural checks only (a key to write, an operation this version knows). Size limits are not
    /// checked here: they belong to sequencing (<see cref="CommandLimits"/>), so an accepted entry
    /// applies the same on every engine whatever its configured limits.
    /// </summary>
    private void ValidateCommand(in ApplyEntry entry)
    {
        switch (entry.Command?.OperationCase)
        {
            case null:
                return;
            case WriteCommand.OperationOneofCase.Insert:
                ValidateKey(entry.Command.Insert.Key, entry.Index);
                return;
            case WriteCommand.OperationOneofCase.Delete:
                ValidateKey(entry.Command.Delete.Key, entry.Index);
                return;
            case WriteCommand.OperationOneofCase.CompareAndSwap:
                ValidateKey(entry.Command.CompareAndSwap.Key, entry.Index);
                return;
            case WriteCommand.OperationOneofCase.ExpireKeys:
                foreach (var expired in entry.Command.ExpireKeys.Keys)
                {
                    ValidateKey(expired.Key, entry.Index);
                }
                return;
            default:
                throw new DEngineException(DEngineErrorCode.MalformedEntry, "The WriteCommand has no operation this version knows. Nothing of the chunk was applied.", PartitionId, entry.Index);
        }
    }

    private void ValidateKey(ByteString key, ulong index)
    {
        if (key.IsEmpty)
        {
            throw new DEngineException(DEngineErrorCode.InvalidArgument, "Keys must not be empty. Nothing of the chunk was applied.", PartitionId, index);
        }
    }

    private static bool NeedsOverlay(IReadOnlyList<ApplyEntry> entries, int from)
    {
        for (var i = from; i < entries.Count; i++)
        {
            var op = entries[i].Command?.OperationCase;
            if (op is WriteCommand.OperationOneofCase.CompareAndSwap or WriteCommand.OperationOneofCase.ExpireKeys)
            {
                return true;
            }
        }
        return false;
    }

    // ---------------------------------------------------------------- TTL support

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

    // ---------------------------------------------------------------- TTL scan floor
    //
    // Cleanup deletes index entries from the front of the TTL index, so a scan from its first key walks
    // the tombstones of every key deleted so far. The floor is an index key below which no entry
    // exists: scans start there. It is a hint in memory only, never part of the state: apply neither
    // reads nor writes it (beyond lowering it after a write), and open, reset and snapshot install
    // restart it at the beginning of the index, so a wrong or stale floor can only make a scan slower.
    //
    // Invariant: no index entry is below _ttlFloor. It rises only to a key that a scan proved to be
    // the first entry at or above the old floor (or the scan's upper bound when there was none),
    // capped by every index key written while that scan ran (its ticket); it falls after every
    // apply that writes an index entry below it. Expired entries are therefore never skipped,
    // however old their expiry (an external ApplyChunk may write any) and whether or not an
    // ExpireKeys command for them was ever applied.

    private readonly Lock _ttlFloorGate = new();
    private readonly List<TtlScanTicket> _ttlScans = [];
    private byte[] _ttlFloor = [];

    private sealed class TtlScanTicket
    {
        public byte[]? LowestWritten;
    }

    /// <summary>The TTL scan floor (empty = the start of the index). For tests and diagnostics.</summary>
    internal byte[] TtlScanFloor
    {
        get
        {
            lock (_ttlFloorGate)
            {
                return _ttlFloor;
            }
        }
    }

    /// <summary>Test seam: runs inside FindExpired after its iterator (and so its view) is fixed.</summary>
    internal Action? TtlScanStarted { get; set; }

    private static void SeekFloor(Iterator iterator, byte[] floor)
    {
        if (floor.Length == 0)
        {
            iterator.SeekToFirst();
        }
        else
        {
            iterator.Seek(floor);
        }
    }

    private TtlScanTicket BeginTtlScan(out byte[] floor)
    {
        var ticket = new TtlScanTicket();
        lock (_ttlFloorGate)
        {
            floor = _ttlFloor;
            _ttlScans.Add(ticket);
        }
        return ticket;
    }

    /// <summary>Ends a scan; <paramref name="proven"/> is a key with no index entry below it in the scan's view (null: nothing learned).</summary>
    private void EndTtlScan(TtlScanTicket ticket, byte[]? proven)
    {
        lock (_ttlFloorGate)
        {
            _ttlScans.Remove(ticket);
            if (proven is null)
            {
                return;
            }
            // Entries written since the scan began may be missing from its view.
            if (ticket.LowestWritten is { } written && Compare(written, proven) < 0)
            {
                proven = written;
            }
            if (Compare(proven, _ttlFloor) > 0)
            {
                _ttlFloor = proven;
            }
        }
    }

    /// <summary>Called after a chunk that wrote TTL index entries is written, with the lowest of them.</summary>
    private void NoteTtlInserted(byte[] lowest)
    {
        lock (_ttlFloorGate)
        {
            if (Compare(lowest, _ttlFloor) < 0)
            {
                _ttlFloor = lowest;
            }
            foreach (var scan in _ttlScans)
            {
                if (scan.LowestWritten is null || Compare(lowest, scan.LowestWritten) < 0)
                {
                    scan.LowestWritten = lowest;
                }
            }
        }
    }

    private void ResetTtlFloor()
    {
        lock (_ttlFloorGate)
        {
            _ttlFloor = [];
        }
    }

    private static int Compare(byte[] a, byte[] b) => a.AsSpan().SequenceCompareTo(b);

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

    // ---------------------------------------------------------------- metadata, flush, reset

    /// <inheritdoc />
    public void PersistSnapshotMetadata(SnapshotMetadata metadata)
    {
        ArgumentNullException.ThrowIfNull(metadata);
        lock (_applyGate)
        {
            using var _ = EnterUse();
            _db!.Put(SnapshotMetadataKey, metadata.ToByteArray(), _meta, _syncWrite);
            Volatile.Write(ref _snapshotMetadata, metadata.Clone());
        }
    }

    /// <inheritdoc />
    public void Flush()
    {
        using var _ = EnterUse();
        SyncWalUnlocked();
        var flush = new FlushOptions().SetWaitForFlush(true);
        foreach (var family in new[] { _data, _meta, _ttl })
        {
            Native.Instance.rocksdb_flush_cf(_db!.Handle, flush.Handle, family.Handle);
        }
    }

    private void SyncWalUnlocked() => SyncAndPublish();

    /// <inheritdoc />
    public void Reset()
    {
        // The snapshot gate first (the order CreateSnapshot and InstallSnapshot take): a snapshot being
        // created cannot record its metadata into the reset database.
        lock (_snapshotGate)
        lock (_applyGate)
        {
            _lifecycle.EnterWriteLock();
            try
            {
                ThrowIfClosed();
                Close();
                // A fresh, empty generation replaces the live one; the pointer switch is the atomic step,
                // so a crash leaves either the old data or the empty database, never a half-deleted one.
                var old = _generation;
                try
                {
                    _layout.WritePointer(old + 1);
                }
                catch
                {
                    Open();
                    throw;
                }
                Volatile.Write(ref _generation, old + 1);
                Open();
                DeleteGenerationQuietly(old);
            }
            finally
            {
                _lifecycle.ExitWriteLock();
            }
        }
    }

    /// <summary>Closes the database (the log is synced first, so nothing applied is lost). Idempotent.</summary>
    public void Dispose()
    {
        lock (_applyGate)
        {
            _lifecycle.EnterWriteLock();
            try
            {
                _serving = false;
                _disposed = true;
                if (_db is not null)
                {
                    try
                    {
                        Native.Instance.rocksdb_flush_wal(_db.Handle, 1);
                    }
                    catch (RocksDbException)
                    {
                        // Closing anyway: RocksDB recovers from its WAL on the next open.
                    }
                    Close();
                }
                _partitionLock.Dispose();
            }
            finally
            {
                _lifecycle.ExitWriteLock();
            }
        }
    }

    /// <summary>Free space needed before a failed database is reopened for writing.</summary>
    private const long ReopenFreeBytes = 8L << 20;

    /// <summary>
    /// After a failed write (for example a full disk) RocksDB keeps refusing writes until it is
    /// reopened. Reopen once the file system has room again; until then refuse the write with a clear
    /// error and leave the database as it is, so reads keep being served.
    /// </summary>
    private void RecoverAfterWriteFailure()
    {
        long free;
        try
        {
            free = new DriveInfo(DatabasePath).AvailableFreeSpace;
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or ArgumentException)
        {
            free = long.MaxValue; // cannot tell: try to reopen
        }
        if (free < ReopenFreeBytes)
        {
            throw new DEngineException(DEngineErrorCode.StorageFailure, $"The disk holding '{DatabasePath}' is (nearly) full: {free} bytes free. Writes are refused until at least {ReopenFreeBytes} bytes are free; reads are still served.", PartitionId);
        }
        _lifecycle.EnterWriteLock();
        try
        {
            if (_disposed)
            {
                ThrowIfClosed();
            }
            // A reopen that failed last time left no database open: try again.
            Close();
            Open();
            _writeFailed = false;
        }
        finally
        {
            _lifecycle.ExitWriteLock();
        }
    }

    // ---------------------------------------------------------------- internals

    private void Open() => Attach(OpenRocks(DatabasePath));

    /// <summary>Opens (creating if missing) a RocksDB database with the engine's column families and options.</summary>
    private RocksDb OpenRocks(string directory)
    {
        // RocksDB creates a missing database directory but never syncs its parent: a fresh
        // generation's entry would not survive a power cut, whatever RocksDB syncs inside it.
        DurableFiles.CreateDirectoryDurably(directory);
        var dbOptions = new DbOptions()
            .SetCreateIfMissing(true)
            .SetCreateMissingColumnFamilies(true)
            .SetParanoidChecks(true);
        Native.Instance.rocksdb_options_set_max_background_jobs(dbOptions.Handle, _options.MaxBackgroundJobs);

        var families = new ColumnFamilies(AuxFamilyOptions())
        {
            { DataFamily, DataFamilyOptions() },
            { MetaFamily, AuxFamilyOptions() },
            { TtlFamily, AuxFamilyOptions() },
        };
        try
        {
            return RocksDb.Open(dbOptions, directory, families);
        }
        catch (RocksDbException ex)
        {
            var hint = ex.Message.Contains("lock", StringComparison.OrdinalIgnoreCase)
                ? " Another process (or another open state machine) is using this directory; stop it or choose another data directory."
                : " Check that the directory is readable, writable and holds a DEngine database.";
            throw new DEngineException(DEngineErrorCode.StorageFailure, $"Cannot open the database at '{directory}': {ex.Message}.{hint}", PartitionId, inner: ex);
        }
    }

    /// <summary>Makes <paramref name="db"/> the live database and loads its applied position and snapshot metadata.</summary>
    private void Attach(RocksDb db)
    {
        _db = db;
        _data = _db.GetColumnFamily(DataFamily);
        _meta = _db.GetColumnFamily(MetaFamily);
        _ttl = _db.GetColumnFamily(TtlFamily);
        ResetTtlFloor();
        var position = new LogPosition(
            ReadU64(_db.Get(LastAppliedIndexKey, _meta)),
            ReadU64(_db.Get(LastAppliedTermKey, _meta)));
        WritePosition(position);
        Volatile.Write(ref _timeFloor, ReadU64(_db.Get(TimeFloorKey, _meta)));
        // What RocksDB recovered on open is what the WAL held on disk.
        Volatile.Write(ref _durableIndex, position.Index);
        if (UsesReadViews)
        {
            _view = TakeView();
        }
        var meta = _db.Get(SnapshotMetadataKey, _meta);
        Volatile.Write(ref _snapshotMetadata, meta is null ? null : Protos.Storage.SnapshotMetadata.Parser.ParseFrom(meta));
    }

    private ColumnFamilyOptions DataFamilyOptions()
    {
        var table = new BlockBasedTableOptions()
            .SetBlockCache(_blockCache)
            .SetFilterPolicy(BloomFilterPolicy.Create(10, false))
            .SetFormatVersion(5);
        var options = new ColumnFamilyOptions()
            .SetWriteBufferSize(_options.WriteBufferSize)
            .SetMaxWriteBufferNumber(_options.MaxWriteBufferNumber)
            .SetMinWriteBufferNumberToMerge(_options.MinWriteBufferNumberToMerge)
            .SetTargetFileSizeBase(_options.TargetFileSizeBase)
            .SetMaxBytesForLevelBase(_options.MaxBytesForLevelBase)
            .SetLevelCompactionDynamicLevelBytes(_options.LevelCompactionDynamicLevelBytes)
            .SetBlockBasedTableFactory(table);
        if (_options.Compression)
        {
            options.SetCompression(Compression.Lz4);
            Native.Instance.rocksdb_options_set_bottommost_compression(options.Handle, (int)Compression.Zstd);
        }
        return options;
    }

    private ColumnFamilyOptions AuxFamilyOptions() =>
        new ColumnFamilyOptions()
            .SetWriteBufferSize(_options.AuxWriteBufferSize)
            .SetBlockBasedTableFactory(new BlockBasedTableOptions().SetBlockCache(_blockCache));

    private void DeleteGenerationQuietly(long generation)
    {
        try
        {
            DurableFiles.DeleteIfExists(_layout.GenerationPath(generation));
        }
        catch (IOException)
        {
            // Not live any more: the next open deletes what is left.
        }
        catch (UnauthorizedAccessException)
        {
        }
    }

    private void Close()
    {
        // Callers hold the lifecycle write lock: no read holds the view, and its snapshot must be
        // released while the database is still open.
        _view?.Release();
        _view = null;
        _db?.Dispose();
        _db = null;
    }

    private LogPosition ReadPosition()
    {
        lock (_positionLock)
        {
            return _lastApplied;
        }
    }

    private readonly Lock _positionLock = new();

    private void WritePosition(LogPosition position)
    {
        lock (_positionLock)
        {
            _lastApplied = position;
        }
    }

    private void ThrowIfClosed()
    {
        if (_db is null)
        {
            throw new DEngineException(DEngineErrorCode.NotServing, "The state machine is closed. Open a new one on its directory.", PartitionId);
        }
    }

    private UseScope EnterUse()
    {
        _lifecycle.EnterReadLock();
        if (_db is null)
        {
            _lifecycle.ExitReadLock();
            ThrowIfClosed();
        }
        return new UseScope(_lifecycle);
    }

    private UseScope EnterServing()
    {
        if (_fence is not null)
        {
            throw new DEngineException(DEngineErrorCode.NotServing, "The partition is fenced after a failed fsync: what it would read may not be on disk. It serves again once its files are synced and it is reopened. Retry shortly.", PartitionId);
        }
        // Checked before taking the lock too, so a read during a snapshot switch fails fast instead of
        // queueing behind the switch.
        if (!_serving)
        {
            throw NotServingError();
        }
        var scope = EnterUse();
        if (!_serving)
        {
            scope.Dispose();
            throw NotServingError();
        }
        return scope;
    }

    private DEngineException NotServingError() =>
        new(DEngineErrorCode.NotServing, "The state machine is not serving (stopped or installing a snapshot). Retry shortly.", PartitionId);

    private readonly struct UseScope(ReaderWriterLockSlim gate) : IDisposable
    {
        public void Dispose() => gate.ExitReadLock();
    }

    internal static byte[] U64(ulong value)
    {
        var bytes = new byte[8];
        BinaryPrimitives.WriteUInt64BigEndian(bytes, value);
        return bytes;
    }

    private static ulong ReadU64(byte[]? bytes) => bytes is { Length: 8 } ? BinaryPrimitives.ReadUInt64BigEndian(bytes) : 0;
}
