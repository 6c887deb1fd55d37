namespace DEngine.Orleans;

/// <summary>
/// The default per-call deadline of a client (how long it keeps retrying one write under the same
/// session and sequence), shared by both sides: the silo validates that it keeps a session's
/// tombstone longer than this, so a retry that arrives while its client still waits is refused with
/// SessionExpired instead of opening the session afresh.
/// </summary>
public static class ClientRetryDeadline
{
    /// <summary>30 s.</summary>
    public static readonly TimeSpan Default = TimeSpan.FromSeconds(30);
}
