using System.Globalization;
using DEngine.Cli.Tests;
using DEngine.Cluster.Tests.Support;
using DEngine.Orleans;

namespace DEngine.Cluster.Tests;

/// <summary>
/// The README's replica operator commands run as the real <c>dengine</c> binary (a child process,
/// pointed at the four silos' gateways with <c>--gateway HOST:PORT,…</c>) against the replica group
/// of <see cref="ReplacementClusterFixture"/>: `partition move P --replica FROM --to SILO`,
/// `silo drain NAME` and `silo undrain NAME`, and a refusal. The outcome is checked through the
/// test's own client (each partition's replica set, as its primary sees it, and the status).
/// Shares the four silos with <see cref="ReplicaReplacementTests"/>: each test undrains what it
/// drained and waits until the partitions are settled again.
/// </summary>
[Collection(ReplacementClusterCollection.Name)]
public sealed class ReplicaReplacementCliTests(ReplacementClusterFixture cluster)
{
    private static readonly TimeSpan Phase = TimeSpan.FromSeconds(120);

    /// <summary>Deadline of a command that only asks or is refused.</summary>
    private static readonly TimeSpan Short = TimeSpan.FromSeconds(60);

    /// <summary>Deadline of a command that copies replicas (the CLI itself waits up to 30 min).</summary>
    private static readonly TimeSpan Long = TimeSpan.FromSeconds(240);

    [Fact]
    public async Task Dengine_partition_move_replica_builds_the_copy_on_the_target_and_drops_the_source_and_refuses_a_source_holding_no_replica_with_InvalidArgument_changing_nothing()
    {
        await cluster.EnsureAllRunningAsync();
        await cluster.SettledAsync(Phase);
        const int partition = 2;
        var p = partition.ToString(CultureInfo.InvariantCulture);
        var set = await cluster.Client.GetReplicaSetAsync(partition);
        var (from, to) = Pick(set);

        // `to` holds no replica of the partition: naming it as FROM is refused, before anything is recorded.
        var refused = await DengineAsync(Short, "partition", "move", p, "--replica", to, "--to", from);
        Assert.True(refused.ExitCode == 2, refused.ToString());
        Assert.Equal("", refused.Stdout);
        Assert.StartsWith($"error: InvalidArgument (partition {partition}): Silo '{to}' holds no replica of partition {partition}", refused.Stderr, StringComparison.Ordinal);
        Assert.Contains("nothing was changed", refused.Stderr, StringComparison.Ordinal);
        var unchanged = await cluster.Client.GetReplicaSetAsync(partition);
        Assert.Equal(set.Replicas.Order(), unchanged.Replicas.Order());
        Assert.Empty(unchanged.Moves);
        Assert.Empty(unchanged.Learners);

        // The replica set can still change after it looked settled (see ReplicaReplacementTests'
        // replica move): when the move's check finds the target or the source changed, settle and pick again.
        ProcessResult moved = null!;
        for (var attempt = 0; ; attempt++)
        {
            moved = await DengineAsync(Long, "partition", "move", p, "--replica", from, "--to", to);
            if (moved.ExitCode == 0 || attempt == 2 || !moved.Stderr.StartsWith("error: InvalidArgument", StringComparison.Ordinal))
            {
                break;
            }
            await cluster.SettledAsync(Phase);
            (from, to) = Pick(await cluster.Client.GetReplicaSetAsync(partition));
        }

        Assert.True(moved.ExitCode == 0, moved.ToString());
        Assert.StartsWith($"moved the replica of partition {partition} from {from} to {to}: replicas ", moved.Stdout, StringComparison.Ordinal);
        Assert.Contains($"moving the replica of partition {partition}: ", moved.Stderr, StringComparison.Ordinal);
        var after = await cluster.Client.GetReplicaSetAsync(partition);
        Assert.True(after.Holds(to), $"{to} holds no replica of partition {partition} after the move: {Describe(after)}");
        Assert.False(after.Holds(from), $"{from} still holds a replica of partition {partition} after the move: {Describe(after)}");
        Assert.Equal(ReplacementClusterFixture.Factor, after.Replicas.Length);
        var status = (await cluster.SettledAsync(Phase))[partition];
        Assert.Contains(to, RedisClusterFixture.ReplicasOf(status));
        Assert.DoesNotContain(from, RedisClusterFixture.ReplicasOf(status));
    }

