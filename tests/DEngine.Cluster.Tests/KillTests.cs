using System.Text;
using DEngine.Orleans;

namespace DEngine.Cluster.Tests;

[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class ClusterCollection : ICollectionFixture<RedisClusterFixture>
{
    public const string Name = "redis-cluster";
}

/// <summary>
/// Kill -9 and graceful stops of real silo processes under a write load, replicated (the default:
/// a copy of every partition on each of the three silos).
/// </summary>
[Collection(ClusterCollection.Name)]
public sealed class KillTests(RedisClusterFixture cluster)
{
    private static readonly TimeSpan Phase = TimeSpan.FromSeconds(60);

    [Fact]
    public async Task Kill_9_of_one_of_three_silos_under_load_gives_only_retryable_errors_and_loses_no_acknowledged_write()
    {
        await cluster.EnsureAllRunningAsync();
        await cluster.SettledAsync(Phase);
        var load = new WriteLoad(cluster.LoadClient, writers: 6, readers: 2, prefix: "kill-" + Guid.NewGuid().ToString("N")[..8]);
        load.Start();
        await load.WaitForMoreAcksAsync(300, Phase);

        cluster.KillSilo(1);
        // The other silos' partitions keep taking writes while silo1's are away.
        await load.WaitForMoreAcksAsync(150, Phase);

        await cluster.StartSiloAsync(1);
        await WaitUntilAllPartitionsServeAsync();
        await load.WaitForMoreAcksAsync(200, Phase);
        await load.StopAsync();

        Assert.Empty(load.WrongAnswers);
        Assert.Empty(load.UnexpectedErrors);
        await AssertAllAcknowledgedPresentAsync(load);
    }

    [Fact]
    public async Task Twenty_kill_9_and_restart_cycles_lose_no_acknowledged_write_and_keep_ttls_enforced()
    {
        await cluster.EnsureAllRunningAsync();
        await cluster.SettledAsync(Phase);
        var prefix = "cycles-" + Guid.NewGuid().ToString("N")[..8];
        var ttlKeys = Enumerable.Range(0, 12).Select(i => Encoding.UTF8.GetBytes($"{prefix}/ttl/{i}")).ToArray();
        foreach (var key in ttlKeys)
        {
            await cluster.Client.PutAsync(key, "short"u8.ToArray(), ttlSeconds: 2);
        }
        var ttlDeadline = DateTime.UtcNow.AddSeconds(2);

        var load = new WriteLoad(cluster.LoadClient, writers: 4, readers: 1, prefix: prefix);
        load.Start();
        for (var cycle = 0; cycle < 20; cycle++)
        {
            await load.WaitForMoreAcksAsync(20, Phase);
            cluster.KillSilo(2);
            await cluster.StartSiloAsync(2);
        }
        await WaitUntilAllPartitionsServeAsync();
        await load.WaitForMoreAcksAsync(50, Phase);
        await load.StopAsync();

        Assert.Empty(load.WrongAnswers);
        Assert.Empty(load.UnexpectedErrors);
        await AssertAllAcknowledgedPresentAsync(load);

        // TTLs survived every crash: all those keys are gone now (the cycles took far longer than 2 s).
        Assert.True(DateTime.UtcNow > ttlDeadline);
        Assert.All(await cluster.Client.GetMultiAsync(ttlKeys), Assert.Null);

        // Applied positions are consistent with the data: every partition applied at least the
        // writes acknowledged for it.
        var partitions = await cluster.Client.GetPartitionCountAsync();
        var ackedPerPartition = new long[partitions];
        foreach (var key in load.Acknowledged.Keys)
        {
            ackedPerPartition[KeyRouting.PartitionOf(Encoding.UTF8.GetBytes(key), partitions)]++;
        }
        var statuses = await cluster.Client.GetStatusAsync();
        Assert.All(statuses, s => Assert.True((long)s.AppliedIndex >= ackedPerPartition[s.Partition], $"partition {s.Partition}: applied {s.AppliedIndex} < acknowledged {ackedPerPartition[s.Partition]}"));
    }

    [Fact]
    public async Task Graceful_stop_of_one_of_three_silos_under_load_moves_its_partitions_and_loses_no_acknowledged_write()
    {
        await cluster.EnsureAllRunningAsync();
        var before = await cluster.SettledAsync(Phase);
        // A silo that leads partitions (any silo may stop in the Redis profile). Replicated placement
        // does not spread primaries over the silos: new partitions are led by the silo that activates
        // them first, so the victim is looked up, not assumed.
        var victim = Enumerable.Range(0, RedisClusterFixture.SiloCount)
            .First(i => before.Any(s => RedisClusterFixture.SiloOf(s) == cluster.Silos[i].Name));
        var victimName = cluster.Silos[victim].Name;

        var load = new WriteLoad(cluster.LoadClient, writers: 6, readers: 2, prefix: "stop-" + Guid.NewGuid().ToString("N")[..8]);
        load.Start();
        await load.WaitForMoreAcksAsync(200, Phase);

        await cluster.StopSiloGracefullyAsync(victim);
        await load.WaitForMoreAcksAsync(200, Phase);
        await load.StopAsync();

        Assert.Empty(load.WrongAnswers);
        Assert.Empty(load.UnexpectedErrors);
        await AssertAllAcknowledgedPresentAsync(load);
        // Every partition serves on the remaining silos (none waits for the stopped one).
        var after = await WaitUntilAllPartitionsServeAsync();
        Assert.All(after, s => Assert.False(s.Silo.StartsWith(victimName + " ", StringComparison.Ordinal), $"partition {s.Partition} is still on {victimName}"));
        // Those that were on it were taken over: a higher epoch and at least the data they had. (Their
        // LastTransfer belongs to one activation; Orleans may re-activate a partition in place later,
        // e.g. when a silo holding its directory entry leaves, and the new activation has none.)
        Assert.All(after.Where(s => before[s.Partition].Silo.StartsWith(victimName + " ", StringComparison.Ordinal)), s =>
        {
            Assert.True(s.Epoch > before[s.Partition].Epoch, $"partition {s.Partition}: epoch {before[s.Partition].Epoch} -> {s.Epoch}");
            Assert.True(s.AppliedIndex >= before[s.Partition].AppliedIndex, $"partition {s.Partition}: applied {before[s.Partition].AppliedIndex} -> {s.AppliedIndex}");
        });
    }

    private async Task<IReadOnlyList<DEngine.Orleans.PartitionStatus>> WaitUntilAllPartitionsServeAsync()
    {
        var deadline = DateTime.UtcNow + Phase;
        while (true)
        {
            try
            {
                var statuses = await cluster.Client.GetStatusAsync();
                if (statuses.Count == RedisClusterFixture.Partitions)
                {
                    return statuses;
                }
            }
            catch (Exception) when (DateTime.UtcNow < deadline)
            {
            }
            await Task.Delay(100);
        }
    }

    private async Task AssertAllAcknowledgedPresentAsync(WriteLoad load)
    {
        var acked = load.Acknowledged.ToArray();
        Assert.NotEmpty(acked);
        var values = await cluster.Client.GetMultiAsync(acked.Select(p => Encoding.UTF8.GetBytes(p.Key)).ToArray());
        var missing = acked.Zip(values).Where(p => p.Second is null || Encoding.UTF8.GetString(p.Second) != p.First.Value).Select(p => p.First.Key).ToArray();
        Assert.True(missing.Length == 0, $"{missing.Length} of {acked.Length} acknowledged writes are missing or wrong, e.g. {string.Join(", ", missing.Take(5))}");
    }
}
