using DEngine.Orleans.Configuration;
using DEngine.Orleans.Partitions;
using DEngine.Orleans.Replication;
using Microsoft.Extensions.Time.Testing;

namespace DEngine.Orleans.Tests.Replication;

/// <summary>
/// The primary's replica-set rules (<see cref="ReplicaSetRules"/>) over a fake clock: when a replica
/// is waited for, when it is replaced and where, how a lost disk is rebuilt, and how moves and drains
/// retire a replica only once its replacement is in.
/// </summary>
public sealed class ReplicaSetRulesTests
{
    private static readonly ReplicationOptions Options = new() { ReplaceAfter = TimeSpan.FromMinutes(5) };
    private static readonly HashSet<string> NoOne = new(StringComparer.Ordinal);
    private static readonly Dictionary<string, int> NoCounts = new(StringComparer.Ordinal);
    private readonly FakeTimeProvider _time = new();

    private static MemberView Member(string silo, bool answering = true, TimeSpan? away = null, bool leaving = false, bool newDisk = false) =>
        new(silo, answering, away, leaving, newDisk);

    private static ReplicaSetView View(
        MemberView[] members,
        LearnerView[] learners,
        string[] active,
        IReadOnlySet<string>? leaving = null,
        string[]? preferred = null,
        IReadOnlyDictionary<string, int>? counts = null,
        int partition = 0) =>
        new(partition, "a", members, learners, active, leaving ?? NoOne, preferred ?? [], counts ?? NoCounts);

    [Fact]
    public void A_learner_on_a_silo_away_for_less_than_ReplaceAfter_is_waited_for_and_after_it_is_forgotten_and_replaced_on_a_live_silo_without_a_copy()
    {
        var absence = new SiloAbsence(_time);
        string[] active = ["a", "b", "d"];
        absence.Observe(["a", "b", "c"], s => active.Contains(s));
        // c was removed from the configuration after ReplicaTimeout and is a learner now.
        ReplicaSetPlan PlanNow() => ReplicaSetRules.Plan(
            View([Member("a"), Member("b")], [new LearnerView("c", false, absence.AwayFor("c"), false)], active),
            Options);

        _time.Advance(Options.ReplaceAfter - TimeSpan.FromSeconds(1));
        var waiting = PlanNow();
        Assert.Empty(waiting.Forget);
        Assert.Empty(waiting.AddLearners);

        _time.Advance(TimeSpan.FromSeconds(1));
        var replacing = PlanNow();
        Assert.Equal(["c"], replacing.Forget);
        Assert.Equal(["d"], replacing.AddLearners);
        Assert.Empty(replacing.Retire);
    }

    [Fact]
    public void A_primary_alone_in_its_configuration_builds_a_copy_on_a_returned_silo_while_it_still_waits_for_an_away_one()
    {
        // Three silos, Factor 3: b died and c restarted; a took over alone (c was out of the
        // configuration, b did not answer). b keeps its slot until ReplaceAfter, but c, live and
        // without a copy, is built at once: the partition must not stay below the floor waiting for b.
        var plan = ReplicaSetRules.Plan(
            View([Member("a")], [new LearnerView("b", false, TimeSpan.FromSeconds(20), false)], ["a", "c"]),
            Options);
        Assert.Equal(["c"], plan.AddLearners);
        Assert.Empty(plan.Forget);
    }

    [Fact]
    public void A_configuration_with_more_healthy_members_than_Factor_retires_the_surplus_but_never_the_primary()
    {
        var plan = ReplicaSetRules.Plan(View([Member("a"), Member("b"), Member("c"), Member("d")], [], ["a", "b", "c", "d"]), Options);
        var retired = Assert.Single(plan.Retire);
        Assert.NotEqual("a", retired);
        var settled = ReplicaSetRules.Plan(View([Member("a"), Member("b"), Member("c")], [], ["a", "b", "c", "d"]), Options);
        Assert.Empty(settled.Retire);
    }

    [Fact]
    public void A_silo_that_returns_before_ReplaceAfter_starts_its_absence_over()
    {
        var absence = new SiloAbsence(_time);
        absence.Observe(["c"], _ => false);
        _time.Advance(TimeSpan.FromMinutes(4));
        absence.Observe(["c"], _ => true);
        absence.Observe(["c"], _ => false);
        _time.Advance(TimeSpan.FromMinutes(4));

        Assert.Equal(TimeSpan.FromMinutes(4), absence.AwayFor("c"));
    }

