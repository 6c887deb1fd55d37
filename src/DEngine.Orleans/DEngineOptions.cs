using DEngine.Orleans.Configuration;
using DEngine.StateMachine;

namespace DEngine.Orleans;

/// <summary>
/// Silo-side options of DEngine, bound from the configuration section <c>DEngine</c> and validated
/// at start-up.
/// </summary>
public sealed class DEngineOptions
{
    /// <summary>The configuration section these options bind from.</summary>
    public const string SectionName = "DEngine";

    /// <summary>Directory holding this silo's partitions (<c>{DataRoot}/partitions/{p}/</c>). Default <c>./data</c>.</summary>
    public string DataRoot { get; set; } = "data";

    /// <summary>Number of partitions of the cluster (fixed for its lifetime). Default 16.</summary>
    public int Partitions { get; set; } = 16;

    /// <summary>When writes are durable. Default Synced: acknowledged only after fsync.</summary>
    public DurabilityMode Durability { get; set; } = DurabilityMode.Synced;

    /// <summary>Largest key, bytes. Default 4096.</summary>
    public int MaxKeyBytes { get; set; } = 4 * 1024;

    /// <summary>Largest value, bytes. Default 1 MiB.</summary>
    public int MaxValueBytes { get; set; } = 1024 * 1024;

    /// <summary>Most client writes committed in one chunk. Default 4096.</summary>
    public int MaxChunkEntries { get; set; } = 4096;

    /// <summary>Default of <see cref="MaxChunkBytes"/>: 16 MiB.</summary>
    public const long DEFAULT_MAX_CHUNK_BYTES = 16L << 20;

    /// <summary>
    /// Most bytes (encoded commands) in one chunk, i.e. one RocksDB WriteBatch in memory. A single
    /// write larger than this still forms a chunk of its own. Default 16 MiB.
    /// </summary>
    public long MaxChunkBytes { get; set; } = DEFAULT_MAX_CHUNK_BYTES;

    /// <summary>Default of <see cref="MaxQueuedWrites"/>: 16384 (four full chunks).</summary>
    public const int DEFAULT_MAX_QUEUED_WRITES = 16_384;

    /// <summary>
    /// Most client writes waiting in one partition's queue for their chunk (while the previous chunk
    /// is synced). A write beyond it is refused with Overloaded (retryable, nothing applied), so
    /// memory stays bounded under any load. Default 16384.
    /// </summary>
    public int MaxQueuedWrites { get; set; } = DEFAULT_MAX_QUEUED_WRITES;

    /// <summary>Default of <see cref="MaxQueuedBytes"/>: 64 MiB.</summary>
    public const long DEFAULT_MAX_QUEUED_BYTES = 64L << 20;

    /// <summary>
    /// Most bytes (encoded commands) waiting in one partition's queue; beyond it a write is refused
    /// with Overloaded. A write into an empty queue is always taken. Default 64 MiB.
    /// </summary>
    public long MaxQueuedBytes { get; set; } = DEFAULT_MAX_QUEUED_BYTES;

    /// <summary>Default of <see cref="MaxClockSkew"/>: 5 s.</summary>
    public static readonly TimeSpan DEFAULT_MAX_CLOCK_SKEW = TimeSpan.FromSeconds(5);

    /// <summary>
    /// How far a partition's time floor (the highest clock stamp it applied, possibly from another
    /// silo's clock) may count ahead of this silo's clock when judging expiry: expiry is judged at
    /// max(clock, min(floor, clock + MaxClockSkew)). A silo whose clock is behind still sees keys
    /// that were reported expired as expired (up to this skew); a silo whose clock runs ahead cannot
    /// make keys expire early elsewhere by more than this. Default 5 s.
    /// </summary>
    public TimeSpan MaxClockSkew { get; set; } = DEFAULT_MAX_CLOCK_SKEW;

    /// <summary>
    /// Dedicated threads that fsync partitions' write-ahead logs (group commit). Partitions are
    /// spread over them, so fsyncs of different partitions overlap. Default 4.
    /// </summary>
    public int SyncThreads { get; set; } = 4;

    /// <summary>Block cache shared by all partitions of the silo, MiB. Default 256.</summary>
    public int BlockCacheMiB { get; set; } = 256;

    /// <summary>Memtable size of each partition's data column family, MiB. Default 64.</summary>
    public int WriteBufferMiB { get; set; } = 64;

