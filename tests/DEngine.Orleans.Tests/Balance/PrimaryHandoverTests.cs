using System.Collections.Concurrent;
using System.Diagnostics;
using DEngine.Client;
using DEngine.Orleans.Configuration;
using DEngine.Orleans.Placement;
using Microsoft.Extensions.DependencyInjection;
using static DEngine.Orleans.Tests.Keys;

namespace DEngine.Orleans.Tests.Balance;

/// <summary>
/// Clean handovers of the primary role and the balancer's rounds on the in-process 3-silo cluster
/// with replica groups of three (its balancer loop is off: rounds are run here explicitly). A cluster
/// of their own: they activate and move every partition, and the tests of the shared replicated
/// cluster find partitions led by a given silo by activating fresh ones.
/// </summary>
[Collection(BalanceClusterCollection.Name)]
public sealed class PrimaryHandoverTests(BalanceClusterFixture cluster)
{
    private static readonly TimeSpan Settle = TimeSpan.FromSeconds(60);

    private async Task<PartitionConfiguration> ConfigurationOf(int partition) =>
        await cluster.Grains.GetGrain<IPartitionConfigurationGrain>(partition).Get();

    private async Task SettledAsync(int partition)
    {
        await cluster.Client.PutAsync(InPartition(partition, "activate"), B("x"));
        await Poll.UntilAsync(async () => (await ConfigurationOf(partition)).Replicas.Length == 3, Settle, $"partition {partition} has three replicas");
    }

    /// <summary>
    /// Runs balancing rounds on every live silo until one moves nothing; returns the moves. The tests
    /// here end with it too: the other tests of this cluster pick partitions by the silo leading them.
    /// </summary>
    private async Task<List<PrimaryMove>> RebalanceAsync()
    {
        var silos = cluster.LiveSilos;
        var moves = new List<PrimaryMove>();
        for (var round = 0; round < 20; round++)
        {
            var planned = 0;
            foreach (var silo in silos)
            {
                var started = await cluster.ServicesOf(silo).GetRequiredService<PrimaryBalancer>().RoundAsync();
                moves.AddRange(started);
                planned += started.Count;
            }
            // Each handed-over role must be up at its new silo before that silo counts it as its own.
            await Poll.UntilAsync(async () => (await Task.WhenAll(Enumerable.Range(0, ClusterFixture.Partitions).Select(p => cluster.Client.GetPartitionStatusAsync(p)))).All(s => s.Replication is not null), Settle, "every partition serves");
            if (planned == 0)
            {
                break;
            }
        }
        return moves;
    }

    [Fact]
    public async Task A_handover_under_write_load_fails_no_write_and_the_new_primary_serves_every_acknowledged_one()
    {
        const int partition = 3;
        await SettledAsync(partition);
        var before = await ConfigurationOf(partition);
        var from = before.Primary!.Silo;
        var to = before.Replicas.Select(r => r.Silo).Where(s => s != from).Order(StringComparer.Ordinal).First();
        var acked = new ConcurrentDictionary<string, string>();
        var failures = new ConcurrentQueue<string>();
        var longest = TimeSpan.Zero;
        using var stop = new CancellationTokenSource();
        var writers = Enumerable.Range(0, 4).Select(w => Task.Run(async () =>
        {
            for (var n = 0; !stop.IsCancellationRequested; n++)
            {
                var key = InPartition(partition, $"handover-w{w}");
                var value = $"v{w}-{n}";
                var started = Stopwatch.GetTimestamp();
                try
                {
                    // The client retries what is retryable (NotServing, PartitionUnavailable); anything else is a failure.
                    await cluster.Client.PutAsync(key, B(value));
                    acked[S(key)] = value;
                }
                catch (Exception ex)
                {
                    failures.Enqueue($"{ex.GetType().Name}: {ex.Message}");
                }
                var took = Stopwatch.GetElapsedTime(started);
                if (took > longest)
                {
                    longest = took;
                }
            }
        })).ToArray();
        await Poll.UntilAsync(() => Task.FromResult(acked.Count >= 40), Settle, "40 writes acknowledged before the handover");

        await cluster.Client.MovePartitionAsync(partition, to, Settle);
        var countAtMove = acked.Count;
        await Poll.UntilAsync(() => Task.FromResult(acked.Count >= countAtMove + 40), Settle, "40 more writes acknowledged after the handover");
        await stop.CancelAsync();
        await Task.WhenAll(writers).WaitAsync(Settle);

        Assert.True(failures.IsEmpty, $"{failures.Count} writes failed, e.g. {string.Join(" | ", failures.Take(3))}");
        var after = await ConfigurationOf(partition);
        Assert.Equal(to, after.Primary!.Silo);
        // The handover's own change (naming the new primary), then the new primary's takeover.
        Assert.True(after.Version >= before.Version + 2, $"version {before.Version} -> {after.Version}");
        var keys = acked.Keys.ToArray();
        var values = await cluster.Client.GetMultiAsync([.. keys.Select(B)]);
        var wrong = keys.Zip(values).Where(p => S(p.Second) != acked[p.First]).Select(p => p.First).ToArray();
        Assert.True(wrong.Length == 0, $"{wrong.Length} of {keys.Length} acknowledged writes are missing or wrong after the handover (longest write {longest.TotalMilliseconds:0} ms)");
        await RebalanceAsync();
    }

