using System.Diagnostics;
using DEngine.StateMachine.Snapshots;
using Microsoft.Extensions.Logging;

namespace DEngine.Orleans.Snapshots;

/// <summary>Reads one chunk of a snapshot file from wherever the snapshot is served.</summary>
public delegate Task<SnapshotChunkData> ChunkReader(string file, long offset, int length);

/// <summary>
/// Pulls a snapshot into a local directory in chunks of at most 1 MiB, each checked with CRC-32C
/// and fetched again when it does not match. It writes only files named in the (checksum-verified)
/// manifest, under relative names; a partly fetched file is resumed from its length. The result is
/// verified as a whole by the engine's install.
/// </summary>
public sealed partial class SnapshotFetcher(ILogger logger)
{
    /// <summary>Attempts per chunk before the fetch fails.</summary>
    public const int MaxAttemptsPerChunk = 5;

    /// <summary>Chunk reads of one file allowed to run ahead of the writer (each ≤ 1 MiB, so at most this many MiB buffered).</summary>
    public const int ChunksInFlight = 4;

    private static readonly TimeSpan ProgressEvery = TimeSpan.FromSeconds(2);

    /// <summary>Fetches <paramref name="offer"/> into <paramref name="directory"/>; returns the number of chunks fetched again after a bad checksum.</summary>
    public async Task<int> FetchAsync(SnapshotOffer offer, ChunkReader read, string directory, IProgress<TransferProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        if (!SnapshotManifest.Checksum(offer.Manifest).AsSpan().SequenceEqual(offer.Checksum))
        {
            throw new DEngineException(DEngineErrorCode.SnapshotRejected, $"The manifest of {offer.Snapshot} does not match its checksum; refusing to fetch it.", offer.Partition);
        }
        var manifest = SnapshotManifest.Parse(offer.Manifest, offer.Partition);
        foreach (var file in manifest.Files)
        {
            SnapshotManifest.CheckName(file.Name, offer.Partition);
        }
        Directory.CreateDirectory(directory);
        await File.WriteAllBytesAsync(Path.Combine(directory, SnapshotManifest.FileName), offer.Manifest, cancellationToken);

        var clock = Stopwatch.StartNew();
        var lastReport = TimeSpan.Zero;
        long done = 0;
        var refetched = 0;
        foreach (var file in manifest.Files)
        {
            var path = Path.Combine(directory, file.Name.Replace('/', Path.DirectorySeparatorChar));
            Directory.CreateDirectory(Path.GetDirectoryName(path)!);
            await using var output = new FileStream(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None, 1 << 16, FileOptions.Asynchronous);
            // Resume: keep what an earlier, interrupted fetch wrote (the install verifies every byte).
            var offset = Math.Min(output.Length, file.Size);
            output.SetLength(offset);
            output.Position = offset;
            done += offset;
            // Up to ChunksInFlight chunk reads run ahead of the writer (each still ≤ 1 MiB and CRC-checked
            // on its own); chunks are written strictly in order, so the file is always a verified
            // prefix and an interrupted fetch resumes from its length as before.
            var inFlight = new Queue<Task<byte[]>>();
            var requested = offset;
            try
            {
                while (offset < file.Size)
                {
                    while (inFlight.Count < ChunksInFlight && requested < file.Size)
                    {
                        var length = (int)Math.Min(SnapshotServerGrain.MaxChunkBytes, file.Size - requested);
                        inFlight.Enqueue(ReadCheckedAsync(read, offer, file.Name, requested, length, () => Interlocked.Increment(ref refetched)));
                        requested += length;
                    }
                    var chunk = await inFlight.Dequeue();
                    await output.WriteAsync(chunk, cancellationToken);
                    offset += chunk.Length;
                    done += chunk.Length;
                    if (clock.Elapsed - lastReport >= ProgressEvery)
                    {
                        lastReport = clock.Elapsed;
                        Report(progress, new TransferProgress(offer.Partition, offer.Snapshot, done, offer.TotalBytes, clock.Elapsed.TotalSeconds));
                    }
                }
            }
            finally
            {
                // On failure, let the reads still running finish (their results are dropped) so none is left unobserved.
                while (inFlight.Count > 0)
                {
                    try
                    {
                        await inFlight.Dequeue();
                    }
                    catch (Exception)
                    {
                        // The first failure is the one reported.
                    }
                }
            }
            await output.FlushAsync(cancellationToken);
        }
        Report(progress, new TransferProgress(offer.Partition, offer.Snapshot, done, offer.TotalBytes, clock.Elapsed.TotalSeconds));
        return refetched;
    }

    private async Task<byte[]> ReadCheckedAsync(ChunkReader read, SnapshotOffer offer, string file, long offset, int length, Action onRefetch)
    {
        for (var attempt = 1; ; attempt++)
        {
            Exception? failure = null;
            SnapshotChunkData? chunk = null;
            try
            {
                chunk = await read(file, offset, length);
            }
            catch (Exception ex) when (ex is not DEngineException { Code: DEngineErrorCode.SnapshotRejected } && attempt < MaxAttemptsPerChunk)
            {
                failure = ex;
            }
            if (chunk is not null)
            {
                if (chunk.Data.Length == length && Crc32C.Compute(chunk.Data) == chunk.Crc32C)
                {
                    return chunk.Data;
                }
                if (attempt >= MaxAttemptsPerChunk)
                {
                    throw new DEngineException(DEngineErrorCode.SnapshotRejected, $"Chunk {file}@{offset} of {offer.Snapshot} failed its checksum {attempt} times; giving up.", offer.Partition);
                }
            }
            onRefetch();
            LogRefetch(offer.Partition, file, offset, attempt, failure?.Message ?? "CRC-32C mismatch");
        }
    }

    private void Report(IProgress<TransferProgress>? progress, TransferProgress p)
    {
        LogProgress(p.Partition, p.Snapshot, p.Bytes, p.TotalBytes, p.Percent, p.MegabytesPerSecond);
        progress?.Report(p);
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "Partition {Partition}: fetching {Snapshot}: {Bytes}/{Total} bytes ({Percent:0.0}%), {MBps:0.0} MB/s.")]
    private partial void LogProgress(int partition, string snapshot, long bytes, long total, double percent, double mbps);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Partition {Partition}: chunk {File}@{Offset} fetched again (attempt {Attempt}): {Reason}.")]
    private partial void LogRefetch(int partition, string file, long offset, int attempt, string reason);
}
