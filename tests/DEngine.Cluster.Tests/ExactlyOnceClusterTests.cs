using System.Collections.Concurrent;
using System.Text;
using DEngine.Cluster.Tests.Linearizability;

namespace DEngine.Cluster.Tests;

/// <summary>
/// Exactly-once writes on real silo processes with replica groups of three: the client's automatic
/// retries (same session and sequence) across a kill -9 of the partition's primary apply each write
/// once, so a chain of CAS writes never sees its own earlier attempt.
/// </summary>
[Collection(ReplicatedClusterCollection.Name)]
public sealed class ExactlyOnceClusterTests(ReplicatedRedisClusterFixture cluster)
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(90);

    private static byte[] B(string s) => Encoding.UTF8.GetBytes(s);

    /// <summary>The index in <see cref="RedisClusterFixture.Silos"/> of the silo that is primary of <paramref name="key"/>'s partition now.</summary>
    private async Task<int> PrimaryOfAsync(string key)
    {
        var partition = await cluster.Client.PartitionOfAsync(B(key));
        var status = await cluster.Client.GetPartitionStatusAsync(partition);
        var silo = RedisClusterFixture.SiloOf(status);
        return Array.FindIndex(cluster.Silos, s => s.Name == silo);
    }

    [Fact]
    public async Task A_chain_of_CAS_writes_across_a_kill_9_of_the_primary_returns_true_for_every_CAS_and_ends_at_N()
    {
        await cluster.EnsureAllRunningAsync();
        await cluster.SettledAsync(TimeSpan.FromSeconds(120));
        const int n = 40;
        var key = $"counter-{Guid.NewGuid():N}";
        Assert.True(await cluster.Client.CompareAndSwapAsync(B(key), null, B("0")));
        var victim = await PrimaryOfAsync(key);
        Assert.True(victim >= 0);
        try
        {
            for (var i = 1; i <= n; i++)
            {
                var cas = cluster.Client.CompareAndSwapAsync(B(key), B((i - 1).ToString()), B(i.ToString()));
                if (i == n / 2)
                {
                    // With this CAS in flight: its answer (or its request) dies with the primary, and the
                    // client sends it again to the new primary under the same (session, sequence).
                    cluster.KillSilo(victim);
                }
                // A CAS applied twice would answer false: its second apply finds its own new value.
                Assert.True(await cas.WaitAsync(Bound), $"cas {key} {i} --expect {i - 1} returned false");
            }
            Assert.Equal(n.ToString(), Encoding.UTF8.GetString((await cluster.Client.GetAsync(B(key)))!));
        }
        finally
        {
            await cluster.EnsureAllRunningAsync();
        }
    }

    [Fact]
    public async Task Histories_of_CAS_heavy_clients_whose_retries_span_a_kill_9_of_the_primary_are_linearizable()
    {
        await cluster.EnsureAllRunningAsync();
        await cluster.SettledAsync(TimeSpan.FromSeconds(120));
        var keys = Enumerable.Range(0, 3).Select(i => $"once-{Guid.NewGuid():N}-{i}").ToArray();
        var victim = await PrimaryOfAsync(keys[0]);
        var history = new ConcurrentBag<KvOperation>();
        var completed = 0;
        const int clients = 4;
        const int opsPerClient = 60;
        const int total = clients * opsPerClient;
        try
        {
            // One retrying DEngineClient (one session, 30 s write deadline) shared by the writers:
            // concurrent writes of a session, each retried by the client itself; the history records
            // what the caller saw.
            var workers = Enumerable.Range(0, clients).Select(c => Task.Run(async () =>
            {
                var random = new Random(c + 7);
                var lastSeen = new Dictionary<string, string?>();
                for (var i = 0; i < opsPerClient; i++)
                {
                    var key = keys[random.Next(keys.Length)];
                    // Half CAS (from the last value seen), the rest Get and Put.
                    var roll = random.Next(4);
                    var kind = roll < 2 ? KvOpKind.CompareAndSwap : roll == 2 ? KvOpKind.Get : KvOpKind.Put;
                    var value = $"c{c}-{i}";
                    lastSeen.TryGetValue(key, out var expected);
                    var op = await KvClientHistory.RunAsync(cluster.Client, c, key, kind, value, expected);
                    if (op is not null)
                    {
                        history.Add(op);
                        if (op.Kind == KvOpKind.Get)
                        {
                            lastSeen[key] = op.Output;
                        }
                        else if (op is { Kind: KvOpKind.CompareAndSwap, Swapped: true } or { Kind: KvOpKind.Put, OutcomeUnknown: false })
                        {
                            lastSeen[key] = value;
                        }
                    }
                    Interlocked.Increment(ref completed);
                }
            })).ToArray();

            await WaitForAsync(() => Volatile.Read(ref completed) >= total / 3);
            cluster.KillSilo(victim);
            await WaitForAsync(() => Volatile.Read(ref completed) >= 2 * total / 3);
            await cluster.StartSiloAsync(victim);
            await Task.WhenAll(workers).WaitAsync(TimeSpan.FromMinutes(3));

            var result = LinearizabilityChecker.Check(history);
            Assert.True(result.IsLinearizable, $"key {result.FailingKey} {result.Reason}:\n{string.Join("\n", result.FailingHistory.OrderBy(o => o.Call))}");
            // The client's retries answer nearly everything: an unknown outcome is only a write past its deadline.
            Assert.True(history.Count(o => !o.OutcomeUnknown) > total * 3 / 4, $"only {history.Count(o => !o.OutcomeUnknown)} of {total} operations have a known outcome");
            Assert.Contains(history, o => o is { Kind: KvOpKind.CompareAndSwap, Swapped: true });
        }
        finally
        {
            await cluster.EnsureAllRunningAsync();
        }
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
