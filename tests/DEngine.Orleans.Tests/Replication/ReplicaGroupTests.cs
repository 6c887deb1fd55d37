using DEngine.Client;
using DEngine.Orleans.Configuration;
using DEngine.Protos.Common;
using static DEngine.Orleans.Tests.Keys;

namespace DEngine.Orleans.Tests.Replication;

/// <summary>
/// Replica groups of three on an in-process 3-silo cluster: what a write needs before it is
/// acknowledged, and how a partition keeps serving when a replica's or the primary's silo goes away.
/// (Stops here are Orleans' KillSiloAsync: availability, not crash durability, which the real-process
/// tests cover.)
/// </summary>
[Collection(ReplicatedClusterCollection.Name)]
public sealed class ReplicaGroupTests(ReplicatedClusterFixture cluster)
{
    private static readonly TimeSpan Settle = TimeSpan.FromSeconds(60);

    private async Task<PartitionConfiguration> ConfigurationOf(int partition) =>
        await cluster.Grains.GetGrain<IPartitionConfigurationGrain>(partition).Get();

    /// <summary>Writes <paramref name="value"/> under a fresh key of <paramref name="partition"/>; returns the key once acknowledged.</summary>
    private async Task<byte[]> PutAsync(int partition, string value)
    {
        var key = InPartition(partition);
        await cluster.Client.PutAsync(key, B(value));
        return key;
    }

    /// <summary>The primary's applied index: everything acknowledged so far is at or below it.</summary>
    private async Task<ulong> AppliedAsync(int partition) => (await cluster.Client.GetPartitionStatusAsync(partition)).AppliedIndex;

    /// <summary>Waits until <paramref name="partition"/> has three replicas again (an earlier test may have stopped a silo).</summary>
    private Task SettledAsync(int partition) =>
        WaitUntilAsync(async () => (await ConfigurationOf(partition)).Replicas.Length == 3, $"partition {partition} has three replicas");

    private Task WaitUntilAsync(Func<Task<bool>> condition, string what) => Poll.UntilAsync(condition, Settle, what);

    [Fact]
    public async Task A_write_is_acknowledged_only_once_every_replica_has_it_in_its_log()
    {
        const int partition = 1;
        await PutAsync(partition, "activate");
        await SettledAsync(partition);
        var acked = new List<byte[]>();
        for (var i = 0; i < 20; i++)
        {
            acked.Add(await PutAsync(partition, $"v{i}"));
        }
        var config = await ConfigurationOf(partition);
        Assert.Equal(3, config.Replicas.Length);
        // Applied at the primary means committed: in every replica's log.
        var last = await AppliedAsync(partition);
        foreach (var replica in config.Replicas)
        {
            Assert.True(cluster.RegistryOf(replica.Silo).TryGet(partition, out var copy), $"silo {replica.Silo} has no open copy");
            Assert.True(copy.Position.LastIndex >= last, $"silo {replica.Silo}'s log ends at {copy.Position.LastIndex}, below the acknowledged {last}");
        }
        var values = await cluster.Client.GetMultiAsync(acked.ToArray());
        Assert.Equal(Enumerable.Range(0, 20).Select(i => $"v{i}"), values.Select(S));
        var status = await cluster.Client.GetPartitionStatusAsync(partition);
        Assert.NotNull(status.Replication);
        Assert.StartsWith($"v{config.Version}: ", status.Replication);
        Assert.Equal(config.Primary!.Silo, ClusterFixture.SiloOf(status));
    }

    [Fact]
    public async Task ApplyChunk_from_an_external_log_is_refused_on_a_replicated_partition_and_changes_nothing()
    {
        const int partition = 2;
        await PutAsync(partition, "first");
        var before = await cluster.Client.GetPartitionStatusAsync(partition);
        var entry = new Entry { Index = before.AppliedIndex + 1, Term = before.AppliedTerm, Payload = new EntryPayload { Noop = new Noop() } };
        var error = await Assert.ThrowsAsync<DEngineException>(() => cluster.Grains.GetGrain<IStateMachineGrain>(partition).ApplyChunk([entry]));
        Assert.Equal(DEngineErrorCode.FeatureNotEnabled, error.Code);
        Assert.Contains("single-replica", error.Message);
        Assert.Equal(before.AppliedIndex, (await cluster.Client.GetPartitionStatusAsync(partition)).AppliedIndex);
    }

