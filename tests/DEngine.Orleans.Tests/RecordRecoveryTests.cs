using DEngine.Orleans.Ownership;
using Orleans.Runtime;
using static DEngine.Orleans.Tests.Keys;

namespace DEngine.Orleans.Tests;

public sealed class RecordsClusterFixture : ClusterFixture;

[CollectionDefinition(Name)]
public sealed class RecordsCollection : ICollectionFixture<RecordsClusterFixture>
{
    public const string Name = "records-cluster";
}

/// <summary>
/// A partition never takes a missing configuration record for a new partition while a silo may hold
/// its data: the holders registry names the silos that have held it, the newest copy among the live
/// silos wins, and while a registered holder is down the partition answers PartitionUnavailable.
/// </summary>
[Collection(RecordsCollection.Name)]
public sealed class RecordRecoveryTests(RecordsClusterFixture fixture)
{
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(60);

    [Fact]
    public async Task A_lost_ownership_record_is_recovered_from_the_newest_copy_on_the_live_silos_not_taken_for_a_new_partition()
    {
        const int partition = 1;
        // Where the partition lands once its record is gone (placement without an owner), holding the older copy.
        var older = DefaultSilo(partition);
        var newer = fixture.LiveSilos.First(s => s != older);
        var (olderKeys, newerKeys) = await TwoCopiesAsync(partition, older, newer);

        await LoseOwnershipRecordAsync(partition);

        var values = await fixture.Client.GetMultiAsync([.. olderKeys, .. newerKeys]);
        Assert.All(values.Zip(olderKeys.Concat(newerKeys)), p => Assert.Equal(S(p.Second), S(p.First)));
        var status = await fixture.Client.GetPartitionStatusAsync(partition);
        Assert.True(status.AppliedIndex >= (ulong)(olderKeys.Length + newerKeys.Length));
    }

    [Fact]
    public async Task A_partition_without_its_record_answers_PartitionUnavailable_while_a_registered_holder_is_down_and_serves_the_newest_copy_once_it_is_back()
    {
        const int partition = 3;
        var holder = fixture.LiveSilos[2]; // never the primary, which the tests keep
        var other = fixture.LiveSilos.First(s => s != holder && s != DefaultSilo(partition));
        var (olderKeys, newerKeys) = await TwoCopiesAsync(partition, other, holder);
        await LoseOwnershipRecordAsync(partition);

        await fixture.StopSiloAsync(holder, kill: true);
        await WaitUntilGoneAsync(holder);
        var grain = fixture.Grains.GetGrain<IStateMachineGrain>(partition);
        var error = await Assert.ThrowsAsync<DEngineException>(() => grain.Get(newerKeys[0]));

        Assert.Equal(DEngineErrorCode.PartitionUnavailable, error.Code);
        Assert.Contains($"silo '{holder}'", error.Message, StringComparison.Ordinal);
        await fixture.StartSiloAsync(holder);
        var keys = olderKeys.Concat(newerKeys).ToArray();
        await WaitUntilAsync(async () => (await TryGetMultiAsync(keys)) is { } values && values.Zip(keys).All(p => S(p.First) == S(p.Second)), "every key served once the holder is back");
    }

    [Fact]
    public async Task An_activation_whose_ownership_claim_fails_releases_the_database_so_the_next_activation_on_that_silo_serves()
    {
        const int partition = 5;
        var grain = fixture.Grains.GetGrain<IStateMachineGrain>(partition);
        var key = InPartition(partition, "claim");
        await fixture.Client.PutAsync(key, B("kept"));
        var before = await grain.GetStatus();
        await fixture.Cluster.DeactivateAsync(grain);
        await fixture.Cluster.WaitForDeactivationAsync(grain);

        fixture.Records.FailWrites = state => state == "ownership";
        try
        {
            await Assert.ThrowsAnyAsync<Exception>(() => grain.Get(key));
        }
        finally
        {
            fixture.Records.FailWrites = null;
        }

        await WaitUntilAsync(async () =>
        {
            try
            {
                return S(await grain.Get(key)) == "kept";
            }
            catch (DEngineException ex) when (ex.IsRetryable)
            {
                return false;
            }
        }, "the partition serves again");
        var after = await grain.GetStatus();
        Assert.Equal(ClusterFixture.SiloOf(before), ClusterFixture.SiloOf(after));
    }

