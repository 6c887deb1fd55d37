using DEngine.Protos.Storage;
using DEngine.StateMachine.Snapshots;
using Google.Protobuf;

namespace DEngine.StateMachine.Tests.Support;

/// <summary>File helpers for snapshot tests: independent copies (no hard links) and manifest rewrites.</summary>
public static class SnapshotFiles
{
    /// <summary>
    /// Copies <paramref name="source"/> to <paramref name="destination"/> byte by byte (the way a fetch from
    /// another silo would arrive, or the image a crash leaves). The partition lock file is skipped: it is
    /// locked while an engine is open, and a crash releases the lock anyway.
    /// </summary>
    public static void CopyDirectory(string source, string destination)
    {
        Directory.CreateDirectory(destination);
        foreach (var entry in new DirectoryInfo(source).EnumerateFileSystemInfos())
        {
            var target = Path.Combine(destination, entry.Name);
            if (entry is DirectoryInfo)
            {
                CopyDirectory(entry.FullName, target);
            }
            else if (entry.Name != PartitionLayout.LockFileName)
            {
                File.Copy(entry.FullName, target);
            }
        }
    }

    /// <summary>An independent copy of <paramref name="snapshot"/> in <paramref name="destination"/>, with the metadata that goes with it.</summary>
    public static (string Directory, SnapshotMetadata Metadata) CopySnapshot(SnapshotInfo snapshot, string destination)
    {
        CopyDirectory(snapshot.Directory, destination);
        return (destination, snapshot.Metadata.Clone());
    }

    /// <summary>Rewrites the manifest of <paramref name="directory"/> and returns metadata whose checksum matches the new manifest.</summary>
    public static SnapshotMetadata RewriteManifest(string directory, Func<SnapshotManifest, SnapshotManifest> change)
    {
        var path = Path.Combine(directory, SnapshotManifest.FileName);
        var manifest = change(SnapshotManifest.Parse(File.ReadAllBytes(path)));
        var bytes = manifest.ToBytes();
        File.WriteAllBytes(path, bytes);
        return new SnapshotMetadata
        {
            LastIncluded = manifest.LastIncluded.ToLogId(),
            Checksum = ByteString.CopyFrom(SnapshotManifest.Checksum(bytes)),
        };
    }

    /// <summary>The largest listed file of a snapshot (an SST with data, in practice).</summary>
    public static string LargestFile(string directory)
    {
        var manifest = SnapshotManifest.Parse(File.ReadAllBytes(Path.Combine(directory, SnapshotManifest.FileName)));
        return Path.Combine(directory, manifest.Files.MaxBy(f => f.Size).Name);
    }

    /// <summary>The db-* entries of a partition directory, by name.</summary>
    public static string[] GenerationEntries(string partitionPath) =>
        Directory.EnumerateFileSystemEntries(partitionPath, "db-*").Select(Path.GetFileName).Order(StringComparer.Ordinal).ToArray()!;
}
