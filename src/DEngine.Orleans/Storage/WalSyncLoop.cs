using DEngine.StateMachine;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace DEngine.Orleans.Storage;

/// <summary>
/// The silo's group-commit engine: a few dedicated threads ("lanes") that fsync the write-ahead
/// logs of partitions with unsynced writes and then complete the waiters. fsyncs are the scarce
/// resource, so one fsync serves every write a partition applied before it; no thread-pool thread
/// ever blocks on one (that would starve Orleans' scheduler). A partition always uses the same lane
/// (partition mod lanes), so its syncs stay in order while different partitions' fsyncs overlap.
/// </summary>
public sealed partial class WalSyncLoop : IDisposable
{
    private readonly Lane[] _lanes;
    private readonly ILogger<WalSyncLoop> _logger;

    /// <summary>Starts <see cref="DEngineOptions.SyncThreads"/> sync threads.</summary>
    public WalSyncLoop(IOptions<DEngineOptions> options, ILogger<WalSyncLoop> logger)
    {
        _logger = logger;
        _lanes = new Lane[Math.Max(1, options.Value.SyncThreads)];
        for (var i = 0; i < _lanes.Length; i++)
        {
            _lanes[i] = new Lane(this, i);
        }
    }

    /// <summary>
    /// Test seam: called on a sync thread before it takes the waiting requests of a round, so a test
    /// can hold the round (its requests and any arriving meanwhile then share one fsync, as under load).
    /// </summary>
    internal Action? BeforeRound { get; set; }

    /// <summary>Number of fsyncs performed (one per dirty partition per round).</summary>
    public long Syncs => _lanes.Sum(l => Interlocked.Read(ref l.Syncs));

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
        return _lanes[(uint)machine.PartitionId % (uint)_lanes.Length].WhenDurable(machine, index);
    }

    /// <summary>Stops the threads after the waiting requests are served.</summary>
    public void Dispose()
    {
        foreach (var lane in _lanes)
        {
            lane.Stop();
        }
    }

    private sealed class Lane
    {
        private readonly WalSyncLoop _owner;
        private readonly object _gate = new();
        private readonly Thread _thread;
        private List<Request> _pending = [];
        private List<Request> _spare = [];
        private bool _stopping;
        public long Syncs;

        public Lane(WalSyncLoop owner, int number)
        {
            _owner = owner;
            _thread = new Thread(Run) { IsBackground = true, Name = $"DEngine WAL sync {number}" };
            _thread.Start();
        }

        public Task WhenDurable(IStateMachine machine, ulong index)
        {
            var request = new Request(machine, index, new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously));
            lock (_gate)
            {
                if (_stopping)
                {
                    // The lane is gone (silo shutting down) but the write is applied: sync it here
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

        public void Stop()
        {
            lock (_gate)
            {
                _stopping = true;
                Monitor.PulseAll(_gate);
            }
            _thread.Join();
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
                }
                _owner.BeforeRound?.Invoke();
                lock (_gate)
                {
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
                        Interlocked.Increment(ref Syncs);
                    }
                    catch (Exception ex)
                    {
                        failure = ex;
                        _owner.LogSyncFailed(machine.PartitionId, ex);
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
    }

    private sealed record Request(IStateMachine Machine, ulong Index, TaskCompletionSource Done);

    [LoggerMessage(Level = LogLevel.Error, Message = "Syncing the write-ahead log of partition {Partition} failed; its waiting writes are failed.")]
    private partial void LogSyncFailed(int partition, Exception exception);
}
