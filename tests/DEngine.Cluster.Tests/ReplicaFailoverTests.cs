using System.Collections.Concurrent;
using System.Diagnostics;
using System.Text;
using DEngine.Client;
using DEngine.Cluster.Tests.Linearizability;
using DEngine.Orleans;

namespace DEngine.Cluster.Tests;

/// <summary>
/// Replica groups of three (DEngine:Replication:Factor 3, as README's Redis example runs) on three
/// real silo processes of the Redis profile, with failure detection tuned to a few seconds: kill -9
/// of a partition's primary, and of two of the three silos.
/// </summary>
[Collection(ReplicatedClusterCollection.Name)]
public sealed class ReplicaFailoverTests(ReplicatedRedisClusterFixture cluster)
{
    private static readonly TimeSpan Phase = TimeSpan.FromSeconds(90);

    /// <summary>
    /// How long Orleans takes here to declare a killed silo dead: two missed 1 s probes, one vote, and
    /// the 1 s membership table refresh (see the fixture's flags), with a second of slack.
    /// </summary>
    private static readonly TimeSpan Detection = TimeSpan.FromSeconds(4);

    [Fact]
    public async Task Kill_9_of_a_partitions_primary_under_load_loses_no_acknowledged_write_and_it_takes_writes_again_within_detection_plus_5_s()
    {
        await cluster.EnsureAllRunningAsync();
        var statuses = await SettledAsync();
        // Any silo may die in the Redis profile (the records are in Redis): the first partition's primary's.
        var target = statuses[0];
        var victim = Array.FindIndex(cluster.Silos, s => s.Name == PrimaryOf(target));
        var prefix = "failover-" + Guid.NewGuid().ToString("N")[..8];
        var load = new WriteLoad(cluster.LoadClient, writers: 6, readers: 2, prefix: prefix);
        load.Start();
        await load.WaitForMoreAcksAsync(300, Phase);

        cluster.KillSilo(victim);
        var killed = Stopwatch.StartNew();
        // A writer of its own on the partition that lost its primary: the first acknowledged write after the kill.
        var recovered = await FirstWriteAfterAsync(target.Partition, prefix);
        var recovery = killed.Elapsed;
        await load.WaitForMoreAcksAsync(300, Phase);
        await load.StopAsync();

        Assert.True(recovery <= Detection + TimeSpan.FromSeconds(5), $"partition {target.Partition} took writes again only after {recovery.TotalSeconds:0.0} s (bound: detection {Detection.TotalSeconds} s + 5 s)");
        Assert.Empty(load.WrongAnswers);
        Assert.Empty(load.UnexpectedErrors);
        await AssertAllAcknowledgedPresentAsync(load, recovered);
        var after = await cluster.Client.GetPartitionStatusAsync(target.Partition);
        Assert.NotEqual(cluster.Silos[victim].Name, PrimaryOf(after));
        Assert.True(after.Epoch > target.Epoch, $"epoch {target.Epoch} -> {after.Epoch}");

        await cluster.StartSiloAsync(victim);
        await SettledAsync();
    }

    /// <summary>
    /// The issue's failover history check: eight clients run puts, gets, deletes and CAS on six keys
    /// (half of the operations on a key of the partition whose primary is killed) through kill -9 of
    /// that primary and the silo's restart; every operation's outcome as the client saw it (timeouts
    /// and OutcomeUnknown as unknown outcomes) must form a linearizable history per key.
    /// </summary>
    [Fact]
    public async Task Histories_of_eight_clients_across_kill_9_of_a_primary_and_its_restart_are_linearizable()
    {
        await RunHistoryAsync(async (victim, history) =>
        {
            await history.ReachedAsync(1, 3);
            cluster.KillSilo(victim);
            await history.ReachedAsync(2, 3);
            await cluster.StartSiloAsync(victim);
        });
    }

    /// <summary>
    /// A paused process (SIGSTOP past failure detection, as a long GC pause or a stalled VM would
    /// freeze it) is declared dead and replaced while it sleeps; when it resumes, it still believes
    /// it is the primary for a moment (until its next membership read, when Orleans stops it: about a
    /// second here). Its lease ran out meanwhile (its clock ran on) and its replicas have a newer
    /// version: it must neither serve a read nor acknowledge a write. The eight clients' histories
    /// across the pause, the takeover and the resumption must be linearizable.
    /// </summary>
    [Fact]
    public async Task A_primary_paused_past_failure_detection_and_resumed_serves_and_acknowledges_nothing_stale()
    {
        await RunHistoryAsync(async (victim, history) =>
        {
            await history.ReachedAsync(1, 4);
            cluster.PauseSilo(victim, pause: true);
            try
            {
                // Paused until the partition took writes elsewhere (a new primary committed them).
                await FirstWriteAfterAsync(history.Partition, $"paused-{Guid.NewGuid():N}", history.Client);
                await history.ReachedAsync(1, 2);
            }
            finally
            {
                cluster.PauseSilo(victim, pause: false);
            }
            // Let it run while clients still send to it (their caches may point at it), then restart it clean.
            await history.ReachedAsync(3, 4);
            cluster.KillSilo(victim);
            await cluster.StartSiloAsync(victim);
        }, avoidVictimGateway: true);
    }

