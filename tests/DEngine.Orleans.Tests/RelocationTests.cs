using System.Collections.Concurrent;
using DEngine.Client;
using Orleans.Core.Internal;
using static DEngine.Orleans.Tests.Keys;

namespace DEngine.Orleans.Tests;

[Collection(RestartCollection.Name)]
public sealed class RelocationTests(RestartClusterFixture fixture)
{
    private static readonly TimeSpan MoveTimeout = TimeSpan.FromSeconds(90);

    private string OtherSiloThan(PartitionStatus status) => fixture.LiveSilos.First(name => name != ClusterFixture.SiloOf(status));

    [Fact]
    public async Task Moving_a_partition_to_another_silo_brings_every_key_its_ttls_and_the_applied_index()
    {
        const int partition = 3;
        var grain = fixture.Grains.GetGrain<IStateMachineGrain>(partition);
        var keys = Enumerable.Range(0, 200).Select(_ => InPartition(partition, "move")).ToArray();
        await Task.WhenAll(keys.Select((k, i) => grain.Put(k, B("value-" + i), i < 10 ? 3600UL : 0UL)));
        var ttlBefore = await Task.WhenAll(keys.Take(10).Select(k => grain.GetTtl(k)));
        var before = await grain.GetStatus();
        var target = OtherSiloThan(before);

        var after = await fixture.Client.MovePartitionAsync(partition, target, MoveTimeout);

        Assert.StartsWith(target + " ", after.Silo);
        Assert.Equal(before.AppliedIndex, after.AppliedIndex);
        Assert.True(after.Epoch > before.Epoch, $"epoch {before.Epoch} -> {after.Epoch}");
        Assert.NotNull(after.LastTransfer);
        Assert.True(after.LastTransfer!.Bytes > 0);
        var values = await grain.GetMulti(keys);
        Assert.All(values.Select((v, i) => (v, i)), p => Assert.Equal("value-" + p.i, S(p.v)));
        var ttlAfter = await Task.WhenAll(keys.Take(10).Select(k => grain.GetTtl(k)));
        Assert.Equal(ttlBefore.Select(t => t.ExpiresAtUnixMs), ttlAfter.Select(t => t.ExpiresAtUnixMs));

        // It keeps taking writes where it is now, with the new epoch as term.
        var index = await grain.Put(InPartition(partition, "after-move"), B("x"), 0);
        Assert.Equal(after.AppliedIndex + 1, index);
        Assert.Equal(after.Epoch, (await grain.GetStatus()).AppliedTerm);
    }

    [Fact]
    public async Task Moving_a_partition_under_a_steady_write_load_completes_and_loses_no_acknowledged_write()
    {
        // Writers keep requests in flight at every instant, so the old activation is never idle:
        // the move must not wait for idleness, and in-flight writes must finish while it deactivates.
        const int partition = 5;
        var grain = fixture.Grains.GetGrain<IStateMachineGrain>(partition);
        await grain.Put(InPartition(partition, "warm"), B("w"), 0);
        var load = PartitionWriters.Start(fixture.Client, partition, "load", 32);
        await WaitForAsync(() => load.Acked.Count >= 300);
        var before = await grain.GetStatus();
        var target = OtherSiloThan(before);

        var after = await fixture.Client.MovePartitionAsync(partition, target, TimeSpan.FromSeconds(30));

        var afterMove = load.Acked.Count;
        await WaitForAsync(() => load.Acked.Count >= afterMove + 300);
        await load.StopAsync();
        Assert.StartsWith(target + " ", after.Silo);
        Assert.True(after.Epoch > before.Epoch);
        await load.AssertEveryAcknowledgedWritePresentAndNoErrorAsync();
    }

