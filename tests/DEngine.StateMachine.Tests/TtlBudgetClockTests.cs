using DEngine.StateMachine.Tests.Support;
using static DEngine.StateMachine.Tests.Support.Log;

namespace DEngine.StateMachine.Tests;

/// <summary>The cleanup scan's time budget is measured on the engine's TimeProvider, not on a wall-clock stopwatch.</summary>
public sealed class TtlBudgetClockTests
{
    /// <summary>Wall time from a fake clock; every timestamp read is an hour after the one before.</summary>
    private sealed class HourPerReadClock(TimeProvider wall) : TimeProvider
    {
        private long _ticks;

        public override DateTimeOffset GetUtcNow() => wall.GetUtcNow();

        public override long TimestampFrequency => TimeSpan.TicksPerSecond;

        public override long GetTimestamp() => Interlocked.Add(ref _ticks, TimeSpan.TicksPerHour);
    }

    [Fact]
    public void FindExpired_measures_its_time_budget_on_the_engines_TimeProvider()
    {
        HourPerReadClock? clock = null;
        using var engine = new TestEngine(o => o.TimeProvider = clock = new HourPerReadClock(o.TimeProvider));
        engine.Machine.ApplyChunk(Enumerable.Range(1, 1000).Select(i => Insert((ulong)i, $"/budget/{i:D4}", "v", ttlSecs: 5)).ToArray());
        engine.Clock.Advance(TimeSpan.FromSeconds(5));

        // A minute's budget is spent at the first clock check: the engine's clock says an hour has passed.
        Assert.Equal(256, engine.Machine.FindExpired(engine.NowUnixMs, 10_000, TimeSpan.FromMinutes(1)).Count);
    }
}
