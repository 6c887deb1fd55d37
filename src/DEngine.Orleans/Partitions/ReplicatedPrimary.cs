using DEngine.Orleans.Configuration;
using DEngine.Orleans.Diagnostics;
using DEngine.Orleans.Replication;
using DEngine.Protos.Common;
using DEngine.StateMachine;
using Google.Protobuf;
using Microsoft.Extensions.Logging;
using Orleans;

namespace DEngine.Orleans.Partitions;

/// <summary>
/// The primary role of a replicated partition in one activation: the <see cref="IChunkCommitter"/>
/// that turns the sequencer's chunks into log entries for the <see cref="Replicator"/>, answers each
/// chunk's writers once its entries are committed and applied, keeps the configuration current
/// (removes replicas that stopped answering, adds caught-up ones back, by compare-and-swap) and says
/// when reads may be served (the lease).
/// </summary>
/// <remarks>
/// Runs on the partition grain's scheduler, like the replicator. Writes are refused (retryably,
/// nothing sequenced) while the configuration has fewer replicas than
/// <see cref="ReplicationOptions.EffectiveMinReplicas"/>. When the replicator fails (a newer primary
/// exists, or the local log failed), every chunk still waiting gets OutcomeUnknown: its entries may
/// be in logs a newer primary commits.
/// </remarks>
public sealed partial class ReplicatedPrimary : IChunkCommitter
{
    private readonly int _partition;
    private readonly string _identity;
    private readonly ReplicationOptions _options;
    private readonly IGrainFactory _grains;
    private readonly SiloMembers _members;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly Action<IReadOnlyList<ApplyEntry>, IReadOnlyList<ApplyResult>> _recordApplied;
    private readonly Queue<PendingChunk> _pending = new();
    private readonly TaskCompletionSource _noopApplied = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly int _maxInFlight;
    private ulong _noopIndex;
    private long _inFlightWrites;
    private bool _maintaining;
    private RolePhase _phase = RolePhase.Leading;
    // Silos (by address: a restart is a new address) that are stopping and left the configuration
    // (ReleaseReplicaAsync): not added back while that process lives, or they would hold commits again.
    private readonly HashSet<global::Orleans.Runtime.SiloAddress> _released = [];

    /// <summary>Where this primary is in its role: leading, or handing it over (see <see cref="HandOverAsync"/>).</summary>
    private enum RolePhase
    {
        /// <summary>Sequencing writes and (with the lease) serving reads.</summary>
        Leading,

        /// <summary>Refusing new writes while the chunks in flight commit; reads still served (nobody else leads yet).</summary>
        Draining,

        /// <summary>Gave up its lease and named the next primary (or is about to): serves nothing, for good.</summary>
        HandedOver,
    }

    /// <summary>Builds the role over the promoted local copy and the stored configuration it won.</summary>
    /// <remarks><paramref name="metrics"/> receives the replication lag and commit latency; null: recorded nowhere.</remarks>
    public ReplicatedPrimary(
        int partition,
        string identity,
        PartitionConfiguration configuration,
        ReplicaCopy copy,
        ReplicationOptions options,
        int maxInFlightWrites,
        IGrainFactory grains,
        SiloMembers members,
        TimeProvider time,
        ILogger logger,
        Action<IReadOnlyList<ApplyEntry>, IReadOnlyList<ApplyResult>> recordApplied,
        DEngineMetrics? metrics = null,
        DrainState? drain = null,
        int partitions = 0)
    {
        _drain = drain;
        _partitions = partitions;
        _absence = new SiloAbsence(time);
        _partition = partition;
        _identity = identity;
        Configuration = configuration;
        Copy = copy;
        _options = options;
        _maxInFlight = maxInFlightWrites;
        _grains = grains;
        _members = members;
        _time = time;
        _logger = logger;
        _recordApplied = recordApplied;
        Replicator = new Replicator(
            partition,
            identity,
            configuration.Version,
            copy,
            configuration.Replicas.Select(r => r.Silo),
            silo => grains.GetGrain<IReplicaGrain>(ReplicaKey.Of(partition, silo)),
            new ReplicatorSettings(options.HeartbeatInterval, options.ReplicaTimeout, options.LeaseDuration),
            time,
            logger,
            OnApplied,
            metrics);
        Replicator.Failed.ContinueWith(
            static (task, state) => ((ReplicatedPrimary)state!).FailPending(task.Result),
            this,
            CancellationToken.None,
            TaskContinuationOptions.ExecuteSynchronously,
            TaskScheduler.Current);
    }

