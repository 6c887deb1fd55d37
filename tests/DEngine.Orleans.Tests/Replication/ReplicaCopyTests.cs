using DEngine.Orleans.Replication;
using DEngine.Protos.Common;
using DEngine.StateMachine;
using DEngine.StateMachine.Replication;
using DEngine.StateMachine.Snapshots;
using DEngine.StateMachine.Tests.Support;
using static DEngine.StateMachine.Tests.Support.Log;

namespace DEngine.Orleans.Tests.Replication;

/// <summary>
/// A replica's copy (log + state machine) driven directly with replication messages: what it appends,
/// what it applies, what it refuses, and what it replays after a restart.
/// </summary>
public sealed class ReplicaCopyTests : IDisposable
{
    private const int Partition = 3;
    private readonly TempDirectory _dir = new();
    private readonly List<IDisposable> _open = [];

    public void Dispose()
    {
        foreach (var item in _open)
        {
            item.Dispose();
        }
        _dir.Dispose();
    }

    private ReplicaCopy Open(string engineDir = "engine", string logDir = "log", ulong snapshotEvery = 10_000)
    {
        var engine = new RocksDbStateMachine(_dir.Sub(engineDir), new RocksDbStateMachineOptions { PartitionId = Partition, Durability = DurabilityMode.Relaxed, SnapshotEveryEntries = snapshotEvery });
        var copy = new ReplicaCopy(Partition, engine, ReplicatedLog.Open(_dir.Sub(logDir), Partition), compactEvery: 4);
        _open.Add(copy);
        return copy;
    }

    private void Close(ReplicaCopy copy)
    {
        _open.Remove(copy);
        copy.Dispose();
    }

    private static AppendRequest Message(ulong version, ulong prevIndex, ulong prevTerm, ulong commit, params Entry[] entries) =>
        new(Partition, version, "primary", prevIndex, prevTerm, entries, commit);

    private static string? Read(ReplicaCopy copy, string key) =>
        copy.Engine.Get(System.Text.Encoding.UTF8.GetBytes(key)) is { } value ? System.Text.Encoding.UTF8.GetString(value) : null;

    [Fact]
    public async Task A_replica_copy_takes_its_own_snapshot_every_SnapshotEveryEntries_committed_entries_and_not_for_uncommitted_ones()
    {
        var copy = Open(snapshotEvery: 3);
        // Three entries appended, two committed: not due.
        copy.Append(Message(1, 0, 0, 2, Insert(1, "a", "1"), Insert(2, "b", "2"), Insert(3, "c", "3")));
        await copy.SnapshotTask;
        Assert.Empty(copy.Engine.ListSnapshots());
        // The third committed entry makes it due: the copy snapshots on its own, off the caller's thread.
        copy.Append(Message(1, 3, 1, 3));
        await copy.SnapshotTask;
        var snapshot = Assert.Single(copy.Engine.ListSnapshots());
        Assert.Equal(3ul, snapshot.LastIncluded.Index);
        Assert.Null(copy.LastSnapshotFailure);
    }

    [Fact]
    public void Entries_reach_the_state_machine_only_once_committed()
    {
        var copy = Open();
        var answer = copy.Append(Message(1, 0, 0, 1, Insert(1, "a", "1"), Insert(2, "b", "2"), Insert(3, "c", "3")));
        Assert.Equal(AppendStatus.Appended, answer.Status);
        Assert.Equal(3ul, answer.LastIndex);
        Assert.Equal(1ul, copy.Engine.LastApplied.Index);
        Assert.Equal("1", Read(copy, "a"));
        Assert.Null(Read(copy, "b"));
        // A heartbeat carries the commit index further.
        copy.Append(Message(1, 3, 1, 3));
        Assert.Equal(3ul, copy.Engine.LastApplied.Index);
        Assert.Equal("3", Read(copy, "c"));
    }

    [Fact]
    public void A_message_of_a_lower_configuration_version_is_refused_and_changes_nothing()
    {
        var copy = Open();
        copy.Append(Message(2, 0, 0, 0, Insert(1, "a", "1", term: 2)));
        var answer = copy.Append(Message(1, 1, 2, 2, Insert(2, "b", "old", term: 1)));
        Assert.Equal(AppendStatus.StaleVersion, answer.Status);
        Assert.Equal(2ul, answer.Version);
        Assert.Equal(1ul, copy.Position.LastIndex);
        Assert.Equal(0ul, copy.Position.CommitIndex);
        Assert.Equal(0ul, copy.Engine.LastApplied.Index);
    }

