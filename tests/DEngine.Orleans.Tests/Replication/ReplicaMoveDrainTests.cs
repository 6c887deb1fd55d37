using DEngine.Client;
using DEngine.Orleans.Configuration;
using DEngine.Orleans.Replication;
using Microsoft.Extensions.DependencyInjection;
using static DEngine.Orleans.Tests.Keys;

namespace DEngine.Orleans.Tests.Replication;

/// <summary>
/// A replica move names its target after a `silo drain` or `silo undrain` that another silo made a
/// moment ago: the primary checks the durable draining list, not its silo's cached copy (a heartbeat
/// interval old at most, and the CLI's `undrain` then `move --replica` is quicker than that). Each
/// test seeds the primary's cache with the list as it was before the change, so the check cannot
/// pass by luck of a refresh.
/// </summary>
[Collection(SpareSiloClusterCollection.Name)]
public sealed class ReplicaMoveDrainTests(SpareSiloClusterFixture cluster)
{
    private const int Partition = 0;
    private static readonly TimeSpan Settle = TimeSpan.FromSeconds(60);

    private ISiloDrainGrain Drains => cluster.Grains.GetGrain<ISiloDrainGrain>(0);

    /// <summary>Waits for three replicas, no learner and no move; returns the primary, a replica to move and the silo holding none.</summary>
    private async Task<(string Primary, string From, string Spare)> SettledAsync()
    {
        await cluster.Client.PutAsync(InPartition(Partition), B("activate"));
        ReplicaSetStatus set = null!;
        await Poll.UntilAsync(async () =>
        {
            set = await cluster.Client.GetReplicaSetAsync(Partition);
            return set.Replicas.Length == 3 && set.Learners.Length == 0 && set.Moves.Length == 0;
        }, Settle, "partition 0 has three replicas and nothing in progress");
        return (set.Primary, set.Replicas.First(r => r != set.Primary), cluster.LiveSilos.First(s => !set.Holds(s)));
    }

    /// <summary>Makes the primary's silo believe it read <paramref name="draining"/> just now.</summary>
    private void SeedCache(string primary, params string[] draining) =>
        cluster.ServicesOf(primary).GetRequiredService<DrainState>().Set(draining, TimeProvider.System.GetTimestamp());

    [Fact]
    public async Task A_replica_move_to_a_silo_drained_a_moment_ago_is_refused_though_the_primarys_cached_list_predates_the_drain()
    {
        var (primary, from, spare) = await SettledAsync();
        try
        {
            await Drains.SetDraining(spare, true);
            SeedCache(primary);

            var refused = await Assert.ThrowsAsync<DEngineException>(() => cluster.Grains.GetGrain<IStateMachineGrain>(Partition).MoveReplica(from, spare));

            Assert.Equal(DEngineErrorCode.InvalidArgument, refused.Code);
            Assert.Contains($"Silo '{spare}' is draining", refused.Message, StringComparison.Ordinal);
            var set = await cluster.Client.GetReplicaSetAsync(Partition);
            Assert.Empty(set.Moves);
            Assert.False(set.Holds(spare));
        }
        finally
        {
            await Drains.SetDraining(spare, false);
        }
    }

    [Fact]
    public async Task A_replica_move_to_a_silo_undrained_a_moment_ago_is_accepted_though_the_primarys_cached_list_still_names_it_and_the_copy_moves()
    {
        var (primary, from, spare) = await SettledAsync();
        await Drains.SetDraining(spare, true);
        await Drains.SetDraining(spare, false);
        SeedCache(primary, spare);

        await cluster.Grains.GetGrain<IStateMachineGrain>(Partition).MoveReplica(from, spare);

        await Poll.UntilAsync(async () =>
        {
            var set = await cluster.Client.GetReplicaSetAsync(Partition);
            return set.Holds(spare) && !set.Holds(from) && set.Replicas.Length == 3;
        }, Settle, $"the replica of partition 0 moved from {from} to {spare}");
    }
}