    /// <summary>The configuration this primary runs (its version is the term of what it writes).</summary>
    public PartitionConfiguration Configuration { get; private set; }

    /// <summary>This silo's copy.</summary>
    public ReplicaCopy Copy { get; }

    /// <summary>The replication of this configuration.</summary>
    public Replicator Replicator { get; }

    /// <summary>Reads are served from this <see cref="TimeProvider.GetTimestamp"/> on (after the old primary's lease ran out).</summary>
    public long ReadsFrom { get; private set; }

    /// <summary>
    /// Starts replicating, writes the new term's Noop and waits until it is committed and the old
    /// primary's lease is over (<paramref name="leaseWait"/>): then everything before it is committed
    /// and applied here, and nobody else can serve a read. Throws PartitionUnavailable when that takes
    /// longer than the replica timeout.
    /// </summary>
    public async Task StartAsync(TimeSpan leaseWait)
    {
        ReadsFrom = _time.GetTimestamp() + (long)(leaseWait.TotalSeconds * _time.TimestampFrequency);
        Replicator.Start();
        _noopIndex = Replicator.LastSequenced + 1;
        Replicator.Append([new Entry { Index = _noopIndex, Term = Configuration.Version, Payload = new EntryPayload { Noop = new Noop() } }]);
        var committed = await Task.WhenAny(_noopApplied.Task, Replicator.Failed, Task.Delay(_options.ReplicaTimeout * 2, _time));
        if (committed != _noopApplied.Task)
        {
            var why = Replicator.Failed.IsCompleted ? Replicator.Failed.Result.Detail : $"its replicas did not acknowledge the new term's first entry within {_options.ReplicaTimeout * 2}";
            Replicator.Stop(new DEngineException(DEngineErrorCode.PartitionUnavailable, why, _partition));
            throw new DEngineException(DEngineErrorCode.PartitionUnavailable, $"taking over as primary of version {Configuration.Version} failed: {why}. Retry.", _partition);
        }
        var remaining = _time.GetElapsedTime(_time.GetTimestamp(), ReadsFrom);
        if (remaining > TimeSpan.Zero)
        {
            await Task.Delay(remaining, _time);
        }
    }

    /// <summary>True when a read may be served here now: the old primary's lease is over, this one holds its own and has not handed its role over.</summary>
    public bool CanRead() => _phase != RolePhase.HandedOver && !Replicator.Failed.IsCompleted && _time.GetTimestamp() >= ReadsFrom && Replicator.HoldsLease();

    /// <summary>Throws the retryable NotServing a write gets while the primary role is being handed over (nothing of it is sequenced).</summary>
    public void ThrowIfHandingOver()
    {
        if (_phase != RolePhase.Leading)
        {
            throw new DEngineException(DEngineErrorCode.NotServing, $"Partition {_partition}: its primary role is being handed over to another replica; nothing of this write was applied. Retry: the new primary answers in a moment.", _partition);
        }
    }

