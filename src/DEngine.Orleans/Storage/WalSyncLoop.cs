using DEngine.StateMachine;
using Microsoft.Extensions.Logging;

namespace DEngine.Orleans.Storage;

/// <summary>
/// The silo's group-commit engine: one dedicated thread that fsyncs the write-ahead logs of every
/// partition with unsynced writes and then completes the waiters. fsyncs are the scarce resource, so
/// one fsync serves every write a partition applied before it, and no thread-pool thread ever
/// blocks on one (that would starve Orleans' scheduler).
/// </summary>
public sealed partial class WalSyncLoop : IDisposable
{
    private readonly object _gate = new();
    private readonly Thread _thread;
    private readonly ILogger<WalSyncLoop> _logger;
    private List<Request> _pending = [];
    private List<Request> _spare = [];
    private bool _stopping;
    private long _syncs;

    /// <summary>Starts the sync thread.</summary>
    public WalSyncLoop(ILogger<WalSyncLoop> logger)
    {
        _logger = logger;
        _thread = new Thread(Run) { IsBackground = true, Name = "DEngine WAL sync" };
        _thread.Start();
    }

    /// <summary>Number of fsyncs performed (one per dirty partition per round).</summary>
    public long Syncs => Interlocked.Read(ref _syncs);

    /// <summary>
    /// Completes once everything <paramref name="machine"/> applied up to <paramref name="index"/> is
    /// durable. Completes at once when it already is.
    /// </summary>
    public Task WhenDurable(IStateMachine machine, ulong index)
    {
        if (machine.DurableIndex >= index)
        {
            return Task.CompletedTask;
        }
        var request = new Request(machine, index, new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously));
        lock (_gate)
        {
            if (_stopping)
            {
                // The loop is gone (silo shutting down) but the write is applied: sync it here
                // rather than report a retryable error for a write that did take effect.
                try
                {
                    machine.SyncWal();
                    return Task.CompletedTask;
                }
                catch (Exception ex)
                {
                    return Task.FromException(ex);
                }
            }
            _pending.Add(request);
            if (_pending.Count == 1)
            {
                Monitor.Pulse(_gate);
            }
        }
        return request.Done.Task;
    }

    private void Run()
    {
        var machines = new List<IStateMachine>();
        while (true)
        {
            List<Request> batch;
            lock (_gate)
            {
                while (_pending.Count == 0 && !_stopping)
                {
                    Monitor.Wait(_gate);
                }
                if (_pending.Count == 0)
                {
                    return;
                }
                batch = _pending;
                _pending = _spare;
            }

            machines.Clear();
            foreach (var request in batch)
            {
                if (!machines.Contains(request.Machine))
                {
                    machines.Add(request.Machine);
                }
            }
            foreach (var machine in machines)
            {
                Exception? failure = null;
                try
                {
                    machine.SyncWal();
                    Interlocked.Increment(ref _syncs);
                }
                catch (Exception ex)
                {
                    failure = ex;
                    LogSyncFailed(machine.PartitionId, ex);
                }
                foreach (var request in batch)
                {
                    if (!ReferenceEquals(request.Machine, machine))
                    {
                        continue;
                    }
                    if (failure is not null)
                    {
                        request.Done.TrySetException(failure);
                    }
                    else if (machine.DurableIndex >= request.Index)
                    {
                        request.Done.TrySetResult();
                    }
                    else
                    {
                        request.Done.TrySetException(new InvalidOperationException($"WAL sync of partition {machine.PartitionId} did not cover index {request.Index}."));
                    }
                }
            }
            batch.Clear();
            lock (_gate)
            {
                _spare = batch;
            }
        }
    }

    /// <summary>Stops the thread after the waiting requests are served.</summary>
    public void Dispose()
    {
        lock (_gate)
        {
            _stopping = true;
            Monitor.PulseAll(_gate);
        }
        _thread.Join();
    }

    private sealed record Request(IStateMachine Machine, ulong Index, TaskCompletionSource Done);

    [LoggerMessage(Level = LogLevel.Error, Message = "Syncing the write-ahead log of partition {Partition} failed; its waiting writes are failed.")]
    private partial void LogSyncFailed(int partition, Exception exception);
}