    [Fact]
    public void A_promoted_copy_refuses_the_primary_it_replaces()
    {
        var copy = Open();
        copy.Append(Message(1, 0, 0, 0, Insert(1, "a", "1")));
        Assert.True(copy.Promote(2));
        Assert.False(copy.Promote(2));
        Assert.Equal(AppendStatus.StaleVersion, copy.Append(Message(1, 1, 1, 1)).Status);
        Assert.Equal(0ul, copy.Engine.LastApplied.Index); // the old primary's commit index was not taken
        var stale = Assert.Throws<DEngineException>(() => copy.AppendOwn(1, [Insert(2, "b", "2")], 0));
        Assert.Equal(DEngineErrorCode.StaleEpoch, stale.Code);
    }

    [Fact]
    public void Entries_that_do_not_follow_the_log_answer_mismatch_and_append_nothing()
    {
        var copy = Open();
        copy.Append(Message(1, 0, 0, 0, Insert(1, "a", "1")));
        var gap = copy.Append(Message(1, 3, 1, 0, Insert(4, "d", "4")));
        Assert.Equal(AppendStatus.Mismatch, gap.Status);
        Assert.Equal(1ul, gap.LastIndex);
        var otherTerm = copy.Append(Message(2, 1, 2, 0, Insert(2, "b", "2", term: 2)));
        Assert.Equal(AppendStatus.Mismatch, otherTerm.Status);
        Assert.Equal(1ul, copy.Position.LastIndex);
    }

    [Fact]
    public void A_malformed_message_is_refused_with_a_typed_error_and_changes_nothing()
    {
        var copy = Open();
        var notContiguous = Assert.Throws<DEngineException>(() => copy.Append(Message(1, 0, 0, 0, Insert(1, "a", "1"), Insert(3, "c", "3"))));
        Assert.Equal(DEngineErrorCode.InvalidArgument, notContiguous.Code);
        var termAboveVersion = Assert.Throws<DEngineException>(() => copy.Append(Message(1, 0, 0, 0, Insert(1, "a", "1", term: 2))));
        Assert.Equal(DEngineErrorCode.InvalidArgument, termAboveVersion.Code);
        Assert.Equal(0ul, copy.Position.LastIndex);
    }

    [Fact]
    public void Redelivered_entries_are_neither_appended_nor_applied_twice()
    {
        var copy = Open();
        var message = Message(1, 0, 0, 2, Insert(1, "a", "1"), Cas(2, "a", "1", "2"));
        copy.Append(message);
        var again = copy.Append(message);
        Assert.Equal(AppendStatus.Appended, again.Status);
        Assert.Equal(2ul, again.LastIndex);
        Assert.Equal("2", Read(copy, "a"));
        Assert.Equal(2ul, copy.Engine.LastApplied.Index);
    }

    [Fact]
    public void An_uncommitted_suffix_the_new_primary_lacks_is_cut_off_and_never_applied()
    {
        var copy = Open();
        copy.Append(Message(1, 0, 0, 2, Insert(1, "a", "1"), Insert(2, "b", "2"), Insert(3, "c", "lost"), Insert(4, "d", "lost")));
        Assert.Equal(2ul, copy.Engine.LastApplied.Index);
        // A new primary (version 2) had only 1..2 of version 1; its first entry is its Noop at index 3.
        var answer = copy.Append(Message(2, 2, 1, 3, Noop(3, term: 2)));
        Assert.Equal(AppendStatus.Appended, answer.Status);
        Assert.Equal(3ul, answer.LastIndex);
        Assert.Equal(2ul, answer.LastTerm);
        Assert.Equal(3ul, copy.Engine.LastApplied.Index);
        Assert.Null(Read(copy, "c"));
        Assert.Null(Read(copy, "d"));
        Close(copy);
        var reopened = Open();
        Assert.Equal(3ul, reopened.Position.LastIndex);
        Assert.Equal(2ul, reopened.TermAt(3));
        Assert.Null(Read(reopened, "c"));
    }

    [Fact]
    public void After_a_restart_the_committed_log_is_replayed_into_a_state_machine_that_lacks_it()
    {
        var copy = Open();
        copy.Append(Message(1, 0, 0, 2, Insert(1, "a", "1"), Insert(2, "b", "2"), Insert(3, "c", "3")));
        Close(copy);
        // The state machine's applies are not fsynced: after a crash it may come back with less. Here
        // it comes back with nothing (a fresh directory); the log brings back what was committed.
        var replayed = Open(engineDir: "engine-after-crash");
        Assert.Equal(2ul, replayed.Engine.LastApplied.Index);
        Assert.Equal("2", Read(replayed, "b"));
        Assert.Null(Read(replayed, "c"));
    }

