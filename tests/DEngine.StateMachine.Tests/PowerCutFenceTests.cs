using DEngine.StateMachine.Tests.Support;
using Xunit.Abstractions;
using static DEngine.StateMachine.Tests.Support.Log;
using static DEngine.StateMachine.Tests.Support.TestEngine;

namespace DEngine.StateMachine.Tests;

/// <summary>
/// A failed WAL fsync (the power-cut file system answering EIO) fences the engine: the unsynced
/// chunk's outcome is unknown, nothing is served or applied, the durable index stays where it was
/// even after later syncs succeed, and only a reopen after a full re-sync of the files serves again,
/// serving exactly what the disk holds.
/// </summary>
[Trait("Category", "PowerCut")]
public sealed class PowerCutFenceTests(ITestOutputHelper output)
{
    [Fact]
    public void PowerCut_fence_a_failed_wal_sync_gives_OutcomeUnknown_refuses_reads_and_applies_and_never_advances_the_durable_index()
    {
        using var fs = new PowerCutFs();
        using var machine = new RocksDbStateMachine(Path.Combine(fs.MountPoint, "p"), SmallOptions(TimeProvider.System));
        machine.ApplyChunk([Insert(1, "k", "synced")]);
        machine.ApplyChunk([Insert(2, "k", "unsynced")], ApplyDurability.Deferred);

        fs.FailFsync("*.log");
        var failure = Assert.Throws<DEngineException>(() => machine.SyncWal());
        Assert.Equal(DEngineErrorCode.OutcomeUnknown, failure.Code);
        Assert.Equal(2UL, failure.Index);
        Assert.True(machine.IsFenced);
        Assert.Equal(1UL, machine.DurableIndex);

        // Neither the unsynced value nor anything else is served; nothing new is applied.
        Assert.Equal(DEngineErrorCode.NotServing, Assert.Throws<DEngineException>(() => machine.Get(Utf8("k"))).Code);
        Assert.Equal(DEngineErrorCode.NotServing, Assert.Throws<DEngineException>(() => machine.ApplyChunk([Insert(3, "k", "later")])).Code);

        // A sync that now works proves nothing about the pages the failed one may have dropped.
        fs.StopFailingFsync();
        Assert.Equal(DEngineErrorCode.OutcomeUnknown, Assert.Throws<DEngineException>(() => machine.SyncWal()).Code);
        Assert.Equal(1UL, machine.DurableIndex);
        Assert.False(machine.IsRunning);
    }

    [Fact]
    public void PowerCut_fence_a_synced_write_whose_fsync_fails_gives_OutcomeUnknown_not_StorageFailure()
    {
        using var fs = new PowerCutFs();
        using var machine = new RocksDbStateMachine(Path.Combine(fs.MountPoint, "p"), SmallOptions(TimeProvider.System));
        machine.ApplyChunk([Insert(1, "k", "synced")]);

        fs.FailFsync("*.log");
        // The WAL bytes were written before their fsync failed: "nothing applied" would be a lie.
        var failure = Assert.Throws<DEngineException>(() => machine.ApplyChunk([Insert(2, "k", "unknown")]));
        output.WriteLine(failure.Message);
        Assert.Equal(DEngineErrorCode.OutcomeUnknown, failure.Code);
        Assert.True(machine.IsFenced);
        Assert.Equal(DEngineErrorCode.NotServing, Assert.Throws<DEngineException>(() => machine.Get(Utf8("k"))).Code);
    }