    /// <summary>Throws the retryable error a write gets while the configuration is below the floor.</summary>
    public void ThrowIfTooFewReplicas()
    {
        var count = Configuration.Replicas.Length;
        if (!_options.CanWrite(count))
        {
            throw new DEngineException(DEngineErrorCode.PartitionUnavailable, $"Partition {_partition} has {count} replica(s) ({string.Join(", ", Configuration.Replicas.Select(r => r.Silo))}), fewer than DEngine:Replication:MinReplicas = {_options.EffectiveMinReplicas}: writes are refused (nothing was applied) until another silo holds a copy. Retry. A deployment of fewer silos than that runs with --DEngine:Replication:Factor 1 (one copy per partition).", _partition);
        }
        // A replica that stopped answering but cannot be removed (the floor) blocks every commit: refuse
        // rather than queue writes that would wait for it.
        var silent = Replicator.Unresponsive();
        if (silent.Count > 0 && !_options.CanWrite(count - silent.Count))
        {
            throw new DEngineException(DEngineErrorCode.PartitionUnavailable, $"Partition {_partition}: replica(s) {string.Join(", ", silent)} stopped answering and removing them would leave fewer than DEngine:Replication:MinReplicas = {_options.EffectiveMinReplicas} replicas: writes are refused (nothing was applied) until one answers or another silo catches up. Retry.", _partition);
        }
    }

    /// <summary>A one-line description for status: version, replicas, learners, snapshot installs and the floor.</summary>
    public string Describe()
    {
        // Learners on silos that are away are shipped to when they return; only live ones are catching up.
        var progress = Replicator.Progress();
        var learners = progress.Where(p => !p.Member && _members.IsActive(p.Silo)).Select(p => p.Silo).ToArray();
        var count = Configuration.Replicas.Length;
        var text = $"v{Configuration.Version}: {string.Join(", ", Configuration.Replicas.Select(r => r.Silo == Configuration.Primary?.Silo ? r.Silo + "*" : r.Silo))}";
        if (learners.Length > 0)
        {
            text += $"; catching up: {string.Join(", ", learners)}";
        }
        text += DescribeInstalls(progress);
        if (count < _options.Factor)
        {
            text += $"; {count} of {_options.Factor} replicas";
        }
        if (!_options.CanWrite(count))
        {
            text += $"; writes refused below MinReplicas {_options.EffectiveMinReplicas}";
        }
        return text;
    }

    /// <summary>
    /// The configuration and where each copy stands, as fields (what <see cref="Describe"/> says in a
    /// line): the primary first, then the other replicas in configuration order, then the learners.
    /// Indexes of other copies are what they last acknowledged.
    /// </summary>
    public ReplicationStatus Status()
    {
        var progress = Replicator.Progress();
        var last = Replicator.LastSequenced;
        var bySilo = progress.ToDictionary(p => p.Silo, StringComparer.Ordinal);
        var primary = Configuration.Primary?.Silo ?? _identity;
        var copies = new List<ReplicaStatus>(progress.Count + 1)
        {
            new(_identity, ReplicaRole.Primary, true, Copy.Engine.LastApplied.Index, Replicator.LocalDurable, 0, null, null),
        };
        foreach (var replica in Configuration.Replicas)
        {
            if (replica.Silo != _identity)
            {
                copies.Add(bySilo.TryGetValue(replica.Silo, out var p)
                    ? Of(p, ReplicaRole.Replica)
                    : new ReplicaStatus(replica.Silo, ReplicaRole.Replica, _members.IsActive(replica.Silo), 0, 0, last, null, null));
            }
        }
        foreach (var learner in progress.Where(p => !Configuration.Contains(p.Silo)))
        {
            copies.Add(Of(learner, ReplicaRole.Learner));
        }
        var count = Configuration.Replicas.Length;
        return new ReplicationStatus(Configuration.Version, primary, _options.Factor, _options.EffectiveMinReplicas, count, !_options.CanWrite(count), [.. copies]);

        ReplicaStatus Of(ReplicaProgress p, ReplicaRole role) =>
            new(p.Silo, role, _members.IsActive(p.Silo), p.Applied, p.Matched, last - Math.Min(p.Matched, last), p.LastError, p.Install);
    }

