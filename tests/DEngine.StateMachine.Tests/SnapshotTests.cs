using DEngine.Protos.Common;
using DEngine.Protos.Storage;
using DEngine.StateMachine.Snapshots;
using DEngine.StateMachine.Tests.Support;
using Google.Protobuf;
using static DEngine.StateMachine.Tests.Support.Log;
using static DEngine.StateMachine.Tests.Support.TestEngine;

namespace DEngine.StateMachine.Tests;

/// <summary>Snapshot creation, listing, retention, policy and install (happy paths and the label rules).</summary>
public sealed class SnapshotTests
{
    [Fact]
    public void Round_trip_snapshot_then_reset_and_other_writes_then_install_restores_exactly_the_snapshot_state()
    {
        using var engine = new TestEngine();
        var machine = engine.Machine;
        machine.ApplyChunk([Insert(1, "key1", "value1"), Insert(2, "key2", "value2"), Insert(3, "key3", "value3")]);

        var snapshot = machine.CreateSnapshot();
        Assert.Equal(new LogPosition(3, 1), snapshot.LastIncluded);
        Assert.Equal("snapshot-3-1", Path.GetFileName(snapshot.Directory));
        Assert.Equal(new LogId { Index = 3, Term = 1 }, machine.SnapshotMetadata!.LastIncluded);
        Assert.Equal(32, snapshot.Metadata.Checksum.Length);
        Assert.NotEqual(new byte[32], snapshot.Metadata.Checksum.ToByteArray());

        machine.Reset();
        Assert.Null(engine.GetString("key1"));
        Assert.Equal(LogPosition.None, machine.LastApplied);
        machine.ApplyChunk([Insert(1, "key1", "old_value1"), Insert(2, "old_key2", "old_value2"), Insert(3, "old_key3", "old_value3")]);

        machine.InstallSnapshot(snapshot.Directory, snapshot.Metadata);

        Assert.Equal("value1", engine.GetString("key1"));
        Assert.Equal("value2", engine.GetString("key2"));
        Assert.Equal("value3", engine.GetString("key3"));
        Assert.Null(engine.GetString("old_key2"));
        Assert.Null(engine.GetString("old_key3"));
        Assert.Equal(new LogPosition(3, 1), machine.LastApplied);
        Assert.Equal(snapshot.Metadata, machine.SnapshotMetadata);
        Assert.True(machine.IsRunning);

        // The installed state is what a reopen finds, and applies continue after the label.
        engine.Reopen();
        Assert.Equal(new LogPosition(3, 1), engine.Machine.LastApplied);
        Assert.Equal("value1", engine.GetString("key1"));
        Assert.Equal(snapshot.Metadata, engine.Machine.SnapshotMetadata);
        engine.Machine.ApplyChunk([Insert(4, "key4", "value4")]);
        Assert.Equal("value4", engine.GetString("key4"));
    }

    [Fact]
    public void The_label_is_exactly_the_last_applied_entry_and_the_snapshot_is_verifiable()
    {
        using var engine = new TestEngine(o => o.SnapshotsToKeep = 10);
        ulong next = 1;
        for (var round = 0; round < 3; round++)
        {
            var term = (ulong)(round + 2);
            var chunk = Enumerable.Range(0, 4).Select(i => Insert(next + (ulong)i, $"k{next + (ulong)i}", "v", term: term)).ToArray();
            engine.Machine.ApplyChunk(chunk);
            next += 4;

            var snapshot = engine.Machine.CreateSnapshot();
            Assert.Equal(engine.Machine.LastApplied, snapshot.LastIncluded);
            Assert.Equal(SnapshotName.Format(engine.Machine.LastApplied), Path.GetFileName(snapshot.Directory));
            var manifest = SnapshotManifest.Verify(snapshot.Directory, snapshot.Metadata.Checksum.Span);
            Assert.Equal(snapshot.LastIncluded, manifest.LastIncluded);
            Assert.Equal(SnapshotManifest.CurrentVersion, manifest.Version);
            Assert.Equal(snapshot.FileCount, manifest.Files.Count);
            // The data is in table files or, below SnapshotWalBytesWithoutFlush, in the copied WAL.
            Assert.Contains(manifest.Files, f => f.Name.EndsWith(".sst", StringComparison.Ordinal) || f.Name.EndsWith(".log", StringComparison.Ordinal));
        }
    }

