using DEngine.StateMachine.Tests.Support;
using static DEngine.StateMachine.Tests.Support.Log;

namespace DEngine.StateMachine.Tests;

public sealed class TtlRoundBoundsTests
{
    [Fact]
    public void FindExpired_stops_when_its_time_budget_is_spent_and_the_next_round_continues()
    {
        using var engine = new TestEngine();
        var machine = engine.Machine;
        machine.ApplyChunk(Enumerable.Range(1, 1000).Select(i => Insert((ulong)i, $"/budget/{i:D4}", "v", ttlSecs: 5)).ToArray());
        engine.Clock.Advance(TimeSpan.FromSeconds(5));

        // A spent budget stops the scan at its first clock check (every 256 keys).
        var first = machine.FindExpired(engine.NowUnixMs, 10_000, TimeSpan.Zero);
        Assert.Equal(256, first.Count);
        machine.ApplyChunk([ExpireKeys(1001, engine.NowUnixMs, first)]);

        var rest = machine.FindExpired(engine.NowUnixMs, 10_000, TimeSpan.FromMinutes(1));
        Assert.Equal(1000 - 256, rest.Count);
        Assert.Empty(first.Select(k => Convert.ToHexString(k.Key)).Intersect(rest.Select(k => Convert.ToHexString(k.Key))));
    }

    [Fact]
    public void TtlIndexEstimate_counts_keys_with_a_ttl_and_not_keys_without()
    {
        using var engine = new TestEngine();
        engine.Machine.ApplyChunk(Enumerable.Range(1, 100).Select(i => Insert((ulong)i, $"/ttl/{i:D3}", "v", ttlSecs: 60)).ToArray());
        engine.Machine.ApplyChunk(Enumerable.Range(101, 50).Select(i => Insert((ulong)i, $"/plain/{i:D3}", "v")).ToArray());

        Assert.Equal(100, engine.Machine.TtlIndexEstimate);
    }
}
