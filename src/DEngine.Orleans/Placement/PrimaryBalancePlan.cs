namespace DEngine.Orleans.Placement;

/// <summary>A partition's primary and replicas (silo names), as the balancer sees them.</summary>
/// <param name="Partition">The partition.</param>
/// <param name="Primary">The silo of its primary.</param>
/// <param name="Replicas">The silos of its replicas, the primary's included.</param>
public sealed record PartitionRoles(int Partition, string Primary, IReadOnlyList<string> Replicas);

/// <summary>One handover of a primary role: partition <paramref name="Partition"/>'s primary moves from silo <paramref name="From"/> to its replica on <paramref name="To"/>.</summary>
/// <param name="Partition">The partition.</param>
/// <param name="From">The silo that leads it now.</param>
/// <param name="To">The replica's silo that leads it next.</param>
public sealed record PrimaryMove(int Partition, string From, string To);

/// <summary>
/// Decides which primary roles move so that every eligible silo leads about as many partitions as
/// any other. Pure: the same roles and silos give the same moves on every silo, so each silo can
/// plan for the whole cluster and carry out only the moves of the roles it holds.
/// </summary>
/// <remarks>
/// A role moves only to a replica of its partition (a handover, no data copied), and only from a
/// silo leading at least two more partitions than the target: a difference of one is "within one of
/// even" and left alone. That margin is the hysteresis: every move lowers the sum of the squared
/// loads, so a plan ends, and a balanced cluster plans nothing (idempotent, no flapping). Partitions
/// led by silos that are not eligible (draining, leaving) are neither counted nor moved here.
/// </remarks>
public static class PrimaryBalancePlan
{
    /// <summary>
    /// At most <paramref name="maxMoves"/> handovers, most loaded silo first, each to the least loaded
    /// eligible replica (ties: silo name, then the lowest partition).
    /// </summary>
    public static IReadOnlyList<PrimaryMove> Plan(IEnumerable<PartitionRoles> partitions, IEnumerable<string> eligible, int maxMoves)
    {
        ArgumentNullException.ThrowIfNull(partitions);
        ArgumentNullException.ThrowIfNull(eligible);
        var silos = eligible.Distinct(StringComparer.Ordinal).Order(StringComparer.Ordinal).ToArray();
        var loads = silos.ToDictionary(s => s, _ => 0, StringComparer.Ordinal);
        var led = silos.ToDictionary(s => s, _ => new SortedSet<int>(), StringComparer.Ordinal);
        var roles = new Dictionary<int, PartitionRoles>();
        foreach (var partition in partitions)
        {
            if (loads.ContainsKey(partition.Primary) && roles.TryAdd(partition.Partition, partition))
            {
                loads[partition.Primary]++;
                led[partition.Primary].Add(partition.Partition);
            }
        }
        var moves = new List<PrimaryMove>();
        var moved = new HashSet<int>();
        while (moves.Count < maxMoves)
        {
            PrimaryMove? best = null;
            foreach (var source in silos.OrderByDescending(s => loads[s]).ThenBy(s => s, StringComparer.Ordinal))
            {
                var bestLoad = int.MaxValue;
                foreach (var partition in led[source])
                {
                    if (moved.Contains(partition))
                    {
                        continue;
                    }
                    foreach (var replica in roles[partition].Replicas.Order(StringComparer.Ordinal))
                    {
                        if (replica != source && loads.TryGetValue(replica, out var load) && load <= loads[source] - 2 && load < bestLoad)
                        {
                            best = new PrimaryMove(partition, source, replica);
                            bestLoad = load;
                        }
                    }
                }
                if (best is not null)
                {
                    break;
                }
            }
            if (best is null)
            {
                break;
            }
            moves.Add(best);
            moved.Add(best.Partition);
            loads[best.From]--;
            loads[best.To]++;
            led[best.From].Remove(best.Partition);
            led[best.To].Add(best.Partition);
        }
        return moves;
    }

    /// <summary>
    /// Where the roles of <paramref name="leaving"/> (partitions led by a silo that stops) go: each to
    /// its least loaded eligible replica (ties: silo name), counting the roles the others lead and the
    /// ones handed to them before, so a stopping silo's roles spread instead of landing on one silo.
    /// A partition without an eligible replica is left out.
    /// </summary>
    public static IReadOnlyDictionary<int, string> HandOverTargets(IEnumerable<PartitionRoles> partitions, IEnumerable<int> leaving, IEnumerable<string> eligible)
    {
        ArgumentNullException.ThrowIfNull(partitions);
        ArgumentNullException.ThrowIfNull(leaving);
        ArgumentNullException.ThrowIfNull(eligible);
        var loads = eligible.Distinct(StringComparer.Ordinal).ToDictionary(s => s, _ => 0, StringComparer.Ordinal);
        var roles = new Dictionary<int, PartitionRoles>();
        foreach (var partition in partitions)
        {
            if (roles.TryAdd(partition.Partition, partition) && loads.ContainsKey(partition.Primary))
            {
                loads[partition.Primary]++;
            }
        }
        var targets = new SortedDictionary<int, string>();
        foreach (var partition in leaving.Distinct().Order())
        {
            if (!roles.TryGetValue(partition, out var role))
            {
                continue;
            }
            var target = role.Replicas
                .Where(r => r != role.Primary && loads.ContainsKey(r))
                .OrderBy(r => loads[r])
                .ThenBy(r => r, StringComparer.Ordinal)
                .FirstOrDefault();
            if (target is not null)
            {
                targets[partition] = target;
                loads[target]++;
            }
        }
        return targets;
    }
}