    /// <summary>
    /// How long a silo asked to hand a partition over waits for the partition's activation there to
    /// close its database. The database lock is the fence: no checkpoint is handed out while an
    /// activation on this silo can still write. Default 20 s.
    /// </summary>
    public TimeSpan HandoverWait { get; set; } = TimeSpan.FromSeconds(20);

    /// <summary>
    /// After a stopping silo has handed its partitions over, how long it keeps its messaging up so
    /// that requests still addressed to it (callers' cached addresses) are forwarded or rejected
    /// retryably instead of being dropped with the connection. Default 2 s.
    /// </summary>
    public TimeSpan ShutdownGrace { get; set; } = TimeSpan.FromSeconds(2);

    /// <summary>Default of <see cref="SessionTimeout"/>: 5 minutes.</summary>
    public static readonly TimeSpan DEFAULT_SESSION_TIMEOUT = TimeSpan.FromMinutes(5);

    /// <summary>
    /// How long a client session may go without a write to a partition before the partition's
    /// primary ends it there (through the log, like TTL cleanup), leaving a tombstone. Longer than the
    /// client's retry deadline, so a session never expires under a write that is still being retried.
    /// Default 5 minutes.
    /// </summary>
    public TimeSpan SessionTimeout { get; set; } = DEFAULT_SESSION_TIMEOUT;

    /// <summary>Default of <see cref="SessionTombstoneRetention"/>: 2 minutes.</summary>
    public static readonly TimeSpan DEFAULT_SESSION_TOMBSTONE_RETENTION = TimeSpan.FromMinutes(2);

    /// <summary>
    /// How long an expired session's tombstone is kept (a late retry of it is refused with
    /// SessionExpired, never applied as a new session's first write); then it is purged by the next
    /// expiry round. At least the client's retry deadline plus the longest message delay: validated to
    /// exceed the client's default deadline (30 s). Default 2 minutes.
    /// </summary>
    public TimeSpan SessionTombstoneRetention { get; set; } = DEFAULT_SESSION_TOMBSTONE_RETENTION;

    /// <summary>Most sessions and tombstones one session-expiry command ends or purges. Default 1000.</summary>
    public int MaxSessionsPerRound { get; set; } = 1000;

    /// <summary>TTL (lease) settings.</summary>
    public LeaseOptions Lease { get; set; } = new();

    /// <summary>Replica-group settings (section <c>DEngine:Replication</c>).</summary>
    public ReplicationOptions Replication { get; set; } = new();

