namespace DEngine.Orleans.Configuration;

/// <summary>
/// Replica-group settings (section <c>DEngine:Replication</c>): how many silos hold each partition,
/// the floor below which writes are refused, and the timing of leases and replica removal.
/// </summary>
/// <remarks>
/// The write floor is not lowered on small clusters: with fewer live silos than <see cref="Factor"/>
/// a partition runs with as many replicas as there are silos (<see cref="EffectiveFactor"/>), and
/// refuses writes (retryably) while that is below <see cref="EffectiveMinReplicas"/>
/// (<see cref="CanWrite"/>). So an acknowledged write is always on at least MinReplicas disks; a
/// deployment that wants to write with fewer silos sets MinReplicas (or Factor) lower, explicitly.
/// </remarks>
public sealed class ReplicationOptions
{
    /// <summary>
    /// Default of <see cref="Factor"/>: 3, replica groups of three, so the loss of one silo (or of its
    /// disk) loses no acknowledged write and stops no partition. With the default floor of 2 a cluster
    /// of one silo refuses every write (retryably, naming the setting): a single-silo deployment sets
    /// Factor 1 explicitly (one copy, the path of ownership records, relocation by snapshot fetch and
    /// <c>ApplyChunk</c> from an external log).
    /// </summary>
    public const int DEFAULT_FACTOR = 3;

    /// <summary>Largest <see cref="Factor"/> accepted.</summary>
    public const int MAX_FACTOR = 16;

    /// <summary>Default of <see cref="LeaseDuration"/>: 4 s.</summary>
    public static readonly TimeSpan DEFAULT_LEASE_DURATION = TimeSpan.FromSeconds(4);

    /// <summary>Default of <see cref="HeartbeatInterval"/>: 1 s.</summary>
    public static readonly TimeSpan DEFAULT_HEARTBEAT_INTERVAL = TimeSpan.FromSeconds(1);

    /// <summary>Default of <see cref="ReplicaTimeout"/>: 6 s.</summary>
    public static readonly TimeSpan DEFAULT_REPLICA_TIMEOUT = TimeSpan.FromSeconds(6);

    /// <summary>Default of <see cref="MaxClockDrift"/>: 0.05.</summary>
    public const double DEFAULT_MAX_CLOCK_DRIFT = 0.05;

    /// <summary>Default of <see cref="LogCompactionEntries"/>: 65 536 applied entries.</summary>
    public const int DEFAULT_LOG_COMPACTION_ENTRIES = 65_536;

    /// <summary>Default of <see cref="LogSegmentBytes"/>: 64 MiB (the replicated log's own default).</summary>
    public const long DEFAULT_LOG_SEGMENT_BYTES = DEngine.StateMachine.Replication.ReplicatedLogOptions.DEFAULT_SEGMENT_BYTES;

    /// <summary>Default of <see cref="MaxChunksInFlight"/>: 1 (measured best on one disk, see BENCHMARKS.md "put-replicated").</summary>
    public const int DEFAULT_MAX_CHUNKS_IN_FLIGHT = 1;

    /// <summary>Default of <see cref="ReplaceAfter"/>: 5 minutes.</summary>
    public static readonly TimeSpan DEFAULT_REPLACE_AFTER = TimeSpan.FromMinutes(5);

    /// <summary>Largest <see cref="ReplaceAfter"/> accepted: 7 days.</summary>
    public static readonly TimeSpan MAX_REPLACE_AFTER = TimeSpan.FromDays(7);

    /// <summary>Largest <see cref="MaxChunksInFlight"/> accepted.</summary>
    public const int MAX_CHUNKS_IN_FLIGHT = 64;

    /// <summary>Default of <see cref="BalanceInterval"/>: 10 s.</summary>
    public static readonly TimeSpan DEFAULT_BALANCE_INTERVAL = TimeSpan.FromSeconds(10);

    /// <summary>Default of <see cref="MaxConcurrentHandovers"/>: 2.</summary>
    public const int DEFAULT_MAX_CONCURRENT_HANDOVERS = 2;

    private const string Section = DEngineOptions.SectionName + ":Replication:";

    /// <summary>Silos that hold each partition (the primary included). Default 3 (see <see cref="DEFAULT_FACTOR"/>); 1 is a single copy.</summary>
    public int Factor { get; set; } = DEFAULT_FACTOR;

    /// <summary>
    /// Fewest replicas a partition accepts writes with; the primary never shrinks its configuration
    /// below it. Unset: 2 when <see cref="Factor"/> is at least 3, else 1 (see <see cref="EffectiveMinReplicas"/>).
    /// Set: between 1 and Factor.
    /// </summary>
    public int? MinReplicas { get; set; }

