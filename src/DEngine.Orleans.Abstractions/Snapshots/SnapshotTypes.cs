using Orleans;

namespace DEngine.Orleans;

/// <summary>A snapshot a partition has on disk.</summary>
[GenerateSerializer, Immutable, Alias("dengine.SnapshotSummary")]
public sealed record SnapshotSummary(
    [property: Id(0)] string Name,
    [property: Id(1)] ulong Index,
    [property: Id(2)] ulong Term,
    [property: Id(3)] int Files,
    [property: Id(4)] long Bytes,
    [property: Id(5)] string ChecksumHex);

/// <summary>How a partition's data last arrived on its silo (a snapshot fetched from another silo).</summary>
[GenerateSerializer, Immutable, Alias("dengine.TransferReport")]
public sealed record TransferReport(
    [property: Id(0)] string FromSilo,
    [property: Id(1)] string Snapshot,
    [property: Id(2)] long Bytes,
    [property: Id(3)] double Seconds,
    [property: Id(4)] int ChunksRefetched)
{
    /// <summary>Throughput in MB/s (10^6 bytes).</summary>
    public double MegabytesPerSecond => Seconds > 0 ? Bytes / 1e6 / Seconds : 0;
}