    [Fact]
    public void The_primary_path_appends_durably_and_applies_on_commit_with_results()
    {
        var copy = Open();
        Assert.True(copy.Promote(1)); // a primary raises its own copy to its version first
        copy.AppendOwn(1, [Insert(1, "a", "1"), Cas(2, "a", "x", "2"), Cas(3, "a", "1", "3")], 0);
        Assert.Equal(0ul, copy.Engine.LastApplied.Index);
        var results = copy.Commit(3);
        Assert.Equal([ApplyStatus.Applied, ApplyStatus.CompareFailed, ApplyStatus.Applied], results.Select(r => r.Status));
        Assert.Equal("3", Read(copy, "a"));
        Assert.Empty(copy.Commit(3));
        var gap = Assert.Throws<DEngineException>(() => copy.AppendOwn(1, [Insert(5, "e", "5")], 3));
        Assert.Equal(DEngineErrorCode.InvalidArgument, gap.Code);
    }

    [Fact]
    public void The_log_forgets_only_what_the_state_machine_holds_durably()
    {
        var copy = Open();
        copy.Promote(1);
        copy.AppendOwn(1, [Insert(1, "a", "1"), Insert(2, "b", "2"), Insert(3, "c", "3"), Insert(4, "d", "4"), Insert(5, "e", "5")], 0);
        copy.Commit(4);
        copy.CompactIfDue();
        var position = copy.Position;
        Assert.True(position.BaseIndex <= 4, $"base {position.BaseIndex} passed the commit index");
        Assert.Equal(5ul, position.LastIndex);
        Assert.Single(copy.Read(5, 10, long.MaxValue));
        Close(copy);
        var reopened = Open();
        Assert.Equal(4ul, reopened.Engine.LastApplied.Index);
        Assert.Equal("4", Read(reopened, "d"));
    }

    [Fact]
    public void A_state_machine_ahead_of_its_log_restarts_the_log_there()
    {
        var engine = new RocksDbStateMachine(_dir.Sub("engine"), new RocksDbStateMachineOptions { PartitionId = Partition, Durability = DurabilityMode.Relaxed });
        engine.ApplyChunk([Insert(1, "a", "1", term: 3), Insert(2, "b", "2", term: 3)]);
        var copy = new ReplicaCopy(Partition, engine, ReplicatedLog.Open(_dir.Sub("log"), Partition));
        _open.Add(copy);
        var position = copy.Position;
        Assert.Equal(new LogPosition(2, 3), position.Last);
        Assert.Equal(2ul, position.CommitIndex);
        Assert.Equal(3ul, position.Version);
        Assert.Equal(AppendStatus.Appended, copy.Append(Message(3, 2, 3, 3, Insert(3, "c", "3", term: 3))).Status);
        Assert.Equal("3", Read(copy, "c"));
    }

    /// <summary>A primary's copy with keys k1..k<paramref name="count"/> committed under <paramref name="version"/>, and a snapshot of it.</summary>
    private (ReplicaCopy Primary, SnapshotInfo Snapshot) PrimaryWithSnapshot(int count, ulong version)
    {
        var primary = SnapshotSource.CompactingCopy(Partition, _dir.Sub("primary-engine"), _dir.Sub("primary-log"));
        _open.Add(primary);
        SnapshotSource.Fill(primary, version, count);
        return (primary, primary.SnapshotForReplica());
    }

    [Fact]
    public void A_snapshot_install_from_a_stale_primary_is_refused_and_changes_nothing()
    {
        var (_, snapshot) = PrimaryWithSnapshot(20, version: 2);
        var copy = Open();
        copy.Append(Message(5, 0, 0, 1, Insert(1, "a", "1", term: 5)));
        var before = copy.Position;

        Assert.Equal(AppendStatus.StaleVersion, copy.BeginInstall(2, snapshot.LastIncluded)!.Status);
        var answer = copy.InstallSnapshot(2, snapshot.Directory, snapshot.Metadata);

        Assert.Equal(AppendStatus.StaleVersion, answer.Status);
        Assert.Equal(5ul, answer.Version);
        Assert.Equal(before, copy.Position);
        Assert.Equal("1", Read(copy, "a"));
        Assert.Null(Read(copy, "k20"));
    }

