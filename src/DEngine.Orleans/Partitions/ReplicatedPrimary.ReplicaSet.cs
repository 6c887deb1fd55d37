using DEngine.Orleans.Configuration;
using DEngine.Orleans.Replication;
using Microsoft.Extensions.Logging;
using Orleans;
using Orleans.Runtime;

namespace DEngine.Orleans.Partitions;

/// <summary>The replica-set maintenance of the primary role: replacement, rebuilds of lost disks, moves and drains (see <see cref="ReplicaSetRules"/>).</summary>
public sealed partial class ReplicatedPrimary
{
    private readonly DrainState? _drain;
    private readonly int _partitions;
    private readonly SiloAbsence _absence;

    // Guarded by the grain's scheduler, like everything of this role.
    // The incarnation each silo answered with, and from which process (SiloAddress: its generation
    // changes on every start), so a restart is noticed and asked again, and only then.
    private readonly Dictionary<string, (SiloAddress Address, string Incarnation)> _incarnations = new(StringComparer.Ordinal);

    // Requested replica moves: source silo -> target silo. Kept by this primary only: a new primary
    // does not know them (the operator's command then times out and is run again).
    private readonly Dictionary<string, string> _moves = new(StringComparer.Ordinal);

    private Dictionary<string, int> _replicasPerSilo = new(StringComparer.Ordinal);
    private long _replicasCountedAt = long.MinValue;

    /// <summary>
    /// The periodic duties (every heartbeat interval), as <see cref="ReplicaSetRules"/> plans them:
    /// remove silent members and members on a new data directory (never below the floor), forget
    /// learners gone for longer than ReplaceAfter, build new replicas where some are missing or
    /// leaving, add those caught up, and retire the leaving ones once replaced. Each change is a
    /// compare-and-swap of the configuration; losing one means a newer primary exists.
    /// </summary>
    public async Task MaintainAsync()
    {
        if (_maintaining || Replicator.Failed.IsCompleted || _phase != RolePhase.Leading)
        {
            return;
        }
        _maintaining = true;
        try
        {
            var draining = _drain is null ? (IReadOnlySet<string>)new HashSet<string>() : await _drain.CurrentAsync();
            foreach (var done in _moves.Keys.Where(from => !Configuration.Contains(from)).ToArray())
            {
                _moves.Remove(done);
            }
            var progress = Replicator.Progress();
            _absence.Observe(Configuration.Replicas.Select(r => r.Silo).Concat(progress.Select(p => p.Silo)), _members.IsActive);
            var (mismatched, restartedLearners) = await CheckIncarnationsAsync(progress);
            foreach (var silo in restartedLearners)
            {
                // Its acknowledgements were of a copy that no longer exists.
                Replicator.Reset(silo);
                LogLearnerReset(_partition, silo);
            }
            var plan = ReplicaSetRules.Plan(View(draining, mismatched), _options);
            if (plan.AddLearners.Count > 0 && ReplicaCountsStale())
            {
                await CountReplicasAsync();
                plan = ReplicaSetRules.Plan(View(draining, mismatched), _options);
            }
            foreach (var silo in plan.CannotRemove)
            {
                LogCannotRemove(_partition, silo, _options.EffectiveMinReplicas);
            }
            foreach (var silo in plan.Remove)
            {
                if (!await ChangeAsync(Configuration.Without(silo)))
                {
                    return;
                }
                Replicator.Demote(silo);
                if (mismatched.Contains(silo))
                {
                    // A new data directory: rebuilt from nothing, like a replacement.
                    Replicator.Reset(silo);
                    LogRebuilding(_partition, silo, Configuration.Version);
                }
                else
                {
                    LogRemoved(_partition, silo, Configuration.Version);
                }
            }
            foreach (var silo in plan.Forget)
            {
                Replicator.Forget(silo);
                LogForgotten(_partition, silo, _options.ReplaceAfter);
            }
            // A replica released by its stopping silo (ReleaseReplicaAsync) is not built or added back while that process lives.
            foreach (var silo in plan.AddLearners.Where(s => !IsReleased(s)))
            {
                Replicator.AddLearner(silo);
                _replicasPerSilo[silo] = _replicasPerSilo.GetValueOrDefault(silo) + 1;
                LogBuilding(_partition, silo);
            }
            foreach (var silo in plan.Promote.Where(s => !IsReleased(s)))
            {
                var position = await _grains.GetGrain<IReplicaGrain>(ReplicaKey.Of(_partition, silo)).Describe();
                var matched = Replicator.Progress().FirstOrDefault(p => p.Silo == silo)?.Matched ?? 0;
                if (position.LastIndex < matched)
                {
                    // It acknowledged more than its copy holds: a new copy under the same name.
                    Replicator.Reset(silo);
                    LogLearnerReset(_partition, silo);
                    continue;
                }
                // Counted for commits before the new configuration is stored (see Replicator.Promote).
                Replicator.Promote(silo);
                if (!await ChangeAsync(Configuration.WithReplica(new ReplicaId(silo, position.Incarnation ?? ""))))
                {
                    return;
                }
                LogAdded(_partition, silo, Configuration.Version);
            }
            foreach (var silo in plan.Retire)
            {
                if (!await ChangeAsync(Configuration.Without(silo)))
                {
                    return;
                }
                Replicator.Demote(silo);
                Replicator.Forget(silo);
                _moves.Remove(silo);
                LogRetired(_partition, silo, Configuration.Version);
            }
        }
        catch (Exception ex) when (ex is DEngineException or OrleansException or TimeoutException)
        {
            LogMaintenanceFailed(_partition, ex);
        }
        finally
        {
            _maintaining = false;
        }
    }