    [Theory]
    [InlineData(0UL)]
    [InlineData(64UL << 20)]
    public void A_snapshot_holds_every_applied_entry_in_table_files_whatever_its_WAL_limit_and_installs_the_same_data(ulong walLimit)
    {
        using var source = new TestEngine(o => o.SnapshotWalBytesWithoutFlush = walLimit);
        source.Machine.ApplyChunk(Enumerable.Range(1, 50).Select(i => Insert((ulong)i, $"k{i}", $"v{i}", term: 2)).ToArray());

        var snapshot = source.Machine.CreateSnapshot();

        // The memtables were flushed before the checkpoint (while writes could continue), so nothing
        // applied before the call is left only in a WAL.
        var manifest = SnapshotManifest.Verify(snapshot.Directory, snapshot.Metadata.Checksum.Span);
        Assert.Contains(manifest.Files, f => f.Name.EndsWith(".sst", StringComparison.Ordinal));
        using var target = new TestEngine();
        target.Machine.InstallSnapshot(snapshot.Directory, snapshot.Metadata);
        Assert.Equal(new LogPosition(50, 2), target.Machine.LastApplied);
        Assert.All(Enumerable.Range(1, 50), i => Assert.Equal($"v{i}", target.GetString($"k{i}")));
    }

    [Fact]
    public void Retention_keeps_the_newest_K_snapshots_and_lists_them_oldest_first()
    {
        using var engine = new TestEngine(o => o.SnapshotsToKeep = 2);
        var labels = new List<LogPosition>();
        for (ulong index = 1; index <= 4; index++)
        {
            engine.Machine.ApplyChunk([Insert(index, $"k{index}", "v")]);
            labels.Add(engine.Machine.CreateSnapshot().LastIncluded);
        }

        var listed = engine.Machine.ListSnapshots();
        Assert.Equal(labels.TakeLast(2), listed.Select(s => s.LastIncluded));
        Assert.Equal(
            ["snapshot-3-1", "snapshot-4-1"],
            Directory.EnumerateDirectories(engine.Machine.SnapshotsPath).Select(Path.GetFileName).Order(StringComparer.Ordinal));
        Assert.Equal(engine.Machine.SnapshotMetadata, listed[^1].Metadata);
    }

    [Fact]
    public void A_second_snapshot_at_the_same_position_returns_the_existing_one()
    {
        using var engine = new TestEngine();
        engine.Machine.ApplyChunk([Insert(1, "k", "v")]);
        var first = engine.Machine.CreateSnapshot();
        var second = engine.Machine.CreateSnapshot();
        Assert.Equal(first, second);
        Assert.Single(engine.Machine.ListSnapshots());
    }

    [Fact]
    public void Half_written_snapshots_are_never_listed_and_are_deleted_on_open()
    {
        using var engine = new TestEngine();
        engine.Machine.ApplyChunk([Insert(1, "k", "v")]);
        var snapshot = engine.Machine.CreateSnapshot();
        var partial = Path.Combine(engine.Machine.SnapshotsPath, "snapshot-9-1.tmp");
        SnapshotFiles.CopyDirectory(snapshot.Directory, partial);

        Assert.Equal([snapshot.LastIncluded], engine.Machine.ListSnapshots().Select(s => s.LastIncluded));
        engine.Reopen();
        Assert.False(Directory.Exists(partial));
        Assert.Equal([snapshot.LastIncluded], engine.Machine.ListSnapshots().Select(s => s.LastIncluded));
    }

    [Fact]
    public void ShouldSnapshot_is_due_after_SnapshotEveryEntries_applied_entries_since_the_last_snapshot()
    {
        using var engine = new TestEngine(o => o.SnapshotEveryEntries = 5);
        var machine = engine.Machine;
        machine.ApplyChunk(Enumerable.Range(1, 4).Select(i => Insert((ulong)i, $"k{i}", "v")).ToArray());
        Assert.False(machine.ShouldSnapshot());
        machine.ApplyChunk([Insert(5, "k5", "v")]);
        Assert.True(machine.ShouldSnapshot());
        machine.CreateSnapshot();
        Assert.False(machine.ShouldSnapshot());
        machine.ApplyChunk(Enumerable.Range(6, 5).Select(i => Insert((ulong)i, $"k{i}", "v")).ToArray());
        Assert.True(machine.ShouldSnapshot());

        Assert.False(SnapshotPolicy.IsDue(10_000, 0));
        Assert.True(SnapshotPolicy.IsDue(10_000, new RocksDbStateMachineOptions().SnapshotEveryEntries));
        Assert.False(SnapshotPolicy.IsDue(9_999, new RocksDbStateMachineOptions().SnapshotEveryEntries));
        Assert.Equal(2, new RocksDbStateMachineOptions().SnapshotsToKeep);
    }

