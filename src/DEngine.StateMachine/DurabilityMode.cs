namespace DEngine.StateMachine;

/// <summary>When a write is on stable storage.</summary>
public enum DurabilityMode
{
    /// <summary>
    /// Default. Nothing is acknowledged before its write-ahead log is fsynced: an apply call with
    /// <see cref="ApplyDurability.Default"/> fsyncs before it returns.
    /// </summary>
    Synced,

    /// <summary>
    /// Relaxed: writes reach the OS page cache but are never fsynced by apply. They survive a process
    /// crash, not a power failure or kernel crash. For benchmarks and throw-away data only.
    /// </summary>
    Relaxed,
}
