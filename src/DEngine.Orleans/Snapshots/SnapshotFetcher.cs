using System.Diagnostics;
using System.Security.Cryptography;
using DEngine.StateMachine.Snapshots;
using Microsoft.Extensions.Logging;

namespace DEngine.Orleans.Snapshots;

/// <summary>Reads one chunk of a snapshot file from wherever the snapshot is served.</summary>
public delegate Task<SnapshotChunkData> ChunkReader(string file, long offset, int length);

/// <summary>
/// Pulls a snapshot into a local directory in chunks of at most 1 MiB, each checked with CRC-32C
/// and fetched again when it does not match. It writes only files named in the (checksum-verified)
/// manifest, under relative names; a partly fetched file is resumed from its length, and fetched again
/// whole when the resumed file does not match its SHA-256 in the manifest. The result is verified as a
/// whole by the engine's install.
/// </summary>
public sealed partial class SnapshotFetcher(ILogger logger)
{
    /// <summary>
    /// Deletes every partial transfer under <paramref name="incomingRoot"/> except the one named
    /// <paramref name="keep"/> (which a new fetch resumes): older offers are never finished.
    /// </summary>
    public static void DeleteTransfersExcept(string incomingRoot, string keep)
    {
        if (!Directory.Exists(incomingRoot))
        {
            return;
        }
        foreach (var directory in Directory.EnumerateDirectories(incomingRoot))
        {
            if (Path.GetFileName(directory) != keep)
            {
                Directory.Delete(directory, recursive: true);
            }
        }
    }

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
            // Resume: keep what an earlier, interrupted fetch wrote...
            var kept = Math.Min(output.Length, file.Size);
            done += kept;
            await TransferAsync(output, file, kept);
            if (kept > 0 && !await HasHashAsync(output, file.Sha256, cancellationToken))
            {
                // ...but only if the whole file then checks out: a kept prefix damaged on this disk (a
                // torn write, a power cut) would otherwise fail the install's verification on every
                // attempt. Fetch the whole file again; chunks fetched from the source are CRC-checked.
                LogRefetchFile(offer.Partition, file.Name, kept);
                done -= file.Size;
                refetched++;
                await TransferAsync(output, file, 0);
            }
            await output.FlushAsync(cancellationToken);
        }

        async Task TransferAsync(FileStream output, SnapshotFile file, long offset)
        {
            output.SetLength(offset);
            output.Position = offset;
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
        }
        Report(progress, new TransferProgress(offer.Partition, offer.Snapshot, done, offer.TotalBytes, clock.Elapsed.TotalSeconds));
        return refetched;
    }

    /// <summary>True when the whole of <paramref name="output"/> has the SHA-256 <paramref name="sha256"/> (lowercase hex, as in the manifest).</summary>
    private static async Task<bool> HasHashAsync(FileStream output, string sha256, CancellationToken cancellationToken)
    {
        await output.FlushAsync(cancellationToken);
        output.Position = 0;
        var hash = await SHA256.HashDataAsync(output, cancellationToken);
        return string.Equals(Convert.ToHexStringLower(hash), sha256, StringComparison.OrdinalIgnoreCase);
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

    [LoggerMessage(Level = LogLevel.Warning, Message = "Partition {Partition}: the {Kept} bytes of {File} kept from an earlier fetch do not match the manifest; fetching the whole file again.")]
    private partial void LogRefetchFile(int partition, string file, long kept);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Partition {Partition}: chunk {File}@{Offset} fetched again (attempt {Attempt}): {Reason}.")]
    private partial void LogRefetch(int partition, string file, long offset, int attempt, string reason);
}