    /// <summary>The workload and the check of both history tests; <paramref name="disturb"/> gets the victim's index (the primary of the first partition) and the running history.</summary>
    /// <remarks>
    /// <paramref name="avoidVictimGateway"/>: the clients connect through the other silos' gateways only.
    /// A paused process keeps its TCP connections open, so a client with a static gateway list keeps
    /// routing the grains it hashes to that gateway there, and each of those calls waits out its
    /// response timeout until the process resumes (a client-side matter, not what the pause tests).
    /// </remarks>
    private async Task RunHistoryAsync(Func<int, History, Task> disturb, bool avoidVictimGateway = false)
    {
        await cluster.EnsureAllRunningAsync();
        var statuses = await SettledAsync();
        var target = statuses[0];
        var victim = Array.FindIndex(cluster.Silos, s => s.Name == PrimaryOf(target));
        var connection = avoidVictimGateway ? await cluster.ConnectAsync(cluster.Silos.Where((_, i) => i != victim)) : default;
        try
        {
            await RunHistoryAsync(disturb, target, victim, connection.Client ?? cluster.LoadClient);
        }
        finally
        {
            if (connection.Host is { } host)
            {
                await host.StopAsync(new CancellationTokenSource(TimeSpan.FromSeconds(5)).Token);
                host.Dispose();
            }
        }
        await SettledAsync();
    }

    private static async Task RunHistoryAsync(Func<int, History, Task> disturb, DEngine.Orleans.PartitionStatus target, int victim, DEngineClient client)
    {
        var tag = Guid.NewGuid().ToString("N")[..8];
        string[] keys = [Encoding.UTF8.GetString(KeyIn(target.Partition, $"lin-{tag}")), .. Enumerable.Range(1, 5).Select(i => $"lin-{tag}-{i}")];
        var history = new History(target.Partition, client, clients: 8, opsPerClient: 100);
        var workers = Enumerable.Range(0, history.Clients).Select(c => Task.Run(async () =>
        {
            var random = new Random(c + 1);
            var lastSeen = new Dictionary<string, string?>();
            for (var i = 0; i < history.OpsPerClient; i++)
            {
                var key = random.Next(2) == 0 ? keys[0] : keys[random.Next(keys.Length)];
                var kind = (KvOpKind)random.Next(4);
                lastSeen.TryGetValue(key, out var expected);
                var op = await KvClientHistory.RunAsync(client, c, key, kind, $"c{c}-{i}", expected);
                if (op is not null)
                {
                    history.Operations.Add(op);
                    if (op.Kind == KvOpKind.Get)
                    {
                        lastSeen[key] = op.Output;
                    }
                }
                Interlocked.Increment(ref history.Completed);
            }
        })).ToArray();

        await disturb(victim, history);
        await Task.WhenAll(workers).WaitAsync(Phase);

        var result = LinearizabilityChecker.Check(history.Operations);
        Assert.True(result.IsLinearizable, $"key {result.FailingKey} {result.Reason}:\n{string.Join("\n", result.FailingHistory.OrderBy(o => o.Call))}");
        var known = history.Operations.Count(o => !o.OutcomeUnknown && o.Key == keys[0]);
        Assert.True(known > 50, $"only {known} operations on the failing partition's key have a known outcome");
    }

    /// <summary>A running history: its operations and how many have completed.</summary>
    private sealed class History(int partition, DEngineClient client, int clients, int opsPerClient)
    {
        public int Partition { get; } = partition;

        /// <summary>The client the workload runs through.</summary>
        public DEngineClient Client { get; } = client;

        public int Clients { get; } = clients;

        public int OpsPerClient { get; } = opsPerClient;

        public ConcurrentBag<KvOperation> Operations { get; } = [];

        public int Completed;

