using DEngine.Orleans.Configuration;
using DEngine.Orleans.Replication;
using DEngine.StateMachine;
using Microsoft.Extensions.Logging;
using Orleans;

namespace DEngine.Orleans.Partitions;

/// <summary>
/// How a replicated partition gets a primary: the activation becomes primary of a new configuration
/// version, or answers PartitionUnavailable. PacificA's change of primary, step by step:
/// </summary>
/// <remarks>
/// <list type="number">
/// <item>Read the configuration. A silo outside it, or a primary that is still active elsewhere,
/// means this activation is in the wrong place: it answers retryably and moves on.</item>
/// <item>Promote this silo's copy and every active replica's copy to the new version: from then on
/// the old primary gets no acknowledgement from them, so it can commit nothing more and its lease
/// runs out at most a lease after this copy last acknowledged it.</item>
/// <item>Store the new configuration by compare-and-swap: this silo primary, the replicas that
/// answered. Losing the swap means another silo won: answer retryably.</item>
/// <item>Take the longest log (highest term, then index) among the answering replicas: fetch what
/// this copy lacks of it. Any replica of the latest configuration holds every committed entry, so
/// this only keeps entries that may have been committed without the old primary saying so.</item>
/// <item>Write a Noop in the new term and wait until it is committed (everything before it is then
/// committed and applied here) and the old lease is over (not waited for after a clean handover
/// to this silo, see <see cref="ReplicatedPrimary.HandOverAsync"/>); only then serve.</item>
/// </list>
/// A new partition (version 0) is the same path with the replicas chosen from the active silos.
/// </remarks>
public sealed partial class ReplicatedActivation(
    int partition,
    string identity,
    SiloIncarnation incarnation,
    DEngineOptions options,
    ReplicaRegistry registry,
    IGrainFactory grains,
    SiloMembers members,
    TimeProvider time,
    ILogger logger,
    DrainState? drain = null)
{
    private static readonly TimeSpan PromoteTimeout = TimeSpan.FromSeconds(3);

    private ReplicationOptions Replication => options.Replication;

    /// <summary>
    /// Runs the activation. Returns the serving primary, or throws the PartitionUnavailable the
    /// caller is told (with the silo to move to, when known, in <see cref="DataSilo"/>).
    /// </summary>
    public async Task<ReplicatedPrimary> ActivateAsync(Action<IReadOnlyList<ApplyEntry>, IReadOnlyList<ApplyResult>> recordApplied)
    {
        var store = grains.GetGrain<IPartitionConfigurationGrain>(partition);
        var config = await store.Get();
        if (config.Version > 0)
        {
            if (config.Find(identity) is not { } me)
            {
                DataSilo = config.Primary?.Silo;
                throw Unavailable($"this silo holds no replica of it (replicas: {string.Join(", ", config.Replicas.Select(r => r.Silo))}). Retry; it is served by its primary.");
            }
            if (me.Incarnation != incarnation.Value)
            {
                // Named primary but without the data: placement keeps choosing this silo while it is
                // active, so name a replica that has the data instead (it then takes over, fencing as usual).
                DataSilo = config.Primary?.Silo == identity ? await NameAnotherPrimaryAsync(store, config, new HashSet<string>()) : config.Primary?.Silo;
                throw Unavailable($"this silo's data directory is a new one (incarnation {incarnation.Value}, the configuration names {me.Incarnation}): its copy holds none of the acknowledged entries and must not serve. Retry; another replica takes over.");
            }
            if (config.Primary is { } current && current.Silo != identity && members.IsActive(current.Silo))
            {
                DataSilo = current.Silo;
                throw Unavailable($"its primary is silo '{current.Silo}', which is active. Retry.");
            }
            if (drain is not null && (await drain.CurrentAsync()) is var draining && draining.Contains(identity)
                && await NameAnotherPrimaryAsync(store, config, draining) is { } other)
            {
                DataSilo = other;
                throw Unavailable($"this silo is draining (it takes no primary role); silo '{other}' is named its primary. Retry.");
            }
        }
        // The previous primary was this process's own activation (deactivated: it serves nothing) of the
        // stored version, which had waited out every older lease: no lease can still run.
        var ownLeaseOnly = config.Version > 0 && config.Primary?.Silo == identity
            && registry.LastPrimaryVersion(partition) == config.Version && !registry.Primaries.Contains(partition);
        var copy = await Task.Run(() => registry.Open(partition));
        var others = config.Version > 0
            ? config.Replicas.Select(r => r.Silo).Where(s => s != identity && members.IsActive(s)).ToArray()
            : ChooseReplicas();
        var version = Math.Max(config.Version, copy.Version) + 1;
        var answers = await Task.WhenAll(others.Select(silo => PromoteAsync(silo, version)));
        var responding = answers.Where(a => a.Position is not null).ToArray();
        // A copy that saw a higher version than ours (a concurrent takeover) makes ours lose the swap below; outbid what was seen.
        version = Math.Max(version, responding.Select(a => a.Position!.Version).DefaultIfEmpty(0ul).Max());
        // A replica whose silo answers from another data directory than the configuration names lost
        // its disk: it holds none of what the old one acknowledged, so it is neither counted nor taken
        // as the longest log (the primary rebuilds it as a learner).
        var answered = responding.Where(a => config.Version == 0 || HoldsConfiguredData(config, a.Silo, a.Position!)).ToArray();
        foreach (var lost in responding.Except(answered))
        {
            LogNewIncarnation(logger, partition, lost.Silo, lost.Position!.Incarnation ?? "?", config.Find(lost.Silo)?.Incarnation ?? "?");
        }
        copy.Promote(version);
        var lastAcknowledged = copy.LastAcknowledgedAt;
        var self = new ReplicaId(identity, incarnation.Value);
        var replicas = answered.Select(a => config.Find(a.Silo) ?? new ReplicaId(a.Silo, a.Position!.Incarnation ?? "")).ToList();
        var proposed = new PartitionConfiguration(version, self, [self, .. replicas]);
        var change = await store.CompareAndSwap(config.Version, proposed);
        if (!change.Won)
        {
            DataSilo = change.Current.Primary?.Silo;
            throw Unavailable($"silo '{change.Current.Primary?.Silo}' became its primary first (version {change.Current.Version}). Retry.");
        }
        await TakeLongestLogAsync(copy, version, answered);
        var leaseWait = LeaseWait(config, identity, ownLeaseOnly, Replication.NewPrimaryReadDelay, time.GetElapsedTime(lastAcknowledged));
        var primary = new ReplicatedPrimary(partition, identity, change.Current, copy, Replication, options.MaxQueuedWrites, grains, members, time, logger, recordApplied, registry.Metrics, drain, options.Partitions);
        await primary.StartAsync(leaseWait);
        // The replicas of the old configuration that did not answer are waited for as learners (for
        // ReplaceAfter, then replaced), as they would have been by the old primary; those on a new
        // data directory start from nothing.
        foreach (var missing in config.Replicas.Select(r => r.Silo).Where(s => s != identity && !change.Current.Contains(s)))
        {
            primary.Replicator.AddLearner(missing);
        }
        LogPrimary(logger, partition, identity, version, string.Join(", ", change.Current.Replicas.Select(r => r.Silo)), copy.Engine.LastApplied.Index);
        if (!Replication.CanWrite(change.Current.Replicas.Length))
        {
            LogBelowFloor(logger, partition, change.Current.Replicas.Length, Replication.EffectiveMinReplicas);
        }
        return primary;
    }

    /// <summary>
    /// How long a new primary on <paramref name="identity"/> waits before serving reads, having won the
    /// compare-and-swap from <paramref name="stored"/>: <paramref name="readDelay"/> (LeaseDuration ×
    /// (1 + MaxClockDrift)) less the time since its copy last acknowledged the old primary
    /// (<paramref name="sinceLastAcknowledged"/>), or nothing when no other lease can still run:
    /// <list type="bullet">
    /// <item><paramref name="ownLeaseOnly"/>: the last primary was this process's own activation, gone now.</item>
    /// <item>A clean handover to this silo (<see cref="PartitionConfiguration.HandedOverBy"/>, written by
    /// <see cref="ReplicatedPrimary.HandOverAsync"/>): the primary of the version before wrote the
    /// stored configuration itself, after it had stopped serving reads for good; winning the swap from
    /// exactly that version means nobody took over in between; and that primary had waited out every
    /// older lease before it first served. A takeover of any other kind (a crash, a handover to
    /// another silo or of unknown outcome) carries no mark and waits.</item>
    /// </list>
    /// </summary>
    internal static TimeSpan LeaseWait(PartitionConfiguration stored, string identity, bool ownLeaseOnly, TimeSpan readDelay, TimeSpan sinceLastAcknowledged)
    {
        var handedOverHere = stored.Version > 0 && stored.HandedOverBy is not null && stored.Primary?.Silo == identity;
        return ownLeaseOnly || handedOverHere ? TimeSpan.Zero : readDelay - sinceLastAcknowledged;
    }

    /// <summary>The silo to move to when the activation is in the wrong place, or null.</summary>
    public string? DataSilo { get; private set; }

    private DEngineException Unavailable(string why) =>
        new(DEngineErrorCode.PartitionUnavailable, $"Partition {partition} is unavailable on silo '{identity}': {why}", partition);

    /// <summary>For a new partition: this silo and the next active silos after the partition's slot, up to the factor.</summary>
    private string[] ChooseReplicas()
    {
        var active = members.ActiveNames().Where(s => s != identity).ToArray();
        var start = active.Length == 0 ? 0 : partition % active.Length;
        var count = Math.Max(0, Replication.EffectiveFactor(active.Length + 1) - 1);
        return [.. Enumerable.Range(0, active.Length).Select(i => active[(start + i) % active.Length]).Take(count)];
    }

    /// <summary>
    /// Stores a configuration naming another active replica (not draining, and not this silo) the
    /// primary, so placement puts the partition there and it takes over; returns its silo, or null
    /// when there is none or the swap lost (the next call looks again). Only the primary field changes:
    /// the taker still fences the replicas with a higher version before it serves.
    /// </summary>
    private async Task<string?> NameAnotherPrimaryAsync(IPartitionConfigurationGrain store, PartitionConfiguration config, IReadOnlySet<string> draining)
    {
        if (config.Replicas.FirstOrDefault(r => r.Silo != identity && !draining.Contains(r.Silo) && members.IsActive(r.Silo)) is not { } other)
        {
            return null;
        }
        try
        {
            var change = await store.CompareAndSwap(config.Version, config.WithPrimary(other).Next());
            return change.Won ? other.Silo : change.Current.Primary?.Silo;
        }
        catch (DEngineException ex)
        {
            LogPromoteFailed(logger, partition, other.Silo, ex.Message);
            return null;
        }
    }

    /// <summary>True when the copy on <paramref name="silo"/> answered with the incarnation <paramref name="config"/> names for it.</summary>
    internal static bool HoldsConfiguredData(PartitionConfiguration config, string silo, CopyPosition position) =>
        config.Find(silo) is { } replica && position.Incarnation is { } incarnation && replica.Incarnation == incarnation;

    private async Task<(string Silo, CopyPosition? Position)> PromoteAsync(string silo, ulong version)
    {
        try
        {
            var position = await grains.GetGrain<IReplicaGrain>(ReplicaKey.Of(partition, silo)).Promote(version).WaitAsync(PromoteTimeout, time);
            return (silo, position);
        }
        catch (Exception ex) when (ex is DEngineException or OrleansException or TimeoutException)
        {
            // Not answering: it is left out of the new configuration, and added back once caught up.
            LogPromoteFailed(logger, partition, silo, ex.Message);
            return (silo, null);
        }
    }

    /// <summary>Brings this copy to the longest log among the answering replicas, when one is longer than ours.</summary>
    private async Task TakeLongestLogAsync(ReplicaCopy copy, ulong version, (string Silo, CopyPosition? Position)[] answered)
    {
        var mine = copy.Position;
        var longest = answered
            .Where(a => mine.Last.IsOlderThan(a.Position!.Last))
            .OrderByDescending(a => a.Position!.LastTerm)
            .ThenByDescending(a => a.Position!.LastIndex)
            .FirstOrDefault();
        if (longest.Position is null)
        {
            return;
        }
        var source = grains.GetGrain<IReplicaGrain>(ReplicaKey.Of(partition, longest.Silo));
        // Committed entries are the same everywhere, so the copies agree up to our commit index.
        var next = mine.CommitIndex + 1;
        while (next <= longest.Position.LastIndex)
        {
            var entries = await source.ReadLog(next, ReplicaCopy.MaxApplyEntries, 4L << 20);
            if (entries.Length == 0)
            {
                break;
            }
            var prev = next - 1;
            var prevTerm = await Task.Run(() => copy.TermAt(prev));
            var request = new AppendRequest(partition, version, longest.Silo, prev, prevTerm, entries, Math.Min(longest.Position.CommitIndex, entries[^1].Index));
            var answer = await Task.Run(() => copy.Append(request));
            if (answer.Status != AppendStatus.Appended)
            {
                throw Unavailable($"taking the longer log of silo '{longest.Silo}' failed ({answer.Status}). Retry.");
            }
            next = entries[^1].Index + 1;
        }
        LogTookLongest(logger, partition, longest.Silo, longest.Position.LastIndex, longest.Position.LastTerm);
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "Partition {Partition}: silo {Silo} is primary of configuration version {Version} (replicas {Replicas}), applied up to {Applied}.")]
    private static partial void LogPrimary(ILogger logger, int partition, string silo, ulong version, string replicas, ulong applied);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Partition {Partition}: only {Count} replica(s), below MinReplicas = {MinReplicas}: writes are refused until another silo holds a copy.")]
    private static partial void LogBelowFloor(ILogger logger, int partition, int count, int minReplicas);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Partition {Partition}: the copy on silo {Silo} did not answer the promotion ({Reason}); it is left out of the new configuration.")]
    private static partial void LogPromoteFailed(ILogger logger, int partition, string silo, string reason);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Partition {Partition}: silo {Silo} answers from a new data directory (incarnation {Incarnation}, the configuration names {Configured}): it is left out of the new configuration and rebuilt.")]
    private static partial void LogNewIncarnation(ILogger logger, int partition, string silo, string incarnation, string configured);

    [LoggerMessage(Level = LogLevel.Information, Message = "Partition {Partition}: took the longer log of silo {Silo} (up to {Index}/{Term}).")]
    private static partial void LogTookLongest(ILogger logger, int partition, string silo, ulong index, ulong term);
}
