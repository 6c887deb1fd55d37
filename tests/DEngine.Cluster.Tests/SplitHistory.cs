using System.Collections.Concurrent;
using System.Diagnostics;
using System.Text;
using DEngine.Orleans;

namespace DEngine.Cluster.Tests;

/// <summary>A write some client saw acknowledged: its log index, and when (test clock) it was invoked and answered.</summary>
public sealed record AcknowledgedWrite(string Side, int Partition, string Key, string Value, ulong Index, TimeSpan Invoked, TimeSpan Answered);

/// <summary>A write that failed (refused, timed out, outcome unknown): nothing was acknowledged.</summary>
public sealed record FailedWrite(string Side, int Partition, string Key, TimeSpan Invoked, string Error);

/// <summary>A read some partition answered.</summary>
public sealed record ServedRead(string Side, int Partition, string Key, TimeSpan Invoked, TimeSpan Answered);

/// <summary>
/// Closed-loop writers (fresh keys, each written once) and readers of acknowledged keys, through
/// any number of Orleans clients ("sides"), calling the partition grains directly so every
/// acknowledgement carries the write's log index. It records the whole history against one
/// monotonic clock; a read that does not return the value of a write acknowledged before the read
/// was invoked is recorded as stale there and then.
/// </summary>
public sealed class SplitHistory(Stopwatch clock, int partitions, string prefix)
{
    private readonly List<AcknowledgedWrite>[] _byPartition = [.. Enumerable.Range(0, partitions).Select(_ => new List<AcknowledgedWrite>())];

    public ConcurrentQueue<AcknowledgedWrite> Acknowledged { get; } = new();

    public ConcurrentQueue<FailedWrite> Failed { get; } = new();

    public ConcurrentQueue<ServedRead> Served { get; } = new();

    public ConcurrentQueue<string> StaleReads { get; } = new();

    /// <summary>Errors that are neither retryable, nor a transport failure, nor OutcomeUnknown: by side.</summary>
    public ConcurrentQueue<(string Side, string Error)> UnexpectedErrors { get; } = new();

    /// <summary>
    /// Starts <paramref name="writers"/> writers and <paramref name="readers"/> readers through
    /// <paramref name="client"/>, on <paramref name="partition"/> only or (null) on every partition.
    /// Readers read the newest acknowledged key of their partition half the time (where a stale
    /// primary would show first) and a random acknowledged one otherwise.
    /// </summary>
    public Load Start(IClusterClient client, string side, int writers, int readers, int? partition)
    {
        var load = new Load();
        for (var w = 0; w < writers; w++)
        {
            var writer = $"{side}{(partition is { } p ? $"-p{p}" : "")}-w{w}";
            load.Add(Task.Run(() => WriteAsync(client, side, writer, partition, load.Token)));
        }
        for (var r = 0; r < readers; r++)
        {
            var seed = HashCode.Combine(side, partition, r);
            load.Add(Task.Run(() => ReadAsync(client, side, partition, seed, load.Token)));
        }
        return load;
    }

    /// <summary>Acknowledged writes of <paramref name="partition"/> (null: every partition) invoked at or after <paramref name="since"/>.</summary>
    public int AcknowledgedSince(TimeSpan since, int? partition = null, string? side = null) =>
        Acknowledged.Count(a => a.Invoked >= since && (partition is null || a.Partition == partition) && (side is null || a.Side == side));

    /// <summary>Waits (polling, with a deadline) until <paramref name="count"/> writes of <paramref name="partition"/> invoked after <paramref name="since"/> are acknowledged.</summary>
    public async Task WaitForAcknowledgedAsync(int count, TimeSpan since, int? partition, string? side, TimeSpan timeout)
    {
        var deadline = clock.Elapsed + timeout;
        while (AcknowledgedSince(since, partition, side) < count)
        {
            if (clock.Elapsed > deadline)
            {
                throw new TimeoutException($"only {AcknowledgedSince(since, partition, side)} of {count} writes ({side ?? "any side"}, partition {partition?.ToString() ?? "any"}) acknowledged within {timeout}; failures: {string.Join(" | ", Failed.TakeLast(3).Select(f => f.Error))}");
            }
            await Task.Delay(50);
        }
    }

    /// <summary>Writes acknowledged in an order that no single log allows: two with one index, or one acknowledged before another was invoked yet at a higher index.</summary>
    public IReadOnlyList<string> LogOrderViolations()
    {
        var violations = new List<string>();
        foreach (var group in Acknowledged.GroupBy(a => a.Partition))
        {
            foreach (var same in group.GroupBy(a => a.Index).Where(g => g.Count() > 1))
            {
                violations.Add($"partition {group.Key}: index {same.Key} acknowledged for {string.Join(", ", same.Select(Describe))}");
            }
            // Real time: if A was answered before B was invoked, a single log holds A before B.
            var byAnswer = group.OrderBy(a => a.Answered).ToArray();
            var highest = new AcknowledgedWrite?[byAnswer.Length];
            for (var i = 0; i < byAnswer.Length; i++)
            {
                highest[i] = i > 0 && highest[i - 1]!.Index > byAnswer[i].Index ? highest[i - 1] : byAnswer[i];
            }
            foreach (var b in group)
            {
                var before = LastAnsweredBefore(byAnswer, b.Invoked);
                if (before >= 0 && highest[before]!.Index >= b.Index && !ReferenceEquals(highest[before], b))
                {
                    violations.Add($"partition {group.Key}: {Describe(highest[before]!)} was acknowledged before {Describe(b)} was invoked, but not at a lower index");
                }
            }
        }
        return violations;
    }

