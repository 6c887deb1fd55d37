using System.Collections.Concurrent;
using System.Text;
using DEngine.Cluster.Tests.Linearizability;

namespace DEngine.Cluster.Tests;

[Collection(ClusterCollection.Name)]
public sealed class LinearizabilityTests(RedisClusterFixture cluster)
{
    [Fact]
    public async Task Histories_of_eight_clients_across_a_partition_move_and_a_silo_kill_9_and_restart_are_linearizable()
    {
        await cluster.EnsureAllRunningAsync();
        await cluster.SettledAsync(TimeSpan.FromSeconds(120));
        var keys = Enumerable.Range(0, 6).Select(i => $"lin-{Guid.NewGuid():N}-{i}").ToArray();
        var history = new ConcurrentBag<KvOperation>();
        var completed = 0;
        const int clients = 8;
        const int opsPerClient = 120;
        const int total = clients * opsPerClient;

        var workers = Enumerable.Range(0, clients).Select(c => Task.Run(async () =>
        {
            var random = new Random(c + 1);
            var lastSeen = new Dictionary<string, string?>();
            for (var i = 0; i < opsPerClient; i++)
            {
                var key = keys[random.Next(keys.Length)];
                var kind = (KvOpKind)random.Next(4);
                var value = $"c{c}-{i}";
                lastSeen.TryGetValue(key, out var expected);
                var op = await KvClientHistory.RunAsync(cluster.LoadClient, c, key, kind, value, expected);
                if (op is not null)
                {
                    history.Add(op);
                    if (op.Kind == KvOpKind.Get)
                    {
                        lastSeen[key] = op.Output;
                    }
                }
                Interlocked.Increment(ref completed);
            }
        })).ToArray();

        // A partition move while the clients run, then a silo kill -9 and its restart.
        await WaitForAsync(() => Volatile.Read(ref completed) >= total / 4);
        var movedPartition = await cluster.Client.PartitionOfAsync(Encoding.UTF8.GetBytes(keys[0]));
        var current = await cluster.Client.GetPartitionStatusAsync(movedPartition);
        // A replicated partition's primary moves only to one of its replicas (every silo holds one here).
        var target = cluster.Silos.Select(s => s.Name).First(n => n != RedisClusterFixture.SiloOf(current) && n != cluster.Silos[1].Name
            && (current.Replication is null || RedisClusterFixture.ReplicasOf(current).Contains(n)));
        var moved = await cluster.Client.MovePartitionAsync(movedPartition, target, TimeSpan.FromSeconds(60));
        Assert.StartsWith(target + " ", moved.Silo);

        await WaitForAsync(() => Volatile.Read(ref completed) >= total / 2);
        cluster.KillSilo(1);
        await WaitForAsync(() => Volatile.Read(ref completed) >= 3 * total / 4);
        await cluster.StartSiloAsync(1);
        await Task.WhenAll(workers);

        var result = LinearizabilityChecker.Check(history);
        Assert.True(result.IsLinearizable, $"key {result.FailingKey} {result.Reason}:\n{string.Join("\n", result.FailingHistory.OrderBy(o => o.Call))}");
        Assert.True(history.Count(o => !o.OutcomeUnknown) > total / 2, $"only {history.Count} operations completed");
    }

    private static async Task WaitForAsync(Func<bool> condition)
    {
        var deadline = DateTime.UtcNow.AddSeconds(120);
        while (!condition())
        {
            if (DateTime.UtcNow > deadline)
            {
                throw new TimeoutException("the workload did not progress within 120 s");
            }
            await Task.Delay(20);
        }
    }
}
