using DEngine.Cluster.Tests.Linearizability;
using static DEngine.Cluster.Tests.Linearizability.KvOpKind;

namespace DEngine.Cluster.Tests;

public sealed class LinearizabilityCheckerTests
{
    private static KvOperation Op(int client, KvOpKind kind, long call, long ret, string? value = null, string? expected = null, string? output = null, bool? swapped = null, string key = "k") =>
        new(client, key, kind, call, ret, value, expected, output, swapped);

    [Fact]
    public void A_sequential_history_is_linearizable()
    {
        var history = new[]
        {
            Op(1, Put, 0, 1, value: "a"),
            Op(2, Get, 2, 3, output: "a"),
            Op(1, CompareAndSwap, 4, 5, value: "b", expected: "a", swapped: true),
            Op(2, Get, 6, 7, output: "b"),
            Op(1, Delete, 8, 9),
            Op(2, Get, 10, 11, output: null),
            Op(2, CompareAndSwap, 12, 13, value: "c", expected: null, swapped: true),
        };
        Assert.True(LinearizabilityChecker.Check(history).IsLinearizable);
    }

    [Fact]
    public void A_stale_read_after_a_completed_write_is_rejected()
    {
        var history = new[]
        {
            Op(1, Put, 0, 1, value: "1"),
            Op(1, Put, 2, 3, value: "2"),
            Op(2, Get, 4, 5, output: "1"), // injected stale read: "2" was acknowledged before this read began
        };
        var result = LinearizabilityChecker.Check(history);
        Assert.False(result.IsLinearizable);
        Assert.Equal("k", result.FailingKey);
    }

    [Fact]
    public void A_read_concurrent_with_a_write_may_see_either_value()
    {
        Assert.True(LinearizabilityChecker.Check([Op(1, Put, 0, 1, value: "1"), Op(1, Put, 2, 10, value: "2"), Op(2, Get, 3, 4, output: "1")]).IsLinearizable);
        Assert.True(LinearizabilityChecker.Check([Op(1, Put, 0, 1, value: "1"), Op(1, Put, 2, 10, value: "2"), Op(2, Get, 3, 4, output: "2")]).IsLinearizable);
    }

    [Fact]
    public void Two_reads_that_see_a_concurrent_write_in_opposite_orders_are_rejected()
    {
        var history = new[]
        {
            Op(1, Put, 0, 1, value: "1"),
            Op(1, Put, 2, 20, value: "2"),
            Op(2, Get, 3, 4, output: "2"),
            Op(3, Get, 5, 6, output: "1"), // after a read already saw "2"
        };
        Assert.False(LinearizabilityChecker.Check(history).IsLinearizable);
    }

    [Fact]
    public void Two_successful_cas_from_the_same_expected_value_are_rejected()
    {
        var history = new[]
        {
            Op(1, Put, 0, 1, value: "0"),
            Op(2, CompareAndSwap, 2, 10, value: "x", expected: "0", swapped: true),
            Op(3, CompareAndSwap, 2, 10, value: "y", expected: "0", swapped: true),
        };
        Assert.False(LinearizabilityChecker.Check(history).IsLinearizable);
    }

    [Fact]
    public void A_write_with_unknown_outcome_may_have_happened_or_not()
    {
        var happened = new[] { Op(1, Put, 0, 1, value: "1"), Op(2, Put, 2, long.MaxValue, value: "2"), Op(3, Get, 5, 6, output: "2") };
        var didNot = new[] { Op(1, Put, 0, 1, value: "1"), Op(2, Put, 2, long.MaxValue, value: "2"), Op(3, Get, 5, 6, output: "1") };
        Assert.True(LinearizabilityChecker.Check(happened).IsLinearizable);
        Assert.True(LinearizabilityChecker.Check(didNot).IsLinearizable);
    }

    [Fact]
    public void Keys_are_checked_independently_and_the_failing_key_is_named()
    {
        var history = new[]
        {
            Op(1, Put, 0, 1, value: "a", key: "good"),
            Op(2, Get, 2, 3, output: "a", key: "good"),
            Op(1, Put, 0, 1, value: "a", key: "bad"),
            Op(2, Get, 2, 3, output: "zzz", key: "bad"),
        };
        var result = LinearizabilityChecker.Check(history);
        Assert.False(result.IsLinearizable);
        Assert.Equal("bad", result.FailingKey);
    }

