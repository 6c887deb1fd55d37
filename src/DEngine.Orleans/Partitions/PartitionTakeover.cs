using DEngine.Orleans.Ownership;
using DEngine.Orleans.Snapshots;
using DEngine.Orleans.Storage;
using DEngine.Protos.Common;
using DEngine.Protos.Storage;
using DEngine.StateMachine;
using Google.Protobuf;
using Microsoft.Extensions.Logging;
using Orleans;

namespace DEngine.Orleans.Partitions;

/// <summary>
/// Moves a partition's current data to this silo from the silo that holds it: a fresh checkpoint
/// there, a verified chunked fetch, an install here, and only then the ownership transfer with a
/// higher epoch. The data is never served here before the transfer succeeded.
/// </summary>
/// <param name="partition">The partition.</param>
/// <param name="identity">This silo's stable identity.</param>
/// <param name="store">Where the partition's database is opened.</param>
/// <param name="grains">Grain factory (snapshot server of the source, holders).</param>
/// <param name="time">The clock the transfer is timed with.</param>
/// <param name="logger">The partition grain's logger.</param>
public sealed partial class PartitionTakeover(int partition, string identity, PartitionStore store, IGrainFactory grains, TimeProvider time, ILogger logger)
{
    /// <summary>What the transfer moved, once <see cref="RunAsync"/> succeeded.</summary>
    public TransferReport? Report { get; private set; }

    /// <summary>
    /// This silo lacks the partition's current data: the silo that has it takes a fresh checkpoint
    /// (its database is closed there now), this one fetches it in verified chunks, installs it, and
    /// only then takes ownership with a higher epoch. Until then it serves nothing. Returns the open,
    /// owned database; on failure nothing is left open and the exception says what failed.
    /// </summary>
    public async Task<OpenPartition> RunAsync(IPartitionOwnerGrain owner, OwnershipRecord record)
    {
        var from = record.OwnerSilo!;
        var server = grains.GetGrain<ISnapshotServerGrain>(from);
        var started = time.GetTimestamp();
        var offer = await server.PrepareHandover(partition);
        // Registered before this silo first writes the partition's data (the install below).
        await grains.GetGrain<IPartitionHoldersGrain>(partition).Add(identity);
        var engine = await Task.Run(() => store.Open(partition));
        try
        {
            // The engine refuses this install anyway; saying so before the fetch saves the transfer.
            var local = engine.LastApplied;
            if (new LogPosition(offer.Index, offer.Term).IsOlderThan(local))
            {
                throw new DEngineException(DEngineErrorCode.SnapshotRejected, $"the copy on silo '{from}' ends at {offer.Index}/{offer.Term}, older than this silo's copy at {local.Index}/{local.Term}; installing it would replace newer data with older, so nothing was fetched or installed", partition);
            }
            var incomingRoot = Path.Combine(store.PartitionPath(partition), "incoming");
            var incoming = Path.Combine(incomingRoot, offer.Snapshot);
            SnapshotFetcher.DeleteTransfersExcept(incomingRoot, offer.Snapshot);
            var fetcher = new SnapshotFetcher(logger);
            var refetched = await fetcher.FetchAsync(offer, (file, offset, length) => server.ReadChunk(partition, offer.Snapshot, file, offset, length), incoming);
            var metadata = new SnapshotMetadata
            {
                LastIncluded = new LogId { Index = offer.Index, Term = offer.Term },
                Checksum = ByteString.CopyFrom(offer.Checksum),
            };
            // The snapshot is the current data by the ownership record, so it replaces whatever older
            // data this silo kept from an earlier stay of the partition. Never newer data, though: the
            // engine refuses a snapshot older than the local copy (SnapshotRejected), force or not.
            await Task.Run(() => engine.InstallSnapshot(incoming, metadata, force: true));
            Directory.Delete(incoming, recursive: true);
            var moved = await owner.Transfer(from, record.Epoch, identity, Math.Max(offer.Term, engine.LastApplied.Term) + 1);
            if (moved.OwnerSilo != identity)
            {
                throw new DEngineException(DEngineErrorCode.StaleEpoch, $"ownership changed during the transfer (now silo '{moved.OwnerSilo}', epoch {moved.Epoch})", partition);
            }
            var open = new OpenPartition(engine, moved.Epoch);
            var elapsed = time.GetElapsedTime(started).TotalSeconds;
            Report = new TransferReport(from, offer.Snapshot, offer.TotalBytes, elapsed, refetched);
            LogMoved(logger, partition, from, identity, offer.TotalBytes, elapsed, Report.MegabytesPerSecond, open.Epoch);
            return open;
        }
        catch
        {
            await Task.Run(() => store.Close(engine));
            throw;
        }
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "Partition {Partition} moved from silo {From} to {To}: {Bytes} bytes in {Seconds:0.00} s ({MBps:0.0} MB/s), epoch {Epoch}.")]
    private static partial void LogMoved(ILogger logger, int partition, string from, string to, long bytes, double seconds, double mbps, ulong epoch);
}