    /// <summary>
    /// How long a lease granted by the replicas lets the primary serve reads without asking them.
    /// Renewed by the replication traffic. Default 4 s.
    /// </summary>
    public TimeSpan LeaseDuration { get; set; } = DEFAULT_LEASE_DURATION;

    /// <summary>How often an idle primary sends a heartbeat to renew its lease; under LeaseDuration / 2, so one lost heartbeat does not lose the lease. Default 1 s.</summary>
    public TimeSpan HeartbeatInterval { get; set; } = DEFAULT_HEARTBEAT_INTERVAL;

    /// <summary>
    /// How long the primary waits for a replica's acknowledgement before removing it from the
    /// configuration; longer than LeaseDuration, so a replica is not dropped for a pause the lease
    /// itself tolerates. Default 6 s.
    /// </summary>
    public TimeSpan ReplicaTimeout { get; set; } = DEFAULT_REPLICA_TIMEOUT;

    /// <summary>
    /// Bound on how much faster or slower one silo's clock runs than another's, as a fraction. A new
    /// primary waits <see cref="NewPrimaryReadDelay"/> = LeaseDuration × (1 + MaxClockDrift) before
    /// serving reads, so the old primary's lease has run out by any clock. Default 0.05.
    /// </summary>
    public double MaxClockDrift { get; set; } = DEFAULT_MAX_CLOCK_DRIFT;

    /// <summary>
    /// Applied entries between two compactions of a copy's log (each costs one state-machine fsync).
    /// A replica that was away for longer than the primary's log reaches back is caught up from a
    /// snapshot instead. Default 65 536; at least 1.
    /// </summary>
    public int LogCompactionEntries { get; set; } = DEFAULT_LOG_COMPACTION_ENTRIES;

    /// <summary>
    /// Size at which a copy's log starts a new segment file. Compaction deletes whole segments only,
    /// so the log reaches back at least one segment. Default 64 MiB; at least 4 KiB.
    /// </summary>
    public long LogSegmentBytes { get; set; } = DEFAULT_LOG_SEGMENT_BYTES;

    /// <summary>
    /// Chunks a primary replicates at once per partition; the next chunk is built when fewer are
    /// waiting for their commit, and writes arriving meanwhile gather into it (group commit). Every
    /// chunk costs an fsync of each replica's log, so on a disk that bounds fsyncs per second fewer,
    /// larger chunks carry more writes: 1 measured best with the three replicas on one disk (0.32–0.35
    /// of Factor 1's throughput against 0.28 with 2, BENCHMARKS.md); replicas on separate disks across
    /// a slower network may gain from 2–4 (pipelining). Default 1; 1 to 64.
    /// </summary>
    public int MaxChunksInFlight { get; set; } = DEFAULT_MAX_CHUNKS_IN_FLIGHT;

    /// <summary>
    /// How often the primary balancer compares the primary roles per live silo (and also right after
    /// silos join or leave): a silo leading two or more partitions above another eligible replica
    /// hands primary roles over to it, so they end within one of even. 00:00:00 turns balancing off.
    /// Default 10 s; at most 1 hour.
    /// </summary>
    public TimeSpan BalanceInterval { get; set; } = DEFAULT_BALANCE_INTERVAL;

    /// <summary>Most primary handovers one balancing round starts (each pauses its partition's writes for about a commit round). Default 2; 1 to 64.</summary>
    public int MaxConcurrentHandovers { get; set; } = DEFAULT_MAX_CONCURRENT_HANDOVERS;

    /// <summary>
    /// How long a replica's silo may be away (not an active member) before the primary stops waiting
    /// for it: it is forgotten, a new replica is built on another live silo (snapshot, then the log)
    /// and joins once caught up, and the absent one is then removed. A silo that returns after that
    /// finds its copy in no configuration and drops it. Short enough that a partition does not run
    /// one replica short for long, long enough that a restart or an upgrade does not copy data.
    /// Default 5 minutes; at least <see cref="ReplicaTimeout"/>, at most 7 days.
    /// </summary>
    public TimeSpan ReplaceAfter { get; set; } = DEFAULT_REPLACE_AFTER;

    /// <summary>The floor in force: <see cref="MinReplicas"/> when set, else 2 when Factor ≥ 3, else 1.</summary>
    public int EffectiveMinReplicas => MinReplicas ?? (Factor >= 3 ? 2 : 1);

    /// <summary>
    /// Longest a write waits in a replica group for its commit: 2 × ReplicaTimeout, time for the
    /// primary to notice a silent replica and store the configuration without it. A write not
    /// committed by then is answered OutcomeUnknown (its entry may still commit later) — for example
    /// when a replica stopped answering and the MinReplicas floor keeps it in the configuration. So no
    /// grain call waits for a replica indefinitely: Orleans deactivates a grain only after its running
    /// calls finish (it does so when the silo holding the grain's directory entry dies), and an
    /// unbounded write would hold the partition in that state, answering nothing.
    /// </summary>
    public TimeSpan CommitWaitBound => ReplicaTimeout * 2;