    [Fact]
    public void A_failed_cas_explained_only_by_an_unknown_write_pins_that_write_as_applied()
    {
        // "x" is never read, yet the CAS from "a" failed: x was applied before the CAS returned, so
        // the later read of "a" is impossible (values are unique).
        var history = new[]
        {
            Op(1, Put, 0, 1, value: "a"),
            Op(2, Put, 2, long.MaxValue, value: "x"),
            Op(3, CompareAndSwap, 5, 6, value: "b", expected: "a", swapped: false),
            Op(3, Get, 7, 8, output: "a"),
        };
        Assert.False(LinearizabilityChecker.Check(history).IsLinearizable);
        Assert.True(LinearizabilityChecker.Check(history[..3]).IsLinearizable);
    }

    [Fact]
    public void A_cas_with_an_unknown_outcome_may_have_swapped_or_not()
    {
        var swapped = new[] { Op(1, Put, 0, 1, value: "a"), Op(2, CompareAndSwap, 2, long.MaxValue, value: "b", expected: "a"), Op(3, Get, 5, 6, output: "b") };
        var not = new[] { Op(1, Put, 0, 1, value: "a"), Op(2, CompareAndSwap, 2, long.MaxValue, value: "b", expected: "a"), Op(3, Get, 5, 6, output: "a") };
        var never = new[] { Op(1, Put, 0, 1, value: "c"), Op(2, CompareAndSwap, 2, long.MaxValue, value: "b", expected: "a"), Op(3, Get, 5, 6, output: "b") };
        Assert.True(LinearizabilityChecker.Check(swapped).IsLinearizable);
        Assert.True(LinearizabilityChecker.Check(not).IsLinearizable);
        Assert.False(LinearizabilityChecker.Check(never).IsLinearizable);
    }

    /// <summary>
    /// Eight clients whose puts and deletes all fail with an unknown outcome (a one-attempt client
    /// across a kill), between reads that see none of them: every subset of the pending writes is a distinct
    /// linearized set, which a plain search enumerates. Decided in a few thousand configurations,
    /// both ways.
    /// </summary>
    [Fact]
    public void Many_writes_with_an_unknown_outcome_are_decided_without_enumerating_their_subsets()
    {
        var history = new List<KvOperation> { Op(0, Put, 0, 1, value: "v0") };
        for (var round = 0; round < 6; round++)
        {
            for (var c = 1; c <= 8; c++)
            {
                // Whatever else a client records of a put or delete (here the value it last saw) is not part of its effect.
                history.Add(c % 2 == 0
                    ? Op(c, Delete, 10 + (100 * round) + c, long.MaxValue, expected: $"seen-{round}-{c}")
                    : Op(c, Put, 10 + (100 * round) + c, long.MaxValue, value: $"lost-{round}-{c}", expected: $"seen-{round}-{c}"));
            }
            history.Add(Op(9, Get, 60 + (100 * round), 61 + (100 * round), output: "v0"));
        }
        var linearizable = LinearizabilityChecker.Check(history, maxConfigurations: 10_000);
        Assert.True(linearizable.IsLinearizable, linearizable.Reason);

        history.Add(Op(9, Get, 1000, 1001, output: "never-written"));
        var not = LinearizabilityChecker.Check(history, maxConfigurations: 10_000);
        Assert.False(not.IsLinearizable);
        Assert.StartsWith("not linearizable", not.Reason);
    }

    [Fact]
    public void A_search_past_its_bound_is_reported_inconclusive_not_as_a_verdict()
    {
        var history = new List<KvOperation>();
        for (var c = 0; c < 8; c++)
        {
            history.Add(Op(c, Put, 0, 100, value: $"p{c}"));
        }
        history.Add(Op(9, Get, 200, 201, output: "never-written"));
        var result = LinearizabilityChecker.Check(history, maxConfigurations: 3);
        Assert.False(result.IsLinearizable);
        Assert.StartsWith("inconclusive", result.Reason);
        Assert.StartsWith("not linearizable", LinearizabilityChecker.Check(history).Reason);
    }
}