    /// <summary>Returns the first problem as "Key: message", or null when valid.</summary>
    public string? Validate()
    {
        if (string.IsNullOrWhiteSpace(DataRoot))
        {
            return $"{SectionName}:{nameof(DataRoot)} must name a directory.";
        }
        if (Partitions is < 1 or > 4096)
        {
            return $"{SectionName}:{nameof(Partitions)} must be between 1 and 4096 (was {Partitions}).";
        }
        if (!Enum.IsDefined(Durability))
        {
            return $"{SectionName}:{nameof(Durability)} must be Synced or Relaxed (was {Durability}).";
        }
        if (MaxKeyBytes is < 1 or > 64 * 1024)
        {
            return $"{SectionName}:{nameof(MaxKeyBytes)} must be between 1 and 65536 (was {MaxKeyBytes}).";
        }
        if (MaxValueBytes is < 0 or > 16 * 1024 * 1024)
        {
            return $"{SectionName}:{nameof(MaxValueBytes)} must be between 0 and 16777216 (was {MaxValueBytes}).";
        }
        if (MaxChunkEntries is < 1 or > 100_000)
        {
            return $"{SectionName}:{nameof(MaxChunkEntries)} must be between 1 and 100000 (was {MaxChunkEntries}).";
        }
        if (MaxChunkBytes is < 1024 or > 1L << 30)
        {
            return $"{SectionName}:{nameof(MaxChunkBytes)} must be between 1024 and 1073741824 (was {MaxChunkBytes}).";
        }
        if (MaxQueuedWrites is < 1 or > 1_000_000)
        {
            return $"{SectionName}:{nameof(MaxQueuedWrites)} must be between 1 and 1000000 (was {MaxQueuedWrites}).";
        }
        if (MaxQueuedBytes is < 1024 or > 16L << 30)
        {
            return $"{SectionName}:{nameof(MaxQueuedBytes)} must be between 1024 and 17179869184 (was {MaxQueuedBytes}).";
        }
        if (MaxClockSkew < TimeSpan.Zero || MaxClockSkew > TimeSpan.FromHours(1))
        {
            return $"{SectionName}:{nameof(MaxClockSkew)} must be between 00:00:00 and 01:00:00 (was {MaxClockSkew}).";
        }
        if (SyncThreads is < 1 or > 64)
        {
            return $"{SectionName}:{nameof(SyncThreads)} must be between 1 and 64 (was {SyncThreads}).";
        }
        if (BlockCacheMiB < 1)
        {
            return $"{SectionName}:{nameof(BlockCacheMiB)} must be at least 1 (was {BlockCacheMiB}).";
        }
        if (WriteBufferMiB is < 1 or > 1024)
        {
            return $"{SectionName}:{nameof(WriteBufferMiB)} must be between 1 and 1024 (was {WriteBufferMiB}).";
        }
        if (HandoverWait < TimeSpan.Zero || HandoverWait > TimeSpan.FromMinutes(10))
        {
            return $"{SectionName}:{nameof(HandoverWait)} must be between 00:00:00 and 00:10:00 (was {HandoverWait}).";
        }
        if (ShutdownGrace < TimeSpan.Zero || ShutdownGrace > TimeSpan.FromMinutes(1))
        {
            return $"{SectionName}:{nameof(ShutdownGrace)} must be between 00:00:00 and 00:01:00 (was {ShutdownGrace}).";
        }
        if (SessionTimeout <= ClientRetryDeadline.Default || SessionTimeout > TimeSpan.FromDays(7))
        {
            return $"{SectionName}:{nameof(SessionTimeout)} must exceed the client's retry deadline ({ClientRetryDeadline.Default}) and be at most 7.00:00:00 (was {SessionTimeout}).";
        }
        if (SessionTombstoneRetention <= ClientRetryDeadline.Default || SessionTombstoneRetention > TimeSpan.FromDays(7))
        {
            return $"{SectionName}:{nameof(SessionTombstoneRetention)} must exceed the client's retry deadline ({ClientRetryDeadline.Default}) plus the longest message delay, and be at most 7.00:00:00 (was {SessionTombstoneRetention}).";
        }
        if (MaxSessionsPerRound is < 1 or > 100_000)
        {
            return $"{SectionName}:{nameof(MaxSessionsPerRound)} must be between 1 and 100000 (was {MaxSessionsPerRound}).";
        }
        return Lease.Validate() ?? Replication.Validate();
    }
}

/// <summary>TTL settings (section <c>DEngine:Lease</c>).</summary>
public sealed class LeaseOptions
{
    /// <summary>Whether writes may carry a TTL. When false a TTL write fails with FeatureNotEnabled before it is sequenced. Default true.</summary>
    public bool Enabled { get; set; } = true;

    /// <summary>Most keys one cleanup command deletes. Default 1000.</summary>
    public int MaxKeysPerRound { get; set; } = 1000;

    /// <summary>Time budget of planning one cleanup round (the scan of the TTL index). Default 50 ms.</summary>
    public TimeSpan MaxRoundTime { get; set; } = TimeSpan.FromMilliseconds(50);

    /// <summary>
    /// Period of the durable reminder that wakes a partition with TTL keys (the safety net when it is
    /// not active). At least Orleans' minimum reminder period (1 minute unless lowered). Default 1 minute.
    /// </summary>
    public TimeSpan ReminderPeriod { get; set; } = TimeSpan.FromMinutes(1);

    /// <summary>Returns the first problem, or null.</summary>
    public string? Validate()
    {
        if (MaxKeysPerRound is < 1 or > 100_000)
        {
            return $"{DEngineOptions.SectionName}:Lease:{nameof(MaxKeysPerRound)} must be between 1 and 100000 (was {MaxKeysPerRound}).";
        }
        if (MaxRoundTime <= TimeSpan.Zero)
        {
            return $"{DEngineOptions.SectionName}:Lease:{nameof(MaxRoundTime)} must be positive (was {MaxRoundTime}).";
        }
        if (ReminderPeriod <= TimeSpan.Zero)
        {
            return $"{DEngineOptions.SectionName}:Lease:{nameof(ReminderPeriod)} must be positive (was {ReminderPeriod}).";
        }
        return null;
    }
}
