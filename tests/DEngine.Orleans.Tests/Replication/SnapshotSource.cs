using DEngine.Orleans.Replication;
using DEngine.Orleans.Snapshots;
using DEngine.StateMachine;
using DEngine.StateMachine.Replication;
using DEngine.StateMachine.Snapshots;
using static DEngine.StateMachine.Tests.Support.Log;

namespace DEngine.Orleans.Tests.Replication;

/// <summary>
/// A primary's copy for the snapshot catch-up tests: small log segments and frequent compaction, so
/// a few hundred committed entries push its log's base well past the start; and the ways a replica
/// reads its snapshot (as an offer, chunk by chunk, from its files).
/// </summary>
public static class SnapshotSource
{
    /// <summary>A copy whose log rolls every 4 KiB and compacts every 8 applied entries.</summary>
    public static ReplicaCopy CompactingCopy(int partition, string engineDirectory, string logDirectory) =>
        new(partition,
            new RocksDbStateMachine(engineDirectory, new RocksDbStateMachineOptions { PartitionId = partition, Durability = DurabilityMode.Relaxed }),
            ReplicatedLog.Open(logDirectory, partition, new ReplicatedLogOptions { SegmentBytes = ReplicatedLogOptions.MIN_SEGMENT_BYTES }),
            compactEvery: 8);

    /// <summary>Appends and commits keys k1..k<paramref name="count"/> (100-byte values) as primary of <paramref name="version"/>, ten entries per append.</summary>
    public static void Fill(ReplicaCopy primary, ulong version, int count)
    {
        primary.Promote(version);
        var next = primary.Position.LastIndex + 1;
        for (var i = 0; i < count; i += 10)
        {
            var batch = Enumerable.Range(i + 1, Math.Min(10, count - i)).Select(k => Insert(next++, $"k{k}", new string('v', 100), term: version)).ToArray();
            primary.AppendOwn(version, batch, 0);
            primary.Commit(batch[^1].Index);
        }
    }

    /// <summary>What a primary offers for <paramref name="snapshot"/> (as the replicator builds it).</summary>
    public static SnapshotOffer Offer(int partition, SnapshotInfo snapshot) =>
        new(partition, Path.GetFileName(snapshot.Directory), snapshot.LastIncluded.Index, snapshot.LastIncluded.Term, snapshot.Metadata.Checksum.ToByteArray(), File.ReadAllBytes(Path.Combine(snapshot.Directory, SnapshotManifest.FileName)), snapshot.TotalBytes);

    /// <summary>Reads a chunk of a snapshot file as the primary's snapshot server would.</summary>
    public static SnapshotChunkData ReadChunk(string snapshotDirectory, string file, long offset, int length)
    {
        using var stream = File.OpenRead(Path.Combine(snapshotDirectory, file));
        stream.Position = offset;
        var buffer = new byte[length];
        var read = stream.ReadAtLeast(buffer, length, throwOnEndOfStream: false);
        var data = buffer.AsSpan(0, read).ToArray();
        return new SnapshotChunkData(data, Crc32C.Compute(data));
    }
}
