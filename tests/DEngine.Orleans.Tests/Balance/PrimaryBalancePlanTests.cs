using DEngine.Orleans.Placement;

namespace DEngine.Orleans.Tests.Balance;

/// <summary>
/// The balancer's plan (<see cref="PrimaryBalancePlan"/>): primary roles end within one of even by
/// handovers to existing replicas only, the same input plans the same moves, a balanced cluster
/// plans none, a round is bounded, and silos that are not eligible get no role.
/// </summary>
public sealed class PrimaryBalancePlanTests
{
    private static readonly string[] Three = ["a", "b", "c"];

    /// <summary>Partitions 0..count-1 led by <paramref name="primary"/>, each with a replica on every silo of <paramref name="replicas"/>.</summary>
    private static List<PartitionRoles> LedBy(string primary, int count, string[] replicas) =>
        [.. Enumerable.Range(0, count).Select(p => new PartitionRoles(p, primary, replicas))];

    /// <summary>Applies plans until one is empty (what the rounds do); returns the final roles and every move.</summary>
    private static (List<PartitionRoles> Roles, List<PrimaryMove> Moves) Converge(List<PartitionRoles> roles, IReadOnlyList<string> eligible, int maxMoves = 2)
    {
        var moves = new List<PrimaryMove>();
        for (var round = 0; round < 100; round++)
        {
            var plan = PrimaryBalancePlan.Plan(roles, eligible, maxMoves);
            if (plan.Count == 0)
            {
                return (roles, moves);
            }
            foreach (var move in plan)
            {
                var index = roles.FindIndex(r => r.Partition == move.Partition);
                Assert.Equal(move.From, roles[index].Primary);
                roles[index] = roles[index] with { Primary = move.To };
            }
            moves.AddRange(plan);
        }
        throw new InvalidOperationException("the plan did not converge within 100 rounds (flapping)");
    }

    private static Dictionary<string, int> Loads(IEnumerable<PartitionRoles> roles, IEnumerable<string> silos) =>
        silos.ToDictionary(s => s, s => roles.Count(r => r.Primary == s));

    [Fact]
    public void Sixteen_primaries_on_one_of_three_silos_end_within_one_of_even_by_handovers_to_replicas_only()
    {
        var roles = LedBy("a", 16, Three);
        var (final, moves) = Converge(roles, Three);
        var loads = Loads(final, Three);
        Assert.True(loads.Values.Max() - loads.Values.Min() <= 1, $"loads {string.Join(", ", loads)}");
        Assert.Equal(16, loads.Values.Sum());
        Assert.All(moves, m => Assert.Contains(m.To, Three));
        // Each role moves at most once: ten handovers, no more (a plan that moved roles back and forth would need more).
        Assert.Equal(16 - 6, moves.Count);
    }

    [Fact]
    public void A_cluster_within_one_of_even_plans_no_handover()
    {
        var roles = new List<PartitionRoles>
        {
            new(0, "a", Three), new(1, "a", Three), new(2, "a", Three),
            new(3, "b", Three), new(4, "b", Three),
            new(5, "c", Three), new(6, "c", Three),
        };
        Assert.Empty(PrimaryBalancePlan.Plan(roles, Three, 8));
    }

    [Fact]
    public void The_same_roles_plan_the_same_moves_whatever_order_they_are_listed_in()
    {
        var roles = LedBy("b", 9, Three);
        var reversed = Enumerable.Reverse(roles).ToList();
        var plan = PrimaryBalancePlan.Plan(roles, ["c", "a", "b"], 4);
        Assert.Equal(plan, PrimaryBalancePlan.Plan(reversed, Three, 4));
        Assert.Equal(4, plan.Count);
    }

    [Fact]
    public void A_round_plans_at_most_the_bound_of_handovers()
    {
        Assert.Single(PrimaryBalancePlan.Plan(LedBy("a", 16, Three), Three, 1));
        Assert.Equal(3, PrimaryBalancePlan.Plan(LedBy("a", 16, Three), Three, 3).Count);
    }

    [Fact]
    public void A_silo_that_is_not_eligible_is_given_no_primary_role()
    {
        // "c" is draining or leaving: it holds replicas but must not lead.
        var (final, moves) = Converge(LedBy("a", 10, Three), ["a", "b"]);
        Assert.DoesNotContain(moves, m => m.To == "c");
        Assert.Equal(5, final.Count(r => r.Primary == "a"));
        Assert.Equal(5, final.Count(r => r.Primary == "b"));
    }

    [Fact]
    public void A_role_moves_only_to_a_silo_holding_a_replica_of_its_partition()
    {
        // Four silos, replicas on three: partition p has no replica on silo "d" when p is even.
        string[] four = ["a", "b", "c", "d"];
        var roles = Enumerable.Range(0, 12).Select(p => new PartitionRoles(p, "a", p % 2 == 0 ? ["a", "b", "c"] : ["a", "c", "d"])).ToList();
        var (final, moves) = Converge(roles, four);
        Assert.All(moves, m => Assert.Contains(m.To, roles.Single(r => r.Partition == m.Partition).Replicas));
        var loads = Loads(final, four);
        Assert.True(loads.Values.Max() - loads.Values.Min() <= 1, $"loads {string.Join(", ", loads)}");
    }

    [Fact]
    public void A_stopping_silos_roles_are_spread_over_the_least_loaded_replicas()
    {
        // "a" stops with six roles; "b" already leads two, "c" none.
        var roles = LedBy("a", 6, Three);
        roles.Add(new PartitionRoles(6, "b", Three));
        roles.Add(new PartitionRoles(7, "b", Three));
        var targets = PrimaryBalancePlan.HandOverTargets(roles, Enumerable.Range(0, 6), ["b", "c"]);
        Assert.Equal(6, targets.Count);
        Assert.Equal(4, targets.Values.Count(t => t == "c"));
        Assert.Equal(2, targets.Values.Count(t => t == "b"));
    }
}
