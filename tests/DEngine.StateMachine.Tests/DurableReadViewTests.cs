using DEngine.StateMachine.Tests.Support;
using static DEngine.StateMachine.Tests.Support.Log;
using static DEngine.StateMachine.Tests.Support.TestEngine;

namespace DEngine.StateMachine.Tests;

/// <summary>Synced durability: reads show the durable read view, never a chunk applied without fsync.</summary>
public sealed class DurableReadViewTests
{
    [Fact]
    public void Reads_do_not_show_a_chunk_applied_without_fsync_until_SyncWal_publishes_it()
    {
        using var engine = new TestEngine();
        var clockAtWrite = engine.NowUnixMs;
        engine.Machine.ApplyChunk([Insert(1, "a", "1")]);

        engine.Machine.ApplyChunk([Insert(2, "a", "2"), Insert(3, "b", "2", ttlSecs: 60, expiresAtUnixMs: clockAtWrite + 60_000)], ApplyDurability.Deferred);

        Assert.Equal("1", engine.GetString("a"));
        Assert.Null(engine.GetString("b"));
        Assert.Equal(["1", null], engine.Machine.GetMulti([Utf8("a"), Utf8("b")]).Select(Text));
        var scan = engine.Machine.ScanPrefix(Utf8("a"));
        Assert.Equal(1UL, scan.Revision);
        Assert.Equal("1", Text(Assert.Single(scan.Entries).Value));
        Assert.False(engine.Machine.TryGetExpiry(Utf8("b"), out _));
        Assert.Equal(1UL, engine.Machine.ReadViewIndex);

        engine.Machine.SyncWal();

        Assert.Equal("2", engine.GetString("a"));
        Assert.Equal("2", engine.GetString("b"));
        Assert.Equal(3UL, engine.Machine.ScanPrefix(Utf8("a")).Revision);
        Assert.True(engine.Machine.TryGetExpiry(Utf8("b"), out var expiry));
        Assert.Equal(clockAtWrite + 60_000, expiry);
    }

    [Fact]
    public void The_read_view_survives_reset_snapshot_install_and_reopen()
    {
        using var engine = new TestEngine();
        engine.Machine.ApplyChunk([Insert(1, "a", "1")]);
        var snapshot = engine.Machine.CreateSnapshot();
        engine.Machine.ApplyChunk([Insert(2, "a", "2")], ApplyDurability.Deferred);

        // Rolling back to the older snapshot on purpose: only the explicit operator flag allows it.
        engine.Machine.InstallSnapshot(snapshot.Directory, snapshot.Metadata, force: true, replaceNewerData: true);
        Assert.Equal("1", engine.GetString("a"));

        engine.Machine.Reset();
        Assert.Null(engine.GetString("a"));

        engine.Machine.ApplyChunk([Insert(1, "a", "3")]);
        engine.Reopen();
        Assert.Equal("3", engine.GetString("a"));
    }

    [Fact]
    public void Relaxed_durability_reads_the_live_state()
    {
        using var engine = new TestEngine(o => o.Durability = DurabilityMode.Relaxed);

        engine.Machine.ApplyChunk([Insert(1, "a", "1")], ApplyDurability.Deferred);

        Assert.Equal("1", engine.GetString("a"));
        Assert.Equal(1UL, engine.Machine.ScanPrefix(Utf8("a")).Revision);
    }
}