    [Fact]
    public async Task When_a_replica_silo_goes_away_writes_go_on_with_the_others_and_it_rejoins_caught_up()
    {
        // A partition led by the first silo (tests never stop it); one of its replicas goes away.
        var partition = await PartitionLedByAsync(cluster.LiveSilos[0]);
        await SettledAsync(partition);
        var config = await ConfigurationOf(partition);
        var victim = config.Replicas.Select(r => r.Silo).First(s => s != config.Primary!.Silo);
        await cluster.StopSiloAsync(victim, kill: true);
        try
        {
            var during = new List<byte[]>();
            for (var i = 0; i < 10; i++)
            {
                during.Add(await PutAsync(partition, $"during-{i}"));
            }
            var shrunk = await ConfigurationOf(partition);
            Assert.DoesNotContain(shrunk.Replicas, r => r.Silo == victim);
            Assert.True(shrunk.Version > config.Version);
            Assert.Equal(during.Select((_, i) => $"during-{i}"), (await cluster.Client.GetMultiAsync(during.ToArray())).Select(S));

            await cluster.StartSiloAsync(victim);
            await WaitUntilAsync(async () => (await ConfigurationOf(partition)).Contains(victim), $"silo {victim} is a replica again");
            var last = await AppliedAsync(partition);
            Assert.True(cluster.RegistryOf(victim).TryGet(partition, out var copy));
            Assert.True(copy.Position.LastIndex >= last, $"the returned replica's log ends at {copy.Position.LastIndex}, below {last}");
        }
        finally
        {
            if (!cluster.LiveSilos.Contains(victim))
            {
                await cluster.StartSiloAsync(victim);
            }
        }
    }

    [Fact]
    public async Task When_the_primary_silo_goes_away_a_replica_takes_over_with_every_acknowledged_write()
    {
        var leader = cluster.LiveSilos[1];
        var partition = await PartitionLedByAsync(leader);
        await SettledAsync(partition);
        var before = await ConfigurationOf(partition);
        var acked = new List<byte[]>();
        for (var i = 0; i < 20; i++)
        {
            acked.Add(await PutAsync(partition, $"before-{i}"));
        }
        await cluster.StopSiloAsync(leader, kill: true);
        try
        {
            // The client retries while the replicas notice and one takes over.
            acked.Add(await PutAsync(partition, "after"));
            var after = await ConfigurationOf(partition);
            Assert.NotEqual(leader, after.Primary!.Silo);
            Assert.True(after.Version > before.Version);
            var values = await cluster.Client.GetMultiAsync(acked.ToArray());
            Assert.Equal([.. Enumerable.Range(0, 20).Select(i => $"before-{i}"), "after"], values.Select(S));
            var status = await cluster.Client.GetPartitionStatusAsync(partition);
            Assert.Equal(after.Primary.Silo, ClusterFixture.SiloOf(status));
        }
        finally
        {
            await cluster.StartSiloAsync(leader);
        }
    }

    [Fact]
    public async Task A_former_primary_returning_with_entries_it_could_not_commit_drops_them_and_they_are_never_applied_or_read()
    {
        var leader = cluster.LiveSilos[2];
        var partition = await PartitionLedByAsync(leader);
        await SettledAsync(partition);
        var before = await ConfigurationOf(partition);
        var kept = await PutAsync(partition, "kept");
        // The primary's link to its replicas goes down: the next write reaches only its own log.
        cluster.Faults.Split(partition, leader);
        var lost = InPartition(partition, "uncommitted");
        var write = cluster.Grains.GetGrain<IStateMachineGrain>(partition).Put(lost, B("never"), 0);
        Assert.True(cluster.RegistryOf(leader).TryGet(partition, out var old));
        await WaitUntilAsync(() => Task.FromResult(old.Position.LastIndex > old.Position.CommitIndex), "the write is in the primary's log, uncommitted");
        var uncommittedIndex = old.Position.LastIndex;
        var oldTerm = old.TermAt(uncommittedIndex);
        Assert.False(write.IsCompletedSuccessfully);
        await cluster.StopSiloAsync(leader, kill: true);
        cluster.Faults.Heal();
        try
        {
            // A replica takes over without the entry; writes go on.
            var after = await PutAsync(partition, "after");
            var taken = await ConfigurationOf(partition);
            Assert.NotEqual(leader, taken.Primary!.Silo);
            Assert.True(taken.Version > before.Version);

            await cluster.StartSiloAsync(leader);
            await WaitUntilAsync(async () => (await ConfigurationOf(partition)).Contains(leader), $"the former primary {leader} is a replica again");
            Assert.True(cluster.RegistryOf(leader).TryGet(partition, out var returned));
            // Its entry at that index is now the new primary's (another term), and nothing of the lost write was applied.
            Assert.True(returned.TermAt(uncommittedIndex) > oldTerm, $"index {uncommittedIndex} still has the old term {oldTerm}");
            Assert.Null(returned.Engine.Get(lost));
            Assert.Null(await cluster.Client.GetAsync(lost));
            Assert.Equal(["kept", "after"], (await cluster.Client.GetMultiAsync([kept, after])).Select(S));
        }
        finally
        {
            cluster.Faults.Heal();
            if (!cluster.LiveSilos.Contains(leader))
            {
                await cluster.StartSiloAsync(leader);
            }
        }
    }

