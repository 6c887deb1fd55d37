using DEngine.Orleans.Diagnostics;
using DEngine.Orleans.Snapshots;
using DEngine.Protos.Common;
using DEngine.Protos.Storage;
using DEngine.StateMachine;
using Google.Protobuf;
using Microsoft.Extensions.Logging;

namespace DEngine.Orleans.Replication;

/// <summary>
/// A replica's side of catching up from a snapshot: the version fence, a verified chunked fetch of
/// the primary's checkpoint into the copy's <c>incoming</c> directory, and the install into the copy
/// (<see cref="ReplicaCopy.InstallSnapshot"/>). One install per partition runs at a time, in the
/// background: a call answers within the request's <see cref="InstallSnapshotRequest.MaxWait"/>
/// (Installing while it goes on) and the primary asks again, so an install of any size never
/// outlasts a grain call's timeout.
/// </summary>
/// <remarks>
/// A failed or interrupted fetch changes nothing in the copy: only files under <c>incoming</c> are
/// written until the engine's install, which is atomic. What was fetched is kept, so the next attempt
/// on the same snapshot resumes it; another snapshot's leftovers are deleted first.
/// </remarks>
/// <param name="time">The clock (how long a call waits for an install).</param>
/// <param name="metrics">Where installs in progress and fetched bytes are recorded; null: nowhere.</param>
public sealed partial class SnapshotInstalls(TimeProvider time, DEngineMetrics? metrics = null)
{
    // Guards _running: one install per partition, running or finished and not yet reported. Held only
    // to look up, start (the task is created, not awaited) or remove one.
    private readonly Lock _gate = new();
    private readonly Dictionary<int, Run> _running = [];

    /// <summary>True while an install into partition <paramref name="partition"/>'s copy runs (its copy must not be dropped).</summary>
    public bool IsRunning(int partition)
    {
        lock (_gate)
        {
            return _running.ContainsKey(partition);
        }
    }

    /// <summary>
    /// Handles one <see cref="InstallSnapshotRequest"/> for <paramref name="copy"/>: refuses a stale
    /// sender, answers Installed at once when the copy already holds the snapshot's last entry, else
    /// starts (or joins) the fetch and install and waits for it at most the request's MaxWait.
    /// Throws what the install threw when it failed (once; the next call starts over).
    /// </summary>
    /// <param name="copy">The replica's copy.</param>
    /// <param name="request">The primary's request.</param>
    /// <param name="read">Reads chunks of the offered snapshot from the primary.</param>
    /// <param name="incomingRoot">Where snapshots are fetched to (one subdirectory per snapshot).</param>
    /// <param name="logger">Where progress is reported.</param>
    public async Task<InstallSnapshotResponse> InstallAsync(ReplicaCopy copy, InstallSnapshotRequest request, ChunkReader read, string incomingRoot, ILogger logger)
    {
        ArgumentNullException.ThrowIfNull(copy);
        ArgumentNullException.ThrowIfNull(request);
        ArgumentNullException.ThrowIfNull(read);
        var offer = request.Offer ?? throw new DEngineException(DEngineErrorCode.InvalidArgument, $"An install request from '{request.Primary}' carries no snapshot.", copy.Partition);
        if (offer.Partition != copy.Partition)
        {
            throw new DEngineException(DEngineErrorCode.InvalidArgument, $"A snapshot of partition {offer.Partition} was offered to the copy of partition {copy.Partition}; nothing was installed.", copy.Partition);
        }
        var label = new LogPosition(offer.Index, offer.Term);
        if (await Task.Run(() => copy.BeginInstall(request.Version, label)) is { } answer)
        {
            return Answered(answer, 0);
        }
        Run run;
        lock (_gate)
        {
            if (!_running.TryGetValue(copy.Partition, out run!) || (run.Task.IsCompleted && (run.Snapshot != offer.Snapshot || run.Task.IsCompletedSuccessfully)))
            {
                // None yet, or a finished one whose outcome is of no use to this request (another
                // snapshot, or one that succeeded and yet the copy needs this one): start this one.
                run = Start(copy, request, read, incomingRoot, logger);
                _running[copy.Partition] = run;
            }
        }
        await Task.WhenAny(run.Task, Task.Delay(request.MaxWait, time));
        if (!run.Task.IsCompleted)
        {
            return new InstallSnapshotResponse(InstallStatus.Installing, await Task.Run(() => Position(copy)), Interlocked.Read(ref run.Fetched));
        }
        lock (_gate)
        {
            // Reported once: the next request starts afresh (after a failure, resuming what was fetched).
            if (_running.TryGetValue(copy.Partition, out var current) && current == run)
            {
                _running.Remove(copy.Partition);
            }
        }
        return Answered(await run.Task, Interlocked.Read(ref run.Fetched));
    }