    [Fact]
    public void After_a_snapshot_install_the_log_continues_after_the_snapshot_last_entry_and_an_uncommitted_suffix_is_gone()
    {
        var (_, snapshot) = PrimaryWithSnapshot(20, version: 2);
        Assert.Equal(new LogPosition(20, 2), snapshot.LastIncluded);
        var copy = Open();
        // Its own history: one committed entry of version 1 and a suffix beyond the snapshot that was never committed.
        copy.Append(Message(1, 0, 0, 1, [.. Enumerable.Range(1, 25).Select(i => Insert((ulong)i, i == 1 ? "k1" : $"old{i}", "x"))]));
        Assert.Null(copy.BeginInstall(2, snapshot.LastIncluded));

        var answer = copy.InstallSnapshot(2, snapshot.Directory, snapshot.Metadata);

        Assert.Equal(AppendStatus.Appended, answer.Status);
        Assert.Equal((20ul, 2ul, 20ul, 20ul), (answer.LastIndex, answer.LastTerm, answer.CommitIndex, answer.BaseIndex));
        Assert.Equal(new LogPosition(20, 2), copy.Engine.LastApplied);
        Assert.Equal(2ul, copy.Version);
        Assert.Equal(new string('v', 100), Read(copy, "k20"));
        Assert.Null(Read(copy, "old2"));
        Assert.Null(Read(copy, "old25"));
        // The primary goes on from after the snapshot.
        Assert.Equal(AppendStatus.Appended, copy.Append(Message(2, 20, 2, 21, Insert(21, "k21", "21", term: 2))).Status);
        Assert.Equal("21", Read(copy, "k21"));
        Close(copy);
        var reopened = Open();
        Assert.Equal(new LogPosition(21, 2), reopened.Position.Last);
        Assert.Equal("21", Read(reopened, "k21"));
    }

    [Fact]
    public void A_copy_reopened_after_a_crash_between_the_engine_install_and_the_log_reset_is_the_installed_copy()
    {
        var (_, snapshot) = PrimaryWithSnapshot(20, version: 2);
        var copy = Open();
        // Uncommitted entries of version 1 reaching past the snapshot's last index.
        copy.Append(Message(1, 0, 0, 1, [.. Enumerable.Range(1, 25).Select(i => Insert((ulong)i, $"old{i}", "x"))]));
        // The install's first step only (the engine switched to the snapshot), then the process died.
        copy.Engine.InstallSnapshot(snapshot.Directory, snapshot.Metadata);
        Close(copy);

        var reopened = Open();

        var position = reopened.Position;
        Assert.Equal(new LogPosition(20, 2), position.Last);
        Assert.Equal((20ul, 20ul, 20ul), (position.BaseIndex, position.CommitIndex, position.Applied));
        Assert.Null(Read(reopened, "old1"));
        Assert.Equal(new string('v', 100), Read(reopened, "k20"));
        Assert.Equal(AppendStatus.Appended, reopened.Append(Message(2, 20, 2, 21, Insert(21, "k21", "21", term: 2))).Status);
        Assert.Equal("21", Read(reopened, "k21"));
    }

    [Fact]
    public void A_copy_whose_log_holds_the_snapshot_last_entry_is_not_installed_and_commits_up_to_it()
    {
        var copy = Open();
        copy.Append(Message(1, 0, 0, 2, Insert(1, "a", "1"), Insert(2, "b", "2"), Insert(3, "c", "3"), Insert(4, "d", "4"), Insert(5, "e", "5")));
        Assert.Equal(2ul, copy.Engine.LastApplied.Index);

        var answer = copy.BeginInstall(1, new LogPosition(5, 1));

        Assert.NotNull(answer);
        Assert.Equal(AppendStatus.Appended, answer.Status);
        Assert.Equal((5ul, 5ul, 0ul), (answer.LastIndex, answer.CommitIndex, answer.BaseIndex));
        Assert.Equal(5ul, copy.Engine.LastApplied.Index);
        Assert.Equal("5", Read(copy, "e"));
        Assert.Empty(copy.Engine.ListSnapshots());
    }

    [Fact]
    public void The_snapshot_for_a_replica_is_the_newest_one_whose_last_entry_the_log_still_holds()
    {
        var (primary, first) = PrimaryWithSnapshot(20, version: 2);
        SnapshotSource.Fill(primary, 2, 5);
        Assert.True(primary.Position.BaseIndex <= 20, $"the log's base {primary.Position.BaseIndex} already passed the first snapshot");
        // Still held by the log: reused (replicas and retries share it), though newer entries were applied since.
        Assert.Equal(first.Directory, primary.SnapshotForReplica().Directory);
        SnapshotSource.Fill(primary, 2, 300);
        Assert.True(primary.Position.BaseIndex > 20, $"the log's base {primary.Position.BaseIndex} did not pass the first snapshot");

        var next = primary.SnapshotForReplica();

        Assert.Equal(new LogPosition(325, 2), next.LastIncluded);
    }
}