    [Fact]
    public async Task A_primary_cut_off_from_its_replicas_acknowledges_nothing_and_serves_no_read_once_its_lease_is_over_then_heals()
    {
        var leader = cluster.LiveSilos[0];
        var partition = await PartitionLedByAsync(leader);
        await SettledAsync(partition);
        var key = InPartition(partition, "split");
        await cluster.Client.PutAsync(key, B("before"));
        var grain = cluster.Grains.GetGrain<IStateMachineGrain>(partition);
        cluster.Faults.Split(partition, leader);
        try
        {
            // A write during the split cannot be committed: it is not acknowledged.
            var write = grain.Put(key, B("during"), 0);
            var dropped = cluster.Faults.Dropped;
            await WaitUntilAsync(() => Task.FromResult(cluster.Faults.Dropped > dropped + 4), "replication messages are being dropped");
            Assert.False(write.IsCompletedSuccessfully, "a write was acknowledged while the primary could reach no replica");
            // Once the lease (2 s here) has run out, reads are refused rather than risk a stale value.
            var refused = false;
            var deadline = DateTime.UtcNow + Settle;
            while (!refused && DateTime.UtcNow < deadline)
            {
                try
                {
                    Assert.Equal("before", S(await grain.Get(key)));
                    await Task.Delay(100);
                }
                catch (DEngineException ex) when (ex.Code == DEngineErrorCode.NotServing)
                {
                    refused = true;
                }
            }
            Assert.True(refused, "the primary kept serving reads without its lease");
            Assert.False(write.IsCompletedSuccessfully, "a write was acknowledged while the primary could reach no replica");
            cluster.Faults.Heal();
            // Healed: the write commits (or, if its replicas were removed meanwhile, is refused retryably), and reads serve again.
            try
            {
                await write.WaitAsync(Settle);
            }
            catch (DEngineException ex) when (ex.IsRetryable || ex.Code == DEngineErrorCode.OutcomeUnknown)
            {
            }
            await cluster.Client.PutAsync(key, B("after"));
            Assert.Equal("after", S(await cluster.Client.GetAsync(key)));
        }
        finally
        {
            cluster.Faults.Heal();
        }
    }

    /// <summary>
    /// Orleans deactivates a grain only after its running calls end (it decides to when the silo that
    /// held the grain's directory entry dies) and stops the grain's timers meanwhile: a write waiting
    /// without bound for a replica held the partition answering nothing (seen in the real-process
    /// failover tests). Every write now ends within the commit bound.
    /// </summary>
    [Fact]
    public async Task A_write_that_a_silent_replica_kept_by_the_floor_blocks_is_answered_outcome_unknown_within_the_commit_bound()
    {
        var leader = cluster.LiveSilos[1];
        var partition = await PartitionLedByAsync(leader);
        await SettledAsync(partition);
        var grain = cluster.Grains.GetGrain<IStateMachineGrain>(partition);
        var key = InPartition(partition, "bounded");
        await grain.Put(key, B("before"), 0);
        cluster.Faults.Split(partition, leader);
        try
        {
            var started = DateTime.UtcNow;
            var write = grain.Put(key, B("during"), 0);
            // ReplicaTimeout is 3 s here: the bound is 6 s; the client's own response timeout (30 s) is far later.
            var error = await Assert.ThrowsAsync<DEngineException>(() => write.WaitAsync(TimeSpan.FromSeconds(20)));
            Assert.Equal(DEngineErrorCode.OutcomeUnknown, error.Code);
            var waited = DateTime.UtcNow - started;
            Assert.True(waited >= TimeSpan.FromSeconds(5), $"answered after {waited.TotalSeconds:0.0} s, before the bound: it could not have been committed, and the floor keeps one silent replica");
            // Status still answers (the activation is not held by a call that never ends).
            Assert.Equal(partition, (await grain.GetStatus().WaitAsync(TimeSpan.FromSeconds(5))).Partition);
        }
        finally
        {
            cluster.Faults.Heal();
        }
        await cluster.Client.PutAsync(key, B("after"));
        Assert.Equal("after", S(await cluster.Client.GetAsync(key)));
    }

