using DEngine.Orleans.Storage;
using DEngine.StateMachine;
using DEngine.StateMachine.Snapshots;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Orleans;
using Orleans.Concurrency;

namespace DEngine.Orleans.Snapshots;

/// <inheritdoc cref="ISnapshotServerGrain" />
[Reentrant]
[SiloIdentityPlacement]
public sealed partial class SnapshotServerGrain(PartitionStore store, IOptions<DEngineOptions> options, TimeProvider time, ILogger<SnapshotServerGrain> logger) : Grain, ISnapshotServerGrain
{
    /// <summary>Largest chunk served.</summary>
    public const int MaxChunkBytes = 1024 * 1024;

    /// <inheritdoc />
    public override Task OnActivateAsync(CancellationToken cancellationToken)
    {
        // Stay active for the silo's life: a silo that is shutting down cannot activate grains any
        // more, yet must still serve the snapshots it hands over.
        DelayDeactivation(TimeSpan.FromDays(3650));
        return Task.CompletedTask;
    }

    /// <inheritdoc />
    public Task Ping() => Task.CompletedTask;

    /// <inheritdoc />
    public async Task<SnapshotOffer> PrepareHandover(int partition)
    {
        // Heavy file work runs off the grain's turn; the grain keeps no state.
        var info = await Task.Run(async () =>
        {
            var engine = await OpenWhenReleasedAsync(partition);
            try
            {
                return engine.CreateSnapshot();
            }
            finally
            {
                store.Close(engine);
            }
        });
        var manifest = await File.ReadAllBytesAsync(Path.Combine(info.Directory, SnapshotManifest.FileName));
        LogPrepared(partition, Path.GetFileName(info.Directory), info.TotalBytes);
        return new SnapshotOffer(partition, Path.GetFileName(info.Directory), info.LastIncluded.Index, info.LastIncluded.Term, info.Metadata.Checksum.ToByteArray(), manifest, info.TotalBytes);
    }

    /// <inheritdoc />
    public Task<LocalCopy> DescribeCopy(int partition)
    {
        var name = this.GetPrimaryKeyString();
        return Task.Run(async () =>
        {
            var deadline = time.GetUtcNow() + options.Value.HandoverWait;
            while (true)
            {
                if (store.TryGetOpen(partition, out var open))
                {
                    return Describe(open.LastApplied);
                }
                if (!store.HasData(partition))
                {
                    return new LocalCopy(name, false, 0, 0);
                }
                try
                {
                    var engine = store.Open(partition);
                    try
                    {
                        return Describe(engine.LastApplied);
                    }
                    finally
                    {
                        store.Close(engine);
                    }
                }
                catch (DEngineException) when (time.GetUtcNow() < deadline)
                {
                    // An activation here is opening or closing it right now: look again.
                }
                await Task.Delay(TimeSpan.FromMilliseconds(50), time);
            }
        });

        LocalCopy Describe(LogPosition position) => new(name, position.Index > 0 || position.Term > 0, position.Index, position.Term);
    }

    /// <summary>
    /// Opens the partition's database once no activation on this silo holds it. This is the fence
    /// against a stale writer: while an activation here can still write, no checkpoint leaves.
    /// </summary>
    private async Task<IStateMachine> OpenWhenReleasedAsync(int partition)
    {
        var deadline = time.GetUtcNow() + options.Value.HandoverWait;
        while (true)
        {
            if (!store.IsOpen(partition))
            {
                try
                {
                    return store.Open(partition);
                }
                catch (DEngineException) when (time.GetUtcNow() < deadline)
                {
                    // The previous activation is between closing RocksDB and releasing its lock.
                }
            }
            if (time.GetUtcNow() >= deadline)
            {
                throw new DEngineException(DEngineErrorCode.PartitionUnavailable, $"Partition {partition} is still open on silo '{this.GetPrimaryKeyString()}' after {options.Value.HandoverWait.TotalSeconds:0} s: an activation there can still write, so no checkpoint is handed over. Retry once it has moved.", partition);
            }
            // The partition's activation on this silo is still closing its database.
            await Task.Delay(TimeSpan.FromMilliseconds(100), time);
        }
    }

    /// <inheritdoc />
    public async Task<SnapshotChunkData> ReadChunk(int partition, string snapshot, string file, long offset, int length)
    {
        if (!SnapshotName.TryParse(snapshot, out _))
        {
            throw new DEngineException(DEngineErrorCode.InvalidArgument, $"'{snapshot}' is not a snapshot name.", partition);
        }
        if (file != SnapshotManifest.FileName)
        {
            SnapshotManifest.CheckName(file, partition);
        }
        if (length is < 1 or > MaxChunkBytes || offset < 0)
        {
            throw new DEngineException(DEngineErrorCode.InvalidArgument, $"Chunks are 1 byte to {MaxChunkBytes} bytes at a non-negative offset (asked {length} at {offset}).", partition);
        }
        var directory = Path.Combine(store.PartitionPath(partition), "snapshots", snapshot);
        var path = Path.Combine(directory, file);
        if (!File.Exists(path))
        {
            throw new DEngineException(DEngineErrorCode.SnapshotRejected, $"Snapshot '{snapshot}' has no file '{file}' on this silo (deleted by retention?). Start the transfer again.", partition);
        }
        var buffer = new byte[length];
        var read = 0;
        await using (var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1, FileOptions.Asynchronous))
        {
            stream.Position = offset;
            while (read < length)
            {
                var n = await stream.ReadAsync(buffer.AsMemory(read, length - read));
                if (n == 0)
                {
                    break;
                }
                read += n;
            }
        }
        var data = read == length ? buffer : buffer.AsSpan(0, read).ToArray();
        return new SnapshotChunkData(data, Crc32C.Compute(data));
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "Partition {Partition}: checkpoint {Snapshot} ({Bytes} bytes) ready for handover.")]
    private partial void LogPrepared(int partition, string snapshot, long bytes);
}
