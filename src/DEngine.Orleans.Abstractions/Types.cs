using Orleans;

namespace DEngine.Orleans;

/// <summary>Outcome of one entry of an applied chunk.</summary>
[GenerateSerializer, Alias("dengine.EntryStatus")]
public enum EntryStatus
{
    /// <summary>Applied (for a CAS: matched and written).</summary>
    Applied = 0,

    /// <summary>A CAS that did not match; nothing written.</summary>
    CompareFailed = 1,

    /// <summary>Skipped: at or below the applied index (redelivery).</summary>
    AlreadyApplied = 2,
}

/// <summary>The result of one entry.</summary>
[GenerateSerializer, Immutable, Alias("dengine.EntryOutcome")]
public readonly record struct EntryOutcome(
    [property: Id(0)] ulong Index,
    [property: Id(1)] EntryStatus Status,
    [property: Id(2)] int KeysExpired);

/// <summary>What a partition reports about itself.</summary>
[GenerateSerializer, Immutable, Alias("dengine.PartitionStatus")]
public sealed record PartitionStatus(
    [property: Id(0)] int Partition,
    [property: Id(1)] ulong AppliedIndex,
    [property: Id(2)] ulong AppliedTerm,
    [property: Id(3)] ulong Epoch,
    [property: Id(4)] string Silo,
    [property: Id(5)] long EstimatedKeys,
    [property: Id(6)] ulong? SnapshotIndex,
    [property: Id(7)] ulong? SnapshotTerm,
    [property: Id(8)] long ChunksApplied,
    [property: Id(9)] long WritesApplied,
    [property: Id(10)] long KeysExpired,
    [property: Id(11)] TransferReport? LastTransfer)
{
    /// <summary>
    /// For a replicated partition: its configuration version, replicas (the primary starred), those
    /// catching up, and whether it is below its replica count or write floor; null for a single copy.
    /// </summary>
    [Id(12)]
    public string? Replication { get; init; }

    /// <summary>
    /// For a replicated partition, the same facts as <see cref="Replication"/> as fields (per replica:
    /// applied and log index, lag, snapshot install progress), as the primary sees them; null for a single copy.
    /// </summary>
    [Id(13)]
    public ReplicationStatus? ReplicaGroup { get; init; }
}

/// <summary>The role of one copy in a replicated partition.</summary>
[GenerateSerializer, Alias("dengine.ReplicaRole")]
public enum ReplicaRole
{
    /// <summary>The primary: sequences writes, ships them and serves reads.</summary>
    Primary = 0,

    /// <summary>A replica of the configuration: every commit waits for it.</summary>
    Replica = 1,

    /// <summary>A copy outside the configuration being caught up (shipped to, not counted for commits); it joins once caught up.</summary>
    Learner = 2,
}

/// <summary>How far a snapshot install to a replica has come, as the primary last heard from it.</summary>
/// <param name="Snapshot">The snapshot being installed, or null while the primary is still preparing it (a checkpoint of its copy).</param>
/// <param name="BytesDone">Bytes of it the replica has fetched (reported by its fetcher every few seconds).</param>
/// <param name="TotalBytes">The snapshot's size (every file of its manifest); 0 while preparing.</param>
/// <param name="Files">Number of files in the snapshot's manifest; 0 while preparing.</param>
[GenerateSerializer, Immutable, Alias("dengine.SnapshotInstallProgress")]
public sealed record SnapshotInstallProgress(
    [property: Id(0)] string? Snapshot,
    [property: Id(1)] long BytesDone,
    [property: Id(2)] long TotalBytes,
    [property: Id(3)] int Files)
{
    /// <summary>Percent of the bytes fetched (0 while the size is not known).</summary>
    public double Percent => TotalBytes > 0 ? 100.0 * BytesDone / TotalBytes : 0;
}

/// <summary>Where one copy of a replicated partition stands, as its primary sees it.</summary>
/// <param name="Silo">The silo holding the copy.</param>
/// <param name="Role">Primary, replica of the configuration, or learner catching up.</param>
/// <param name="Active">False when Orleans does not count the silo as active (it is shipped to once it returns).</param>
/// <param name="AppliedIndex">The last entry its state machine applied (for another copy: the commit index it last acknowledged, which it applies before answering).</param>
/// <param name="LogIndex">The last entry its log holds durably (for another copy: the last it acknowledged).</param>
/// <param name="Lag">Entries it is behind the primary's log (the primary's last sequenced index minus <paramref name="LogIndex"/>); 0 for the primary.</param>
/// <param name="LastError">Why the last message to it failed, or null.</param>
/// <param name="Installing">The snapshot install that is rebuilding it, or null when none runs.</param>
[GenerateSerializer, Immutable, Alias("dengine.ReplicaStatus")]
public sealed record ReplicaStatus(
    [property: Id(0)] string Silo,
    [property: Id(1)] ReplicaRole Role,
    [property: Id(2)] bool Active,
    [property: Id(3)] ulong AppliedIndex,
    [property: Id(4)] ulong LogIndex,
    [property: Id(5)] ulong Lag,
    [property: Id(6)] string? LastError,
    [property: Id(7)] SnapshotInstallProgress? Installing);

/// <summary>A replicated partition's configuration and the state of each of its copies.</summary>
/// <param name="Version">The configuration version (the term of every entry the primary writes).</param>
/// <param name="Primary">The primary's silo.</param>
/// <param name="Factor">The configured replica count (DEngine:Replication:Factor).</param>
/// <param name="MinReplicas">The write floor (DEngine:Replication:MinReplicas, as in effect).</param>
/// <param name="Members">Replicas in the configuration, the primary included.</param>
/// <param name="WritesRefused">True while the configuration holds fewer replicas than <paramref name="MinReplicas"/>.</param>
/// <param name="Replicas">The primary first, then the other replicas of the configuration, then learners.</param>
[GenerateSerializer, Immutable, Alias("dengine.ReplicationStatus")]
public sealed record ReplicationStatus(
    [property: Id(0)] ulong Version,
    [property: Id(1)] string Primary,
    [property: Id(2)] int Factor,
    [property: Id(3)] int MinReplicas,
    [property: Id(4)] int Members,
    [property: Id(5)] bool WritesRefused,
    [property: Id(6)] ReplicaStatus[] Replicas);

/// <summary>The TTL state of a key.</summary>
[GenerateSerializer, Immutable, Alias("dengine.KeyTtl")]
public readonly record struct KeyTtl(
    [property: Id(0)] bool Exists,
    [property: Id(1)] ulong? ExpiresAtUnixMs,
    [property: Id(2)] long? RemainingMs);

/// <summary>Cluster-wide facts clients need (read from the cluster, not configured twice).</summary>
[GenerateSerializer, Immutable, Alias("dengine.ClusterInfo")]
public sealed record ClusterInfo([property: Id(0)] int Partitions);

/// <summary>Answers cluster-wide facts from the silo's configuration. Any silo can answer.</summary>
public interface IClusterInfoGrain : IGrainWithIntegerKey
{
    /// <summary>The cluster's partition count and similar facts.</summary>
    Task<ClusterInfo> GetInfo();
}