    [Fact]
    public async Task A_handover_retried_back_to_back_while_a_replica_is_silent_removes_that_replica_first_and_then_moves_the_role()
    {
        // What the balancer does (a handover, and another as soon as one fails) while a replica's silo
        // is gone: each attempt used to drain for ReplicaTimeout behind a chunk only the silent replica
        // could commit, and maintenance skips a draining primary, so the silent replica stayed in the
        // configuration, holding every commit and the read lease.
        // Any partition with three replicas: the roles an earlier test of this fixture moved do not matter.
        const int partition = 3;
        await PutAsync(partition, "probe");
        await SettledAsync(partition);
        var before = await ConfigurationOf(partition);
        var leader = before.Primary!.Silo;
        var others = before.Replicas.Select(r => r.Silo).Where(s => s != leader).ToArray();
        var (target, silent) = (others[0], others[1]);
        var grain = cluster.Grains.GetGrain<IStateMachineGrain>(partition);
        var key = InPartition(partition, "handover-silent");
        cluster.Faults.Silence(partition, silent);
        try
        {
            // In flight until the silent replica leaves the configuration.
            var write = grain.Put(key, B("during"), 0);
            await WaitUntilAsync(async () => (await grain.GetStatus()).ReplicaGroup?.Replicas.FirstOrDefault(r => r.Silo == silent) is { Lag: > 0 }, "the write is in flight, not yet on the silent replica");
            var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(20);
            var attempts = new List<string>();
            while (true)
            {
                Assert.True(DateTime.UtcNow < deadline, $"no handover within 20 s; attempts: {string.Join(" | ", attempts)}");
                try
                {
                    await grain.MoveTo(target);
                    break;
                }
                catch (DEngineException ex) when (ex.Code == DEngineErrorCode.PartitionUnavailable)
                {
                    attempts.Add(ex.Message);
                }
            }
            var after = await ConfigurationOf(partition);
            Assert.Equal(target, after.Primary?.Silo);
            Assert.DoesNotContain(after.Replicas, r => r.Silo == silent);
            await write.WaitAsync(TimeSpan.FromSeconds(10));
            Assert.Equal("during", S(await cluster.Client.GetAsync(key)));
        }
        finally
        {
            cluster.Faults.Heal();
        }
        await SettledAsync(partition);
    }

    [Fact]
    public async Task A_silo_stopping_gracefully_hands_its_primary_roles_to_replicas_and_every_acknowledged_write_stays()
    {
        var leader = cluster.LiveSilos[1];
        var partition = await PartitionLedByAsync(leader);
        await SettledAsync(partition);
        var before = await ConfigurationOf(partition);
        var acked = new List<byte[]>();
        for (var i = 0; i < 10; i++)
        {
            acked.Add(await PutAsync(partition, $"v{i}"));
        }
        await cluster.StopSiloAsync(leader);
        try
        {
            // The handover ran before the silo stopped: the configuration names another primary at a higher version.
            var after = await ConfigurationOf(partition);
            Assert.NotEqual(leader, after.Primary!.Silo);
            Assert.True(after.Version > before.Version, $"version {before.Version} -> {after.Version}");
            acked.Add(await PutAsync(partition, "v10"));
            Assert.Equal(Enumerable.Range(0, 11).Select(i => $"v{i}"), (await cluster.Client.GetMultiAsync(acked.ToArray())).Select(S));
            Assert.Equal(after.Primary.Silo, ClusterFixture.SiloOf(await cluster.Client.GetPartitionStatusAsync(partition)));
        }
        finally
        {
            await cluster.StartSiloAsync(leader);
        }
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
