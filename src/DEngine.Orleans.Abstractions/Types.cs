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
}

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