    [Fact]
    public void A_new_replica_goes_to_the_live_silo_holding_the_fewest_replicas()
    {
        var counts = new Dictionary<string, int>(StringComparer.Ordinal) { ["d"] = 9, ["e"] = 2, ["f"] = 5 };

        var plan = ReplicaSetRules.Plan(
            View([Member("a"), Member("b")], [new LearnerView("c", false, TimeSpan.FromMinutes(6), false)], ["a", "b", "d", "e", "f"], counts: counts),
            Options);

        Assert.Equal(["e"], plan.AddLearners);
    }

    [Fact]
    public void A_caught_up_replacement_joins_and_in_the_next_round_the_silent_member_kept_by_the_floor_is_removed()
    {
        var options = new ReplicationOptions { Factor = 3, MinReplicas = 3 };
        // c went silent; the floor of 3 keeps it in the configuration, so d is built in its place.
        var first = ReplicaSetRules.Plan(View([Member("a"), Member("b"), Member("c", answering: false, away: TimeSpan.FromMinutes(1))], [], ["a", "b", "d"]), options);
        Assert.Equal(["c"], first.CannotRemove);
        Assert.Equal(["d"], first.AddLearners);

        var joining = ReplicaSetRules.Plan(View([Member("a"), Member("b"), Member("c", answering: false, away: TimeSpan.FromMinutes(2))], [new LearnerView("d", true, null, false)], ["a", "b", "d"]), options);
        Assert.Equal(["d"], joining.Promote);

        var after = ReplicaSetRules.Plan(View([Member("a"), Member("b"), Member("c", answering: false, away: TimeSpan.FromMinutes(2)), Member("d")], [], ["a", "b", "d"]), options);
        Assert.Equal(["c"], after.Remove);
        Assert.Empty(after.CannotRemove);
    }

    [Fact]
    public void A_member_on_a_new_data_directory_leaves_the_configuration_and_is_rebuilt_as_a_learner_not_counted()
    {
        var plan = ReplicaSetRules.Plan(View([Member("a"), Member("b"), Member("c", newDisk: true)], [], ["a", "b", "c"]), Options);

        Assert.Equal(["c"], plan.Remove);
        Assert.Empty(plan.Forget);
        // It is the learner being built (live, not gone): no other silo is needed.
        Assert.Empty(plan.AddLearners);
        Assert.Empty(plan.Promote);
    }

    [Fact]
    public void A_member_on_a_new_data_directory_is_kept_at_the_floor_but_a_copy_is_built_elsewhere()
    {
        var plan = ReplicaSetRules.Plan(View([Member("a"), Member("c", newDisk: true)], [], ["a", "c", "d"]), Options);

        Assert.Equal(["c"], plan.CannotRemove);
        Assert.Equal(["d"], plan.AddLearners);
    }

    [Fact]
    public void A_draining_replica_is_retired_only_after_its_replacement_joined()
    {
        var draining = new HashSet<string>(StringComparer.Ordinal) { "c" };
        string[] active = ["a", "b", "c", "d"];

        var start = ReplicaSetRules.Plan(View([Member("a"), Member("b"), Member("c", leaving: true)], [], active, draining), Options);
        Assert.Equal(["d"], start.AddLearners);
        Assert.Empty(start.Retire);

        var building = ReplicaSetRules.Plan(View([Member("a"), Member("b"), Member("c", leaving: true)], [new LearnerView("d", false, null, false)], active, draining), Options);
        Assert.Empty(building.AddLearners);
        Assert.Empty(building.Promote);
        Assert.Empty(building.Retire);

        var caughtUp = ReplicaSetRules.Plan(View([Member("a"), Member("b"), Member("c", leaving: true)], [new LearnerView("d", true, null, false)], active, draining), Options);
        Assert.Equal(["d"], caughtUp.Promote);
        Assert.Empty(caughtUp.Retire);

        var joined = ReplicaSetRules.Plan(View([Member("a"), Member("b"), Member("c", leaving: true), Member("d")], [], active, draining), Options);
        Assert.Equal(["c"], joined.Retire);
    }

    [Fact]
    public void A_moved_replica_is_built_on_the_requested_silo_before_any_other()
    {
        var counts = new Dictionary<string, int>(StringComparer.Ordinal) { ["d"] = 0, ["e"] = 7 };
        var leaving = new HashSet<string>(StringComparer.Ordinal) { "b" };

        var plan = ReplicaSetRules.Plan(View([Member("a"), Member("b", leaving: true), Member("c")], [], ["a", "b", "c", "d", "e"], leaving, preferred: ["e"], counts: counts), Options);

        Assert.Equal(["e"], plan.AddLearners);
    }