    [Fact]
    public async Task Deactivations_that_start_while_writes_are_queued_let_those_writes_finish()
    {
        // Orleans may deactivate a partition at any moment (directory changes, shutdown, an
        // operator). From then on it holds new messages until the running requests end, so queued
        // writes must be applied without another grain message, or they and the deactivation wait
        // for each other until the call timeout.
        const int partition = 6;
        var grain = fixture.Grains.GetGrain<IStateMachineGrain>(partition);
        var management = grain.AsReference<IGrainManagementExtension>();
        var load = PartitionWriters.Start(fixture.Client, partition, "deact", 32);

        for (var round = 0; round < 10; round++)
        {
            var before = load.Acked.Count;
            await WaitForAsync(() => load.Acked.Count >= before + 100, TimeSpan.FromSeconds(20));
            await management.DeactivateOnIdle();
        }
        var last = load.Acked.Count;
        await WaitForAsync(() => load.Acked.Count >= last + 100, TimeSpan.FromSeconds(20));
        await load.StopAsync();

        await load.AssertEveryAcknowledgedWritePresentAndNoErrorAsync();
    }

    [Fact]
    public async Task No_checkpoint_is_handed_over_while_the_partition_is_active_on_the_silo_that_holds_its_data()
    {
        // The fence against two writers: a takeover starts with a handover checkpoint from the silo
        // holding the data, and that silo hands none out while an activation there can still write.
        const int partition = 7;
        var grain = fixture.Grains.GetGrain<IStateMachineGrain>(partition);
        await grain.Put(InPartition(partition, "fence"), B("before"), 0);
        var before = await grain.GetStatus();
        var holder = fixture.Grains.GetGrain<DEngine.Orleans.Snapshots.ISnapshotServerGrain>(ClusterFixture.SiloOf(before));

        var error = await Assert.ThrowsAsync<DEngineException>(() => holder.PrepareHandover(partition));

        Assert.Equal(DEngineErrorCode.PartitionUnavailable, error.Code);
        Assert.Contains("still open", error.Message);
        // The live activation is untouched: same silo, same epoch, and it keeps writing.
        var index = await grain.Put(InPartition(partition, "fence"), B("after"), 0);
        var after = await grain.GetStatus();
        Assert.Equal(before.Silo, after.Silo);
        Assert.Equal(before.Epoch, after.Epoch);
        Assert.Equal(before.AppliedIndex + 1, index);
    }

    [Fact]
    public async Task A_snapshot_of_200_MB_moves_between_silos_in_chunks_below_the_message_size_limit()
    {
        const int partition = 1;
        var grain = fixture.Grains.GetGrain<IStateMachineGrain>(partition);
        var random = new Random(42);
        var keys = new List<byte[]>();
        for (var batch = 0; batch < 21; batch++)
        {
            var puts = Enumerable.Range(0, 10).Select(_ =>
            {
                var key = InPartition(partition, "big");
                keys.Add(key);
                var value = new byte[1_000_000];
                random.NextBytes(value); // incompressible
                return grain.Put(key, value, 0);
            }).ToArray();
            await Task.WhenAll(puts);
        }
        var before = await grain.GetStatus();
        var target = OtherSiloThan(before);

        var after = await fixture.Client.MovePartitionAsync(partition, target, MoveTimeout);

        Assert.StartsWith(target + " ", after.Silo);
        Assert.True(after.LastTransfer!.Bytes >= 200_000_000, $"only {after.LastTransfer.Bytes} bytes moved");
        Assert.Equal(before.AppliedIndex, after.AppliedIndex);
        var sample = keys.Where((_, i) => i % 25 == 0).ToArray();
        var values = await grain.GetMulti(sample);
        Assert.All(values, v => Assert.Equal(1_000_000, v!.Length));
    }

