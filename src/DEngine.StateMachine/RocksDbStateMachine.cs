using System.Buffers.Binary;
using DEngine.Protos.Storage;
using DEngine.StateMachine.Snapshots;
using RocksDbSharp;

namespace DEngine.StateMachine;

/// <summary>
/// <see cref="IStateMachine"/> on RocksDB. Column families: <c>state_machine</c> (user data, each value
/// prefixed by its expiry header, see <see cref="StoredValue"/>), <c>state_machine_meta</c> (applied
/// position, snapshot metadata) and <c>state_machine_ttl</c> (TTL index: expiry + key, for finding
/// expired keys by a range scan) and <c>state_machine_sessions</c> (the exactly-once table of client
/// sessions, see <see cref="SessionLimits"/>). Every chunk is one WriteBatch that carries its data, TTL-index
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
    internal const string SessionsFamily = "state_machine_sessions";

    private static readonly byte[] LastAppliedIndexKey = "last_applied_index"u8.ToArray();
    private static readonly byte[] LastAppliedTermKey = "last_applied_term"u8.ToArray();
    private static readonly byte[] SnapshotMetadataKey = "snapshot_metadata"u8.ToArray();
    private static readonly byte[] TimeFloorKey = "time_floor"u8.ToArray();

    private readonly string _path;
    private readonly PartitionLayout _layout;
    private readonly FileStream _partitionLock;
    private readonly RocksDbStateMachineOptions _options;
    private readonly Cache _blockCache;

    // ---------------------------------------------------------------- locks
    //
    // Every lock of the engine, in the order they are taken: a thread holding one may take only
    // locks below it, never one above (so no two threads can wait for each other).
    //
    // 1. _snapshotGate   Serialises CreateSnapshot (with retention), InstallSnapshot and Reset with
    //                    each other. Never taken by apply or reads. (RocksDbStateMachine.Snapshots.cs)
    // 2. _applyGate      The single writer: ApplyCommands, PersistSnapshotMetadata, RecoverFromFence,
    //                    Reset, Dispose, the checkpoint of CreateSnapshot and the whole of an install.
    //                    Whoever writes _lastApplied, _timeFloor, _writeFailed, _snapshotMetadata or
    //                    _generation holds it, so apply reads _lastApplied without _positionLock.
    // 3. _lifecycle      ReaderWriterLockSlim, no recursion. Write side: whatever closes or opens the
    //                    native database (Reset, Dispose, RecoverFromFence, RecoverAfterWriteFailure,
    //                    the install's switch and rollback); it guards _db, the family handles and
    //                    _disposed. Read side (EnterUse / EnterServing): every use of the database, so
    //                    a background sync or a read never touches a closed native handle. Never
    //                    upgraded: a read holder must not ask for the write side (it would throw), which
    //                    is why ApplyCommands recovers from a write failure before EnterServing.
    // 4. Leaf locks, held for a few instructions and never while waiting on anything else:
    //    _viewGate       The published read view _view: swapping it and taking a reference on it.
    //                    (RocksDbStateMachine.ReadView.cs) May take _positionLock (ReadViewIndex).
    //    _ttlFloorGate   The TTL scan floor _ttlFloor and the tickets of running scans _ttlScans.
    //                    (RocksDbStateMachine.TtlScanFloor.cs)
    //    _positionLock   _lastApplied as one (index, term) pair for readers outside the apply gate.
    //
    // Not locks, but part of the picture: _partitionLock is an OS lock file (PartitionLayout.Lock)
    // that keeps other processes out of the partition directory while this machine lives. _serving,
    // _writeFailed and _fence are volatile flags read without a lock (_fence is raised by a failed
    // sync, which may hold only the read side, and cleared under _applyGate and the write side);
    // _durableIndex rises by compare-and-swap (AdvanceDurable) and is set when a database is opened
    // (under the write side). The test hooks FaultInjector and TtlScanStarted run with the locks of
    // their call site held (the install's, and the read side).
    private readonly Lock _snapshotGate = new();
    private readonly Lock _applyGate = new();
    private readonly ReaderWriterLockSlim _lifecycle = new(LockRecursionPolicy.NoRecursion);
    private readonly Lock _viewGate = new();
    private readonly Lock _ttlFloorGate = new();
    private readonly Lock _positionLock = new();

    private readonly WriteOptions _syncWrite = new WriteOptions().SetSync(true); // mutation: synced-write
    private readonly WriteOptions _bufferedWrite = new WriteOptions().SetSync(false);

    private RocksDb? _db;
    private ColumnFamilyHandle _data = null!;
    private ColumnFamilyHandle _meta = null!;
    private ColumnFamilyHandle _ttl = null!;
    private ColumnFamilyHandle _sessions = null!;
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
            _blockCache = RocksDbTuning.BlockCache(_options);
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

    /// <inheritdoc />
    public LogPosition LastApplied => ReadPosition();

    /// <inheritdoc />
    public ulong DurableIndex => Volatile.Read(ref _durableIndex);

    /// <inheritdoc />
    public SnapshotMetadata? SnapshotMetadata => Volatile.Read(ref _snapshotMetadata);

    /// <inheritdoc />
    public void Start()
    {
        using var _ = EnterUse();
        _serving = true;
    }

    /// <inheritdoc />
    public void Stop() => _serving = false;

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

    private void Open() => Attach(OpenRocks(DatabasePath));

    /// <summary>Opens (creating if missing) a RocksDB database with the engine's column families and options.</summary>
    private RocksDb OpenRocks(string directory)
    {
        // RocksDB creates a missing database directory but never syncs its parent: a fresh
        // generation's entry would not survive a power cut, whatever RocksDB syncs inside it.
        DurableFiles.CreateDirectoryDurably(directory);
        var dbOptions = RocksDbTuning.DbOptions(_options);
        var families = RocksDbTuning.Families(_options, _blockCache);
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
        _sessions = _db.GetColumnFamily(SessionsFamily);
        LoadSessionStats();
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
