using DEngine.Orleans.Diagnostics;
using DEngine.Protos.Client;
using DEngine.StateMachine;

namespace DEngine.Orleans.Partitions;

/// <summary>
/// Turns a partition's queued client writes into chunks: index = applied + 1…, term = the
/// activation's epoch, each command stamped with the instant it is sequenced. A built chunk goes to
/// the <see cref="IChunkCommitter"/>; its writers are acknowledged when that reports it durable.
/// </summary>
/// <remarks>
/// Not thread-safe: every member runs on the partition grain's scheduler. <see cref="Enqueue"/> only
/// queues (it is called from the grain's interleaving write methods); the drain loop is a task on
/// the grain's scheduler, so each chunk is built in a turn that never runs beside another one.
/// While one chunk is being made durable new writes keep queueing, and all of them go into the next
/// chunk (group commit). The queue is bounded (entries and bytes): over the bound a write is refused
/// with Overloaded before anything of it is sequenced.
/// </remarks>
/// <param name="partition">The partition (for errors and metrics).</param>
/// <param name="options">Queue and chunk bounds.</param>
/// <param name="metrics">Where refused writes are counted.</param>
/// <param name="target">The open database chunks are built on, or null when there is none (closed).</param>
/// <param name="committer">Makes built chunks durable.</param>
public sealed class Sequencer(int partition, DEngineOptions options, DEngineMetrics metrics, Func<OpenPartition?> target, IChunkCommitter committer)
{
    private readonly List<PendingWrite> _queue = [];
    private long _queuedBytes;
    private Task _drainLoop = Task.CompletedTask;
    private Task _lastCommit = Task.CompletedTask;

    /// <summary>
    /// Queues <paramref name="command"/> for the next chunk; the task completes with its result once
    /// its chunk is durable. Throws Overloaded (nothing queued) when the queue is full.
    /// </summary>
    public Task<ApplyResult> Enqueue(WriteCommand command)
    {
        var pending = new PendingWrite(command);
        // An empty queue takes any write, so one at the size limits always goes through.
        if (_queue.Count > 0 && (_queue.Count >= options.MaxQueuedWrites || _queuedBytes + pending.Bytes > options.MaxQueuedBytes))
        {
            metrics.WritesOverloaded.Add(1);
            throw new DEngineException(DEngineErrorCode.Overloaded, $"Partition {partition} is overloaded: {_queue.Count} writes ({_queuedBytes} bytes) already wait for the disk (limits DEngine:{nameof(DEngineOptions.MaxQueuedWrites)}={options.MaxQueuedWrites}, DEngine:{nameof(DEngineOptions.MaxQueuedBytes)}={options.MaxQueuedBytes}). Nothing of this write was applied; retry with backoff.", partition);
        }
        _queue.Add(pending);
        _queuedBytes += pending.Bytes;
        if (_drainLoop.IsCompleted)
        {
            _drainLoop = DrainLoopAsync();
        }
        return pending.Done.Task;
    }

    /// <summary>
    /// Records a chunk that reached the engine without the queue (an external chunk): the next chunk
    /// built here waits until <paramref name="durable"/> completes, as it does after its own chunks.
    /// </summary>
    public void Follow(Task durable) => _lastCommit = durable;

    /// <summary>
    /// For deactivation: builds chunks of everything queued without waiting between them, then waits
    /// for the last one to be durable. Nothing queued is lost.
    /// </summary>
    public async Task DrainAllAsync()
    {
        while (_queue.Count > 0 && target() is not null)
        {
            DrainOnce();
        }
        try
        {
            await _lastCommit;
        }
        catch (Exception)
        {
            // Already reported to the writers that were waiting for it.
        }
    }

    /// <summary>
    /// Builds chunks until the queue is empty, each after the previous one is durable. Runs on the
    /// activation's scheduler: every step is a turn of the grain, so chunks are built strictly serially.
    /// </summary>
    private async Task DrainLoopAsync()
    {
        // Let the writes that arrived with this one queue up first (the continuation is queued
        // behind them on the activation's scheduler).
        await Task.Yield();
        while (_queue.Count > 0 && target() is not null)
        {
            try
            {
                await committer.ReadyForNext(_lastCommit);
            }
            catch (Exception)
            {
                // Its writers were told; the next chunk gets its own sync.
            }
            if (_queue.Count == 0 || target() is null)
            {
                break;
            }
            DrainOnce();
        }
    }

