using System.Diagnostics;
using System.Text;
using DEngine.Cluster.Tests.Support;
using DEngine.Orleans;

namespace DEngine.Cluster.Tests;

/// <summary>
/// Replica management on four real silos (Redis profile, Factor 3, ReplaceAfter 10 s): replacement
/// of a silo gone for good, the surplus copy it finds when it returns, a wiped disk rebuilt under the
/// same name, a drain before a stop, and a replica move.
/// </summary>
[Collection(ReplacementClusterCollection.Name)]
public sealed class ReplicaReplacementTests(ReplacementClusterFixture cluster)
{
    private static readonly TimeSpan Phase = TimeSpan.FromSeconds(120);

    [Fact]
    public async Task Kill_9_of_one_of_four_silos_is_replaced_after_ReplaceAfter_its_surplus_copies_are_deleted_when_it_returns_and_kill_9_of_a_second_loses_no_acknowledged_key()
    {
        await cluster.EnsureAllRunningAsync();
        var before = await cluster.SettledAsync(Phase);
        var victim = MostReplicas(before);
        var victimName = cluster.Silos[victim].Name;
        var affected = before.Where(s => RedisClusterFixture.ReplicasOf(s).Contains(victimName)).Select(s => s.Partition).ToArray();
        var acked = await WriteAsync("replace-a", 60);

        cluster.KillSilo(victim);
        var killed = Stopwatch.StartNew();
        foreach (var pair in await WriteAsync("replace-b", 30))
        {
            acked[pair.Key] = pair.Value;
        }
        var live = cluster.LiveNames();
        IReadOnlyList<PartitionStatus>? now = null;
        await Poll.UntilAsync(async () =>
        {
            now = await cluster.Client.GetStatusAsync();
            return now.All(s => ReplacementClusterFixture.IsWhole(s, live));
        }, Phase, () => "not every partition has three live replicas again: " + ReplacementClusterFixture.Describe(now));
        var replacedAfter = killed.Elapsed;

        Assert.True(replacedAfter >= ReplacementClusterFixture.ReplaceAfter, $"replaced after {replacedAfter.TotalSeconds:0.0} s, before ReplaceAfter");
        Assert.NotEmpty(affected);
        foreach (var partition in affected)
        {
            // Three live silos, three replicas: the silo that had no copy holds the new one.
            Assert.Equal(live.Order(), RedisClusterFixture.ReplicasOf(now![partition]).Order());
        }

        await cluster.StartSiloAsync(victim);
        await Poll.UntilAsync(
            () => Task.FromResult(affected.All(p => !cluster.HasCopyOnDisk(victim, p))),
            Phase,
            () => $"{victimName} still has its surplus copies of partitions {string.Join(",", affected.Where(p => cluster.HasCopyOnDisk(victim, p)))} on disk");

        var second = Array.FindIndex(cluster.Silos, s => s.Name != victimName && cluster.Running[Array.IndexOf(cluster.Silos, s)] is not null);
        cluster.KillSilo(second);
        await AssertServedAsync(acked);

        await cluster.StartSiloAsync(second);
        await cluster.SettledAsync(Phase);
    }

