namespace DEngine.StateMachine;

/// <summary>
/// The bounds of the exactly-once session table of one partition. Constants, not options: apply
/// judges a write against them, and every replica must judge it the same whatever it was configured
/// with (as <see cref="ChunkRules"/> does), so changing one is a change of the log format.
/// </summary>
/// <remarks>
/// At a bound a write is refused, never applied without being recorded: it gets
/// <see cref="ApplyStatus.SessionExpired"/> and nothing is written, so the caller knows it was not
/// applied and continues under a new session (the table keeps the refusing session's recorded
/// responses, so its earlier writes can still be retried). A session whose client keeps fewer than
/// <see cref="MaxRecordedPerSession"/> writes to the partition in flight never meets the per-session
/// bound; the partition-wide ones are met only when more sessions stay active within the session
/// timeout than the partition can keep.
/// </remarks>
public static class SessionLimits
{
    /// <summary>Longest session id, bytes (the client's are 16 random bytes).</summary>
    public const int MaxSessionIdBytes = 64;

    /// <summary>
    /// Most recorded responses one session keeps at or above its low-water mark: a write that would
    /// need one more is refused with SessionExpired (the client has this many writes to the partition
    /// in flight and has not raised its low-water mark).
    /// </summary>
    public const int MaxRecordedPerSession = 1024;

    /// <summary>Most live sessions of one partition: a session's first write beyond it is refused with SessionExpired until ExpireSessions ends idle ones.</summary>
    public const int MaxSessions = 100_000;

    /// <summary>
    /// Most recorded responses of all sessions of one partition together (about 17 bytes each on disk,
    /// so about 17 MiB): a write that would record one more is refused with SessionExpired.
    /// </summary>
    public const int MaxRecordedResponses = 1 << 20;
}

/// <summary>The bounds apply uses: <see cref="SessionLimits"/>'s, or smaller ones a test sets through <see cref="RocksDbStateMachineOptions.SessionBounds"/>.</summary>
internal sealed record SessionBounds(int MaxRecordedPerSession, int MaxSessions, int MaxRecordedResponses)
{
    /// <summary>The production bounds (every replica must apply with these).</summary>
    public static SessionBounds Default { get; } = new(SessionLimits.MaxRecordedPerSession, SessionLimits.MaxSessions, SessionLimits.MaxRecordedResponses);
}

/// <summary>A session that has not written to the partition since before a given instant (input to an ExpireSessions command).</summary>
/// <param name="Id">The session id.</param>
/// <param name="LastActiveUnixMs">Its last-activity stamp; ExpireSessions ends the session only if it is still this.</param>
public readonly record struct IdleSession(byte[] Id, ulong LastActiveUnixMs);

/// <summary>The size of a partition's session table (for metrics, benchmarks and tests).</summary>
/// <param name="Sessions">Live sessions.</param>
/// <param name="Tombstones">Ended sessions whose tombstone is still kept.</param>
/// <param name="RecordedResponses">Recorded responses of all live sessions.</param>
/// <param name="ApproxBytes">About the bytes of the table's keys and values (before RocksDB's compression and overheads).</param>
public sealed record SessionTableStats(long Sessions, long Tombstones, long RecordedResponses, long ApproxBytes)
{
    /// <summary>An empty table.</summary>
    public static SessionTableStats Empty { get; } = new(0, 0, 0, 0);
}