    /// <summary>The status text naming the replicas installing a snapshot ("; installing a snapshot: silo (what)"), or "" when none is.</summary>
    internal static string DescribeInstalls(IReadOnlyList<ReplicaProgress> progress)
    {
        var installing = progress.Where(p => p.Installing is not null).Select(p => $"{p.Silo} ({p.Installing})").ToArray();
        return installing.Length > 0 ? $"; installing a snapshot: {string.Join(", ", installing)}" : "";
    }

    /// <inheritdoc />
    public Task<IReadOnlyList<ApplyResult>> Commit(OpenPartition partition, IReadOnlyList<ApplyEntry> chunk)
    {
        if (Replicator.Failed.IsCompleted)
        {
            // Never sequenced: not applied anywhere, safe to retry at the current primary.
            throw new DEngineException(DEngineErrorCode.NotServing, $"Partition {_partition}: this primary stopped ({Replicator.Failed.Result.Detail}); nothing of this write was applied. Retry.", _partition);
        }
        ThrowIfHandingOver();
        ThrowIfTooFewReplicas();
        var entries = new Entry[chunk.Count];
        for (var i = 0; i < entries.Length; i++)
        {
            var command = chunk[i].Command;
            entries[i] = new Entry
            {
                Index = chunk[i].Index,
                Term = chunk[i].Term,
                Payload = command is null ? new EntryPayload { Noop = new Noop() } : new EntryPayload { Command = command.ToByteString() },
            };
        }
        var pending = new PendingChunk(chunk);
        Replicator.Append(entries);
        _pending.Enqueue(pending);
        _inFlightWrites += chunk.Count;
        return pending.Done.Task;
    }

    /// <inheritdoc />
    public ulong NextIndex(OpenPartition partition) => Replicator.LastSequenced + 1;

    /// <inheritdoc />
    /// <remarks>At most <see cref="ReplicationOptions.MaxChunksInFlight"/> chunks wait for their commit; writes arriving meanwhile gather into the next one.</remarks>
    public Task ReadyForNext(Task lastCommit) =>
        _pending.Count >= _options.MaxChunksInFlight || _inFlightWrites >= _maxInFlight ? _pending.Peek().Done.Task : Task.CompletedTask;

    /// <summary>
    /// Runs <see cref="MaintainAsync"/> every heartbeat interval until this role stops. Call from a
    /// grain turn: the loop then runs on the grain's scheduler, beside its turns like the
    /// replicator's loops, and goes on while Orleans holds the activation for a deactivation.
    /// </summary>
    public void StartMaintenance()
    {
        if (_maintenanceLoop.IsCompleted)
        {
            _maintenanceLoop = MaintenanceLoopAsync();
        }
    }

    private Task _maintenanceLoop = Task.CompletedTask;

    private async Task MaintenanceLoopAsync()
    {
        while (!Replicator.Failed.IsCompleted)
        {
            await Task.WhenAny(Task.Delay(_options.HeartbeatInterval, _time), Replicator.Failed);
            try
            {
                await MaintainAsync();
            }
#pragma warning disable CA1031 // A fault here must not end the loop: the next round tries again.
            catch (Exception ex)
#pragma warning restore CA1031
            {
                LogMaintenanceFailed(_partition, ex);
            }
        }
    }

