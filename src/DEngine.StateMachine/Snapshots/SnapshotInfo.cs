using DEngine.Protos.Storage;

namespace DEngine.StateMachine.Snapshots;

/// <summary>A complete snapshot on disk.</summary>
/// <param name="Directory">Its directory, <c>{partition}/snapshots/snapshot-{index}-{term}</c>.</param>
/// <param name="Metadata">Last included entry and the SHA-256 of its manifest (what a receiver verifies against).</param>
/// <param name="FileCount">Number of files listed in the manifest.</param>
/// <param name="TotalBytes">Sum of their sizes.</param>
public sealed record SnapshotInfo(string Directory, SnapshotMetadata Metadata, int FileCount, long TotalBytes)
{
    /// <summary>The last entry contained in the snapshot (its label).</summary>
    public LogPosition LastIncluded => new(Metadata.LastIncluded.Index, Metadata.LastIncluded.Term);
}