    [Fact]
    public async Task A_silo_wiped_and_restarted_under_the_same_name_is_rebuilt_as_a_replica_and_never_answers_with_empty_data_meanwhile()
    {
        await cluster.EnsureAllRunningAsync();
        var before = await cluster.SettledAsync(Phase);
        var wiped = MostReplicas(before);
        var name = cluster.Silos[wiped].Name;
        // Three silos for three replicas: the wiped silo is then the only place its replicas can be
        // rebuilt, however long its restart takes against ReplaceAfter.
        var spare = Enumerable.Range(0, ReplacementClusterFixture.SiloCount).First(i => i != wiped);
        await cluster.Client.DrainSiloAsync(cluster.Silos[spare].Name, Phase);
        await cluster.StopSiloGracefullyAsync(spare);
        var acked = await WriteAsync("wipe", 60);
        var applied = (await cluster.Client.GetStatusAsync()).ToDictionary(s => s.Partition, s => s.AppliedIndex);

        cluster.KillSilo(wiped);
        Directory.Delete(cluster.DataDir(wiped), recursive: true);
        await cluster.StartSiloAsync(wiped);

        // Until it is a replica of every partition it held, with nothing left to build: every read
        // answers the acknowledged value, and no partition is served from it below what was applied.
        var held = Enumerable.Range(0, ReplacementClusterFixture.Partitions).ToArray();
        IReadOnlyList<PartitionStatus>? now = null;
        var rounds = 0;
        await Poll.UntilAsync(async () =>
        {
            rounds++;
            await AssertServedAsync(acked);
            now = await cluster.Client.GetStatusAsync();
            foreach (var status in now.Where(s => RedisClusterFixture.SiloOf(s) == name))
            {
                Assert.True(status.AppliedIndex >= applied[status.Partition], $"partition {status.Partition} is served by the wiped silo at {status.AppliedIndex}, below {applied[status.Partition]}");
            }
            var live = cluster.LiveNames();
            return now.All(s => ReplacementClusterFixture.IsWhole(s, live)) && held.All(p => RedisClusterFixture.ReplicasOf(now[p]).Contains(name));
        }, Phase, () => $"{name} was not rebuilt as a replica of {string.Join(",", held)}: {ReplacementClusterFixture.Describe(now)}");
        Assert.True(rounds > 0);

        // Its copies now hold the data: with another replica of each of them gone, they are served.
        var other = Enumerable.Range(0, ReplacementClusterFixture.SiloCount).First(i => i != wiped && i != spare);
        cluster.KillSilo(other);
        await AssertServedAsync(acked);
        await cluster.Client.UndrainSiloAsync(cluster.Silos[spare].Name);
        await cluster.EnsureAllRunningAsync();
        await cluster.SettledAsync(Phase);
    }

    [Fact]
    public async Task Silo_drain_empties_a_silo_of_replicas_and_primary_roles_and_it_then_stops_with_no_failed_write_or_read()
    {
        await cluster.EnsureAllRunningAsync();
        var before = await cluster.SettledAsync(Phase);
        // The primary of partition 0: draining it hands a primary role over too.
        var drained = Array.FindIndex(cluster.Silos, s => s.Name == RedisClusterFixture.SiloOf(before[0]));
        var name = cluster.Silos[drained].Name;
        var load = new WriteLoad(cluster.Client, writers: 4, readers: 2, prefix: "drain-" + Guid.NewGuid().ToString("N")[..8]);
        load.Start();
        try
        {
            await load.WaitForMoreAcksAsync(100, Phase);
            var progress = new List<string>();
            var moved = await cluster.Client.DrainSiloAsync(name, Phase, new SyncProgress(progress));

            var after = await cluster.Client.GetStatusAsync();
            Assert.All(after, s => Assert.DoesNotContain(name, RedisClusterFixture.ReplicasOf(s)));
            Assert.All(after, s => Assert.NotEqual(name, RedisClusterFixture.SiloOf(s)));
            Assert.NotEmpty(moved);
            Assert.NotEmpty(progress);

            var (retryable, transport, unexpected) = (Interlocked.Read(ref load.RetryableErrors), Interlocked.Read(ref load.TransportErrors), load.UnexpectedErrors.Count);
            await cluster.StopSiloGracefullyAsync(drained);
            await load.WaitForMoreAcksAsync(100, Phase);
            await load.StopAsync();

            Assert.Empty(load.WrongAnswers);
            Assert.Equal((retryable, transport, unexpected), (Interlocked.Read(ref load.RetryableErrors), Interlocked.Read(ref load.TransportErrors), load.UnexpectedErrors.Count));
            await AssertServedAsync(new Dictionary<string, string>(load.Acknowledged));
        }
        finally
        {
            await load.StopAsync();
            await cluster.Client.UndrainSiloAsync(name);
        }
        await cluster.EnsureAllRunningAsync();
        await cluster.SettledAsync(Phase);
    }

