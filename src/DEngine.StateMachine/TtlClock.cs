namespace DEngine.StateMachine;

/// <summary>TTL arithmetic shared by the engine and the sequencer that stamps expiries.</summary>
public static class TtlClock
{
    /// <summary>The current time as Unix milliseconds (never negative).</summary>
    public static ulong NowUnixMs(TimeProvider time) => (ulong)Math.Max(0, time.GetUtcNow().ToUnixTimeMilliseconds());

    /// <summary>now + ttl seconds, saturating at <see cref="ulong.MaxValue"/> instead of overflowing.</summary>
    public static ulong ExpiryFrom(ulong nowUnixMs, ulong ttlSecs) =>
        ttlSecs > (ulong.MaxValue - nowUnixMs) / 1000 ? ulong.MaxValue : nowUnixMs + ttlSecs * 1000;
}