    /// <summary>
    /// Records a move of the replica on <paramref name="from"/> to <paramref name="to"/>: the next
    /// rounds build a copy there, add it once caught up and then retire <paramref name="from"/>'s.
    /// </summary>
    /// <remarks>The draining list is read from its durable record, not the cached copy: a `silo undrain` (or
    /// `drain`) made through another silo a moment ago holds.</remarks>
    /// <exception cref="DEngineException">InvalidArgument naming what is wrong with either silo.</exception>
    public async Task RequestMoveAsync(string from, string to)
    {
        var draining = _drain is null ? (IReadOnlySet<string>)new HashSet<string>() : await _drain.ReadAsync();
        var replicas = string.Join(", ", Configuration.Replicas.Select(r => r.Silo));
        if (!Configuration.Contains(from))
        {
            throw new DEngineException(DEngineErrorCode.InvalidArgument, $"Silo '{from}' holds no replica of partition {_partition} (replicas: {replicas}); nothing was changed.", _partition);
        }
        if (from == _identity)
        {
            throw new DEngineException(DEngineErrorCode.InvalidArgument, $"Silo '{from}' is the primary of partition {_partition}: move the primary role to another replica first (`dengine partition move {_partition} --to SILO`); nothing was changed.", _partition);
        }
        if (Configuration.Contains(to))
        {
            throw new DEngineException(DEngineErrorCode.InvalidArgument, $"Silo '{to}' already holds a replica of partition {_partition} (replicas: {replicas}); nothing was changed.", _partition);
        }
        if (!_members.IsActive(to))
        {
            throw new DEngineException(DEngineErrorCode.InvalidArgument, $"No active silo is named '{to}' (active: {string.Join(", ", _members.ActiveNames())}); nothing was changed.", _partition);
        }
        if (draining.Contains(to))
        {
            throw new DEngineException(DEngineErrorCode.InvalidArgument, $"Silo '{to}' is draining: it takes no new replica (`dengine silo undrain {to}` ends that); nothing was changed.", _partition);
        }
        _moves[from] = to;
        LogMoveRequested(_partition, from, to);
    }

    /// <summary>The replica set for status and for the move and drain commands.</summary>
    public ReplicaSetStatus ReplicaSet()
    {
        var learners = Replicator.Progress()
            .Where(p => !p.Member)
            .Select(p => p.Installing is { } installing
                ? $"{p.Silo} ({installing})"
                : $"{p.Silo} (at {p.Matched} of {Replicator.CommitIndex}{(_members.IsActive(p.Silo) ? "" : ", away")})")
            .ToArray();
        return new ReplicaSetStatus(
            _partition,
            Configuration.Version,
            Configuration.Primary?.Silo ?? _identity,
            [.. Configuration.Replicas.Select(r => r.Silo)],
            learners,
            [.. _moves.Select(m => $"{m.Key}->{m.Value}")]);
    }

    private ReplicaSetView View(IReadOnlySet<string> draining, IReadOnlySet<string> mismatched)
    {
        var leaving = new HashSet<string>(draining, StringComparer.Ordinal);
        leaving.UnionWith(_moves.Keys);
        var unresponsive = Replicator.Unresponsive().ToHashSet(StringComparer.Ordinal);
        var caughtUp = Replicator.CaughtUpLearners().ToHashSet(StringComparer.Ordinal);
        return new ReplicaSetView(
            _partition,
            _identity,
            [.. Configuration.Replicas.Select(r => new MemberView(r.Silo, !unresponsive.Contains(r.Silo), _absence.AwayFor(r.Silo), leaving.Contains(r.Silo), mismatched.Contains(r.Silo)))],
            [.. Replicator.Progress().Where(p => !p.Member).Select(p => new LearnerView(p.Silo, caughtUp.Contains(p.Silo), _absence.AwayFor(p.Silo), leaving.Contains(p.Silo)))],
            _members.ActiveNames(),
            leaving,
            [.. _moves.Values],
            _replicasPerSilo);
    }