    [Fact]
    public async Task Dengine_silo_drain_leaves_the_silo_no_replica_or_primary_role_and_refuses_moves_to_it_until_dengine_silo_undrain_takes_it_off_the_draining_list()
    {
        await cluster.EnsureAllRunningAsync();
        var before = await cluster.SettledAsync(Phase);
        // The primary of partition 0: the drain hands a primary role over too.
        var name = RedisClusterFixture.SiloOf(before[0]);
        var held = before.Where(s => RedisClusterFixture.ReplicasOf(s).Contains(name)).Select(s => s.Partition).Order().ToArray();
        try
        {
            var drained = await DengineAsync(Long, "silo", "drain", name);

            Assert.True(drained.ExitCode == 0, drained.ToString());
            Assert.Equal($"drained silo {name}: it holds no replica; moved partitions {string.Join(",", held)}. It stays draining until `dengine silo undrain {name}`.\n", drained.Stdout);
            Assert.Contains($"draining {name}: ", drained.Stderr, StringComparison.Ordinal);
            for (var partition = 0; partition < ReplacementClusterFixture.Partitions; partition++)
            {
                var set = await cluster.Client.GetReplicaSetAsync(partition);
                Assert.False(set.Holds(name), $"{name} still holds partition {partition} after the drain: {Describe(set)}");
                Assert.DoesNotContain(set.Learners, l => l.StartsWith(name + " ", StringComparison.Ordinal));
            }
            var status = await cluster.Client.GetStatusAsync();
            Assert.All(status, s => Assert.DoesNotContain(name, RedisClusterFixture.ReplicasOf(s)));
            Assert.All(status, s => Assert.NotEqual(name, RedisClusterFixture.SiloOf(s)));

            // While it drains, a replica move to it is refused.
            var target = (await cluster.SettledAsync(Phase))[0].Partition;
            var p = target.ToString(CultureInfo.InvariantCulture);
            var source = Pick(await cluster.Client.GetReplicaSetAsync(target)).From;
            var refused = await DengineAsync(Short, "partition", "move", p, "--replica", source, "--to", name);
            Assert.True(refused.ExitCode == 2, refused.ToString());
            Assert.StartsWith($"error: InvalidArgument (partition {target}): Silo '{name}' is draining", refused.Stderr, StringComparison.Ordinal);

            var undrained = await DengineAsync(Short, "silo", "undrain", name);
            Assert.True(undrained.ExitCode == 0, undrained.ToString());
            Assert.Equal($"silo {name} is not draining; draining: none\n", undrained.Stdout);

            // What undrain guarantees: the durable list no longer names it (a move request reads that
            // list, so the move below right after the undrain is accepted; the primaries' own rounds
            // read it within a heartbeat interval; nothing moves back by itself).
            Assert.Empty(await cluster.Client.UndrainSiloAsync(name));

            // Moving a replica back onto the emptied silo: its copy joins, and the balancer must not
            // hand it the primary role before the source is retired (the move's record lives with the
            // primary; a new primary refused the command's re-request, "already holds a replica").
            var back = (await cluster.SettledAsync(Phase))[1].Partition;
            var backSet = await cluster.Client.GetReplicaSetAsync(back);
            var backFrom = backSet.Replicas.First(r => r != backSet.Primary && r != name);
            var movedBack = await DengineAsync(Long, "partition", "move", back.ToString(CultureInfo.InvariantCulture), "--replica", backFrom, "--to", name);
            Assert.True(movedBack.ExitCode == 0, movedBack.ToString());
            var afterBack = await cluster.Client.GetReplicaSetAsync(back);
            Assert.True(afterBack.Holds(name) && !afterBack.Holds(backFrom), $"after moving partition {back}'s replica from {backFrom} back to {name}: {Describe(afterBack)}");
        }
        finally
        {
            // Idempotent: whatever failed above, the other tests of the collection get an undrained silo.
            await cluster.Client.UndrainSiloAsync(name);
        }
        await cluster.SettledAsync(Phase);
    }

    /// <summary>A replica of <paramref name="set"/> other than the primary, and a silo holding none.</summary>
    private (string From, string To) Pick(ReplicaSetStatus set) =>
        (set.Replicas.First(r => r != set.Primary), cluster.Silos.Select(s => s.Name).First(s => !set.Holds(s)));

    private static string Describe(ReplicaSetStatus set) =>
        $"v{set.Version} primary {set.Primary}, replicas {string.Join(",", set.Replicas)}, learners {string.Join(",", set.Learners)}, moves {string.Join(",", set.Moves)}";

    /// <summary>Runs the built <c>dengine</c> with every silo's gateway (README: --gateway HOST:PORT, comma-separated), killed at <paramref name="timeout"/>.</summary>
    private Task<ProcessResult> DengineAsync(TimeSpan timeout, params string[] args) =>
        ProcessRunner.RunAsync(
            ProcessRunner.CliDll,
            ["--gateway", string.Join(",", cluster.Silos.Select(s => $"127.0.0.1:{s.GatewayPort}")), .. args],
            timeout);
}
