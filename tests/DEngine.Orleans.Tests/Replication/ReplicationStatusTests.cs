using DEngine.Client;
using DEngine.Orleans.Configuration;
using static DEngine.Orleans.Tests.Keys;

namespace DEngine.Orleans.Tests.Replication;

/// <summary>What a replicated partition's status says about its copies, on the in-process 3-silo cluster.</summary>
[Collection(ReplicatedClusterCollection.Name)]
public sealed class ReplicationStatusTests(ReplicatedClusterFixture cluster)
{
    private static readonly TimeSpan Settle = TimeSpan.FromSeconds(60);

    [Fact]
    public async Task The_status_lists_the_primary_then_each_replica_with_its_applied_and_log_index_and_lag_in_entries()
    {
        const int partition = 7;
        for (var i = 0; i < 10; i++)
        {
            await cluster.Client.PutAsync(InPartition(partition), B($"v{i}"));
        }
        // The replicas learn the commit index on the next message (a heartbeat at the latest); an
        // earlier test may have stopped a silo, so wait for three copies in step.
        var deadline = DateTime.UtcNow + Settle;
        PartitionStatus status;
        while (true)
        {
            status = await cluster.Client.GetPartitionStatusAsync(partition);
            if (status.ReplicaGroup is { Members: 3 } settled && settled.Replicas.All(r => r.Lag == 0 && r.AppliedIndex == status.AppliedIndex))
            {
                break;
            }
            Assert.True(DateTime.UtcNow < deadline, $"partition {partition} did not settle with three copies in step within {Settle}: {status.Replication}");
            await Task.Delay(100);
        }
        var config = await cluster.Grains.GetGrain<IPartitionConfigurationGrain>(partition).Get();
        var group = status.ReplicaGroup!;

        Assert.Equal(config.Version, group.Version);
        Assert.Equal(config.Primary!.Silo, group.Primary);
        Assert.Equal(3, group.Factor);
        Assert.False(group.WritesRefused);
        Assert.Equal(3, group.Replicas.Length);
        Assert.Equal(group.Primary, group.Replicas[0].Silo);
        Assert.Equal(ReplicaRole.Primary, group.Replicas[0].Role);
        Assert.Equal(config.Replicas.Select(r => r.Silo).Order(), group.Replicas.Select(r => r.Silo).Order());
        Assert.All(group.Replicas.Skip(1), r => Assert.Equal(ReplicaRole.Replica, r.Role));
        Assert.All(group.Replicas, r =>
        {
            Assert.True(r.Active, $"{r.Silo} active");
            Assert.Equal(status.AppliedIndex, r.AppliedIndex);
            Assert.True(r.LogIndex >= r.AppliedIndex, $"{r.Silo}: log {r.LogIndex} below applied {r.AppliedIndex}");
            Assert.Null(r.Installing);
        });
        // The one-line form stays, for the status table's REPLICAS column.
        Assert.StartsWith($"v{config.Version}: ", status.Replication);
    }
}