    [Fact]
    public void A_snapshot_with_more_entries_of_an_older_epoch_is_refused_even_forced_the_local_data_of_a_newer_epoch_is_kept()
    {
        // The shape of a lost configuration record: one silo went on from index 1 under epoch 3 while
        // another copy has five entries of epoch 1. Installing the latter would silently drop epoch 3.
        using var source = new TestEngine();
        source.Machine.ApplyChunk(Enumerable.Range(1, 5).Select(i => Insert((ulong)i, $"k{i}", "old-epoch", term: 1)).ToArray());
        var snapshot = source.Machine.CreateSnapshot();
        using var target = new TestEngine();
        target.Machine.ApplyChunk([Insert(1, "k1", "new-epoch", term: 3)]);

        var error = Assert.Throws<DEngineException>(() => target.Machine.InstallSnapshot(snapshot.Directory, snapshot.Metadata, force: true));

        Assert.Equal(DEngineErrorCode.SnapshotRejected, error.Code);
        Assert.Equal("new-epoch", target.GetString("k1"));
        Assert.Equal(new LogPosition(1, 3), target.Machine.LastApplied);
    }

    [Fact]
    public void A_snapshot_older_than_the_local_data_is_refused_even_forced_unless_an_operator_asks_to_replace_newer_data()
    {
        using var engine = new TestEngine(o => o.SnapshotsToKeep = 5);
        engine.Machine.ApplyChunk([Insert(1, "k", "old")]);
        var older = engine.Machine.CreateSnapshot();
        engine.Machine.ApplyChunk([Insert(2, "k", "new")]);

        foreach (var force in new[] { false, true })
        {
            var error = Assert.Throws<DEngineException>(() => engine.Machine.InstallSnapshot(older.Directory, older.Metadata, force));
            Assert.Equal(DEngineErrorCode.SnapshotRejected, error.Code);
            Assert.Contains("replace newer data with older", error.Message, StringComparison.Ordinal);
            Assert.Equal("new", engine.GetString("k"));
            Assert.Equal(new LogPosition(2, 1), engine.Machine.LastApplied);
        }

        engine.Machine.InstallSnapshot(older.Directory, older.Metadata, replaceNewerData: true);
        Assert.Equal("old", engine.GetString("k"));
        Assert.Equal(new LogPosition(1, 1), engine.Machine.LastApplied);
    }

    [Fact]
    public void A_snapshot_at_the_applied_index_installs_and_a_newer_one_from_another_machine_replaces_everything()
    {
        using var source = new TestEngine();
        source.Machine.ApplyChunk(Enumerable.Range(1, 50).Select(i => Insert((ulong)i, $"s{i % 7}", $"v{i}", term: 3)).ToArray());
        var snapshot = source.Machine.CreateSnapshot();
        using var copies = new TempDirectory();
        var (directory, metadata) = SnapshotFiles.CopySnapshot(snapshot, copies.Sub("fetched"));

        using var target = new TestEngine();
        target.Machine.ApplyChunk([Insert(1, "mine", "x"), Insert(2, "s1", "x")]);
        target.Machine.InstallSnapshot(directory, metadata);

        Assert.Equal(new LogPosition(50, 3), target.Machine.LastApplied);
        Assert.Null(target.GetString("mine"));
        Assert.Equal(
            source.Machine.ScanPrefix(Utf8("s")).Entries.Select(e => $"{Text(e.Key)}={Text(e.Value)}"),
            target.Machine.ScanPrefix(Utf8("s")).Entries.Select(e => $"{Text(e.Key)}={Text(e.Value)}"));
        Assert.Equal(["db-2"], SnapshotFiles.GenerationEntries(target.Machine.PartitionPath));

        // Same index again: allowed (not older), state unchanged.
        target.Machine.InstallSnapshot(directory, metadata);
        Assert.Equal(new LogPosition(50, 3), target.Machine.LastApplied);
    }

    [Fact]
    public void A_manifest_whose_label_differs_from_the_data_is_refused_and_nothing_changes()
    {
        using var source = new TestEngine();
        source.Machine.ApplyChunk([Insert(1, "k", "snap"), Insert(2, "k2", "snap")]);
        var snapshot = source.Machine.CreateSnapshot();
        using var copies = new TempDirectory();
        var (directory, _) = SnapshotFiles.CopySnapshot(snapshot, copies.Sub("fetched"));
        var lying = SnapshotFiles.RewriteManifest(directory, m => new SnapshotManifest(new LogPosition(9, 1), m.Files));

        using var target = new TestEngine();
        target.Machine.ApplyChunk([Insert(1, "k", "live")]);
        var error = Assert.Throws<DEngineException>(() => target.Machine.InstallSnapshot(directory, lying));
        Assert.Equal(DEngineErrorCode.SnapshotRejected, error.Code);
        Assert.Contains("labelled", error.Message, StringComparison.Ordinal);
        Assert.Equal("live", target.GetString("k"));
        Assert.Equal(new LogPosition(1, 1), target.Machine.LastApplied);
        Assert.Equal(["db-1"], SnapshotFiles.GenerationEntries(target.Machine.PartitionPath));
    }

