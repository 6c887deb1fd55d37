using System.Globalization;
using DEngine.CrashChild;
using DEngine.StateMachine.Snapshots;
using DEngine.StateMachine.Tests.Support;
using Xunit.Abstractions;
using static DEngine.StateMachine.Tests.Support.Log;
using static DEngine.StateMachine.Tests.Support.TestEngine;

namespace DEngine.StateMachine.Tests;

/// <summary>
/// The crash tests again, on the power-cut file system: after the SIGKILL the power is cut too, so
/// whatever the engine did not fsync is gone (a SIGKILL alone leaves it in the page cache). A missing
/// fsync anywhere on these paths makes one of them fail (tests/durability-mutations.sh checks that).
/// </summary>
[Trait("Category", "PowerCut")]
public sealed class PowerCutEngineTests(ITestOutputHelper output)
{
    private const int KeysA = 3000;
    private const int KeysB = 4000;

    [Fact]
    public async Task PowerCut_after_SIGKILL_keeps_every_acknowledged_chunk_and_the_applied_position_matches_the_data()
    {
        using var fs = new PowerCutFs();
        var path = Path.Combine(fs.MountPoint, "data", "partitions", "0");
        var seed = Environment.TickCount;
        var random = new Random(seed);
        output.WriteLine($"kill schedule seed {seed}");
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(90);
        var model = new CrashTests.MixedWorkloadModel();

        for (var cycle = 0; cycle < 6; cycle++)
        {
            var acksWanted = random.Next(1, 60);
            ulong lastAcked;
            // Alternately the synced write of ApplyChunk and the silo's deferred write plus SyncWal.
            await using (var child = ChildProcess.Start(cycle % 2 == 0 ? "mixed" : "mixed-deferred", path))
            {
                Assert.Equal($"start {model.AppliedIndex}", await child.ReadLineAsync(deadline));
                lastAcked = model.AppliedIndex;
                for (var n = 0; n < acksWanted; n++)
                {
                    lastAcked = ulong.Parse(await child.ReadLineAsync(deadline), CultureInfo.InvariantCulture);
                }
                await child.KillAsync(deadline);
            }
            output.WriteLine($"cycle {cycle}: killed after {acksWanted} acks (last {lastAcked}); {fs.Cut()}");

            using var machine = new RocksDbStateMachine(path, SmallOptions(TimeProvider.System));
            var applied = machine.LastApplied;
            Assert.True(applied.Index >= lastAcked, $"cycle {cycle}: acknowledged index {lastAcked} lost by the power cut, reopened at {applied}");
            model.AdvanceTo(applied.Index);
            Assert.Equal(new LogPosition(model.AppliedIndex, model.AppliedTerm), applied);
            var scan = machine.ScanPrefix(Utf8(CrashWorkload.KeyPrefix));
            Assert.Equal(applied.Index, scan.Revision);
            Assert.Equal(model.Contents.Select(kv => $"{kv.Key}={kv.Value}"), scan.Entries.Select(e => $"{Text(e.Key)}={Text(e.Value)}"));
        }
    }

    [Fact]
    public async Task PowerCut_while_snapshots_are_taken_keeps_every_acknowledged_snapshot_complete()
    {
        using var fs = new PowerCutFs();
        var path = Path.Combine(fs.MountPoint, "p");
        var seed = Environment.TickCount;
        var random = new Random(seed);
        output.WriteLine($"kill schedule seed {seed}");
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(90);
        ulong lastAcked = 0;

        for (var cycle = 0; cycle < 4; cycle++)
        {
            var snapshotsWanted = random.Next(1, 4);
            ulong lastSnapshot = 0;
            await using (var child = ChildProcess.Start("snapshot", path))
            {
                Assert.StartsWith("start ", await child.ReadLineAsync(deadline));
                var seen = 0;
                while (seen < snapshotsWanted)
                {
                    var line = await child.ReadLineAsync(deadline);
                    if (line.StartsWith("snapshot ", StringComparison.Ordinal))
                    {
                        lastSnapshot = ulong.Parse(line["snapshot ".Length..], CultureInfo.InvariantCulture);
                        seen++;
                    }
                    else
                    {
                        lastAcked = ulong.Parse(line, CultureInfo.InvariantCulture);
                    }
                }
                // A few more chunks, so the kill can land inside the next snapshot's work too.
                for (var n = random.Next(0, 25); n > 0; n--)
                {
                    var line = await child.ReadLineAsync(deadline);
                    if (line.StartsWith("snapshot ", StringComparison.Ordinal))
                    {
                        lastSnapshot = ulong.Parse(line["snapshot ".Length..], CultureInfo.InvariantCulture);
                    }
                    else
                    {
                        lastAcked = ulong.Parse(line, CultureInfo.InvariantCulture);
                    }
                }
                await child.KillAsync(deadline);
            }
            output.WriteLine($"cycle {cycle}: killed after snapshot {lastSnapshot}, last ack {lastAcked}; {fs.Cut()}");

            using var machine = new RocksDbStateMachine(path, SmallOptions(TimeProvider.System));
            Assert.True(machine.LastApplied.Index >= lastAcked, $"cycle {cycle}: acknowledged index {lastAcked} lost, reopened at {machine.LastApplied}");
            var snapshots = machine.ListSnapshots();
            // The child runs on until the kill lands, so newer snapshots (and retention) may follow
            // the last one read: that one or a newer one is there.
            Assert.True(snapshots.Count > 0 && snapshots[^1].LastIncluded.Index >= lastSnapshot, $"cycle {cycle}: acknowledged snapshot {lastSnapshot} lost; on disk: {string.Join(", ", snapshots.Select(s => s.LastIncluded.Index))}");
            foreach (var snapshot in snapshots)
            {
                // Every file the manifest names, with its size and SHA-256: a file whose data was not synced fails here.
                SnapshotManifest.Verify(snapshot.Directory, snapshot.Metadata.Checksum.Span);
            }
            var newest = snapshots[^1];
            using var restored = new RocksDbStateMachine(Path.Combine(fs.MountPoint, $"restore-{cycle}"), SmallOptions(TimeProvider.System));
            restored.InstallSnapshot(newest.Directory, newest.Metadata);
            Assert.Equal(newest.LastIncluded, restored.LastApplied);
        }
    }

