using DEngine.Orleans.Configuration;

namespace DEngine.Orleans.Replication;

/// <summary>What the primary knows about one replica of its configuration when it plans a round.</summary>
/// <param name="Silo">The replica's silo.</param>
/// <param name="Answering">False when it answered nothing for the replica timeout (<see cref="Replicator.Unresponsive"/>).</param>
/// <param name="AwayFor">How long its silo has not been an active member; null while it is.</param>
/// <param name="Leaving">Its silo is draining, or an operator asked to move this replica away.</param>
/// <param name="IncarnationMismatch">Its silo answers with another data directory than the configuration names (a lost disk): it holds none of the old replica's data.</param>
public sealed record MemberView(string Silo, bool Answering, TimeSpan? AwayFor, bool Leaving, bool IncarnationMismatch);

/// <summary>What the primary knows about one learner (a copy it ships to that is outside the configuration).</summary>
/// <param name="Silo">The learner's silo.</param>
/// <param name="CaughtUp">It holds everything committed (<see cref="Replicator.CaughtUpLearners"/>).</param>
/// <param name="AwayFor">How long its silo has not been an active member; null while it is.</param>
/// <param name="Leaving">Its silo is draining, or it is the source of a requested move.</param>
public sealed record LearnerView(string Silo, bool CaughtUp, TimeSpan? AwayFor, bool Leaving);

/// <summary>The inputs of one round of <see cref="ReplicaSetRules.Plan"/>.</summary>
/// <param name="Partition">The partition (spreads ties between equally loaded silos).</param>
/// <param name="Primary">This primary's silo.</param>
/// <param name="Members">Every replica of the configuration, the primary included.</param>
/// <param name="Learners">Every learner.</param>
/// <param name="ActiveSilos">The silos that are active members of the cluster now.</param>
/// <param name="Leaving">Silos that must end up holding no replica: draining silos and the sources of requested moves.</param>
/// <param name="Preferred">Silos asked for as move targets, in order: chosen first when a new replica is needed.</param>
/// <param name="ReplicasPerSilo">How many replicas (over all partitions) each silo holds, for spreading new ones; a silo not listed holds none.</param>
public sealed record ReplicaSetView(
    int Partition,
    string Primary,
    IReadOnlyList<MemberView> Members,
    IReadOnlyList<LearnerView> Learners,
    IReadOnlyList<string> ActiveSilos,
    IReadOnlySet<string> Leaving,
    IReadOnlyList<string> Preferred,
    IReadOnlyDictionary<string, int> ReplicasPerSilo);

/// <summary>What one round changes, in the order the primary carries it out.</summary>
/// <param name="Remove">Members to take out of the configuration now and keep as learners: silent ones, and ones on a new data directory (rebuilt from scratch).</param>
/// <param name="CannotRemove">Silent members kept because removing them would go below the floor.</param>
/// <param name="Forget">Learners to stop shipping to: away longer than ReplaceAfter, or leaving.</param>
/// <param name="AddLearners">Silos to start building a new replica on (snapshot, then the log).</param>
/// <param name="Promote">Caught-up learners to add to the configuration.</param>
/// <param name="Retire">Members to take out of the configuration and forget, now that enough others hold the partition: leaving or long-gone ones.</param>
public sealed record ReplicaSetPlan(
    IReadOnlyList<string> Remove,
    IReadOnlyList<string> CannotRemove,
    IReadOnlyList<string> Forget,
    IReadOnlyList<string> AddLearners,
    IReadOnlyList<string> Promote,
    IReadOnlyList<string> Retire);