        /// <summary>Waits (with the phase deadline) until <paramref name="numerator"/>/<paramref name="denominator"/> of all operations completed.</summary>
        public Task ReachedAsync(int numerator, int denominator) =>
            WaitUntilAsync(() => Task.FromResult(Volatile.Read(ref Completed) >= Clients * OpsPerClient * numerator / denominator), $"{numerator}/{denominator} of the operations ran");
    }

    [Fact]
    public async Task With_two_of_three_silos_killed_writes_are_refused_retryably_and_one_restart_serves_every_acknowledged_write_again()
    {
        await cluster.EnsureAllRunningAsync();
        await SettledAsync();
        var keys = Enumerable.Range(0, 60).Select(i => $"two-kills-{Guid.NewGuid():N}-{i}").ToArray();
        foreach (var key in keys)
        {
            await cluster.Client.PutAsync(Encoding.UTF8.GetBytes(key), Encoding.UTF8.GetBytes("v-" + key));
        }

        cluster.KillSilo(1);
        // The group settles on the two others: every partition served, none with silo1 as a replica.
        IReadOnlyList<DEngine.Orleans.PartitionStatus>? seen = null;
        await WaitUntilAsync(async () =>
        {
            seen = await TryStatusesAsync();
            return seen is not null && seen.All(s => s.Replication is { } r && !ReplicasOf(r).Contains(cluster.Silos[1].Name));
        }, () => $"every partition's replicas exclude the killed silo1 (last seen: {Describe(seen)})");
        cluster.KillSilo(2);

        // Only silo0 is left: below MinReplicas 2 every write is refused with a retryable error, never acknowledged.
        var refused = 0;
        var deadline = DateTime.UtcNow + Phase;
        var probe = 0;
        while (refused < RedisClusterFixture.Partitions * 2)
        {
            Assert.True(DateTime.UtcNow < deadline, $"only {refused} refusals within {Phase}");
            var key = Encoding.UTF8.GetBytes($"refused-{probe++}");
            try
            {
                await cluster.LoadClient.PutAsync(key, "x"u8.ToArray());
                Assert.Fail($"a write was acknowledged with one live replica (partition {KeyRouting.PartitionOf(key, RedisClusterFixture.Partitions)})");
            }
            catch (DEngineException ex) when (ex.IsRetryable)
            {
                refused++;
            }
            catch (Exception ex) when (ex is OrleansException or TimeoutException or OperationCanceledException or DEngineException { Code: DEngineErrorCode.OutcomeUnknown })
            {
                // The killed silos' gateways, or a takeover in progress: not acknowledged either.
                await Task.Delay(100);
            }
        }

        await cluster.StartSiloAsync(1);
        await SettledAsync(minReplicas: 2);
        var values = await ReadAsync(keys.Select(k => Encoding.UTF8.GetBytes(k)).ToArray());
        var wrong = keys.Zip(values).Where(p => p.Second is null || Encoding.UTF8.GetString(p.Second) != "v-" + p.First).Select(p => p.First).ToArray();
        Assert.True(wrong.Length == 0, $"{wrong.Length} of {keys.Length} acknowledged writes are missing or wrong after the restart, e.g. {string.Join(", ", wrong.Take(5))}");
        foreach (var partition in Enumerable.Range(0, RedisClusterFixture.Partitions))
        {
            await cluster.Client.PutAsync(KeyIn(partition, "writable-again"), "yes"u8.ToArray());
        }

        await cluster.StartSiloAsync(2);
        await SettledAsync();
    }

    /// <summary>The primary's silo name of a status ("NAME (ADDRESS)").</summary>
    private static string PrimaryOf(DEngine.Orleans.PartitionStatus status) => status.Silo[..status.Silo.IndexOf(' ', StringComparison.Ordinal)];

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

    /// <summary>Writes fresh keys of <paramref name="partition"/> (retrying) until one is acknowledged; returns it.</summary>
    private async Task<KeyValuePair<string, string>> FirstWriteAfterAsync(int partition, string prefix, DEngineClient? client = null)
    {
        client ??= cluster.LoadClient;
        var deadline = DateTime.UtcNow + Phase;
        for (var i = 0; ; i++)
        {
            var key = KeyIn(partition, $"{prefix}/probe{i}");
            try
            {
                await client.PutAsync(key, "probe"u8.ToArray());
                return new(Encoding.UTF8.GetString(key), "probe");
            }
            catch (Exception ex) when ((ex is DEngineException { IsRetryable: true } or DEngineException { Code: DEngineErrorCode.OutcomeUnknown } or OrleansException or TimeoutException or OperationCanceledException) && DateTime.UtcNow < deadline)
            {
                await Task.Delay(50);
            }
        }
    }