    /// <summary>
    /// Hands the primary role to <paramref name="silo"/>, a replica, cleanly: first removes replicas
    /// that stopped answering (a maintenance round: their silence blocks commits), stops sequencing
    /// (new writes get a retryable NotServing, nothing of them applied), waits until every chunk in flight
    /// is committed and answered (at most <see cref="ReplicationOptions.ReplicaTimeout"/>; past that
    /// the handover is called off and this primary leads on), gives up its lease (serves no read from
    /// then on), and only then stores the configuration naming the new primary, marked as handed over
    /// by this one (<see cref="PartitionConfiguration.HandedOverBy"/>). The caller then migrates the
    /// activation there, which takes over with a higher version.
    /// </summary>
    /// <remarks>
    /// Why the new primary may serve reads at once (no lease wait): a primary serves a read only while
    /// <see cref="CanRead"/>, and this one made it false for good before the configuration change
    /// was stored, so this primary's last read precedes the store, which precedes the new primary's
    /// reading it — an order in real time, not by any clock. No older primary can serve either: this
    /// one waited out their leases before it first served (or took over cleanly itself, by the same
    /// argument). And no third primary can exist in between: the new one serves only if its own
    /// compare-and-swap from exactly this handed-over version wins. A takeover of any other kind (a
    /// crash, a handover whose outcome is unknown) still waits the full lease.
    /// Writes refused meanwhile are retried by the client; the chunks in flight are answered
    /// normally (none is left OutcomeUnknown by a handover).
    /// </remarks>
    /// <exception cref="DEngineException">
    /// InvalidArgument when <paramref name="silo"/> holds no replica; NotServing when a handover is
    /// already running or this primary stopped; PartitionUnavailable when a replica that stopped
    /// answering could not be removed first (the floor keeps it), or the chunks in flight did not
    /// commit within the bound (nothing changed, this primary leads on) or the configuration changed
    /// meanwhile; StorageFailure when storing the change failed (this primary stops: the outcome is unknown).
    /// </exception>
    public async Task HandOverAsync(string silo)
    {
        if (_phase == RolePhase.Leading && Replicator.Unresponsive().Count > 0)
        {
            // A member that stopped answering holds every commit and the read lease until a maintenance
            // round removes it: draining would wait out the whole bound, refusing writes meanwhile, and a
            // balancer retrying the handover would keep the rounds (which skip a draining primary) from
            // ever removing it. Run the round first.
            await MaintainAsync();
            if (Replicator.Unresponsive() is { Count: > 0 } silent)
            {
                throw new DEngineException(DEngineErrorCode.PartitionUnavailable, $"Partition {_partition}: replica(s) {string.Join(", ", silent)} stopped answering and are still in the configuration (DEngine:Replication:MinReplicas keeps them, or their removal is under way or failed); the handover to silo '{silo}' waits until they answer or are removed. Nothing was changed; the primary role stays here. Retry.", _partition);
            }
        }
        var replica = Configuration.Find(silo)
            ?? throw new DEngineException(DEngineErrorCode.InvalidArgument, $"Silo '{silo}' holds no replica of partition {_partition} (replicas: {string.Join(", ", Configuration.Replicas.Select(r => r.Silo))}); a replicated partition's primary moves only to one of its replicas.", _partition);
        if (_phase != RolePhase.Leading || Replicator.Failed.IsCompleted)
        {
            throw new DEngineException(DEngineErrorCode.NotServing, $"Partition {_partition}: this primary is already handing over or stopped; nothing was changed. Retry.", _partition);
        }
        _phase = RolePhase.Draining;
        var bound = _options.ReplicaTimeout;
        if (!await DrainedAsync(bound))
        {
            var waiting = _pending.Count;
            if (!Replicator.Failed.IsCompleted)
            {
                _phase = RolePhase.Leading;
            }
            LogHandoverCalledOff(_partition, silo, waiting, bound);
            throw new DEngineException(DEngineErrorCode.PartitionUnavailable, $"Partition {_partition}: the handover to silo '{silo}' was called off: {waiting} chunk(s) in flight were not committed within {bound} (DEngine:Replication:ReplicaTimeout); the primary role stays here. Retry.", _partition);
        }
        // From here on this primary serves nothing, whatever the store answers: the configuration
        // below may be stored (even when the answer is lost), and it lets the new primary skip the lease.
        _phase = RolePhase.HandedOver;
        bool won;
        try
        {
            won = await ChangeAsync(Configuration.WithPrimary(replica), handedOver: true);
        }
        catch (Exception ex) when (ex is DEngineException or OrleansException or TimeoutException)
        {
            Stop($"partition {_partition}: storing the handover to silo '{silo}' failed ({ex.Message}); its outcome is unknown");
            throw;
        }
        if (!won)
        {
            throw new DEngineException(DEngineErrorCode.PartitionUnavailable, $"Partition {_partition}: its configuration changed during the handover. Retry.", _partition);
        }
        LogHandedOver(_partition, silo, Configuration.Version);
    }