/// <summary>
/// The primary's rules for its replica set, as one pure function of what it knows (so they are
/// tested without a cluster). Each round:
/// </summary>
/// <remarks>
/// <list type="number">
/// <item>A member that stopped answering, or answers from a new data directory, leaves the
/// configuration (never the primary, never below MinReplicas) and stays a learner: a silent one is
/// shipped to when it returns, a new directory is rebuilt from a snapshot.</item>
/// <item>A learner whose silo has been away for ReplaceAfter is forgotten: waiting longer for it
/// would leave the partition a replica short.</item>
/// <item>The partition wants min(Factor, live silos that are not leaving) replicas. Healthy members
/// and the learners still expected (live, or away for less than ReplaceAfter) count; for what is
/// missing a learner is added on a live silo that holds no copy and is not leaving: requested move
/// targets first, then the silo holding the fewest replicas overall (ties spread by partition).</item>
/// <item>A caught-up learner on a live silo joins while the healthy members are fewer than Factor.</item>
/// <item>Once the healthy members reach the wanted count, members that are leaving or gone for good
/// are retired (never the primary, never below MinReplicas): the replacement is in first.</item>
/// </list>
/// </remarks>
public static class ReplicaSetRules
{
    /// <summary>Plans one round (see the type's remarks).</summary>
    public static ReplicaSetPlan Plan(ReplicaSetView view, ReplicationOptions options)
    {
        ArgumentNullException.ThrowIfNull(view);
        ArgumentNullException.ThrowIfNull(options);
        var floor = options.EffectiveMinReplicas;
        var count = view.Members.Count;
        var remove = new List<string>();
        var cannotRemove = new List<string>();
        foreach (var member in view.Members)
        {
            if (member.Silo == view.Primary || (member.Answering && !member.IncarnationMismatch))
            {
                continue;
            }
            if (count - 1 < floor)
            {
                cannotRemove.Add(member.Silo);
                continue;
            }
            remove.Add(member.Silo);
            count--;
        }
        var remaining = view.Members.Where(m => !remove.Contains(m.Silo)).ToArray();
        var healthy = remaining.Count(m => IsHealthy(m, view.Primary, options));

        // Members removed this round are learners from now on.
        var learners = view.Learners
            .Concat(view.Members.Where(m => remove.Contains(m.Silo)).Select(m => new LearnerView(m.Silo, false, m.AwayFor, m.Leaving)))
            .ToArray();
        var forget = learners.Where(l => l.Leaving || IsGone(l.AwayFor, options)).Select(l => l.Silo).ToList();
        var kept = learners.Where(l => !forget.Contains(l.Silo)).ToArray();

        var eligible = view.ActiveSilos.Where(s => !view.Leaving.Contains(s)).ToArray();
        // Silos that can hold a copy: the eligible live ones, and the away ones whose copies are still
        // waited for (kept learners, until ReplaceAfter). An away learner keeps its slot, but does not
        // shrink the target: a live silo without a copy is still added (after a takeover that found
        // only itself and a returned silo, the returned one must not wait for the dead one's slot).
        var waitedFor = kept.Count(l => l.AwayFor is not null && !eligible.Contains(l.Silo));
        var wanted = options.EffectiveFactor(eligible.Length + waitedFor);
        var holding = healthy + kept.Length;
        var add = new List<string>();
        if (holding < wanted)
        {
            var taken = new HashSet<string>(remaining.Select(m => m.Silo), StringComparer.Ordinal) { view.Primary };
            taken.UnionWith(kept.Select(l => l.Silo));
            var slot = eligible.Length == 0 ? 0 : view.Partition % eligible.Length;
            var candidates = eligible
                .Select((silo, i) => (silo, i))
                .Where(c => !taken.Contains(c.silo))
                .OrderBy(c => view.Preferred.Contains(c.silo) ? 0 : 1)
                .ThenBy(c => view.ReplicasPerSilo.TryGetValue(c.silo, out var n) ? n : 0)
                .ThenBy(c => (c.i - slot + eligible.Length) % eligible.Length)
                .Select(c => c.silo);
            add.AddRange(candidates.Take(wanted - holding));
        }

        var promote = new List<string>();
        var joined = healthy;
        foreach (var learner in kept)
        {
            if (joined >= options.Factor)
            {
                break;
            }
            if (learner.CaughtUp && learner.AwayFor is null && !view.Leaving.Contains(learner.Silo))
            {
                promote.Add(learner.Silo);
                joined++;
            }
        }

        // Retire only against members already in (not this round's promotions): one step per round,
        // each a stored configuration.
        var retire = new List<string>();
        if (healthy >= wanted)
        {
            foreach (var member in remaining)
            {
                if (member.Silo == view.Primary || IsHealthy(member, view.Primary, options) || cannotRemove.Contains(member.Silo))
                {
                    continue;
                }
                if (count - 1 < floor)
                {
                    break;
                }
                retire.Add(member.Silo);
                count--;
            }
        }
        // More healthy members than Factor (a replacement joined while the member it replaced still
        // answered, e.g. under the same name on a new disk or after a move's retries): retire the
        // surplus, never the primary, the silo holding the most replicas first.
        var surplus = remaining.Count(m => !retire.Contains(m.Silo) && IsHealthy(m, view.Primary, options)) - options.Factor;
        foreach (var member in remaining
            .Where(m => m.Silo != view.Primary && !retire.Contains(m.Silo) && IsHealthy(m, view.Primary, options))
            .OrderByDescending(m => view.ReplicasPerSilo.TryGetValue(m.Silo, out var n) ? n : 0)
            .ThenBy(m => m.Silo, StringComparer.Ordinal))
        {
            if (surplus <= 0 || count - 1 < floor)
            {
                break;
            }
            retire.Add(member.Silo);
            surplus--;
            count--;
        }
        return new ReplicaSetPlan(remove, cannotRemove, forget, add, promote, retire);
    }

    /// <summary>A member that holds the partition and stays: answering, on its own data directory, not leaving (the primary: not leaving).</summary>
    private static bool IsHealthy(MemberView member, string primary, ReplicationOptions options) =>
        member.Silo == primary
            ? !member.Leaving
            : member.Answering && !member.IncarnationMismatch && !member.Leaving && !IsGone(member.AwayFor, options);

    private static bool IsGone(TimeSpan? awayFor, ReplicationOptions options) => awayFor is { } away && away >= options.ReplaceAfter;
}