    [Fact]
    public async Task PowerCut_at_any_step_of_an_install_leaves_the_complete_old_or_the_complete_new_state()
    {
        using var fs = new PowerCutFs();
        var snapshotA = MakeSnapshot(Path.Combine(fs.MountPoint, "source-a"), KeysA, "a", term: 1);
        var snapshotB = MakeSnapshot(Path.Combine(fs.MountPoint, "source-b"), KeysB, "b", term: 2);
        var partition = Path.Combine(fs.MountPoint, "partition");
        using (var machine = new RocksDbStateMachine(partition, SmallOptions(TimeProvider.System)))
        {
            machine.InstallSnapshot(snapshotA.Directory, snapshotA.Metadata);
        }
        fs.Cut(); // the first install was acknowledged: it must be on disk

        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(120);
        var targets = RocksDbStateMachine.InstallSteps.Select(s => $"step {s}").Append("installed").ToArray();
        var expected = (KeysA, "a");
        for (var cycle = 0; cycle < targets.Length; cycle++)
        {
            var target = targets[cycle];
            // For the acknowledged install the child stops right after it, so the kill cannot land in a
            // later install that ran ahead of what this test has read.
            await using (var child = target == "installed"
                ? ChildProcess.Start("install", partition, snapshotA.Directory, snapshotB.Directory, "hold")
                : ChildProcess.Start("install", partition, snapshotA.Directory, snapshotB.Directory))
            {
                Assert.StartsWith("start ", await child.ReadLineAsync(deadline));
                string line;
                do
                {
                    line = await child.ReadLineAsync(deadline);
                    if (line.StartsWith("installed ", StringComparison.Ordinal))
                    {
                        var index = int.Parse(line["installed ".Length..], CultureInfo.InvariantCulture);
                        expected = index == KeysA ? (KeysA, "a") : (KeysB, "b");
                    }
                }
                while (!line.StartsWith(target, StringComparison.Ordinal));
                await child.KillAsync(deadline);
            }
            output.WriteLine($"cycle {cycle}: killed after '{target}'; {fs.Cut()}");

            using var reopened = new RocksDbStateMachine(partition, SmallOptions(TimeProvider.System));
            var applied = reopened.LastApplied;
            var (keys, prefix) = applied == new LogPosition(KeysA, 1) ? (KeysA, "a")
                : applied == new LogPosition(KeysB, 2) ? (KeysB, "b")
                : throw new Xunit.Sdk.XunitException($"cycle {cycle}: reopened at {applied}, which is neither snapshot");
            if (target == "installed")
            {
                Assert.Equal(expected, (keys, prefix)); // an acknowledged install survives the cut
            }
            var entries = reopened.ScanPrefix(Utf8("k")).Entries;
            Assert.Equal(keys, entries.Count);
            for (var i = 0; i < keys; i++)
            {
                Assert.Equal(Value(prefix, i), Text(entries[i].Value));
            }
        }
    }

    [Fact]
    public void PowerCut_after_installing_fetched_files_that_were_never_synced_keeps_the_installed_state()
    {
        using var fs = new PowerCutFs();
        var source = MakeSnapshot(Path.Combine(fs.MountPoint, "source"), KeysA, "a", term: 3);
        // The files arrive as a fetch writes them: plain writes, never fsynced (byte copies, no links).
        var (fetched, metadata) = SnapshotFiles.CopySnapshot(source, Path.Combine(fs.MountPoint, "fetched"));
        var partition = Path.Combine(fs.MountPoint, "target");
        using (var machine = new RocksDbStateMachine(partition, SmallOptions(TimeProvider.System)))
        {
            machine.InstallSnapshot(fetched, metadata);
            Assert.Equal(new LogPosition(KeysA, 3), machine.LastApplied);
        }
        // The install has returned (the configuration may now name this silo): cut the power.
        output.WriteLine(fs.Cut());

        using var reopened = new RocksDbStateMachine(partition, SmallOptions(TimeProvider.System));
        Assert.Equal(new LogPosition(KeysA, 3), reopened.LastApplied);
        var entries = reopened.ScanPrefix(Utf8("k")).Entries;
        Assert.Equal(KeysA, entries.Count);
        Assert.All(entries.Select((e, i) => (e, i)), x => Assert.Equal(Value("a", x.i), Text(x.e.Value)));
    }

    private static SnapshotInfo MakeSnapshot(string path, int keys, string prefix, ulong term)
    {
        using var machine = new RocksDbStateMachine(path, SmallOptions(TimeProvider.System));
        for (var first = 0; first < keys; first += 500)
        {
            machine.ApplyChunk(Enumerable.Range(first, Math.Min(500, keys - first)).Select(i => Insert((ulong)i + 1, Key(i), Value(prefix, i), term: term)).ToArray());
        }
        return machine.CreateSnapshot();
    }

    private static string Key(int i) => $"k{i:D5}";

    private static string Value(string prefix, int i) => $"{prefix}-{i}-{new string('v', 80)}";
}