    private void DrainOnce()
    {
        var open = target()!;
        // Bounded by entries and bytes (one WriteBatch in memory); a single larger write is a chunk of one.
        var count = 0;
        long bytes = 0;
        while (count < _queue.Count && count < options.MaxChunkEntries)
        {
            var size = _queue[count].Bytes;
            if (count > 0 && bytes + size > options.MaxChunkBytes)
            {
                break;
            }
            bytes += size;
            count++;
        }
        var batch = _queue.GetRange(0, count);
        _queue.RemoveRange(0, count);
        _queuedBytes -= bytes;

        ulong next = 0;
        Task<IReadOnlyList<ApplyResult>> commit;
        try
        {
            // Inside the try: whatever fails, every write taken off the queue gets its answer.
            next = committer.NextIndex(open);
            var now = open.Engine.EffectiveNowUnixMs;
            var entries = new ApplyEntry[count];
            for (var i = 0; i < count; i++)
            {
                Stamp(batch[i].Command, now);
                entries[i] = new ApplyEntry(next + (ulong)i, open.Epoch, batch[i].Command);
            }
            commit = committer.Commit(open, entries);
        }
        catch (Exception ex)
        {
            var error = ex as DEngineException ?? new DEngineException(DEngineErrorCode.StorageFailure, $"Applying a chunk failed: {ex.Message}", partition, next, ex);
            foreach (var pending in batch)
            {
                pending.Done.TrySetException(error);
            }
            return;
        }
        _lastCommit = commit;
        // Acknowledge outside the grain's turn: the thread that saw the chunk durable completes the writers.
        commit.ContinueWith(
            static (task, state) =>
            {
                var writes = (List<PendingWrite>)state!;
                for (var i = 0; i < writes.Count; i++)
                {
                    if (task.IsCompletedSuccessfully)
                    {
                        writes[i].Done.TrySetResult(task.Result[i]);
                    }
                    else
                    {
                        writes[i].Done.TrySetException(task.Exception!.InnerException!);
                    }
                }
            },
            batch,
            CancellationToken.None,
            TaskContinuationOptions.ExecuteSynchronously,
            TaskScheduler.Default);
    }

    /// <summary>
    /// Stamps a command with the instant it is sequenced (max(clock, time floor), see
    /// <see cref="IStateMachine.EffectiveNowUnixMs"/>). Here, in the serial turn that builds the
    /// chunk, and not when the request arrived: a CAS or a TTL queued behind a slow fsync is judged
    /// at the time it takes its place in the log, never earlier than a read that already answered.
    /// The stamps also raise the partition's time floor when applied.
    /// </summary>
    private static void Stamp(WriteCommand command, ulong now)
    {
        switch (command.OperationCase)
        {
            case WriteCommand.OperationOneofCase.Insert:
                var insert = command.Insert;
                insert.AsOfUnixMs = now;
                if (insert.TtlSecs > 0)
                {
                    // An absolute expiry makes every replay of the entry expire at the same instant.
                    insert.ExpiresAtUnixMs = TtlClock.ExpiryFrom(now, insert.TtlSecs);
                }
                break;
            case WriteCommand.OperationOneofCase.Delete:
                command.Delete.AsOfUnixMs = now;
                break;
            case WriteCommand.OperationOneofCase.CompareAndSwap:
                command.CompareAndSwap.AsOfUnixMs = now;
                break;
            case WriteCommand.OperationOneofCase.ExpireKeys:
            case WriteCommand.OperationOneofCase.ExpireSessions:
                // Planned as of an earlier instant: still expired now; keep the plan's stamp.
                break;
        }
    }

    private sealed class PendingWrite(WriteCommand command)
    {
        public WriteCommand Command { get; } = command;

        /// <summary>What the write costs the queue and its chunk: its encoded size.</summary>
        public long Bytes { get; } = command.CalculateSize();

        public TaskCompletionSource<ApplyResult> Done { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
    }
}
