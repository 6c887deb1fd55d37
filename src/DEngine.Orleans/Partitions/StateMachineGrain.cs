using DEngine.Orleans.Configuration;
using DEngine.Orleans.Diagnostics;
using DEngine.Orleans.Grains;
using DEngine.Orleans.Placement;
using DEngine.Orleans.Replication;
using DEngine.Orleans.Storage;
using DEngine.Protos.Client;
using DEngine.Protos.Common;
using DEngine.StateMachine;
using DEngine.StateMachine.Snapshots;
using Google.Protobuf;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Orleans;
using Orleans.Runtime;
using Orleans.Runtime.Placement;

namespace DEngine.Orleans.Partitions;

/// <summary>
/// One partition: the gate in front of its database. It checks the partition's phase
/// (<see cref="PartitionState"/>) and the client's input, and hands the work to its parts:
/// <see cref="PartitionActivation"/> (ownership, takeover), <see cref="Sequencer"/> (chunks, group
/// commit), <see cref="ExpiryScheduler"/> (TTL cleanup) and <see cref="FenceRecovery"/>.
/// </summary>
/// <remarks>
/// Not reentrant. Client writes enter through <c>[AlwaysInterleave]</c> methods that only validate
/// and queue; the sequencer's drain loop (a task on the grain's own scheduler, so it never runs
/// beside another turn) turns the queue into one chunk and hands it to this grain as its
/// <see cref="IChunkCommitter"/>: the chunk is written without fsync and acknowledged by the
/// silo's <see cref="WalSyncLoop"/>, so the next writes gather into the next chunk while this one
/// is being synced (group commit). The loop is not a grain message: writes already accepted finish
/// even while the activation is deactivating (Orleans holds new messages then, and waits for the
/// running ones). Reads are <c>[ReadOnly]</c> and read the engine's durable read view (Synced
/// durability), so they wait for nothing and never show a chunk that is applied but not yet synced.
/// </remarks>
[DataAffinityPlacement]
public sealed partial class StateMachineGrain(
    IOptions<DEngineOptions> options,
    PartitionStore store,
    WalSyncLoop syncLoop,
    DEngineMetrics metrics,
    ILocalSiloDetails silo,
    IClusterMembershipService membership,
    TimeProvider time,
    ReplicaRegistry registry,
    SiloIncarnation incarnation,
    ILogger<StateMachineGrain> logger)
    : Grain, IStateMachineGrain, IChunkCommitter
{
    private const string KeySetting = DEngineOptions.SectionName + ":" + nameof(DEngineOptions.MaxKeyBytes);
    private const string ValueSetting = DEngineOptions.SectionName + ":" + nameof(DEngineOptions.MaxValueBytes);

    private readonly DEngineOptions _options = options.Value;
    private readonly CommandLimits _limits = new(options.Value.MaxKeyBytes, options.Value.MaxValueBytes);
    private readonly SiloMembers _members = new(membership, silo);
    private PartitionState _state = new PartitionState.Opening();
    private int _partition;
    // The silo name is the stable identity for ownership (the address changes on every start).
    private string _identity = "";
    private Sequencer _sequencer = null!;
    private ExpiryScheduler _expiry = null!;
    private FenceRecovery _fence = null!;
    private long _chunks;
    private long _writes;
    private TransferReport? _lastTransfer;
    private Task _snapshotTask = Task.CompletedTask;
    // Replicated partitions (DEngine:Replication:Factor > 1): the primary role this activation holds.
    private ReplicatedPrimary? _primary;

    /// <summary>True when partitions are replica groups (Factor above 1); Factor 1 keeps the single-copy path.</summary>
    private bool Replicated => _options.Replication.Factor > 1;

    /// <inheritdoc />
    public override async Task OnActivateAsync(CancellationToken cancellationToken)
    {
        _partition = (int)this.GetPrimaryKeyLong();
        _identity = silo.Name;
        _sequencer = new Sequencer(_partition, _options, metrics, () => _state.Open, this);
        _expiry = new ExpiryScheduler(
            _options.Lease,
            metrics,
            () => (_state.Open?.Engine, _state is not PartitionState.Unavailable),
            (callback, due) => this.RegisterGrainTimer(callback, new GrainTimerCreationOptions { DueTime = due, Period = Timeout.InfiniteTimeSpan, Interleave = false }),
            EnsureLeaseReminder,
            _sequencer.Enqueue);
        CreateSessionExpiry();
        _fence = new FenceRecovery(_partition, () => _state is not PartitionState.Closing && _state.Open?.Engine is { IsFenced: true } engine ? engine : null, time, logger);
        if (Replicated)
        {
            await ActivateReplicatedAsync();
            return;
        }
        var activation = new PartitionActivation(_partition, _identity, _options, store, GrainFactory, _members, time, logger);
        _state = await activation.ActivateAsync(
            open =>
            {
                _state = new PartitionState.Serving(open);
                _expiry.Rearm();
                StartSessionExpiry();
            },
            cancellationToken);
        _lastTransfer = activation.LastTransfer;
    }

    /// <summary>
    /// Becomes primary of a new configuration version (see <see cref="ReplicatedActivation"/>), or
    /// unavailable with the reason and the silo to move to.
    /// </summary>
    private async Task ActivateReplicatedAsync()
    {
        if (PartitionActivation.RefuseEarly(_partition, _identity, _options, _members) is { } refused)
        {
            _state = refused;
            return;
        }
        var activation = new ReplicatedActivation(_partition, _identity, incarnation, _options, registry, GrainFactory, _members, time, logger, ServiceProvider.GetService<DrainState>());
        ReplicatedPrimary primary;
        try
        {
            primary = await activation.ActivateAsync(RecordApplied);
        }
        catch (Exception ex) when (ex is DEngineException or OrleansException or TimeoutException or IOException)
        {
            var error = ex as DEngineException is { Code: DEngineErrorCode.PartitionUnavailable } known
                ? known
                : new DEngineException(DEngineErrorCode.PartitionUnavailable, $"Partition {_partition} is unavailable on silo '{_identity}': becoming its primary failed ({ex.Message}). Retry.", _partition);
            _state = new PartitionState.Unavailable(error, activation.DataSilo);
            LogNotPrimary(_partition, _identity, error.Detail);
            return;
        }
        _primary = primary;
        registry.SetPrimary(_partition, true, primary.Configuration.Version);
        var open = new OpenPartition(primary.Copy.Engine, primary.Configuration.Version);
        _state = new PartitionState.Serving(open);
        _expiry.Rearm();
        StartSessionExpiry();
        // A loop of the primary, not a grain timer: Orleans stops timers as soon as it decides to
        // deactivate the grain, and then waits for running calls, whose commits may need exactly the
        // configuration change (dropping a dead replica) that this loop makes.
        primary.StartMaintenance();
        // A newer primary or a failed local log ends this role: what was queued drains into refusals
        // (nothing of it was sequenced), and the next call activates afresh where the primary is.
        _ = primary.Replicator.Failed.ContinueWith(
            task =>
            {
                if (_state is PartitionState.Serving)
                {
                    _state = new PartitionState.Unavailable(
                        new DEngineException(DEngineErrorCode.PartitionUnavailable, $"Partition {_partition} is no longer served on silo '{_identity}': {task.Result.Detail}", _partition),
                        Still: open);
                }
                DeactivateOnIdle();
            },
            CancellationToken.None,
            TaskContinuationOptions.ExecuteSynchronously,
            TaskScheduler.Current);
    }

    /// <inheritdoc />
    public override async Task OnDeactivateAsync(DeactivationReason reason, CancellationToken cancellationToken)
    {
        // From here on writes are refused (NotServing: retryable, not applied) instead of queued
        // behind a drain that would never run.
        var open = _state.Open;
        _state = new PartitionState.Closing(open);
        if (open is null)
        {
            return;
        }
        if (_primary is { } primary)
        {
            // What is queued is sequenced and replicated; what is not committed within the bound gets
            // OutcomeUnknown. The copy stays open: it belongs to the silo (the replica role goes on).
            await Task.WhenAny(_sequencer.DrainAllAsync(), Task.Delay(_options.Replication.ReplicaTimeout * 2, time));
            primary.Stop($"partition {_partition} is deactivating on silo '{_identity}' ({reason.Description})");
            registry.SetPrimary(_partition, false, primary.Configuration.Version);
            await _snapshotTask;
            _state = new PartitionState.Closing(null);
            LogDeactivated(_partition, reason.Description);
            return;
        }
        // Nothing queued is lost: apply what is left, wait for its sync, then close flushed.
        await _sequencer.DrainAllAsync();
        await _snapshotTask;
        _state = new PartitionState.Closing(null);
        await Task.Run(() => store.Close(open.Engine));
        LogDeactivated(_partition, reason.Description);
    }

    /// <summary>
    /// The gate every call passes: the open database when the partition serves. Otherwise throws
    /// what the caller is told (unavailable, closing or fenced) — and, when unavailable, moves the
    /// activation on so that a retry finds the data (see below).
    /// </summary>
    private OpenPartition Serving()
    {
        switch (_state)
        {
            case PartitionState.Unavailable unavailable:
                // Answer, and once the silo with the data is back, migrate there: migration asks the
                // placement director again, which a plain deactivation would not (callers keep the
                // cached address and the partition would be re-created here, then fetch the data).
                if (unavailable.Error.Code == DEngineErrorCode.PartitionUnavailable)
                {
                    if (unavailable.DataSilo is not null && _members.IsActive(unavailable.DataSilo))
                    {
                        MigrateOnIdle();
                    }
                    else
                    {
                        // The next call activates afresh and reads the ownership record again.
                        DeactivateOnIdle();
                    }
                }
                throw unavailable.Error;
            case PartitionState.Serving { Partition: var open }:
                if (open.Engine.IsFenced)
                {
                    throw new DEngineException(DEngineErrorCode.NotServing, $"Partition {_partition} stopped serving after a failed fsync; it reopens once its files are synced again. Retry.", _partition);
                }
                return open;
            default:
                throw new DEngineException(DEngineErrorCode.NotServing, "The partition is closing (moving or its silo is stopping). Retry.", _partition);
        }
    }

    // ------------------------------------------------------------ writes (interleaving: they only queue)

    /// <summary>The gate for writes: serving, and for a replica group, enough replicas answering (see <see cref="ReplicatedPrimary.ThrowIfTooFewReplicas"/>).</summary>
    private void Writable()
    {
        Serving();
        _primary?.ThrowIfHandingOver();
        _primary?.ThrowIfTooFewReplicas();
    }

    /// <inheritdoc />
    public async Task<ulong> Put(byte[] key, byte[] value, ulong ttlSeconds)
    {
        var result = await SubmitAsync(PutCommand(key, value, ttlSeconds));
        return result.Index;
    }

    /// <inheritdoc />
    public async Task<ulong> Delete(byte[] key)
    {
        var result = await SubmitAsync(DeleteCommand(key));
        return result.Index;
    }

    /// <inheritdoc />
    public async Task<bool> CompareAndSwap(byte[] key, byte[]? expected, byte[] newValue)
    {
        var result = await SubmitAsync(CompareAndSwapCommand(key, expected, newValue));
        return result.Status == ApplyStatus.Applied;
    }

    /// <summary>The gate and the limits of a Put, then its command (the absolute expiry is stamped when it is sequenced, see <see cref="Sequencer"/>).</summary>
    private WriteCommand PutCommand(byte[] key, byte[] value, ulong ttlSeconds)
    {
        Writable();
        _limits.ValidateKey(key, _partition, KeySetting);
        _limits.ValidateValue(value, _partition, ValueSetting);
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
            insert.TtlSecs = ttlSeconds;
        }
        return new WriteCommand { Insert = insert };
    }

    /// <summary>The gate and the limits of a Delete, then its command.</summary>
    private WriteCommand DeleteCommand(byte[] key)
    {
        Writable();
        _limits.ValidateKey(key, _partition, KeySetting);
        return new WriteCommand { Delete = new WriteCommand.Types.Delete { Key = UnsafeByteOperations.UnsafeWrap(key) } };
    }

    /// <summary>The gate and the limits of a CompareAndSwap, then its command.</summary>
    private WriteCommand CompareAndSwapCommand(byte[] key, byte[]? expected, byte[] newValue)
    {
        Writable();
        _limits.ValidateKey(key, _partition, KeySetting);
        _limits.ValidateValue(newValue, _partition, ValueSetting);
        var cas = new WriteCommand.Types.CompareAndSwap
        {
            Key = UnsafeByteOperations.UnsafeWrap(key),
            NewValue = UnsafeByteOperations.UnsafeWrap(newValue),
        };
        if (expected is not null)
        {
            _limits.ValidateValue(expected, _partition, ValueSetting);
            cas.ExpectedValue = UnsafeByteOperations.UnsafeWrap(expected);
        }
        return new WriteCommand { CompareAndSwap = cas };
    }

    /// <summary>
    /// Queues a client write and waits for its result. In a replica group the wait is bounded by
    /// <see cref="ReplicationOptions.CommitWaitBound"/>: past it the writer gets OutcomeUnknown (the
    /// entry may still be committed), so no call holds the activation waiting for a replica (Orleans
    /// deactivates a grain only once its running calls end).
    /// </summary>
    private async Task<ApplyResult> SubmitAsync(WriteCommand command)
    {
        var done = _sequencer.Enqueue(command);
        if (_primary is null)
        {
            return await done;
        }
        var bound = _options.Replication.CommitWaitBound;
        try
        {
            return await done.WaitAsync(bound, time);
        }
        catch (TimeoutException)
        {
            throw new DEngineException(DEngineErrorCode.OutcomeUnknown, $"Partition {_partition}: the write was not committed within {bound.TotalSeconds:0.#} s (DEngine:Replication:ReplicaTimeout × 2): a replica stopped answering and the configuration cannot drop it yet. It may still be committed; read to find out.", _partition);
        }
    }

    /// <summary>
    /// The local way a sequenced chunk becomes durable: applied without fsync in this turn, then
    /// durable once the silo's WAL sync loop synced it (at once in the relaxed mode).
    /// </summary>
    Task<IReadOnlyList<ApplyResult>> IChunkCommitter.Commit(OpenPartition open, IReadOnlyList<ApplyEntry> chunk)
    {
        if (_primary is { } primary)
        {
            return primary.Commit(open, chunk);
        }
        IReadOnlyList<ApplyResult> results;
        try
        {
            results = open.Engine.ApplyCommands(chunk, ApplyDurability.Deferred);
        }
        catch (DEngineException ex) when (ex.Code == DEngineErrorCode.StaleEpoch)
        {
            // A newer epoch has written this data: this activation must go; the retry finds the current one.
            if (_state is not PartitionState.Closing)
            {
                _state = new PartitionState.Unavailable(ex, Still: open);
            }
            DeactivateOnIdle();
            throw;
        }
        RecordApplied(chunk, results);
        SnapshotIfDue(open.Engine);
        var durable = WhenDurableTracked(open.Engine);
        return durable.IsCompletedSuccessfully
            ? Task.FromResult(results)
            : durable.ContinueWith(
                static (task, state) =>
                {
                    task.GetAwaiter().GetResult();
                    return (IReadOnlyList<ApplyResult>)state!;
                },
                results,
                CancellationToken.None,
                TaskContinuationOptions.ExecuteSynchronously,
                TaskScheduler.Default);
    }

    /// <inheritdoc />
    ulong IChunkCommitter.NextIndex(OpenPartition open) => _primary?.NextIndex(open) ?? open.Engine.LastApplied.Index + 1;

    /// <inheritdoc />
    Task IChunkCommitter.ReadyForNext(Task lastCommit) => _primary?.ReadyForNext(lastCommit) ?? lastCommit;

    /// <inheritdoc />
    public async Task<EntryOutcome[]> ApplyChunk(Entry[] entries)
    {
        var open = Serving();
        if (_primary is not null)
        {
            // The log here is ours: an external log's entries would bypass replication and clash with its indexes.
            throw new DEngineException(DEngineErrorCode.FeatureNotEnabled, $"Partition {_partition} is replicated ({_primary.Configuration.Replicas.Length} replicas, DEngine:Replication:Factor {_options.Replication.Factor}); ApplyChunk from an external log is only for single-replica partitions (Factor 1), where the external log replicates. Write through Put/Delete/CompareAndSwap instead.", _partition);
        }
        ArgumentNullException.ThrowIfNull(entries);
        var decoded = EntryDecoder.Decode(entries, _partition);
        // Limits are checked where a command is sequenced, never when it is applied.
        _limits.Validate(decoded, _partition);
        var results = open.Engine.ApplyCommands(decoded, ApplyDurability.Deferred);
        RecordApplied(decoded, results);
        var durable = WhenDurableTracked(open.Engine);
        _sequencer.Follow(durable);
        await durable;
        var outcomes = new EntryOutcome[results.Count];
        for (var i = 0; i < outcomes.Length; i++)
        {
            outcomes[i] = new EntryOutcome(results[i].Index, (EntryStatus)results[i].Status, results[i].KeysExpired);
        }
        return outcomes;
    }

    /// <summary>Counts a chunk's newly applied entries and lets the expiry scheduler see them.</summary>
    private void RecordApplied(IReadOnlyList<ApplyEntry> entries, IReadOnlyList<ApplyResult> results)
    {
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
            _expiry.OnApplied(entries, results);
        }
    }

    /// <summary>
    /// Completes when everything applied is durable (at once in the relaxed mode, which never waits
    /// for fsync); a failed sync that fenced the engine starts the fence recovery.
    /// </summary>
    private Task WhenDurableTracked(IStateMachine engine)
    {
        var durable = _options.Durability == DurabilityMode.Relaxed ? Task.CompletedTask : syncLoop.WhenDurable(engine, engine.LastApplied.Index);
        _ = _fence.WatchAsync(durable);
        return durable;
    }

    // ------------------------------------------------------------ TTL cleanup

    /// <inheritdoc />
    public Task<int> CleanupExpired()
    {
        Serving();
        return Task.FromResult(_expiry.ExpireDueKeys());
    }

    private void EnsureLeaseReminder() =>
        GrainFactory.GetGrain<ILeaseReminderGrain>(_partition).Ensure().ContinueWith(
            static (task, state) => ((StateMachineGrain)state!).LogReminderFailed(task.Exception!.InnerException!),
            this,
            CancellationToken.None,
            TaskContinuationOptions.OnlyOnFaulted | TaskContinuationOptions.ExecuteSynchronously,
            TaskScheduler.Default);

    // ------------------------------------------------------------ relocation

    /// <inheritdoc />
    public async Task MoveTo(string siloName)
    {
        Serving();
        ArgumentException.ThrowIfNullOrEmpty(siloName);
        if (siloName == _identity)
        {
            return;
        }
        var target = _members.FindActive(siloName)
            ?? throw new DEngineException(DEngineErrorCode.InvalidArgument, $"No active silo is named '{siloName}'. `dengine status` lists the silos.", _partition);
        if (_primary is { } primary)
        {
            // Only the role moves, to a replica that has the log; the configuration names it first, so
            // its activation takes over instead of deferring to this (still active) primary. The
            // handover is clean (nothing in flight, no read served from here on), so the new primary
            // serves without waiting out this one's lease; a failed one leaves the role here.
            await primary.HandOverAsync(siloName);
        }
        // Migration asks the placement director again; the hint makes it choose the target. The
        // target's activation then fetches the data from here (see PartitionActivation).
        RequestContext.Set(IPlacementDirector.PlacementHintKey, target);
        try
        {
            MigrateOnIdle();
        }
        finally
        {
            RequestContext.Remove(IPlacementDirector.PlacementHintKey);
        }
    }

    /// <inheritdoc />
    public async Task ReleaseReplica(string siloName)
    {
        Serving();
        ArgumentException.ThrowIfNullOrEmpty(siloName);
        if (_primary is { } primary)
        {
            await primary.ReleaseReplicaAsync(siloName);
        }
    }

    /// <inheritdoc />
    public async Task MoveReplica(string fromSilo, string toSilo)
    {
        Serving();
        ArgumentException.ThrowIfNullOrEmpty(fromSilo);
        ArgumentException.ThrowIfNullOrEmpty(toSilo);
        await ReplicatedRole().RequestMoveAsync(fromSilo, toSilo);
    }

    /// <inheritdoc />
    public Task<ReplicaSetStatus> GetReplicaSet()
    {
        Serving();
        return Task.FromResult(ReplicatedRole().ReplicaSet());
    }

    private ReplicatedPrimary ReplicatedRole() => _primary
        ?? throw new DEngineException(DEngineErrorCode.FeatureNotEnabled, $"Partition {_partition} has one copy (DEngine:Replication:Factor 1): it has no replicas to move; `dengine partition move {_partition} --to SILO` moves the partition.", _partition);

    // ------------------------------------------------------------ snapshots

    /// <inheritdoc />
    public async Task<SnapshotSummary> CreateSnapshot()
    {
        var engine = Serving().Engine;
        var info = await Task.Run(engine.CreateSnapshot);
        return Summary(info);
    }

    /// <inheritdoc />
    public Task<SnapshotSummary[]> ListSnapshots() =>
        Task.FromResult(Serving().Engine.ListSnapshots().Select(Summary).ToArray());

    private static SnapshotSummary Summary(SnapshotInfo info) =>
        new(Path.GetFileName(info.Directory), info.LastIncluded.Index, info.LastIncluded.Term, info.FileCount, info.TotalBytes, Convert.ToHexString(info.Metadata.Checksum.Span).ToLowerInvariant());

    /// <summary>The snapshot policy: every N applied entries, taken off the grain's turn (the engine holds writes only for the checkpoint call).</summary>
    private void SnapshotIfDue(IStateMachine engine)
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

    // ------------------------------------------------------------ reads

    /// <summary>
    /// The engine to read. It reads its durable read view (Synced durability): only what an fsync
    /// covered, and every write acknowledged (acknowledged only after that publish), without waiting.
    /// </summary>
    private IStateMachine Readable()
    {
        var engine = Serving().Engine;
        if (_primary is { } primary && !primary.CanRead())
        {
            // Without the lease another primary may already have acknowledged newer writes.
            throw new DEngineException(DEngineErrorCode.NotServing, $"Partition {_partition}: this primary does not hold its read lease now (its replicas have not acknowledged it recently, or the previous primary's lease is not over yet). Retry.", _partition);
        }
        return engine;
    }

    /// <inheritdoc />
    public Task<byte[]?> Get(byte[] key)
    {
        _limits.ValidateKey(key, _partition, KeySetting);
        return Task.FromResult(Readable().Get(key));
    }

    /// <inheritdoc />
    public Task<byte[]?[]> GetMulti(byte[][] keys)
    {
        ArgumentNullException.ThrowIfNull(keys);
        foreach (var key in keys)
        {
            _limits.ValidateKey(key, _partition, KeySetting);
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
        _limits.ValidateKey(key, _partition, KeySetting);
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
        var open = Serving();
        var applied = open.Engine.LastApplied;
        var snapshot = open.Engine.SnapshotMetadata?.LastIncluded;
        return Task.FromResult(new PartitionStatus(
            _partition,
            applied.Index,
            applied.Term,
            open.Epoch,
            $"{_identity} ({silo.SiloAddress.Endpoint})",
            open.Engine.EstimatedCount,
            snapshot?.Index,
            snapshot?.Term,
            _chunks,
            _writes,
            _expiry.KeysExpired,
            _lastTransfer)
        {
            Replication = _primary?.Describe(),
            ReplicaGroup = _primary?.Status(),
        });
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "The lease reminder could not be registered; expired keys are still cleaned while the partition is active. Configure a reminder service (e.g. UseInMemoryReminderService).")]
    private partial void LogReminderFailed(Exception exception);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Partition {Partition}: taking a scheduled snapshot failed.")]
    private partial void LogSnapshotFailed(int partition, Exception exception);

    [LoggerMessage(Level = LogLevel.Information, Message = "Partition {Partition}: the activation on silo {Silo} does not serve: {Reason}")]
    private partial void LogNotPrimary(int partition, string silo, string reason);

    [LoggerMessage(Level = LogLevel.Information, Message = "Partition {Partition} deactivated ({Reason}); its database is closed and flushed.")]
    private partial void LogDeactivated(int partition, string reason);
}