    /// <summary>
    /// Removes the replica on <paramref name="silo"/> (a silo stopping gracefully) from the
    /// configuration now, unless it is this primary, holds no replica, or the floor
    /// (<see cref="ReplicationOptions.EffectiveMinReplicas"/>) keeps it: a stopped replica would
    /// otherwise hold every commit for <see cref="ReplicationOptions.ReplicaTimeout"/> until the
    /// maintenance removes it. It stays a learner (shipped to), so it is added back once it returns.
    /// </summary>
    public async Task ReleaseReplicaAsync(string silo)
    {
        if (_phase != RolePhase.Leading || Replicator.Failed.IsCompleted || silo == _identity || !Configuration.Contains(silo) || Configuration.Replicas.Length - 1 < _options.EffectiveMinReplicas)
        {
            return;
        }
        // Not beside a maintenance round: both change the configuration from the same version.
        var started = _time.GetTimestamp();
        while (_maintaining)
        {
            if (_time.GetElapsedTime(started) > _options.ReplicaTimeout)
            {
                return;
            }
            await Task.Delay(TimeSpan.FromMilliseconds(5), _time);
        }
        if (_members.FindActive(silo) is { } address)
        {
            _released.Add(address);
        }
        _maintaining = true;
        try
        {
            if (Configuration.Contains(silo) && await ChangeAsync(Configuration.Without(silo)))
            {
                Replicator.Demote(silo);
                LogReleased(_partition, silo, Configuration.Version);
            }
        }
        finally
        {
            _maintaining = false;
        }
    }

    /// <summary>True when <paramref name="silo"/>'s running process stopping released its replica (see <see cref="ReleaseReplicaAsync"/>).</summary>
    private bool IsReleased(string silo) => _released.Count > 0 && _members.FindActive(silo) is { } address && _released.Contains(address);

    /// <summary>
    /// Waits until no chunk is in flight and no maintenance round runs (the handover's configuration
    /// change must not race one). False when that takes longer than <paramref name="bound"/> or this primary stopped.
    /// </summary>
    private async Task<bool> DrainedAsync(TimeSpan bound)
    {
        var started = _time.GetTimestamp();
        while (_pending.Count > 0 || _maintaining)
        {
            var left = bound - _time.GetElapsedTime(started);
            if (Replicator.Failed.IsCompleted || left <= TimeSpan.Zero)
            {
                return false;
            }
            // The last chunk answers after every earlier one (commits are in order); a maintenance round takes a store round trip.
            var next = _pending.Count > 0 ? _pending.Last().Done.Task : Task.Delay(TimeSpan.FromMilliseconds(5), _time);
            await Task.WhenAny(next, Replicator.Failed, Task.Delay(left, _time));
        }
        return !Replicator.Failed.IsCompleted;
    }

    /// <summary>Stops replicating: nothing is acknowledged after this; chunks still waiting get OutcomeUnknown.</summary>
    public void Stop(string why) =>
        Replicator.Stop(new DEngineException(DEngineErrorCode.NotServing, why, _partition));

