using DEngine.Orleans.Configuration;
using DEngine.Orleans.Replication;
using Microsoft.Extensions.DependencyInjection;
using Orleans.Hosting;
using static DEngine.Orleans.Tests.Keys;

namespace DEngine.Orleans.Tests.Replication;

/// <summary>
/// The replicated 3-silo cluster with copies whose logs compact quickly (every 16 applied entries,
/// 4 KiB segments), so a replica away for a few hundred writes falls behind what the primary's log
/// reaches back to.
/// </summary>
public sealed class CompactingClusterFixture : ClusterFixture
{
    /// <inheritdoc />
    protected override int ReplicationFactor => 3;

    /// <inheritdoc />
    protected override void ConfigureSiloExtra(ISiloBuilder silo) =>
        silo.Services.Configure<DEngineOptions>(o =>
        {
            o.Replication.LogCompactionEntries = 16;
            o.Replication.LogSegmentBytes = 4096;
        });

    /// <summary>The replica registry of silo <paramref name="name"/> (its copies).</summary>
    public ReplicaRegistry RegistryOf(string name) =>
        Cluster.Silos.Concat(Extra).First(s => s.Name == name).ServiceProvider.GetRequiredService<ReplicaRegistry>();
}

[CollectionDefinition(Name)]
public sealed class CompactingClusterCollection : ICollectionFixture<CompactingClusterFixture>
{
    public const string Name = "compacting-replicated-cluster";
}

/// <summary>Catching a returning replica up from a snapshot when the primary's log no longer reaches back to it (issue 12).</summary>
[Collection(CompactingClusterCollection.Name)]
public sealed class SnapshotCatchUpTests(CompactingClusterFixture cluster)
{
    private static readonly TimeSpan Settle = TimeSpan.FromSeconds(60);

    private async Task<PartitionConfiguration> ConfigurationOf(int partition) =>
        await cluster.Grains.GetGrain<IPartitionConfigurationGrain>(partition).Get();

    private Task WaitUntilAsync(Func<Task<bool>> condition, string what) => Poll.UntilAsync(condition, Settle, what);

    [Fact]
    public async Task A_replica_away_while_the_primary_log_compacts_past_it_is_caught_up_from_a_snapshot_added_back_and_holds_every_acknowledged_key()
    {
        var leader = cluster.LiveSilos[0];
        var partition = await PartitionLedByAsync(leader);
        await WaitUntilAsync(async () => (await ConfigurationOf(partition)).Replicas.Length == 3, $"partition {partition} has three replicas");
        var config = await ConfigurationOf(partition);
        var victim = config.Replicas.Select(r => r.Silo).First(s => s != leader);
        var acked = new List<(byte[] Key, string Value)>();
        for (var i = 0; i < 10; i++)
        {
            acked.Add(await PutAsync(partition, $"before-{i}"));
        }
        await WaitUntilAsync(() => Task.FromResult(cluster.RegistryOf(victim).TryGet(partition, out _)), $"silo {victim} has a copy");
        Assert.True(cluster.RegistryOf(victim).TryGet(partition, out var away));
        var victimLast = away.Position.LastIndex;
        await cluster.StopSiloAsync(victim, kill: true);
        try
        {
            for (var i = 0; i < 300; i++)
            {
                acked.Add(await PutAsync(partition, $"during-{i}-" + new string('x', 100)));
            }
            Assert.True(cluster.RegistryOf(leader).TryGet(partition, out var primary));
            Assert.True(primary.Position.BaseIndex > victimLast, $"the primary's log (base {primary.Position.BaseIndex}) still reaches back to the replica's last entry {victimLast}");

            await cluster.StartSiloAsync(victim);
            await WaitUntilAsync(async () => (await ConfigurationOf(partition)).Contains(victim), $"silo {victim} is a replica again");

            var applied = (await cluster.Client.GetPartitionStatusAsync(partition)).AppliedIndex;
            await WaitUntilAsync(() => Task.FromResult(cluster.RegistryOf(victim).TryGet(partition, out var c) && c.Engine.LastApplied.Index >= applied), $"silo {victim} applied up to {applied}");
            Assert.True(cluster.RegistryOf(victim).TryGet(partition, out var returned));
            // Its log restarted past where it stopped: only an installed snapshot moves a log's base beyond its last entry.
            Assert.True(returned.Position.BaseIndex > victimLast, $"the returned replica's log base {returned.Position.BaseIndex} is not past its old last entry {victimLast}");
            foreach (var (key, value) in acked)
            {
                var held = returned.Engine.Get(key);
                Assert.True(held is not null && S(held) == value, $"the returned replica lacks an acknowledged key ({value[..Math.Min(12, value.Length)]})");
            }
            acked.Add(await PutAsync(partition, "after"));
            Assert.Equal("after", S((await cluster.Client.GetAsync(acked[^1].Key))!));
        }
        finally
        {
            if (!cluster.LiveSilos.Contains(victim))
            {
                await cluster.StartSiloAsync(victim);
            }
        }
    }

    private async Task<(byte[] Key, string Value)> PutAsync(int partition, string value)
    {
        var key = InPartition(partition);
        await cluster.Client.PutAsync(key, B(value));
        return (key, value);
    }

    /// <summary>A partition whose primary is on <paramref name="silo"/> (activating partitions until one lands there).</summary>
    private async Task<int> PartitionLedByAsync(string silo)
    {
        for (var partition = 0; partition < ClusterFixture.Partitions; partition++)
        {
            await PutAsync(partition, "probe");
            if ((await ConfigurationOf(partition)).Primary?.Silo == silo)
            {
                return partition;
            }
        }
        throw new InvalidOperationException($"no partition is led by {silo}");
    }
}