    [Fact]
    public void PowerCut_fence_reopens_after_a_full_sync_and_what_it_then_serves_survives_a_power_cut()
    {
        using var fs = new PowerCutFs();
        var path = Path.Combine(fs.MountPoint, "p");
        string? served;
        using (var machine = new RocksDbStateMachine(path, SmallOptions(TimeProvider.System)))
        {
            machine.ApplyChunk([Insert(1, "k", "synced")]);
            machine.ApplyChunk([Insert(2, "k", "unsynced")], ApplyDurability.Deferred);
            fs.FailFsync("*.log");
            Assert.Equal(DEngineErrorCode.OutcomeUnknown, Assert.Throws<DEngineException>(() => machine.SyncWal()).Code);

            // While every fsync still fails the full sync fails too: it stays fenced.
            fs.FailFsync();
            Assert.Equal(DEngineErrorCode.StorageFailure, Assert.Throws<DEngineException>(machine.RecoverFromFence).Code);
            Assert.True(machine.IsFenced);

            fs.StopFailingFsync();
            machine.RecoverFromFence();
            Assert.False(machine.IsFenced);
            served = Text(machine.Get(Utf8("k")));
            output.WriteLine($"after the reopen: k={served}, applied {machine.LastApplied}, durable {machine.DurableIndex}");
            Assert.Equal(machine.LastApplied.Index, machine.DurableIndex);
            machine.ApplyChunk([Insert(machine.LastApplied.Index + 1, "after", "yes")]);
        }
        output.WriteLine(fs.Cut());

        // What the reopened engine served was on disk, not only in the page cache of a failed file.
        using var reopened = new RocksDbStateMachine(path, SmallOptions(TimeProvider.System));
        Assert.Equal(served, Text(reopened.Get(Utf8("k"))));
        Assert.Equal("yes", Text(reopened.Get(Utf8("after"))));
    }

    [Fact]
    public void PowerCut_fence_an_engine_closed_while_fenced_and_opened_again_serves_what_survives_a_cut()
    {
        // Holds without RecoverFromFence: RocksDB's recovery writes what it replays from the WAL into
        // a new, synced SST file (avoid_flush_during_recovery is off), so a plain reopen persists
        // what it then serves. Pinned here because a later activation opens the database this way.
        using var fs = new PowerCutFs();
        var path = Path.Combine(fs.MountPoint, "p");
        using (var machine = new RocksDbStateMachine(path, SmallOptions(TimeProvider.System)))
        {
            machine.ApplyChunk([Insert(1, "k", "synced")]);
            machine.ApplyChunk([Insert(2, "k", "unsynced")], ApplyDurability.Deferred);
            fs.FailFsync("*.log");
            Assert.Equal(DEngineErrorCode.OutcomeUnknown, Assert.Throws<DEngineException>(() => machine.SyncWal()).Code);
        } // closed fenced (a deactivation, a silo stop): the next open must not trust the page cache either
        fs.StopFailingFsync();

        string? served;
        using (var reopened = new RocksDbStateMachine(path, SmallOptions(TimeProvider.System)))
        {
            served = Text(reopened.Get(Utf8("k")));
        }
        output.WriteLine($"served after the reopen: {served}; {fs.Cut()}");
        using var afterCut = new RocksDbStateMachine(path, SmallOptions(TimeProvider.System));
        Assert.Equal(served, Text(afterCut.Get(Utf8("k"))));
    }

    [Fact]
    public void PowerCut_fence_when_the_power_is_cut_before_the_reopen_serves_what_the_disk_holds()
    {
        using var fs = new PowerCutFs();
        var path = Path.Combine(fs.MountPoint, "p");
        using var machine = new RocksDbStateMachine(path, SmallOptions(TimeProvider.System));
        machine.ApplyChunk([Insert(1, "k", "synced")]);
        machine.ApplyChunk([Insert(2, "k", "unsynced")], ApplyDurability.Deferred);
        fs.FailFsync();
        Assert.Equal(DEngineErrorCode.OutcomeUnknown, Assert.Throws<DEngineException>(() => machine.SyncWal()).Code);
        Assert.Equal(DEngineErrorCode.StorageFailure, Assert.Throws<DEngineException>(machine.RecoverFromFence).Code);

        // The unsynced chunk is in the memtable and the page cache, not on disk: the cut takes it.
        output.WriteLine(fs.Cut());
        fs.StopFailingFsync();
        machine.RecoverFromFence();

        Assert.Equal("synced", Text(machine.Get(Utf8("k"))));
        Assert.Equal(new LogPosition(1, 1), machine.LastApplied);
    }
}
