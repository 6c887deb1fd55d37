namespace DEngine.StateMachine.Snapshots;

/// <summary>When a snapshot is due: every N applied entries since the last one (on-demand snapshots are the caller's call).</summary>
public static class SnapshotPolicy
{
    /// <summary>
    /// True when <paramref name="appliedSinceLast"/> entries have been applied since the last snapshot
    /// and that is at least <paramref name="everyEntries"/>; an interval of 0 turns the policy off.
    /// </summary>
    public static bool IsDue(ulong appliedSinceLast, ulong everyEntries) =>
        everyEntries > 0 && appliedSinceLast >= everyEntries;
}