    /// <summary>Waits until every partition serves with at least <paramref name="minReplicas"/> replicas and none catching up.</summary>
    private async Task<IReadOnlyList<DEngine.Orleans.PartitionStatus>> SettledAsync(int minReplicas = RedisClusterFixture.SiloCount)
    {
        IReadOnlyList<DEngine.Orleans.PartitionStatus>? settled = null;
        await WaitUntilAsync(async () =>
        {
            settled = await TryStatusesAsync();
            return settled is not null && settled.All(s => s.Replication is { } r && ReplicaCount(r) >= minReplicas && !r.Contains("catching up", StringComparison.Ordinal));
        }, () => $"every partition serves with {minReplicas} replicas (last seen: {Describe(settled)})");
        return settled!;
    }

    /// <summary>The replicas' silo names in a status' replication text ("vN: a*, b, c; ...").</summary>
    private static string[] ReplicasOf(string replication) =>
        [.. replication[(replication.IndexOf(':', StringComparison.Ordinal) + 1)..].Split(';')[0].Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(r => r.TrimEnd('*'))];

    private static int ReplicaCount(string replication) => ReplicasOf(replication).Length;

    /// <summary>Why the last <see cref="TryStatusesAsync"/> had no complete status: each failing partition and its error.</summary>
    private string _lastStatusErrors = "";

    /// <summary>Every partition's status, or null when any partition's status call fails (the failures are kept for the message).</summary>
    private async Task<IReadOnlyList<DEngine.Orleans.PartitionStatus>?> TryStatusesAsync()
    {
        var calls = Enumerable.Range(0, RedisClusterFixture.Partitions).Select(p => cluster.Client.GetPartitionStatusAsync(p)).ToArray();
        try
        {
            await Task.WhenAll(calls);
        }
        catch (Exception ex) when (ex is DEngineException or OrleansException or TimeoutException or OperationCanceledException)
        {
        }
        var errors = calls.Select((c, p) => (c, p)).Where(x => !x.c.IsCompletedSuccessfully).Select(x => $"partition {x.p}: {x.c.Exception?.InnerException?.GetType().Name}: {x.c.Exception?.InnerException?.Message}").ToArray();
        _lastStatusErrors = string.Join(" | ", errors);
        return errors.Length == 0 ? calls.Select(c => c.Result).ToArray() : null;
    }

    private static Task WaitUntilAsync(Func<Task<bool>> condition, string what) => WaitUntilAsync(condition, () => what);

    private static async Task WaitUntilAsync(Func<Task<bool>> condition, Func<string> what)
    {
        var deadline = DateTime.UtcNow + Phase;
        while (!await condition())
        {
            if (DateTime.UtcNow > deadline)
            {
                throw new TimeoutException($"not within {Phase}: {what()}");
            }
            await Task.Delay(200);
        }
    }

    private string Describe(IReadOnlyList<DEngine.Orleans.PartitionStatus>? statuses) =>
        statuses is null ? "no complete status: " + _lastStatusErrors : string.Join(" | ", statuses.Select(s => $"{s.Partition}@{PrimaryOf(s)} {s.Replication}"));

    /// <summary>
    /// Reads <paramref name="keys"/>, repeating the read (safe to repeat) while a call times out or is
    /// refused retryably within the phase: a partition may still be taking over, or a new primary
    /// waiting out the old one's lease for longer than the client's own read retries last.
    /// </summary>
    private async Task<IReadOnlyList<byte[]?>> ReadAsync(byte[][] keys)
    {
        var deadline = DateTime.UtcNow + Phase;
        while (true)
        {
            try
            {
                return await cluster.Client.GetMultiAsync(keys);
            }
            catch (Exception ex) when (ex is TimeoutException or DEngineException { IsRetryable: true } && DateTime.UtcNow < deadline)
            {
                await Task.Delay(100);
            }
        }
    }

    private async Task AssertAllAcknowledgedPresentAsync(WriteLoad load, KeyValuePair<string, string> extra)
    {
        var acked = load.Acknowledged.ToArray().Append(extra).ToArray();
        var values = await ReadAsync(acked.Select(p => Encoding.UTF8.GetBytes(p.Key)).ToArray());
        var missing = acked.Zip(values).Where(p => p.Second is null || Encoding.UTF8.GetString(p.Second) != p.First.Value).Select(p => p.First.Key).ToArray();
        Assert.True(missing.Length == 0, $"{missing.Length} of {acked.Length} acknowledged writes are missing or wrong, e.g. {string.Join(", ", missing.Take(5))}");
    }
}