    /// <summary>The position of the last write in <paramref name="byAnswer"/> (sorted by answer time) answered before <paramref name="time"/>; -1 for none.</summary>
    private static int LastAnsweredBefore(AcknowledgedWrite[] byAnswer, TimeSpan time)
    {
        int low = 0, high = byAnswer.Length;
        while (low < high)
        {
            var middle = (low + high) / 2;
            if (byAnswer[middle].Answered < time)
            {
                low = middle + 1;
            }
            else
            {
                high = middle;
            }
        }
        return low - 1;
    }

    public static string Describe(AcknowledgedWrite a) => $"{a.Key} ({a.Side}, index {a.Index}, invoked {a.Invoked.TotalSeconds:0.000} s, answered {a.Answered.TotalSeconds:0.000} s)";

    private async Task WriteAsync(IClusterClient client, string side, string writer, int? partition, CancellationToken stop)
    {
        for (var n = 0; !stop.IsCancellationRequested; n++)
        {
            var (key, p) = FreshKey($"{prefix}/{writer}/{n}", partition);
            var value = $"{writer}-{n}";
            var invoked = clock.Elapsed;
            try
            {
                var index = await client.GetGrain<IStateMachineGrain>(p).Put(Encoding.UTF8.GetBytes(key), Encoding.UTF8.GetBytes(value), 0);
                var acknowledged = new AcknowledgedWrite(side, p, key, value, index, invoked, clock.Elapsed);
                lock (_byPartition[p])
                {
                    _byPartition[p].Add(acknowledged);
                }
                Acknowledged.Enqueue(acknowledged);
            }
            catch (Exception ex)
            {
                Failed.Enqueue(new FailedWrite(side, p, key, invoked, ex.GetType().Name + ": " + ex.Message));
                Classify(side, ex);
                await Task.Delay(20, CancellationToken.None);
            }
        }
    }

    private async Task ReadAsync(IClusterClient client, string side, int? partition, int seed, CancellationToken stop)
    {
        var random = new Random(seed);
        while (!stop.IsCancellationRequested)
        {
            var p = partition ?? random.Next(partitions);
            AcknowledgedWrite? target;
            lock (_byPartition[p])
            {
                var acknowledged = _byPartition[p];
                target = acknowledged.Count == 0 ? null : random.Next(2) == 0 ? acknowledged[^1] : acknowledged[random.Next(acknowledged.Count)];
            }
            if (target is null)
            {
                await Task.Delay(5, CancellationToken.None);
                continue;
            }
            // Taken after choosing: the write was acknowledged before this read was invoked.
            var invoked = clock.Elapsed;
            try
            {
                var value = await client.GetGrain<IStateMachineGrain>(p).Get(Encoding.UTF8.GetBytes(target.Key));
                var answered = clock.Elapsed;
                Served.Enqueue(new ServedRead(side, p, target.Key, invoked, answered));
                var text = value is null ? null : Encoding.UTF8.GetString(value);
                if (text != target.Value)
                {
                    StaleReads.Enqueue($"{side} read of {Describe(target)}, invoked {invoked.TotalSeconds:0.000} s, answered {answered.TotalSeconds:0.000} s: {text ?? "<absent>"}");
                }
            }
            catch (Exception ex)
            {
                Classify(side, ex);
                await Task.Delay(20, CancellationToken.None);
            }
        }
    }

    private (string Key, int Partition) FreshKey(string stem, int? partition)
    {
        for (var i = 0; ; i++)
        {
            var key = i == 0 ? stem : $"{stem}.{i}";
            var p = KeyRouting.PartitionOf(Encoding.UTF8.GetBytes(key), partitions);
            if (partition is null || p == partition)
            {
                return (key, p);
            }
        }
    }

    private void Classify(string side, Exception ex)
    {
        switch (ex)
        {
            case DEngineException { IsRetryable: true }:
            case DEngineException { Code: DEngineErrorCode.OutcomeUnknown }:
            case OrleansException or TimeoutException or OperationCanceledException:
                // Refused, or the outcome is unknown (a split or dead silo mid-call): not acknowledged.
                break;
            default:
                UnexpectedErrors.Enqueue((side, ex.GetType().Name + ": " + ex.Message));
                break;
        }
    }

    /// <summary>The writers and readers of one <see cref="Start"/>; stopped together.</summary>
    public sealed class Load
    {
        private readonly CancellationTokenSource _stop = new();
        private readonly List<Task> _tasks = [];

        internal CancellationToken Token => _stop.Token;

        internal void Add(Task task) => _tasks.Add(task);

        /// <summary>Stops and waits for the calls in flight (each ends within the client's response timeout).</summary>
        public async Task StopAsync()
        {
            _stop.Cancel();
            await Task.WhenAll(_tasks);
        }
    }
}