    [Fact]
    public void The_primary_is_never_removed_or_retired_and_no_change_goes_below_the_floor()
    {
        var leaving = new HashSet<string>(StringComparer.Ordinal) { "a", "b" };

        var plan = ReplicaSetRules.Plan(View([Member("a", leaving: true), Member("b", leaving: true)], [], ["a", "b"], leaving), Options);

        Assert.DoesNotContain("a", plan.Retire);
        Assert.DoesNotContain("a", plan.Remove);
        Assert.Empty(plan.Retire);
    }

    [Fact]
    public void A_draining_silo_gets_no_new_replica()
    {
        var draining = new HashSet<string>(StringComparer.Ordinal) { "d" };

        var plan = ReplicaSetRules.Plan(View([Member("a"), Member("b")], [new LearnerView("c", false, TimeSpan.FromMinutes(9), false)], ["a", "b", "d", "e"], draining), Options);

        Assert.Equal(["e"], plan.AddLearners);
    }

    [Fact]
    public void A_learner_on_a_draining_silo_is_forgotten()
    {
        var draining = new HashSet<string>(StringComparer.Ordinal) { "c" };

        var plan = ReplicaSetRules.Plan(View([Member("a"), Member("b")], [new LearnerView("c", true, null, true)], ["a", "b", "c", "d"], draining), Options);

        Assert.Equal(["c"], plan.Forget);
        Assert.Empty(plan.Promote);
        Assert.Equal(["d"], plan.AddLearners);
    }

    [Fact]
    public void A_copy_is_surplus_only_when_the_latest_configuration_does_not_count_this_silo_with_this_incarnation()
    {
        var mine = new ReplicaId("c", "inc-new");
        var configuration = new PartitionConfiguration(7, new ReplicaId("a", "i1"), [new ReplicaId("a", "i1"), new ReplicaId("b", "i2")]);

        Assert.True(SurplusCopySweeper.IsSurplus(configuration, mine.Silo, mine.Incarnation));
        Assert.False(SurplusCopySweeper.IsSurplus(configuration.WithReplica(mine).Next(), mine.Silo, mine.Incarnation));
        Assert.True(SurplusCopySweeper.IsSurplus(configuration.WithReplica(new ReplicaId("c", "inc-old")), mine.Silo, mine.Incarnation));
        Assert.False(SurplusCopySweeper.IsSurplus(PartitionConfiguration.Empty, mine.Silo, mine.Incarnation));
    }

    [Fact]
    public void A_takeover_counts_only_replicas_answering_with_the_incarnation_the_configuration_names()
    {
        var configuration = new PartitionConfiguration(3, new ReplicaId("a", "i1"), [new ReplicaId("a", "i1"), new ReplicaId("b", "i2")]);
        var position = new CopyPosition(3, 10, 3, 10, 10, 0);

        Assert.True(ReplicatedActivation.HoldsConfiguredData(configuration, "b", position with { Incarnation = "i2" }));
        Assert.False(ReplicatedActivation.HoldsConfiguredData(configuration, "b", position with { Incarnation = "wiped" }));
        Assert.False(ReplicatedActivation.HoldsConfiguredData(configuration, "b", position));
        Assert.False(ReplicatedActivation.HoldsConfiguredData(configuration, "c", position with { Incarnation = "i2" }));
    }

    [Theory]
    [InlineData(5)]
    [InlineData(60 * 24 * 8)]
    public void ReplaceAfter_below_the_replica_timeout_or_above_seven_days_is_rejected_naming_the_key(int seconds)
    {
        var options = new DEngineOptions();
        options.Replication.ReplaceAfter = seconds == 5 ? TimeSpan.FromSeconds(seconds) : TimeSpan.FromMinutes(seconds);

        var problem = options.Validate();

        Assert.NotNull(problem);
        Assert.StartsWith("DEngine:Replication:ReplaceAfter must ", problem);
    }

    [Fact]
    public void ReplaceAfter_defaults_to_five_minutes()
    {
        Assert.Equal(TimeSpan.FromMinutes(5), new ReplicationOptions().ReplaceAfter);
        Assert.Null(new DEngineOptions().Validate());
    }
}