    [Fact]
    public async Task Balancing_rounds_spread_every_primary_role_from_one_silo_to_within_one_of_even_and_then_move_none()
    {
        var silos = cluster.LiveSilos;
        var first = silos[0];
        for (var partition = 0; partition < ClusterFixture.Partitions; partition++)
        {
            await SettledAsync(partition);
            if ((await ConfigurationOf(partition)).Primary!.Silo != first)
            {
                await cluster.Client.MovePartitionAsync(partition, first, Settle);
            }
        }
        Assert.All(await Task.WhenAll(Enumerable.Range(0, ClusterFixture.Partitions).Select(ConfigurationOf)), c => Assert.Equal(first, c.Primary!.Silo));

        var moves = await RebalanceAsync();
        var configurations = await Task.WhenAll(Enumerable.Range(0, ClusterFixture.Partitions).Select(ConfigurationOf));
        var loads = silos.ToDictionary(s => s, s => configurations.Count(c => c.Primary!.Silo == s));
        Assert.True(loads.Values.Max() - loads.Values.Min() <= 1, $"primaries per silo: {string.Join(", ", loads)}");
        // Handovers between existing replicas only, each role once (8 over 3 silos: 5 leave the first).
        Assert.Equal(ClusterFixture.Partitions - loads[first], moves.Count);
        Assert.All(moves, m => Assert.Equal(first, m.From));
        // Idempotent: balanced, a round moves nothing.
        foreach (var silo in silos)
        {
            Assert.Empty(await cluster.ServicesOf(silo).GetRequiredService<PrimaryBalancer>().RoundAsync());
        }
        for (var partition = 0; partition < ClusterFixture.Partitions; partition++)
        {
            var key = InPartition(partition, "balanced");
            await cluster.Client.PutAsync(key, B("yes"));
            Assert.Equal("yes", S(await cluster.Client.GetAsync(key)));
        }
    }

    [Fact]
    public async Task A_silo_stopping_gracefully_leaves_every_configuration_before_it_stops_so_no_commit_waits_for_it()
    {
        var leaving = cluster.LiveSilos[2];
        for (var partition = 0; partition < ClusterFixture.Partitions; partition++)
        {
            await SettledAsync(partition);
        }
        await cluster.StopSiloAsync(leaving);
        try
        {
            // Read at once: a replica only timed out (ReplicaTimeout, 3 s here) would still be listed.
            var configurations = await Task.WhenAll(Enumerable.Range(0, ClusterFixture.Partitions).Select(ConfigurationOf));
            Assert.All(configurations, c => Assert.False(c.Contains(leaving), $"{leaving} still in {c}"));
            Assert.All(configurations, c => Assert.Equal(2, c.Replicas.Length));
        }
        finally
        {
            await cluster.StartSiloAsync(leaving);
        }
        for (var partition = 0; partition < ClusterFixture.Partitions; partition++)
        {
            await SettledAsync(partition);
        }
        await RebalanceAsync();
    }
}

/// <summary>A 3-silo in-process cluster with replica groups of three for the balancing and handover tests alone.</summary>
public sealed class BalanceClusterFixture : ClusterFixture
{
    /// <inheritdoc />
    protected override int ReplicationFactor => 3;
}

[CollectionDefinition(Name)]
public sealed class BalanceClusterCollection : ICollectionFixture<BalanceClusterFixture>
{
    public const string Name = "balance-cluster";
}
