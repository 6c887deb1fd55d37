using DEngine.Orleans.Replication;
using DEngine.Protos.Common;
using DEngine.StateMachine;
using DEngine.StateMachine.Replication;
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

    private ReplicaCopy Open(string engineDir = "engine", string logDir = "log")
    {
        var engine = new RocksDbStateMachine(_dir.Sub(engineDir), new RocksDbStateMachineOptions { PartitionId = Partition, Durability = DurabilityMode.Relaxed });
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
}