    [Fact]
    public async Task Silo_forget_refuses_a_live_silo_and_for_a_silo_gone_for_good_lets_its_partitions_serve_from_the_remaining_copies()
    {
        const int partition = 7;
        var gone = fixture.LiveSilos[1];
        var other = fixture.LiveSilos.First(s => s != gone);
        var (olderKeys, _) = await TwoCopiesAsync(partition, other, gone);
        var admin = fixture.Grains.GetGrain<IRecordsAdminGrain>(0);

        var refused = await Assert.ThrowsAsync<DEngineException>(() => fixture.Client.ForgetSiloAsync(gone));
        Assert.Equal(DEngineErrorCode.InvalidArgument, refused.Code);
        Assert.Contains("is in the cluster", refused.Message, StringComparison.Ordinal);

        await fixture.StopSiloAsync(gone, kill: true);
        try
        {
            await WaitUntilGoneAsync(gone);
            var grain = fixture.Grains.GetGrain<IStateMachineGrain>(partition);
            var down = await Assert.ThrowsAsync<DEngineException>(() => grain.Get(olderKeys[0]));
            Assert.Equal(DEngineErrorCode.PartitionUnavailable, down.Code);

            var report = await admin.ForgetSilo(gone);

            Assert.Contains(partition, report.HolderOf);
            Assert.Contains(partition, report.OwnerOf);
            Assert.DoesNotContain(gone, await fixture.Grains.GetGrain<IPartitionHoldersGrain>(partition).Get());
            // The writes only the forgotten silo had are gone with it; the remaining copy serves.
            await WaitUntilAsync(async () => (await TryGetMultiAsync(olderKeys)) is { } values && values.Zip(olderKeys).All(p => S(p.First) == S(p.Second)), "the remaining copy serves");
        }
        finally
        {
            await fixture.StartSiloAsync(gone);
        }
    }

    /// <summary>The silo a partition without an owner is placed on: (partition mod N) of the active silos by name.</summary>
    private string DefaultSilo(int partition)
    {
        var ordered = fixture.LiveSilos.Order(StringComparer.Ordinal).ToArray();
        return ordered[partition % ordered.Length];
    }

    /// <summary>Leaves an older copy of the partition on <paramref name="older"/> and the newest on <paramref name="newer"/>, which owns it.</summary>
    private async Task<(byte[][] OlderKeys, byte[][] NewerKeys)> TwoCopiesAsync(int partition, string older, string newer)
    {
        await fixture.Client.MovePartitionAsync(partition, older, Deadline);
        var olderKeys = Enumerable.Range(0, 20).Select(_ => InPartition(partition, "older")).ToArray();
        foreach (var key in olderKeys)
        {
            await fixture.Client.PutAsync(key, key);
        }
        await fixture.Client.MovePartitionAsync(partition, newer, Deadline);
        var newerKeys = Enumerable.Range(0, 20).Select(_ => InPartition(partition, "newer")).ToArray();
        foreach (var key in newerKeys)
        {
            await fixture.Client.PutAsync(key, key);
        }
        return (olderKeys, newerKeys);
    }

    /// <summary>What a volatile store does to a record: the partition and its record grain deactivate, and the stored record is gone.</summary>
    private async Task LoseOwnershipRecordAsync(int partition)
    {
        var grain = fixture.Grains.GetGrain<IStateMachineGrain>(partition);
        await fixture.Cluster.DeactivateAsync(grain);
        await fixture.Cluster.WaitForDeactivationAsync(grain);
        var owner = fixture.Grains.GetGrain<IPartitionOwnerGrain>(partition);
        Assert.True(fixture.Records.Lose("ownership", owner.GetGrainId()));
        await fixture.Cluster.DeactivateAsync(owner);
        Assert.Null((await owner.Get()).OwnerSilo);
    }

    private async Task WaitUntilGoneAsync(string silo)
    {
        var management = fixture.Grains.GetGrain<IManagementGrain>(0);
        await WaitUntilAsync(async () =>
        {
            var hosts = await management.GetDetailedHosts(onlyActive: true);
            return hosts.All(h => h.SiloName != silo);
        }, $"silo {silo} declared dead");
    }

    private async Task<IReadOnlyList<byte[]?>?> TryGetMultiAsync(byte[][] keys)
    {
        try
        {
            return await fixture.Client.GetMultiAsync(keys);
        }
        catch (DEngineException ex) when (ex.IsRetryable)
        {
            return null;
        }
    }

    private static Task WaitUntilAsync(Func<Task<bool>> condition, string what) => Poll.UntilAsync(condition, Deadline, what);
}