    /// <summary>
    /// Stores <paramref name="edited"/> as the next version (<paramref name="handedOver"/>: marked as a
    /// clean handover by this primary); false (and stops) when another configuration won.
    /// </summary>
    private async Task<bool> ChangeAsync(PartitionConfiguration edited, bool handedOver = false)
    {
        var proposed = handedOver ? edited.Next() with { HandedOverBy = Configuration.Primary } : edited.Next();
        var change = await _grains.GetGrain<IPartitionConfigurationGrain>(_partition).CompareAndSwap(Configuration.Version, proposed);
        if (!change.Won)
        {
            // Someone else changed it: a newer primary took over (we no longer are one).
            Replicator.Stop(new DEngineException(DEngineErrorCode.StaleEpoch, $"Partition {_partition}: its configuration changed to {change.Current} while this primary ran version {Configuration.Version}. Retry: the current primary answers.", _partition));
            return false;
        }
        Configuration = change.Current;
        return true;
    }

    private void OnApplied(IReadOnlyList<ApplyResult> results)
    {
        var i = 0;
        while (i < results.Count)
        {
            var result = results[i];
            if (result.Index == _noopIndex)
            {
                _noopApplied.TrySetResult();
            }
            if (_pending.TryPeek(out var head) && result.Index >= head.First)
            {
                head.Results.Add(result);
                if (result.Index == head.Last)
                {
                    _pending.Dequeue();
                    _inFlightWrites -= head.Chunk.Count;
                    _recordApplied(head.Chunk, head.Results);
                    head.Done.TrySetResult(head.Results);
                }
            }
            i++;
        }
    }

    private void FailPending(DEngineException reason)
    {
        var error = reason.Code is DEngineErrorCode.NotServing or DEngineErrorCode.StaleEpoch or DEngineErrorCode.PartitionUnavailable
            ? new DEngineException(DEngineErrorCode.OutcomeUnknown, $"Partition {_partition}: this primary stopped ({reason.Detail}) before the write was committed; it may still be committed by the next primary. Read to find out.", _partition, 0, reason)
            : reason;
        while (_pending.TryDequeue(out var pending))
        {
            pending.Done.TrySetException(error);
        }
        _inFlightWrites = 0;
    }

    private sealed class PendingChunk(IReadOnlyList<ApplyEntry> chunk)
    {
        public IReadOnlyList<ApplyEntry> Chunk { get; } = chunk;

        public ulong First { get; } = chunk[0].Index;

        public ulong Last { get; } = chunk[^1].Index;

        public List<ApplyResult> Results { get; } = new(chunk.Count);

        public TaskCompletionSource<IReadOnlyList<ApplyResult>> Done { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Partition {Partition}: replica {Silo} stopped answering, but removing it would leave fewer than MinReplicas = {MinReplicas}; commits wait for it.")]
    private partial void LogCannotRemove(int partition, string silo, int minReplicas);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Partition {Partition}: replica {Silo} stopped answering and was removed (configuration version {Version}); it is caught up and added back when it returns.")]
    private partial void LogRemoved(int partition, string silo, ulong version);

    [LoggerMessage(Level = LogLevel.Information, Message = "Partition {Partition}: silo {Silo} caught up and is a replica again (configuration version {Version}).")]
    private partial void LogAdded(int partition, string silo, ulong version);

    [LoggerMessage(Level = LogLevel.Information, Message = "Partition {Partition}: replica {Silo} is stopping and was removed (configuration version {Version}); it is caught up and added back when it returns.")]
    private partial void LogReleased(int partition, string silo, ulong version);

    [LoggerMessage(Level = LogLevel.Information, Message = "Partition {Partition}: primary role handed over to silo {Silo} (configuration version {Version}); nothing was in flight.")]
    private partial void LogHandedOver(int partition, string silo, ulong version);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Partition {Partition}: the handover to silo {Silo} was called off: {Waiting} chunk(s) in flight not committed within {Bound}.")]
    private partial void LogHandoverCalledOff(int partition, string silo, int waiting, TimeSpan bound);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Partition {Partition}: a configuration change failed; retried on the next round.")]
    private partial void LogMaintenanceFailed(int partition, Exception exception);
}