    private Run Start(ReplicaCopy copy, InstallSnapshotRequest request, ChunkReader read, string incomingRoot, ILogger logger)
    {
        var run = new Run(request.Offer.Snapshot);
        if (metrics is { } counted)
        {
            // Counted as they arrive (a resumed fetch does not count what it kept; a refetch counts again).
            var inner = read;
            read = async (file, offset, length) =>
            {
                var chunk = await inner(file, offset, length);
                counted.SnapshotBytesMoved(copy.Partition, chunk.Data.Length);
                return chunk;
            };
        }
        // Off the caller's scheduler: the install outlives the call that started it.
        run.Task = Task.Run(() => FetchAndInstallAsync(copy, request, read, incomingRoot, logger, run));
        return run;
    }

    private async Task<AppendResponse> FetchAndInstallAsync(ReplicaCopy copy, InstallSnapshotRequest request, ChunkReader read, string incomingRoot, ILogger logger, Run run)
    {
        var offer = request.Offer;
        var started = time.GetTimestamp();
        LogInstallStarted(logger, copy.Partition, offer.Snapshot, request.Primary, offer.TotalBytes, offer.Index, offer.Term);
        var directory = Path.Combine(incomingRoot, offer.Snapshot);
        SnapshotFetcher.DeleteTransfersExcept(incomingRoot, offer.Snapshot);
        var progress = new Progress(run);
        metrics?.Rebuilding(copy.Partition, +1);
        AppendResponse answer;
        try
        {
            await new SnapshotFetcher(logger).FetchAsync(offer, read, directory, progress);
            var metadata = new SnapshotMetadata
            {
                LastIncluded = new LogId { Index = offer.Index, Term = offer.Term },
                Checksum = ByteString.CopyFrom(offer.Checksum),
            };
            answer = copy.InstallSnapshot(request.Version, directory, metadata);
        }
        finally
        {
            metrics?.Rebuilding(copy.Partition, -1);
        }
        Directory.Delete(directory, recursive: true);
        LogInstalled(logger, copy.Partition, offer.Snapshot, answer.Status, answer.LastIndex, time.GetElapsedTime(started).TotalSeconds);
        return answer;
    }

    private static AppendResponse Position(ReplicaCopy copy)
    {
        var p = copy.Position;
        return new AppendResponse(AppendStatus.Appended, p.Version, p.LastIndex, p.LastTerm, p.CommitIndex, p.BaseIndex);
    }

    private static InstallSnapshotResponse Answered(AppendResponse answer, long fetched) =>
        new(answer.Status == AppendStatus.StaleVersion ? InstallStatus.StaleVersion : InstallStatus.Installed, answer, fetched);

    [LoggerMessage(Level = LogLevel.Information, Message = "Partition {Partition}: installing snapshot {Snapshot} from primary {Primary} ({Bytes} bytes, up to {Index}/{Term}): this copy lacks entries the primary's log no longer holds.")]
    private static partial void LogInstallStarted(ILogger logger, int partition, string snapshot, string primary, long bytes, ulong index, ulong term);

    [LoggerMessage(Level = LogLevel.Information, Message = "Partition {Partition}: snapshot {Snapshot} done ({Status}); the log now ends at {LastIndex}; {Seconds:0.00} s.")]
    private static partial void LogInstalled(ILogger logger, int partition, string snapshot, AppendStatus status, ulong lastIndex, double seconds);

    private sealed class Run(string snapshot)
    {
        public string Snapshot { get; } = snapshot;

        /// <summary>The fetch and install; set by <see cref="Start"/> before the run is visible to another call.</summary>
        public Task<AppendResponse> Task { get; set; } = null!;

        public long Fetched;
    }

    /// <summary>Records the fetch's progress synchronously (the fetcher reports on its own thread).</summary>
    private sealed class Progress(Run run) : IProgress<TransferProgress>
    {
        public void Report(TransferProgress value) => Interlocked.Exchange(ref run.Fetched, value.Bytes);
    }
}
