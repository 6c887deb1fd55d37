using System.Collections.Concurrent;
using System.Diagnostics;
using System.Text;
using DEngine.Client;
using DEngine.Orleans;
using Xunit.Abstractions;

namespace DEngine.Cluster.Tests;

/// <summary>
/// Issue 13's rolling restart and balance on three real silo processes of the Redis profile with
/// replica groups of three (the default MinReplicas 2 lets writes go on while one silo is away): each
/// silo is stopped with SIGTERM (it hands its primary roles over cleanly first), started again and
/// waited for until every partition has its three replicas back; and primary roles that all ended
/// on one silo are spread again by the balancer.
/// </summary>
[Collection(ReplicatedClusterCollection.Name)]
public sealed class RollingRestartTests(ReplicatedRedisClusterFixture cluster, ITestOutputHelper output)
{
    private static readonly TimeSpan Phase = TimeSpan.FromSeconds(90);

    [Fact]
    public async Task A_rolling_restart_of_every_silo_under_a_steady_write_load_fails_no_write_and_loses_no_acknowledged_one()
    {
        await cluster.EnsureAllRunningAsync();
        await cluster.SettledAsync(Phase);
        var load = new SteadyWrites(cluster.Client, writers: 4, "roll-" + Guid.NewGuid().ToString("N")[..8]);
        load.Start();
        await load.WaitForMoreAcksAsync(100, Phase);
        var rolled = Stopwatch.StartNew();
        for (var silo = 0; silo < RedisClusterFixture.SiloCount; silo++)
        {
            await cluster.StopSiloGracefullyAsync(silo);
            await cluster.StartSiloAsync(silo);
            // Ready: every partition has its three replicas back, none catching up (the floor is 2, so the next stop may begin).
            await cluster.SettledAsync(Phase);
            await load.WaitForMoreAcksAsync(20, Phase);
        }
        await load.StopAsync();
        output.WriteLine($"roll: {rolled.Elapsed.TotalSeconds:0.0} s, {load.Acknowledged.Count} writes acknowledged, longest write {load.Longest.TotalMilliseconds:0} ms, retried errors seen by the client not counted");

        Assert.True(load.Failures.IsEmpty, $"{load.Failures.Count} writes failed during the roll (OutcomeUnknown, a timeout or another error reached the caller), e.g. {string.Join(" | ", load.Failures.Take(3))}");
        var acked = load.Acknowledged.ToArray();
        var values = await cluster.Client.GetMultiAsync([.. acked.Select(p => Encoding.UTF8.GetBytes(p.Key))]);
        var missing = acked.Zip(values).Where(p => p.Second is null || Encoding.UTF8.GetString(p.Second) != p.First.Value).Select(p => p.First.Key).ToArray();
        Assert.True(missing.Length == 0, $"{missing.Length} of {acked.Length} acknowledged writes are missing or wrong after the roll, e.g. {string.Join(", ", missing.Take(5))}");
    }

    [Fact]
    public async Task Primary_roles_that_all_ended_on_one_silo_are_spread_within_one_of_even_once_the_others_are_back()
    {
        await cluster.EnsureAllRunningAsync();
        await cluster.SettledAsync(Phase);
        // Two silos stop one after the other: every role ends on silo0 (the only one left).
        await cluster.StopSiloGracefullyAsync(1);
        await cluster.StopSiloGracefullyAsync(2);
        var alone = await cluster.Client.GetStatusAsync();
        Assert.All(alone, s => Assert.Equal(cluster.Silos[0].Name, RedisClusterFixture.SiloOf(s)));

        await cluster.StartSiloAsync(1);
        await cluster.StartSiloAsync(2);
        await cluster.SettledAsync(Phase);
        IReadOnlyList<PartitionStatus>? last = null;
        var deadline = DateTime.UtcNow + Phase;
        while (true)
        {
            try
            {
                last = await cluster.Client.GetStatusAsync();
                var loads = cluster.Silos.Select(s => last.Count(p => RedisClusterFixture.SiloOf(p) == s.Name)).ToArray();
                if (last.Count == RedisClusterFixture.Partitions && loads.Max() - loads.Min() <= 1)
                {
                    break;
                }
            }
            catch (Exception ex) when (ex is DEngineException or OrleansException or TimeoutException)
            {
                // A partition between two primaries.
            }
            Assert.True(DateTime.UtcNow < deadline, $"primaries not within one of even after {Phase}: {(last is null ? "no status" : string.Join(" | ", last.Select(s => $"{s.Partition}@{RedisClusterFixture.SiloOf(s)}")))}");
            await Task.Delay(200);
        }
        // Balanced with every replica in place: each partition still takes writes.
        foreach (var status in last)
        {
            await cluster.Client.PutAsync(KeyIn(status.Partition, "balanced"), "yes"u8.ToArray());
        }
    }

    private static byte[] KeyIn(int partition, string prefix)
    {
        for (var i = 0; ; i++)
        {
            var key = Encoding.UTF8.GetBytes($"{prefix}-{i}");
            if (KeyRouting.PartitionOf(key, RedisClusterFixture.Partitions) == partition)
            {
                return key;
            }
        }
    }

    /// <summary>
    /// Closed-loop writers of unique keys through a client that retries retryable errors (its own
    /// policy); anything that still reaches the caller (OutcomeUnknown, a timeout, any exception) is a failure.
    /// </summary>
    private sealed class SteadyWrites(DEngineClient client, int writers, string prefix)
    {
        private readonly CancellationTokenSource _stop = new();
        private readonly List<Task> _tasks = [];
        private long _longestTicks;

        public ConcurrentDictionary<string, string> Acknowledged { get; } = new();

        public ConcurrentQueue<string> Failures { get; } = new();

        public TimeSpan Longest => TimeSpan.FromTicks(Interlocked.Read(ref _longestTicks));

        public void Start()
        {
            for (var w = 0; w < writers; w++)
            {
                var writer = w;
                _tasks.Add(Task.Run(() => WriteAsync(writer)));
            }
        }

        public async Task WaitForMoreAcksAsync(int count, TimeSpan timeout)
        {
            var target = Acknowledged.Count + count;
            var deadline = DateTime.UtcNow + timeout;
            while (Acknowledged.Count < target)
            {
                if (DateTime.UtcNow > deadline)
                {
                    throw new TimeoutException($"only {Acknowledged.Count} of {target} writes acknowledged within {timeout} (failures: {string.Join(" | ", Failures.Take(3))})");
                }
                await Task.Delay(20);
            }
        }

        public async Task StopAsync()
        {
            await _stop.CancelAsync();
            await Task.WhenAll(_tasks).WaitAsync(Phase);
        }

        private async Task WriteAsync(int writer)
        {
            for (var n = 0; !_stop.IsCancellationRequested; n++)
            {
                var key = $"{prefix}/w{writer}/{n}";
                var value = $"value-{writer}-{n}";
                var started = Stopwatch.GetTimestamp();
                try
                {
                    await client.PutAsync(Encoding.UTF8.GetBytes(key), Encoding.UTF8.GetBytes(value));
                    Acknowledged[key] = value;
                }
#pragma warning disable CA1031 // Every error that reaches the caller is what the test counts.
                catch (Exception ex)
#pragma warning restore CA1031
                {
                    Failures.Enqueue($"{key}: {ex.GetType().Name}: {ex.Message}");
                }
                var took = Stopwatch.GetElapsedTime(started).Ticks;
                long seen;
                while (took > (seen = Interlocked.Read(ref _longestTicks)) && Interlocked.CompareExchange(ref _longestTicks, took, seen) != seen)
                {
                }
            }
        }
    }
}
