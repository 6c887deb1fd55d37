using DEngine.Orleans.Diagnostics;
using DEngine.Orleans.Ownership;
using DEngine.Orleans.Placement;
using DEngine.Orleans.Snapshots;
using DEngine.Protos.Storage;
using DEngine.StateMachine.Snapshots;
using DEngine.Orleans.Storage;
using DEngine.Protos.Client;
using DEngine.Protos.Common;
using DEngine.StateMachine;
using Google.Protobuf;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Orleans;
using Orleans.Concurrency;
using Orleans.Runtime;
using Orleans.Runtime.Placement;

namespace DEngine.Orleans.Grains;

/// <summary>
/// One partition: owns its RocksDB engine and sequences client writes into chunks.
/// </summary>
/// <remarks>
/// Not reentrant. Client writes enter through <c>[AlwaysInterleave]</c> methods that only validate
/// and queue; the activation's drain loop (a task on the grain's own scheduler, so it never runs
/// beside another turn) turns the queue into one chunk — index = applied + 1, term = this
/// activation's epoch — and writes it without fsync, then hands the acknowledgement to the silo's
/// <see cref="WalSyncLoop"/>, so the next writes gather into the next chunk while this one is being
/// synced (group commit). The loop is not a grain message: writes already accepted finish even while
/// the activation is deactivating (Orleans holds new messages then, and waits for the running ones).
/// Reads are <c>[ReadOnly]</c> and read the engine's durable read view (Synced durability), so
/// they wait for nothing and never show a chunk that is applied but not yet synced.
/// The queue is bounded (entries and bytes): over the bound a write is refused with Overloaded
/// before anything of it is sequenced.
/// </remarks>
[DataAffinityPlacement]
public sealed partial class StateMachineGrain(
    IOptions<DEngineOptions> options,
    PartitionStore store,
    WalSyncLoop syncLoop,
    DEngineMetrics metrics,
    ILocalSiloDetails silo,
    IClusterMembershipService membership,
    ILogger<StateMachineGrain> logger)
    : Grain, IStateMachineGrain
{
    private readonly DEngineOptions _options = options.Value;
    private readonly CommandLimits _limits = new(options.Value.MaxKeyBytes, options.Value.MaxValueBytes);
    private readonly List<PendingWrite> _queue = [];
    private long _queuedBytes;
    private int _partition;
    private RocksDbStateMachine? _engine;
    private DEngineException? _unavailable;
    private ulong _epoch;
    private string _identity = "";
    private string? _dataSilo;
    private Task _drainLoop = Task.CompletedTask;
    private bool _closing;
    private Task _lastSync = Task.CompletedTask;
    private long _chunks;
    private long _writes;
    private long _keysExpired;
    private TransferReport? _lastTransfer;
    private Task _snapshotTask = Task.CompletedTask;
    private IGrainTimer? _expiryTimer;
    private ulong _expiryTimerDue = ulong.MaxValue;
    private bool _reminderEnsured;

    /// <inheritdoc />
    public override async Task OnActivateAsync(CancellationToken cancellationToken)
    {
        _partition = (int)this.GetPrimaryKeyLong();
        // The silo name is the stable identity for ownership (the address changes on every start).
        _identity = silo.Name;
        if (_partition < 0 || _partition >= _options.Partitions)
        {
            _unavailable = new DEngineException(DEngineErrorCode.InvalidArgument, $"Partition {_partition} does not exist: the cluster has partitions 0..{_options.Partitions - 1}.", _partition);
            return;
        }
        if (membership.CurrentSnapshot.GetSiloStatus(silo.SiloAddress) is SiloStatus.ShuttingDown or SiloStatus.Stopping or SiloStatus.Dead)
        {
            // A late message (a stale cached address) must not pull the partition back onto a silo
            // that is leaving: answer retryably; the retry is placed on an active silo.
            Unavailable("this silo is shutting down. Retry.");
            return;
        }
        var owner = GrainFactory.GetGrain<IPartitionOwnerGrain>(_partition);
        OwnershipRecord record;
        try
        {
            record = await ReadOwnershipAsync();
        }
        catch (TimeoutException ex)
        {
            // Nothing is served or applied without knowing the owner: answer retryably.
            Unavailable(ex.Message);
            return;
        }
        if (record.OwnerSilo is null)
        {
            // A new partition, or one whose record was lost: never take it for new while a silo may
            // hold its data. The newest copy wins; if it is elsewhere, it is claimed for that silo and
            // fetched from there through the takeover below.
            try
            {
                var newest = await FindNewestCopyAsync();
                if (newest.Exists && newest.Silo != _identity)
                {
                    record = await owner.Claim(newest.Silo, newest.Term + 1);
                    LogRecovered(_partition, newest.Silo, newest.Index, newest.Term);
                }
            }
            catch (Exception ex) when (ex is DEngineException or OrleansException or IOException or TimeoutException)
            {
                Unavailable(ex is DEngineException known ? known.Detail : $"looking for the newest copy of its data failed ({ex.Message}). Retry.");
                return;
            }
        }
        if (record.OwnerSilo is not null && record.OwnerSilo != _identity)
        {
            _dataSilo = record.OwnerSilo;
            if (!IsReachable(record.OwnerSilo))
            {
                Unavailable($"its data is on silo '{record.OwnerSilo}', which is down. Retry; it serves again when that silo is back.");
                return;
            }
            try
            {
                await TakeOverAsync(owner, record);
                _dataSilo = null;
            }
            catch (Exception ex) when (ex is DEngineException or OrleansException or IOException or TimeoutException)
            {
                Unavailable($"moving its data from silo '{record.OwnerSilo}' failed ({ex.Message}). Retry; the transfer resumes where it stopped.");
            }
            return;
        }
        try
        {
            // Registered before this silo first writes the partition's data (opening creates it).
            await GrainFactory.GetGrain<IPartitionHoldersGrain>(_partition).Add(_identity);
        }
        catch (Exception ex) when (ex is DEngineException or OrleansException or IOException or TimeoutException)
        {
            // Typically the record store (the primary's disk, or Redis) is unreachable or full.
            Unavailable($"registering this silo as a holder of its data failed ({ex.Message}). Retry.");
            return;
        }
        try
        {
            _engine = await Task.Run(() => store.Open(_partition), cancellationToken);
        }
        catch (DEngineException ex)
        {
            // Typically the previous activation on this silo still holds the RocksDB lock.
            Unavailable($"its database could not be opened ({ex.Detail}). Retry shortly.");
            return;
        }
        try
        {
            record = await owner.Claim(_identity, _engine.LastApplied.Term + 1);
            if (record.OwnerSilo != _identity)
            {
                await CloseEngineAsync();
                _dataSilo = record.OwnerSilo;
                Unavailable($"silo '{record.OwnerSilo}' claimed it first. Retry.");
                return;
            }
            _epoch = record.Epoch;
            LogActivated(_partition, _identity, _epoch, _engine.LastApplied.Index);
            WarnIfClockBehind(_engine);
            RearmExpiryTimer();
        }
        catch (Exception ex)
        {
            // Orleans does not call OnDeactivateAsync for an activation whose OnActivateAsync failed,
            // so the database would stay open and locked until the silo restarts: release it here.
            await CloseEngineAsync();
            Unavailable($"claiming its ownership record failed ({ex.Message}). Retry.");
        }
    }

    /// <summary>
    /// Asks every live silo for its copy of the partition and returns the newest (ties keep the copy
    /// on this silo). Throws PartitionUnavailable while a silo registered as a holder is unreachable:
    /// it may have the newest data.
    /// </summary>
    private async Task<LocalCopy> FindNewestCopyAsync()
    {
        var holders = await GrainFactory.GetGrain<IPartitionHoldersGrain>(_partition).Get();
        foreach (var holder in holders)
        {
            if (!IsReachable(holder))
            {
                throw new DEngineException(DEngineErrorCode.PartitionUnavailable, $"its ownership record is missing and silo '{holder}', which has held its data and may have the newest copy, is down. Retry; it serves again when that silo is back (or, if it is gone for good, after `dengine silo forget {holder}`).", _partition);
            }
        }
        var silos = membership.CurrentSnapshot.Members.Values
            .Where(m => SiloLiveness.IsReachable(m.Status))
            .Select(m => m.Name)
            .Union(holders, StringComparer.Ordinal)
            .ToArray();
        var copies = await Task.WhenAll(silos.Select(name => GrainFactory.GetGrain<ISnapshotServerGrain>(name).DescribeCopy(_partition)));
        var newest = new LocalCopy(_identity, false, 0, 0);
        foreach (var copy in copies.OrderBy(c => c.Silo == _identity ? 0 : 1))
        {
            if (copy.Exists && (!newest.Exists || copy.IsNewerThan(newest)))
            {
                newest = copy;
            }
        }
        return newest;
    }

    /// <inheritdoc />
    public override async Task OnDeactivateAsync(DeactivationReason reason, CancellationToken cancellationToken)
    {
        // From here on writes are refused (NotServing: retryable, not applied) instead of queued
        // behind a drain that would never run.
        _closing = true;
        if (_engine is null)
        {
            return;
        }
        // Nothing queued is lost: apply what is left, wait for its sync, then close flushed.
        while (_queue.Count > 0)
        {
            DrainOnce();
        }
        try
        {
            await _lastSync;
        }
        catch (Exception)
        {
            // Already reported to the writers that were waiting for it.
        }
        await _snapshotTask;
        await CloseEngineAsync();
        LogDeactivated(_partition, reason.Description);
    }

    private async Task CloseEngineAsync()
    {
        var engine = _engine;
        _engine = null;
        if (engine is not null)
        {
            await Task.Run(() => store.Close(engine));
        }
    }

    private bool IsActive(string siloIdentity) => FindMember(siloIdentity, s => s == SiloStatus.Active) is not null;

    private bool IsReachable(string siloIdentity) => FindMember(siloIdentity, SiloLiveness.IsReachable) is not null;

    private SiloAddress? FindMember(string siloIdentity, Func<SiloStatus, bool> status)
    {
        foreach (var member in membership.CurrentSnapshot.Members.Values)
        {
            if (member.Name == siloIdentity && status(member.Status))
            {
                return member.SiloAddress;
            }
        }
        return null;
    }

    // ------------------------------------------------------------ relocation

    /// <summary>
    /// This silo lacks the partition's current data: the silo that has it takes a fresh checkpoint
    /// (its database is closed there now), this one fetches it in verified chunks, installs it, and
    /// only then takes ownership with a higher epoch. Until then it serves nothing.
    /// </summary>
    private async Task TakeOverAsync(IPartitionOwnerGrain owner, OwnershipRecord record)
    {
        var from = record.OwnerSilo!;
        var server = GrainFactory.GetGrain<ISnapshotServerGrain>(from);
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var offer = await server.PrepareHandover(_partition);
        // Registered before this silo first writes the partition's data (the install below).
        await GrainFactory.GetGrain<IPartitionHoldersGrain>(_partition).Add(_identity);
        var engine = await Task.Run(() => store.Open(_partition));
        try
        {
            // The engine refuses this install anyway; saying so before the fetch saves the transfer.
            var local = engine.LastApplied;
            if (new LogPosition(offer.Index, offer.Term).IsOlderThan(local))
            {
                throw new DEngineException(DEngineErrorCode.SnapshotRejected, $"the copy on silo '{from}' ends at {offer.Index}/{offer.Term}, older than this silo's copy at {local.Index}/{local.Term}; installing it would replace newer data with older, so nothing was fetched or installed", _partition);
            }
            var incomingRoot = Path.Combine(store.PartitionPath(_partition), "incoming");
            var incoming = Path.Combine(incomingRoot, offer.Snapshot);
            DeleteOtherTransfers(incomingRoot, offer.Snapshot);
            var fetcher = new SnapshotFetcher(logger);
            var refetched = await fetcher.FetchAsync(offer, (file, offset, length) => server.ReadChunk(_partition, offer.Snapshot, file, offset, length), incoming);
            var metadata = new SnapshotMetadata
            {
                LastIncluded = new LogId { Index = offer.Index, Term = offer.Term },
                Checksum = ByteString.CopyFrom(offer.Checksum),
            };
            // The snapshot is the current data by the ownership record, so it replaces whatever older
            // data this silo kept from an earlier stay of the partition. Never newer data, though: the
            // engine refuses a snapshot older than the local copy (SnapshotRejected), force or not.
            await Task.Run(() => engine.InstallSnapshot(incoming, metadata, force: true));
            Directory.Delete(incoming, recursive: true);
            var moved = await owner.Transfer(from, record.Epoch, _identity, Math.Max(offer.Term, engine.LastApplied.Term) + 1);
            if (moved.OwnerSilo != _identity)
            {
                throw new DEngineException(DEngineErrorCode.StaleEpoch, $"ownership changed during the transfer (now silo '{moved.OwnerSilo}', epoch {moved.Epoch})", _partition);
            }
            _engine = engine;
            _epoch = moved.Epoch;
            _lastTransfer = new TransferReport(from, offer.Snapshot, offer.TotalBytes, clock.Elapsed.TotalSeconds, refetched);
            LogMoved(_partition, from, _identity, offer.TotalBytes, clock.Elapsed.TotalSeconds, _lastTransfer.MegabytesPerSecond, _epoch);
            WarnIfClockBehind(engine);
            RearmExpiryTimer();
        }
        catch
        {
            if (ReferenceEquals(_engine, engine))
            {
                _engine = null;
            }
            await Task.Run(() => store.Close(engine));
            throw;
        }
    }

    /// <summary>The partition's data was stamped by a clock further ahead than DEngine:MaxClockSkew (the dengine.clock.skew gauge shows how far).</summary>
    private void WarnIfClockBehind(RocksDbStateMachine engine)
    {
        var now = TtlClock.NowUnixMs(store.Time);
        var floor = engine.TimeFloor;
        if (floor > now && floor - now > (ulong)_options.MaxClockSkew.TotalMilliseconds)
        {
            LogClockBehind(_partition, floor - now, _options.MaxClockSkew);
        }
    }

    private static void DeleteOtherTransfers(string incomingRoot, string keep)
    {
        if (!Directory.Exists(incomingRoot))
        {
            return;
        }
        foreach (var directory in Directory.EnumerateDirectories(incomingRoot))
        {
            if (Path.GetFileName(directory) != keep)
            {
                Directory.Delete(directory, recursive: true);
            }
        }
    }

    /// <inheritdoc />
    public Task MoveTo(string siloName)
    {
        Serving();
        ArgumentException.ThrowIfNullOrEmpty(siloName);
        if (siloName == _identity)
        {
            return Task.CompletedTask;
        }
        var target = FindMember(siloName, s => s == SiloStatus.Active)
            ?? throw new DEngineException(DEngineErrorCode.InvalidArgument, $"No active silo is named '{siloName}'. `dengine status` lists the silos.", _partition);
        // Migration asks the placement director again; the hint makes it choose the target. The
        // target's activation then fetches the data from here (see TakeOverAsync).
        RequestContext.Set(IPlacementDirector.PlacementHintKey, target);
        try
        {
            MigrateOnIdle();
        }
        finally
        {
            RequestContext.Remove(IPlacementDirector.PlacementHintKey);
        }
        return Task.CompletedTask;
    }

    // ------------------------------------------------------------ snapshots

    /// <inheritdoc />
    public async Task<SnapshotSummary> CreateSnapshot()
    {
        var engine = Serving();
        var info = await Task.Run(engine.CreateSnapshot);
        return Summary(info);
    }

    /// <inheritdoc />
    public Task<SnapshotSummary[]> ListSnapshots()
    {
        var engine = Serving();
        return Task.FromResult(engine.ListSnapshots().Select(Summary).ToArray());
    }

    private static SnapshotSummary Summary(SnapshotInfo info) =>
        new(Path.GetFileName(info.Directory), info.LastIncluded.Index, info.LastIncluded.Term, info.FileCount, info.TotalBytes, Convert.ToHexString(info.Metadata.Checksum.Span).ToLowerInvariant());

    /// <summary>The snapshot policy: every N applied entries, taken off the grain's turn (the engine holds writes only for the checkpoint call).</summary>
    private void SnapshotIfDue(RocksDbStateMachine engine)
    {
        if (!_snapshotTask.IsCompleted || !engine.ShouldSnapshot())
        {
            return;
        }
        _snapshotTask = Task.Run(() =>
        {
            try
            {
                engine.CreateSnapshot();
            }
            catch (Exception ex) when (ex is DEngineException or IOException)
            {
                LogSnapshotFailed(_partition, ex);
            }
        });
    }

    private void Unavailable(string why) =>
        _unavailable = new DEngineException(DEngineErrorCode.PartitionUnavailable, $"Partition {_partition} is unavailable on silo '{_identity}': {why}", _partition);

    private RocksDbStateMachine Serving()
    {
        if (_unavailable is not null)
        {
            // Answer, and once the silo with the data is back, migrate there: migration asks the
            // placement director again, which a plain deactivation would not (callers keep the
            // cached address and the partition would be re-created here, then fetch the data).
            if (_unavailable.Code == DEngineErrorCode.PartitionUnavailable)
            {
                if (_dataSilo is not null && IsActive(_dataSilo))
                {
                    MigrateOnIdle();
                }
                else
                {
                    // The next call activates afresh and reads the ownership record again.
                    DeactivateOnIdle();
                }
            }
            throw _unavailable;
        }
        if (_closing || _engine is null)
        {
            throw new DEngineException(DEngineErrorCode.NotServing, "The partition is closing (moving or its silo is stopping). Retry.", _partition);
        }
        if (_engine.IsFenced)
        {
            throw FencedError();
        }
        return _engine;
    }

    private DEngineException FencedError() =>
        new(DEngineErrorCode.NotServing, $"Partition {_partition} stopped serving after a failed fsync; it reopens once its files are synced again. Retry.", _partition);

    // ------------------------------------------------------------ writes (interleaving: they only queue)

    /// <inheritdoc />
    public async Task<ulong> Put(byte[] key, byte[] value, ulong ttlSeconds)
    {
        Serving();
        ValidateKey(key);
        ValidateValue(value);
        var insert = new WriteCommand.Types.Insert
        {
            Key = UnsafeByteOperations.UnsafeWrap(key),
            Value = UnsafeByteOperations.UnsafeWrap(value),
        };
        if (ttlSeconds > 0)
        {
            if (!_options.Lease.Enabled)
            {
                throw new DEngineException(DEngineErrorCode.FeatureNotEnabled, "This cluster has TTLs switched off (DEngine:Lease:Enabled=false). Write without a TTL or enable the feature.", _partition);
            }
            // The absolute expiry is stamped when the write is sequenced (see Stamp).
            insert.TtlSecs = ttlSeconds;
        }
        var result = await Enqueue(new WriteCommand { Insert = insert });
        return result.Index;
    }

    /// <inheritdoc />
    public async Task<ulong> Delete(byte[] key)
    {
        Serving();
        ValidateKey(key);
        var result = await Enqueue(new WriteCommand { Delete = new WriteCommand.Types.Delete { Key = UnsafeByteOperations.UnsafeWrap(key) } });
        return result.Index;
    }

    /// <inheritdoc />
    public async Task<bool> CompareAndSwap(byte[] key, byte[]? expected, byte[] newValue)
    {
        Serving();
        ValidateKey(key);
        ValidateValue(newValue);
        var cas = new WriteCommand.Types.CompareAndSwap
        {
            Key = UnsafeByteOperations.UnsafeWrap(key),
            NewValue = UnsafeByteOperations.UnsafeWrap(newValue),
        };
        if (expected is not null)
        {
            ValidateValue(expected);
            cas.ExpectedValue = UnsafeByteOperations.UnsafeWrap(expected);
        }
        var result = await Enqueue(new WriteCommand { CompareAndSwap = cas });
        return result.Status == ApplyStatus.Applied;
    }

    private Task<ApplyResult> Enqueue(WriteCommand command)
    {
        var pending = new PendingWrite(command);
        // An empty queue takes any write, so one at the size limits always goes through.
        if (_queue.Count > 0 && (_queue.Count >= _options.MaxQueuedWrites || _queuedBytes + pending.Bytes > _options.MaxQueuedBytes))
        {
            metrics.WritesOverloaded.Add(1);
            throw new DEngineException(DEngineErrorCode.Overloaded, $"Partition {_partition} is overloaded: {_queue.Count} writes ({_queuedBytes} bytes) already wait for the disk (limits DEngine:{nameof(DEngineOptions.MaxQueuedWrites)}={_options.MaxQueuedWrites}, DEngine:{nameof(DEngineOptions.MaxQueuedBytes)}={_options.MaxQueuedBytes}). Nothing of this write was applied; retry with backoff.", _partition);
        }
        _queue.Add(pending);
        _queuedBytes += pending.Bytes;
        if (_drainLoop.IsCompleted)
        {
            _drainLoop = DrainLoopAsync();
        }
        return pending.Done.Task;
    }

    private void ValidateKey(byte[] key)
    {
        if (key is null || key.Length == 0)
        {
            throw new DEngineException(DEngineErrorCode.InvalidArgument, "Keys must not be empty.", _partition);
        }
        if (key.Length > _options.MaxKeyBytes)
        {
            throw new DEngineException(DEngineErrorCode.LimitExceeded, $"A key of {key.Length} bytes exceeds the limit of {_options.MaxKeyBytes} bytes (DEngine:MaxKeyBytes).", _partition);
        }
    }

    private void ValidateValue(byte[] value)
    {
        ArgumentNullException.ThrowIfNull(value);
        if (value.Length > _options.MaxValueBytes)
        {
            throw new DEngineException(DEngineErrorCode.LimitExceeded, $"A value of {value.Length} bytes exceeds the limit of {_options.MaxValueBytes} bytes (DEngine:MaxValueBytes).", _partition);
        }
    }

    // ------------------------------------------------------------ the serial apply loop

    /// <summary>
    /// Applies the queue chunk by chunk until it is empty. Group commit: while the previous chunk is
    /// being fsynced, new writes keep queueing (the write methods interleave); once it is durable
    /// they all go into the next chunk. Runs on the activation's scheduler: every step is a turn of
    /// this grain, so applies stay strictly serial.
    /// </summary>
    private async Task DrainLoopAsync()
    {
        // Let the writes that arrived with this one queue up first (the continuation is queued
        // behind them on the activation's scheduler).
        await Task.Yield();
        while (_queue.Count > 0 && _engine is not null)
        {
            try
            {
                await _lastSync;
            }
            catch (Exception)
            {
                // Its writers were told; the next chunk gets its own sync.
            }
            if (_queue.Count == 0 || _engine is null)
            {
                break;
            }
            DrainOnce();
        }
    }

    private void DrainOnce()
    {
        var engine = _engine!;
        // Bounded by entries and bytes (one WriteBatch in memory); a single larger write is a chunk of one.
        var count = 0;
        long bytes = 0;
        while (count < _queue.Count && count < _options.MaxChunkEntries)
        {
            var size = _queue[count].Bytes;
            if (count > 0 && bytes + size > _options.MaxChunkBytes)
            {
                break;
            }
            bytes += size;
            count++;
        }
        var batch = _queue.GetRange(0, count);
        _queue.RemoveRange(0, count);
        _queuedBytes -= bytes;

        ulong next = 0;
        var entries = new ApplyEntry[count];
        IReadOnlyList<ApplyResult> results;
        try
        {
            // Inside the try: whatever fails, every write taken off the queue gets its answer.
            next = engine.LastApplied.Index + 1;
            var now = engine.EffectiveNowUnixMs;
            for (var i = 0; i < count; i++)
            {
                Stamp(batch[i].Command, now);
                entries[i] = new ApplyEntry(next + (ulong)i, _epoch, batch[i].Command);
            }
            results = engine.ApplyCommands(entries, ApplyDurability.Deferred);
        }
        catch (Exception ex)
        {
            var error = ex as DEngineException ?? new DEngineException(DEngineErrorCode.StorageFailure, $"Applying a chunk failed: {ex.Message}", _partition, next, ex);
            foreach (var pending in batch)
            {
                pending.Done.TrySetException(error);
            }
            if (error.Code == DEngineErrorCode.StaleEpoch)
            {
                // A newer epoch has written this data: this activation must go; the retry finds the current one.
                _unavailable = error;
                DeactivateOnIdle();
            }
            return;
        }
        _chunks++;
        _writes += count;
        metrics.ChunkApplied(_partition, count);
        AfterApply(entries, results);
        SnapshotIfDue(engine);

        // Acknowledge outside this turn: the sync thread completes the writers once the chunk is durable.
        var durable = WhenDurable(engine, entries[^1].Index);
        _lastSync = durable;
        _ = RecoverIfFencedAsync(durable);
        durable.ContinueWith(
            static (task, state) =>
            {
                var (writes, outcomes) = ((List<PendingWrite>, IReadOnlyList<ApplyResult>))state!;
                for (var i = 0; i < writes.Count; i++)
                {
                    if (task.IsCompletedSuccessfully)
                    {
                        writes[i].Done.TrySetResult(outcomes[i]);
                    }
                    else
                    {
                        writes[i].Done.TrySetException(task.Exception!.InnerException!);
                    }
                }
            },
            (batch, results),
            CancellationToken.None,
            TaskContinuationOptions.ExecuteSynchronously,
            TaskScheduler.Default);
    }

    // ------------------------------------------------------------ fence after a failed fsync

    /// <summary>First and largest pause between attempts to reopen a fenced database.</summary>
    private static readonly TimeSpan FenceRetryFirst = TimeSpan.FromMilliseconds(100);
    private static readonly TimeSpan FenceRetryMax = TimeSpan.FromSeconds(5);
    private Task _fenceRecovery = Task.CompletedTask;

    /// <summary>
    /// When <paramref name="durable"/> fails because the engine fenced itself (its writers got
    /// OutcomeUnknown), reopens the engine after a full sync of its files, retrying with backoff
    /// while that fails. Until then the partition answers NotServing.
    /// </summary>
    private async Task RecoverIfFencedAsync(Task durable)
    {
        try
        {
            await durable;
            return;
        }
        catch (Exception)
        {
            // The writers get the error; here only whether the engine is now fenced matters.
        }
        if (_engine is { IsFenced: true } && _fenceRecovery.IsCompleted)
        {
            _fenceRecovery = RecoverFromFenceAsync();
        }
    }

    private async Task RecoverFromFenceAsync()
    {
        var delay = FenceRetryFirst;
        LogFenced(_partition);
        while (!_closing && _engine is { IsFenced: true } engine)
        {
            try
            {
                await Task.Run(engine.RecoverFromFence);
                LogFenceLifted(_partition, engine.LastApplied.Index);
                return;
            }
            catch (DEngineException ex)
            {
                LogFenceRecoveryFailed(_partition, delay, ex);
            }
            await Task.Delay(delay);
            delay = TimeSpan.FromTicks(Math.Min(delay.Ticks * 2, FenceRetryMax.Ticks));
        }
    }

    [LoggerMessage(Level = LogLevel.Error, Message = "Partition {Partition}: a WAL sync failed; the partition is fenced (writers of unsynced chunks got OutcomeUnknown) until its files are synced again and it is reopened.")]
    private partial void LogFenced(int partition);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Partition {Partition}: reopening after the failed sync did not work; retrying in {Delay}.")]
    private partial void LogFenceRecoveryFailed(int partition, TimeSpan delay, Exception exception);

    [LoggerMessage(Level = LogLevel.Information, Message = "Partition {Partition}: every file re-synced and the database reopened at index {Index}; serving again.")]
    private partial void LogFenceLifted(int partition, ulong index);

    /// <summary>
    /// Stamps a command with the instant it is sequenced (max(clock, time floor), see
    /// <see cref="RocksDbStateMachine.EffectiveNowUnixMs"/>). Here, in the serial turn that builds the
    /// chunk, and not when the request arrived: a CAS or a TTL queued behind a slow fsync is judged
    /// at the time it takes its place in the log, never earlier than a read that already answered.
    /// The stamps also raise the partition's time floor when applied.
    /// </summary>
    private static void Stamp(WriteCommand command, ulong now)
    {
        switch (command.OperationCase)
        {
            case WriteCommand.OperationOneofCase.Insert:
                var insert = command.Insert;
                insert.AsOfUnixMs = now;
                if (insert.TtlSecs > 0)
                {
                    // An absolute expiry makes every replay of the entry expire at the same instant.
                    insert.ExpiresAtUnixMs = TtlClock.ExpiryFrom(now, insert.TtlSecs);
                }
                break;
            case WriteCommand.OperationOneofCase.Delete:
                command.Delete.AsOfUnixMs = now;
                break;
            case WriteCommand.OperationOneofCase.CompareAndSwap:
                command.CompareAndSwap.AsOfUnixMs = now;
                break;
            case WriteCommand.OperationOneofCase.ExpireKeys:
                // Planned as of an earlier instant: still expired now; keep the plan's stamp.
                break;
        }
    }

    // ------------------------------------------------------------ TTL cleanup

    /// <summary>Keeps the expiry timer due at the earliest expiry; counts what cleanup removed.</summary>
    private void AfterApply(IReadOnlyList<ApplyEntry> entries, IReadOnlyList<ApplyResult> results)
    {
        var rescan = false;
        for (var i = 0; i < entries.Count; i++)
        {
            var command = entries[i].Command;
            if (command?.OperationCase == WriteCommand.OperationOneofCase.ExpireKeys)
            {
                rescan = true;
                var removed = results[i].KeysExpired;
                _keysExpired += removed;
                if (removed > 0)
                {
                    metrics.KeysExpired.Add(removed);
                }
            }
            else if (command?.OperationCase == WriteCommand.OperationOneofCase.Insert && command.Insert.TtlSecs > 0)
            {
                var expiry = command.Insert.ExpiresAtUnixMs;
                rescan |= expiry == 0 || expiry < _expiryTimerDue;
            }
        }
        if (rescan)
        {
            RearmExpiryTimer();
        }
    }

    /// <summary>Arms a one-shot timer for the earliest expiry in the TTL index (no fixed poll).</summary>
    private void RearmExpiryTimer()
    {
        var engine = _engine;
        var earliest = engine is null || !_options.Lease.Enabled ? null : engine.EarliestExpiry();
        if (earliest is null)
        {
            _expiryTimerDue = ulong.MaxValue;
            _expiryTimer?.Change(Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
            return;
        }
        _expiryTimerDue = earliest.Value;
        EnsureLeaseReminder();
        var now = engine!.EffectiveNowUnixMs;
        var due = earliest.Value <= now ? TimeSpan.Zero : TimeSpan.FromMilliseconds(Math.Min(earliest.Value - now, (ulong)TimeSpan.FromDays(1).TotalMilliseconds));
        if (_expiryTimer is null)
        {
            _expiryTimer = this.RegisterGrainTimer(OnExpiryTimer, new GrainTimerCreationOptions { DueTime = due, Period = Timeout.InfiniteTimeSpan, Interleave = false });
        }
        else
        {
            _expiryTimer.Change(due, Timeout.InfiniteTimeSpan);
        }
    }

    /// <summary>Once per activation with TTL keys: make sure the durable reminder exists (it wakes the partition after a deactivation).</summary>
    private void EnsureLeaseReminder()
    {
        if (_reminderEnsured)
        {
            return;
        }
        _reminderEnsured = true;
        GrainFactory.GetGrain<ILeaseReminderGrain>(_partition).Ensure().ContinueWith(
            static (task, state) => ((StateMachineGrain)state!).LogReminderFailed(task.Exception!.InnerException!),
            this,
            CancellationToken.None,
            TaskContinuationOptions.OnlyOnFaulted | TaskContinuationOptions.ExecuteSynchronously,
            TaskScheduler.Default);
    }

    private Task OnExpiryTimer(CancellationToken cancellationToken)
    {
        _expiryTimerDue = ulong.MaxValue;
        ExpireDueKeys();
        return Task.CompletedTask;
    }

    /// <summary>
    /// Plans one bounded cleanup round and queues it as an ExpireKeys command, so the deletion goes
    /// through the ordered, logged apply path like any write. Returns how many keys were planned.
    /// </summary>
    private int ExpireDueKeys()
    {
        var engine = _engine;
        if (engine is null || _unavailable is not null)
        {
            return 0;
        }
        var now = engine.EffectiveNowUnixMs;
        var due = engine.FindExpired(now, _options.Lease.MaxKeysPerRound, _options.Lease.MaxRoundTime);
        if (due.Count == 0)
        {
            RearmExpiryTimer();
            return 0;
        }
        var command = new WriteCommand.Types.ExpireKeys { AsOfUnixMs = now };
        foreach (var key in due)
        {
            command.Keys.Add(new WriteCommand.Types.ExpiredKey { Key = UnsafeByteOperations.UnsafeWrap(key.Key), ExpiresAtUnixMs = key.ExpiresAtUnixMs });
            metrics.CleanupLag.Record(now - Math.Min(now, key.ExpiresAtUnixMs));
        }
        // Not awaited: this runs inside a serial turn, and the drain that applies it needs the next one.
        try
        {
            _ = Enqueue(new WriteCommand { ExpireKeys = command });
        }
        catch (DEngineException ex) when (ex.Code == DEngineErrorCode.Overloaded)
        {
            // Client writes fill the queue: cleanup waits for the next round (timer or reminder).
            return 0;
        }
        return due.Count;
    }

    /// <inheritdoc />
    public Task<int> CleanupExpired()
    {
        Serving();
        return Task.FromResult(ExpireDueKeys());
    }

    /// <inheritdoc />
    public async Task<EntryOutcome[]> ApplyChunk(Entry[] entries)
    {
        var engine = Serving();
        ArgumentNullException.ThrowIfNull(entries);
        var decoded = EntryDecoder.Decode(entries, _partition);
        // Limits are checked where a command is sequenced, never when it is applied.
        _limits.Validate(decoded, _partition);
        var results = engine.ApplyCommands(decoded, ApplyDurability.Deferred);
        var applied = 0;
        foreach (var r in results)
        {
            applied += r.Status == ApplyStatus.AlreadyApplied ? 0 : 1;
        }
        if (applied > 0)
        {
            _chunks++;
            _writes += applied;
            metrics.ChunkApplied(_partition, applied);
            AfterApply(decoded, results);
        }
        var durable = WhenDurable(engine, engine.LastApplied.Index);
        _lastSync = durable;
        _ = RecoverIfFencedAsync(durable);
        await durable;
        var outcomes = new EntryOutcome[results.Count];
        for (var i = 0; i < outcomes.Length; i++)
        {
            outcomes[i] = new EntryOutcome(results[i].Index, (EntryStatus)results[i].Status, results[i].KeysExpired);
        }
        return outcomes;
    }

    // ------------------------------------------------------------ reads

    /// <summary>
    /// The engine to read. It reads its durable read view (Synced durability): only what an fsync
    /// covered, and every write acknowledged (acknowledged only after that publish), without waiting.
    /// </summary>
    private RocksDbStateMachine Readable() => Serving();

    /// <summary>
    /// Reads the ownership record at activation, riding out a moment when its grain is moving (its
    /// silo stopping): the record is in shared storage and comes back on another silo. Gives up
    /// with a TimeoutException after 15 s.
    /// </summary>
    private async Task<OwnershipRecord> ReadOwnershipAsync()
    {
        var owner = GrainFactory.GetGrain<IPartitionOwnerGrain>(_partition);
        var delay = TimeSpan.FromMilliseconds(50);
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(15);
        while (true)
        {
            try
            {
                return await owner.Get();
            }
            catch (Exception ex) when (ex is OrleansException or TimeoutException)
            {
                if (DateTime.UtcNow > deadline)
                {
                    throw new TimeoutException($"its ownership record could not be read for 15 s ({ex.Message}). Retry.", ex);
                }
                await Task.Delay(delay);
                delay = TimeSpan.FromTicks(Math.Min(delay.Ticks * 2, TimeSpan.FromSeconds(1).Ticks));
            }
        }
    }

    /// <summary>Completes when <paramref name="index"/> is durable (at once in the relaxed mode, which never waits for fsync).</summary>
    private Task WhenDurable(RocksDbStateMachine engine, ulong index) =>
        _options.Durability == DurabilityMode.Relaxed ? Task.CompletedTask : syncLoop.WhenDurable(engine, index);

    /// <inheritdoc />
    public Task<byte[]?> Get(byte[] key)
    {
        ValidateKey(key);
        return Task.FromResult(Readable().Get(key));
    }

    /// <inheritdoc />
    public Task<byte[]?[]> GetMulti(byte[][] keys)
    {
        ArgumentNullException.ThrowIfNull(keys);
        foreach (var key in keys)
        {
            ValidateKey(key);
        }
        var values = Readable().GetMulti(keys);
        return Task.FromResult(values as byte[]?[] ?? [.. values]);
    }

    /// <inheritdoc />
    public Task<ScanResponse> ScanPrefix(byte[] prefix)
    {
        ArgumentNullException.ThrowIfNull(prefix);
        var scan = Readable().ScanPrefix(prefix);
        var response = new ScanResponse { Revision = scan.Revision };
        foreach (var entry in scan.Entries)
        {
            response.Entries.Add(new KvEntry { Key = UnsafeByteOperations.UnsafeWrap(entry.Key), Value = UnsafeByteOperations.UnsafeWrap(entry.Value) });
        }
        return Task.FromResult(response);
    }

    /// <inheritdoc />
    public Task<KeyTtl> GetTtl(byte[] key)
    {
        ValidateKey(key);
        // One clock read: the engine judges the key and reports the instant it judged at, so a key
        // reported present has a positive remaining time (an expired key is absent).
        if (!Readable().TryGetExpiry(key, out var expiry, out var asOf))
        {
            return Task.FromResult(new KeyTtl(false, null, null));
        }
        if (expiry is null)
        {
            return Task.FromResult(new KeyTtl(true, null, null));
        }
        return Task.FromResult(new KeyTtl(true, expiry, (long)Math.Min(expiry.Value - asOf, (ulong)long.MaxValue)));
    }

    /// <inheritdoc />
    public Task<PartitionStatus> GetStatus()
    {
        var engine = Serving();
        var applied = engine.LastApplied;
        var snapshot = engine.SnapshotMetadata?.LastIncluded;
        return Task.FromResult(new PartitionStatus(
            _partition,
            applied.Index,
            applied.Term,
            _epoch,
            $"{_identity} ({silo.SiloAddress.Endpoint})",
            engine.EstimatedCount,
            snapshot?.Index,
            snapshot?.Term,
            _chunks,
            _writes,
            _keysExpired,
            _lastTransfer));
    }

    private sealed class PendingWrite(WriteCommand command)
    {
        public WriteCommand Command { get; } = command;

        /// <summary>What the write costs the queue and its chunk: its encoded size.</summary>
        public long Bytes { get; } = command.CalculateSize();

        public TaskCompletionSource<ApplyResult> Done { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Partition {Partition} had no ownership record; the newest copy of its data is on silo {Silo} (applied {Index}/{Term}), which is now its owner.")]
    private partial void LogRecovered(int partition, string silo, ulong index, ulong term);

    [LoggerMessage(Level = LogLevel.Information, Message = "Partition {Partition} activated on {Silo} with epoch {Epoch} at applied index {Applied}.")]
    private partial void LogActivated(int partition, string silo, ulong epoch, ulong applied);

    [LoggerMessage(Level = LogLevel.Warning, Message = "The lease reminder could not be registered; expired keys are still cleaned while the partition is active. Configure a reminder service (e.g. UseInMemoryReminderService).")]
    private partial void LogReminderFailed(Exception exception);

    [LoggerMessage(Level = LogLevel.Information, Message = "Partition {Partition} moved from silo {From} to {To}: {Bytes} bytes in {Seconds:0.00} s ({MBps:0.0} MB/s), epoch {Epoch}.")]
    private partial void LogMoved(int partition, string from, string to, long bytes, double seconds, double mbps, ulong epoch);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Partition {Partition}: its time floor (highest applied clock stamp) is {AheadMs} ms ahead of this silo's clock, beyond DEngine:MaxClockSkew ({MaxClockSkew}). Expiry is judged at clock + MaxClockSkew here, so keys stamped by the faster clock may reappear for up to the difference; check the silos' clocks (NTP).")]
    private partial void LogClockBehind(int partition, ulong aheadMs, TimeSpan maxClockSkew);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Partition {Partition}: taking a scheduled snapshot failed.")]
    private partial void LogSnapshotFailed(int partition, Exception exception);

    [LoggerMessage(Level = LogLevel.Information, Message = "Partition {Partition} deactivated ({Reason}); its database is closed and flushed.")]
    private partial void LogDeactivated(int partition, string reason);
}