    /// <summary>
    /// Asks each active member and learner whose process is new to this primary for its data
    /// directory's incarnation. Returns the members whose incarnation is not the configuration's
    /// (their disk was lost), and the learners that answered with a new one since last asked.
    /// </summary>
    private async Task<(HashSet<string> Mismatched, List<string> RestartedLearners)> CheckIncarnationsAsync(IReadOnlyList<ReplicaProgress> progress)
    {
        var mismatched = new HashSet<string>(StringComparer.Ordinal);
        var restarted = new List<string>();
        var silos = Configuration.Replicas.Select(r => r.Silo).Where(s => s != _identity).Concat(progress.Where(p => !p.Member).Select(p => p.Silo)).Distinct(StringComparer.Ordinal);
        foreach (var silo in silos)
        {
            if (_members.FindActive(silo) is not { } address)
            {
                continue;
            }
            var known = _incarnations.TryGetValue(silo, out var seen) ? seen : default;
            var incarnation = known.Incarnation;
            if (known.Address != address)
            {
                try
                {
                    var position = await _grains.GetGrain<IReplicaGrain>(ReplicaKey.Of(_partition, silo)).Describe().WaitAsync(_options.ReplicaTimeout, _time);
                    incarnation = position.Incarnation;
                }
                catch (Exception ex) when (ex is DEngineException or OrleansException or TimeoutException)
                {
                    continue; // asked again next round
                }
                if (incarnation is null)
                {
                    continue;
                }
                if (known.Incarnation is not null && known.Incarnation != incarnation && !Configuration.Contains(silo))
                {
                    restarted.Add(silo);
                }
                _incarnations[silo] = (address, incarnation);
            }
            if (Configuration.Find(silo) is { } member && incarnation is not null && member.Incarnation != incarnation)
            {
                mismatched.Add(silo);
            }
        }
        return (mismatched, restarted);
    }

    private bool ReplicaCountsStale() =>
        _partitions > 0 && (_replicasCountedAt == long.MinValue || _time.GetElapsedTime(_replicasCountedAt) > _options.HeartbeatInterval * 10);

    /// <summary>Counts the replicas each silo holds over every partition's stored configuration, to spread new replicas.</summary>
    private async Task CountReplicasAsync()
    {
        var configurations = await Task.WhenAll(Enumerable.Range(0, _partitions).Select(p => _grains.GetGrain<IPartitionConfigurationGrain>(p).Get()));
        var counts = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var replica in configurations.SelectMany(c => c.Replicas))
        {
            counts[replica.Silo] = counts.GetValueOrDefault(replica.Silo) + 1;
        }
        _replicasPerSilo = counts;
        _replicasCountedAt = _time.GetTimestamp();
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Partition {Partition}: silo {Silo} answers from a new data directory (its disk was replaced or wiped); it left the configuration (version {Version}) and is rebuilt from a snapshot.")]
    private partial void LogRebuilding(int partition, string silo, ulong version);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Partition {Partition}: silo {Silo} has been away for DEngine:Replication:ReplaceAfter ({ReplaceAfter}) or is leaving: its copy is forgotten and replaced.")]
    private partial void LogForgotten(int partition, string silo, TimeSpan replaceAfter);

    [LoggerMessage(Level = LogLevel.Information, Message = "Partition {Partition}: building a new replica on silo {Silo} (snapshot, then the log); it joins once caught up.")]
    private partial void LogBuilding(int partition, string silo);

    [LoggerMessage(Level = LogLevel.Information, Message = "Partition {Partition}: replica {Silo} was replaced and left the configuration (version {Version}); its silo drops the copy.")]
    private partial void LogRetired(int partition, string silo, ulong version);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Partition {Partition}: learner {Silo} came back with a new copy; it is caught up from nothing.")]
    private partial void LogLearnerReset(int partition, string silo);

    [LoggerMessage(Level = LogLevel.Information, Message = "Partition {Partition}: moving the replica on silo {From} to silo {To}.")]
    private partial void LogMoveRequested(int partition, string from, string to);
}