    [Fact]
    public async Task A_gracefully_stopped_silo_hands_its_partitions_over_and_no_acknowledged_write_is_lost()
    {
        var statuses = await fixture.Client.GetStatusAsync();
        var victim = fixture.LiveSilos.Skip(1).First(name => statuses.Any(st => ClusterFixture.SiloOf(st) == name));
        var hosted = statuses.Where(st => ClusterFixture.SiloOf(st) == victim).Select(st => st.Partition).ToArray();

        var acked = new ConcurrentDictionary<string, byte[]>();
        var failures = new ConcurrentQueue<string>();
        var unknown = 0;
        using var stop = new CancellationTokenSource();
        var writers = Enumerable.Range(0, 4).Select(w => Task.Run(async () =>
        {
            for (var n = 0; !stop.IsCancellationRequested; n++)
            {
                var key = B($"handover/{w}/{n}/{Guid.NewGuid():N}");
                try
                {
                    await fixture.Client.PutAsync(key, key);
                    acked[S(key)] = key;
                }
                catch (Exception ex) when (ex is TimeoutException or global::Orleans.Runtime.OrleansException)
                {
                    // Unknown outcome (a call in flight through the stopping silo's gateway when it
                    // closed; Orleans clients wait for the response timeout then). Not acknowledged,
                    // so not checked; counted.
                    Interlocked.Increment(ref unknown);
                }
                catch (Exception ex)
                {
                    failures.Enqueue(ex.GetType().Name + ": " + ex.Message);
                }
            }
        })).ToArray();
        await WaitForAsync(() => acked.Count >= 200);

        await fixture.StopSiloAsync(victim);
        var afterStop = acked.Count;
        await WaitForAsync(() => acked.Count >= afterStop + 200);
        stop.Cancel();
        await Task.WhenAll(writers);

        // The stopped silo's partitions serve elsewhere, with all their data.
        var now = await fixture.Client.GetStatusAsync();
        Assert.All(hosted, p => Assert.NotEqual(victim, ClusterFixture.SiloOf(now[p])));
        var values = await fixture.Client.GetMultiAsync(acked.Values.ToArray());
        Assert.All(values.Zip(acked.Values), p => Assert.Equal(p.Second, p.First));
        Assert.True(failures.IsEmpty, string.Join("\n", failures.Take(5)));
        // At most the few calls that were in flight through the stopping silo's gateway.
        Assert.True(Volatile.Read(ref unknown) <= 4, $"{unknown} writes ended with an unknown outcome");

        await fixture.StartSiloAsync(victim);
    }

    private static async Task WaitForAsync(Func<bool> condition, TimeSpan? timeout = null)
    {
        var limit = timeout ?? TimeSpan.FromSeconds(60);
        var deadline = DateTime.UtcNow + limit;
        while (!condition())
        {
            Assert.True(DateTime.UtcNow < deadline, $"the write load did not progress within {limit.TotalSeconds:0} s");
            await Task.Delay(20);
        }
    }

    /// <summary>Concurrent writers of fresh keys into one partition, recording what was acknowledged.</summary>
    private sealed class PartitionWriters
    {
        private readonly DEngineClient _client;
        private readonly CancellationTokenSource _stop = new();
        private Task[] _writers = [];

        private PartitionWriters(DEngineClient client) => _client = client;

        public ConcurrentDictionary<string, byte[]> Acked { get; } = new();

        public ConcurrentQueue<string> Failures { get; } = new();

        public static PartitionWriters Start(DEngineClient client, int partition, string prefix, int writers)
        {
            var load = new PartitionWriters(client);
            load._writers = Enumerable.Range(0, writers).Select(w => Task.Run(async () =>
            {
                for (var n = 0; !load._stop.IsCancellationRequested; n++)
                {
                    var key = InPartition(partition, $"{prefix}/{w}/{n}/");
                    try
                    {
                        await client.PutAsync(key, key);
                        load.Acked[Convert.ToHexString(key)] = key;
                    }
                    catch (Exception ex)
                    {
                        load.Failures.Enqueue(ex.GetType().Name + ": " + ex.Message);
                    }
                }
            })).ToArray();
            return load;
        }

        public async Task StopAsync()
        {
            _stop.Cancel();
            await Task.WhenAll(_writers);
            _stop.Dispose();
        }

        public async Task AssertEveryAcknowledgedWritePresentAndNoErrorAsync()
        {
            var values = await _client.GetMultiAsync(Acked.Values.ToArray());
            Assert.All(values.Zip(Acked.Values), p => Assert.Equal(p.Second, p.First));
            Assert.True(Failures.IsEmpty, string.Join("\n", Failures.Take(5)));
        }
    }
}