    [Fact]
    public async Task Partition_move_replica_builds_the_copy_on_the_target_then_drops_the_source_and_refuses_bad_silos_with_typed_errors()
    {
        await cluster.EnsureAllRunningAsync();
        var before = await cluster.SettledAsync(Phase);
        var status = before[1];
        var replicas = RedisClusterFixture.ReplicasOf(status);
        var primary = RedisClusterFixture.SiloOf(status);
        var from = replicas.First(r => r != primary);
        var to = cluster.Silos.Select(s => s.Name).First(s => !replicas.Contains(s));
        var acked = await WriteAsync("move", 30);

        var notHolding = await Assert.ThrowsAsync<DEngineException>(() => cluster.Client.MoveReplicaAsync(status.Partition, to, from, Phase));
        Assert.Equal(DEngineErrorCode.InvalidArgument, notHolding.Code);
        var alreadyHolds = await Assert.ThrowsAsync<DEngineException>(() => cluster.Client.MoveReplicaAsync(status.Partition, from, primary, Phase));
        Assert.Equal(DEngineErrorCode.InvalidArgument, alreadyHolds.Code);
        var notLive = await Assert.ThrowsAsync<DEngineException>(() => cluster.Client.MoveReplicaAsync(status.Partition, from, "no-such-silo", Phase));
        Assert.Equal(DEngineErrorCode.InvalidArgument, notLive.Code);
        Assert.Contains("no-such-silo", notLive.Message, StringComparison.Ordinal);

        // The replica set can still change after it looked settled (a copy on a silo back on a new data
        // directory is replaced under the same name, which status does not show): when the move's check
        // finds the target or the source changed, read the settled set again and pick again.
        var progress = new List<string>();
        ReplicaSetStatus? set = null;
        for (var attempt = 0; set is null; attempt++)
        {
            try
            {
                set = await cluster.Client.MoveReplicaAsync(status.Partition, from, to, Phase, new SyncProgress(progress));
            }
            catch (DEngineException ex) when (ex.Code == DEngineErrorCode.InvalidArgument && attempt < 3)
            {
                status = (await cluster.SettledAsync(Phase))[status.Partition];
                replicas = RedisClusterFixture.ReplicasOf(status);
                primary = RedisClusterFixture.SiloOf(status);
                from = replicas.First(r => r != primary);
                to = cluster.Silos.Select(s => s.Name).First(s => !replicas.Contains(s));
            }
        }

        Assert.Contains(to, set.Replicas);
        Assert.DoesNotContain(from, set.Replicas);
        Assert.Equal(ReplacementClusterFixture.Factor, set.Replicas.Length);
        Assert.NotEmpty(progress);
        await AssertServedAsync(acked);
        await cluster.SettledAsync(Phase);
    }

    /// <summary>The silo index holding the most replicas.</summary>
    private int MostReplicas(IReadOnlyList<PartitionStatus> statuses) =>
        Enumerable.Range(0, ReplacementClusterFixture.SiloCount)
            .OrderByDescending(i => statuses.Count(s => RedisClusterFixture.ReplicasOf(s).Contains(cluster.Silos[i].Name)))
            .First();

    /// <summary>Writes <paramref name="count"/> keys (retrying) and returns the acknowledged ones.</summary>
    private async Task<Dictionary<string, string>> WriteAsync(string prefix, int count)
    {
        var acked = new Dictionary<string, string>();
        var run = Guid.NewGuid().ToString("N")[..8];
        for (var i = 0; i < count; i++)
        {
            var key = $"{prefix}-{run}-{i}";
            var value = $"v{i}";
            try
            {
                await cluster.Client.PutAsync(Encoding.UTF8.GetBytes(key), Encoding.UTF8.GetBytes(value));
                acked[key] = value;
            }
            catch (Exception ex) when (ex is DEngineException or TimeoutException or OrleansException)
            {
                // Not acknowledged: not checked.
            }
        }
        return acked;
    }

    /// <summary>Reads every acknowledged key (repeating a read that times out or is retryable, within a phase) and asserts its value.</summary>
    private async Task AssertServedAsync(IReadOnlyDictionary<string, string> acked)
    {
        var keys = acked.Keys.ToArray();
        IReadOnlyList<byte[]?>? values = null;
        await Poll.UntilAsync(async () =>
        {
            values = await cluster.Client.GetMultiAsync([.. keys.Select(k => Encoding.UTF8.GetBytes(k))]);
            return true;
        }, Phase, () => "the acknowledged keys could not be read");
        var wrong = keys.Zip(values!).Where(p => p.Second is null || Encoding.UTF8.GetString(p.Second) != acked[p.First]).Select(p => p.First).ToArray();
        Assert.True(wrong.Length == 0, $"{wrong.Length} of {keys.Length} acknowledged keys are missing or wrong, e.g. {string.Join(", ", wrong.Take(5))}");
    }

    /// <summary>An IProgress that records synchronously (Progress&lt;T&gt; posts to the thread pool).</summary>
    private sealed class SyncProgress(List<string> lines) : IProgress<string>
    {
        public void Report(string value)
        {
            lock (lines)
            {
                lines.Add(value);
            }
        }
    }
}
