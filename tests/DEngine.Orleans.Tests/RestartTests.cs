using Orleans.Runtime;
using Orleans.TestingHost;
using static DEngine.Orleans.Tests.Keys;

namespace DEngine.Orleans.Tests;

public sealed class RestartClusterFixture : ClusterFixture;

[CollectionDefinition(Name)]
public sealed class RestartCollection : ICollectionFixture<RestartClusterFixture>
{
    public const string Name = "restart-cluster";
}

[Collection(RestartCollection.Name)]
public sealed class RestartTests(RestartClusterFixture fixture)
{
    [Fact]
    public async Task A_deactivated_partition_grain_comes_back_with_its_data()
    {
        var grain = fixture.Grains.GetGrain<IStateMachineGrain>(2);
        var keys = Enumerable.Range(0, 50).Select(_ => InPartition(2, "deact")).ToArray();
        await Task.WhenAll(keys.Select(k => grain.Put(k, k, 0)));
        var before = await grain.GetStatus();

        await fixture.Cluster.DeactivateAsync(grain);
        await fixture.Cluster.WaitForDeactivationAsync(grain);

        var after = await grain.GetStatus();
        Assert.Equal(before.AppliedIndex, after.AppliedIndex);
        Assert.True(after.Epoch > before.Epoch, $"epoch {before.Epoch} -> {after.Epoch}");
        var values = await grain.GetMulti(keys);
        Assert.All(values.Zip(keys), p => Assert.Equal(p.Second, p.First));
    }

    [Fact]
    public async Task A_crashed_silo_restarted_on_its_data_directory_comes_back_with_all_its_data_and_meanwhile_its_partitions_are_unavailable_not_empty()
    {
        var statuses = await fixture.Client.GetStatusAsync();
        var victim = fixture.LiveSilos.Skip(1).First(name => statuses.Any(st => ClusterFixture.SiloOf(st) == name));
        var hosted = statuses.Where(st => ClusterFixture.SiloOf(st) == victim).Select(st => st.Partition).ToArray();

        var written = new Dictionary<string, byte[]>();
        foreach (var partition in hosted)
        {
            for (var i = 0; i < 20; i++)
            {
                var key = InPartition(partition, "restart");
                await fixture.Client.PutAsync(key, key);
                written[S(key)] = key;
            }
        }

        // Killed: no handover. (In-process, the silo still closes its databases; the real
        // crash tests with SIGKILL live in DEngine.StateMachine.Tests and DEngine.Cluster.Tests.)
        await fixture.StopSiloAsync(victim, kill: true);
        var down = fixture.Grains.GetGrain<IStateMachineGrain>(hosted[0]);
        var unavailable = await Assert.ThrowsAsync<DEngineException>(() => down.Get(written.Values.First(v => KeyRouting(v) == hosted[0])));
        Assert.Equal(DEngineErrorCode.PartitionUnavailable, unavailable.Code);

        await fixture.StartSiloAsync(victim);

        var values = await fixture.Client.GetMultiAsync(written.Values.ToArray());
        Assert.All(values.Zip(written.Values), p => Assert.Equal(p.Second, p.First));
    }

    private static int KeyRouting(byte[] key) => global::DEngine.Orleans.KeyRouting.PartitionOf(key, ClusterFixture.Partitions);
}

[Collection(RestartCollection.Name)]
public sealed class LeaseReminderTests(RestartClusterFixture fixture)
{
    [Fact]
    public async Task A_partition_deactivated_with_pending_ttls_is_woken_by_the_reminder_and_cleans_up()
    {
        var grain = fixture.Grains.GetGrain<IStateMachineGrain>(6);
        var key = InPartition(6, "lease");
        await grain.Put(key, B("soon-gone"), 2);
        Assert.NotNull((await grain.GetTtl(key)).ExpiresAtUnixMs);

        await fixture.Cluster.DeactivateAsync(grain);
        await fixture.Cluster.WaitForDeactivationAsync(grain);

        // No client call wakes the partition: only the reminder can. Wait for its activation on real
        // time (the reminder period is 1 s in this cluster), polling with a deadline.
        var deadline = DateTime.UtcNow.AddSeconds(20);
        var woken = false;
        while (!woken && DateTime.UtcNow < deadline)
        {
            woken = fixture.Cluster.TryGetGrainContext(grain.GetGrainId(), out _);
            if (!woken)
            {
                await Task.Delay(50);
            }
        }
        Assert.True(woken, "the reminder did not wake the deactivated partition");

        // The woken activation counts from zero: it removed the key by itself.
        PartitionStatus status;
        do
        {
            status = await grain.GetStatus();
        }
        while (status.KeysExpired == 0 && DateTime.UtcNow < deadline);
        Assert.True(status.KeysExpired > 0, "the woken partition did not delete the expired key");
        Assert.Null(await grain.Get(key));
    }
}
