using Orleans;

namespace DEngine.Orleans.Snapshots;

/// <summary>What the silo holding a partition's data offers a silo that needs it.</summary>
[GenerateSerializer, Immutable, Alias("dengine.SnapshotOffer")]
public sealed record SnapshotOffer(
    [property: Id(0)] int Partition,
    [property: Id(1)] string Snapshot,
    [property: Id(2)] ulong Index,
    [property: Id(3)] ulong Term,
    [property: Id(4)] byte[] Checksum,
    [property: Id(5)] byte[] Manifest,
    [property: Id(6)] long TotalBytes);

/// <summary>One chunk of a snapshot file (at most 1 MiB) and its CRC-32C.</summary>
[GenerateSerializer, Immutable, Alias("dengine.SnapshotChunkData")]
public sealed record SnapshotChunkData(
    [property: Id(0)] byte[] Data,
    [property: Id(1)] uint Crc32C);

/// <summary>
/// A silo's own copy of a partition: its applied position (the term is the epoch of the newest entry),
/// or <see cref="Exists"/> false when the silo has no data of the partition.
/// </summary>
[GenerateSerializer, Immutable, Alias("dengine.LocalCopy")]
public sealed record LocalCopy(
    [property: Id(0)] string Silo,
    [property: Id(1)] bool Exists,
    [property: Id(2)] ulong Index,
    [property: Id(3)] ulong Term)
{
    /// <summary>Whether this copy is newer than <paramref name="other"/>: a newer epoch, or more entries of the same one.</summary>
    public bool IsNewerThan(LocalCopy other) => Term > other.Term || (Term == other.Term && Index > other.Index);
}

/// <summary>Progress of a fetch, reported to the log and to the caller.</summary>
public readonly record struct TransferProgress(int Partition, string Snapshot, long Bytes, long TotalBytes, double Seconds)
{
    /// <summary>Percent done.</summary>
    public double Percent => TotalBytes > 0 ? 100.0 * Bytes / TotalBytes : 100;

    /// <summary>MB/s so far (10^6 bytes).</summary>
    public double MegabytesPerSecond => Seconds > 0 ? Bytes / 1e6 / Seconds : 0;
}

/// <summary>
/// Serves the snapshots of the silo it lives on (one per silo; key = the silo's stable identity,
/// placed by <see cref="SiloIdentityPlacement"/>). Reentrant: chunk reads of several fetches run
/// side by side; they read immutable checkpoint files only.
/// </summary>
public interface ISnapshotServerGrain : IGrainWithStringKey
{
    /// <summary>
    /// Takes a fresh checkpoint of <paramref name="partition"/>, whose database must not be active on
    /// this silo any more (its grain moved away), and describes it. Retries briefly while the old
    /// activation is still closing the database.
    /// </summary>
    Task<SnapshotOffer> PrepareHandover(int partition);

    /// <summary>
    /// Describes this silo's copy of <paramref name="partition"/> (applied index and term), opening its
    /// database briefly when no activation here has it open. Used when the ownership record is missing,
    /// to find the newest copy instead of taking the partition for new.
    /// </summary>
    Task<LocalCopy> DescribeCopy(int partition);

    /// <summary>Does nothing; activates the server (done when the silo starts).</summary>
    Task Ping();

    /// <summary>Reads up to <paramref name="length"/> (≤ 1 MiB) bytes of a file listed in a snapshot's manifest.</summary>
    Task<SnapshotChunkData> ReadChunk(int partition, string snapshot, string file, long offset, int length);
}