    [Fact]
    public void Metadata_whose_label_differs_from_the_manifest_is_refused()
    {
        using var engine = new TestEngine();
        engine.Machine.ApplyChunk([Insert(1, "k", "v")]);
        var snapshot = engine.Machine.CreateSnapshot();
        var wrong = snapshot.Metadata.Clone();
        wrong.LastIncluded = new LogId { Index = 1, Term = 7 };
        var error = Assert.Throws<DEngineException>(() => engine.Machine.InstallSnapshot(snapshot.Directory, wrong));
        Assert.Equal(DEngineErrorCode.SnapshotRejected, error.Code);
    }

    [Fact]
    public async Task Reads_during_the_switch_answer_NotServing_and_are_served_again_after_it()
    {
        using var engine = new TestEngine();
        engine.Machine.ApplyChunk([Insert(1, "k", "v1")]);
        var snapshot = engine.Machine.CreateSnapshot();
        engine.Machine.ApplyChunk([Insert(2, "k", "v2")]);

        Exception? duringSwitch = null;
        engine.Machine.FaultInjector = step =>
        {
            if (step == "after-pointer-rename")
            {
                // Another thread (the caller holds the engine's locks): must fail fast, not queue.
                duringSwitch = Record.Exception(() => Task.Run(() => engine.Machine.Get(Utf8("k"))).GetAwaiter().GetResult());
            }
        };
        await Task.Run(() => engine.Machine.InstallSnapshot(snapshot.Directory, snapshot.Metadata, replaceNewerData: true));

        var error = Assert.IsType<DEngineException>(duringSwitch);
        Assert.Equal(DEngineErrorCode.NotServing, error.Code);
        Assert.True(error.IsRetryable);
        Assert.Equal("v1", engine.GetString("k"));
    }

    [Fact]
    public void A_stopped_machine_stays_stopped_after_an_install()
    {
        using var engine = new TestEngine();
        engine.Machine.ApplyChunk([Insert(1, "k", "v")]);
        var snapshot = engine.Machine.CreateSnapshot();
        engine.Machine.Stop();
        engine.Machine.InstallSnapshot(snapshot.Directory, snapshot.Metadata);
        Assert.False(engine.Machine.IsRunning);
        engine.Machine.Start();
        Assert.Equal("v", engine.GetString("k"));
    }

    [Fact]
    public void Ttl_keys_inside_a_snapshot_expire_after_install_and_after_a_reopen_that_follows_it()
    {
        using var source = new TestEngine();
        var now = source.NowUnixMs;
        source.Machine.ApplyChunk(
        [
            Insert(1, "short", "s", ttlSecs: 10, expiresAtUnixMs: now + 10_000),
            Insert(2, "long", "l", ttlSecs: 100, expiresAtUnixMs: now + 100_000),
            Insert(3, "forever", "f"),
        ]);
        var snapshot = source.Machine.CreateSnapshot();
        using var copies = new TempDirectory();
        var (directory, metadata) = SnapshotFiles.CopySnapshot(snapshot, copies.Sub("fetched"));

        using var target = new TestEngine();
        target.Machine.InstallSnapshot(directory, metadata);
        Assert.True(target.Machine.TryGetExpiry(Utf8("short"), out var expiry));
        Assert.Equal(now + 10_000, expiry);
        Assert.Equal("s", target.GetString("short"));
        Assert.Equal(now + 10_000, target.Machine.EarliestExpiry());

        target.Clock.Advance(TimeSpan.FromSeconds(11));
        Assert.Null(target.GetString("short"));
        Assert.Equal("l", target.GetString("long"));
        var expired = target.Machine.FindExpired(target.NowUnixMs, 100);
        Assert.Equal(["short"], expired.Select(e => Text(e.Key)));

        target.Reopen();
        Assert.Null(target.GetString("short"));
        Assert.Equal("l", target.GetString("long"));
        target.Clock.Advance(TimeSpan.FromSeconds(100));
        Assert.Null(target.GetString("long"));
        Assert.Equal("f", target.GetString("forever"));
        var all = target.Machine.FindExpired(target.NowUnixMs, 100);
        Assert.Equal(["long", "short"], all.Select(e => Text(e.Key)).Order(StringComparer.Ordinal));
        target.Machine.ApplyChunk([ExpireKeys(4, target.NowUnixMs, all)]);
        Assert.Null(target.Machine.EarliestExpiry());
        Assert.Equal(1, target.Machine.Count());
    }
}