    /// <summary>How long a new primary waits before serving reads: LeaseDuration × (1 + MaxClockDrift).</summary>
    public TimeSpan NewPrimaryReadDelay => LeaseDuration * (1 + MaxClockDrift);

    /// <summary>Replicas a partition runs with when <paramref name="liveSilos"/> silos are alive: min(Factor, liveSilos), never negative.</summary>
    public int EffectiveFactor(int liveSilos) => Math.Clamp(liveSilos, 0, Factor);

    /// <summary>
    /// Whether a configuration of <paramref name="replicas"/> replicas may acknowledge writes:
    /// replicas ≥ <see cref="EffectiveMinReplicas"/>. Not clamped to <see cref="EffectiveFactor"/>: a
    /// cluster smaller than the floor refuses writes rather than acknowledge fewer copies than promised.
    /// </summary>
    public bool CanWrite(int replicas) => replicas >= EffectiveMinReplicas;

    /// <summary>Returns the first problem as "DEngine:Replication:Key message", or null when valid.</summary>
    public string? Validate()
    {
        if (Factor is < 1 or > MAX_FACTOR)
        {
            return $"{Section}{nameof(Factor)} must be between 1 and {MAX_FACTOR} (was {Factor}).";
        }
        if (MinReplicas is { } min && (min < 1 || min > Factor))
        {
            return $"{Section}{nameof(MinReplicas)} must be between 1 and {Section}{nameof(Factor)} ({Factor}) (was {min}).";
        }
        if (LeaseDuration <= TimeSpan.Zero || LeaseDuration > TimeSpan.FromMinutes(5))
        {
            return $"{Section}{nameof(LeaseDuration)} must be more than 00:00:00 and at most 00:05:00 (was {LeaseDuration}).";
        }
        if (HeartbeatInterval <= TimeSpan.Zero || HeartbeatInterval >= LeaseDuration / 2)
        {
            return $"{Section}{nameof(HeartbeatInterval)} must be more than 00:00:00 and less than half of {Section}{nameof(LeaseDuration)} ({LeaseDuration / 2}) (was {HeartbeatInterval}).";
        }
        if (ReplicaTimeout <= LeaseDuration || ReplicaTimeout > TimeSpan.FromMinutes(10))
        {
            return $"{Section}{nameof(ReplicaTimeout)} must be more than {Section}{nameof(LeaseDuration)} ({LeaseDuration}) and at most 00:10:00 (was {ReplicaTimeout}).";
        }
        if (double.IsNaN(MaxClockDrift) || MaxClockDrift is < 0 or > 0.5)
        {
            return $"{Section}{nameof(MaxClockDrift)} must be a fraction between 0 and 0.5 (was {MaxClockDrift}).";
        }
        if (MaxChunksInFlight is < 1 or > MAX_CHUNKS_IN_FLIGHT)
        {
            return $"{Section}{nameof(MaxChunksInFlight)} must be between 1 and {MAX_CHUNKS_IN_FLIGHT} (was {MaxChunksInFlight}).";
        }
        if (BalanceInterval < TimeSpan.Zero || BalanceInterval > TimeSpan.FromHours(1))
        {
            return $"{Section}{nameof(BalanceInterval)} must be between 00:00:00 (off) and 01:00:00 (was {BalanceInterval}).";
        }
        if (MaxConcurrentHandovers is < 1 or > 64)
        {
            return $"{Section}{nameof(MaxConcurrentHandovers)} must be between 1 and 64 (was {MaxConcurrentHandovers}).";
        }
        if (ReplaceAfter < ReplicaTimeout || ReplaceAfter > MAX_REPLACE_AFTER)
        {
            return $"{Section}{nameof(ReplaceAfter)} must be at least {Section}{nameof(ReplicaTimeout)} ({ReplicaTimeout}) and at most {MAX_REPLACE_AFTER} (was {ReplaceAfter}).";
        }
        if (LogCompactionEntries < 1)
        {
            return $"{Section}{nameof(LogCompactionEntries)} must be at least 1 (was {LogCompactionEntries}).";
        }
        if (LogSegmentBytes < DEngine.StateMachine.Replication.ReplicatedLogOptions.MIN_SEGMENT_BYTES)
        {
            return $"{Section}{nameof(LogSegmentBytes)} must be at least {DEngine.StateMachine.Replication.ReplicatedLogOptions.MIN_SEGMENT_BYTES} (was {LogSegmentBytes}).";
        }
        return null;
    }
}
