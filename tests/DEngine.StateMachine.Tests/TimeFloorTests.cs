using DEngine.Protos.Client;
using DEngine.Protos.Common;
using DEngine.StateMachine.Tests.Support;
using Google.Protobuf;
using Microsoft.Extensions.Time.Testing;
using static DEngine.StateMachine.Tests.Support.Log;
using static DEngine.StateMachine.Tests.Support.TestEngine;

namespace DEngine.StateMachine.Tests;

/// <summary>
/// Time never runs backwards for a partition: expiry is judged at max(clock, time floor), the floor
/// being the highest applied clock stamp, counted at most MaxClockSkew ahead of the local clock.
/// </summary>
public sealed class TimeFloorTests
{
    private static Entry StampedDelete(ulong index, string key, ulong asOfUnixMs) =>
        Command(index, new WriteCommand { Delete = new WriteCommand.Types.Delete { Key = ByteString.CopyFromUtf8(key), AsOfUnixMs = asOfUnixMs } });

    private static Entry StampedInsert(ulong index, string key, ulong asOfUnixMs, ulong expiresAtUnixMs)
    {
        var command = InsertCommand(B(key), B("v"), ttlSecs: 1, expiresAtUnixMs: expiresAtUnixMs);
        command.Insert.AsOfUnixMs = asOfUnixMs;
        return Command(index, command);
    }

    [Fact]
    public void A_key_reported_expired_stays_expired_when_the_data_is_opened_with_a_slower_clock()
    {
        using var engine = new TestEngine();
        var t = engine.NowUnixMs;
        // Sequenced and read on a silo whose clock is 10 s ahead.
        engine.Clock.Advance(TimeSpan.FromSeconds(10));
        engine.Machine.ApplyChunk([StampedInsert(1, "k", t, expiresAtUnixMs: t + 4_000), StampedDelete(2, "other", t + 10_000)]);
        Assert.Null(engine.GetString("k"));
        Assert.Equal(t + 10_000, engine.Machine.TimeFloor);
        engine.Close();

        // Opened where the clock is 8 s behind: the floor (within MaxClockSkew = 5 s) keeps it expired.
        engine.Options.TimeProvider = new FakeTimeProvider(DateTimeOffset.FromUnixTimeMilliseconds((long)t + 2_000));
        engine.Reopen();

        Assert.Equal(t + 10_000, engine.Machine.TimeFloor);
        Assert.Null(engine.GetString("k"));
        Assert.False(engine.Machine.TryGetExpiry(Utf8("k"), out _));
        Assert.Empty(engine.Machine.ScanPrefix(Utf8("k")).Entries);
        Assert.Equal(t + 7_000, engine.Machine.EffectiveNowUnixMs);
    }

    [Fact]
    public void A_floor_from_a_faster_clock_counts_only_MaxClockSkew_ahead_of_the_local_clock()
    {
        using var engine = new TestEngine();
        var t = engine.NowUnixMs;
        // A silo whose clock runs an hour ahead stamped the entries.
        engine.Machine.ApplyChunk([StampedInsert(1, "k", t, expiresAtUnixMs: t + 10_000), StampedDelete(2, "other", t + 3_600_000)]);

        // Here the clock says t: the key is judged at t + 5 s, so it is still there...
        Assert.Equal(t + 5_000, engine.Machine.EffectiveNowUnixMs);
        Assert.Equal("v", engine.GetString("k"));
        Assert.True(engine.Machine.TryGetExpiry(Utf8("k"), out _, out var asOf));
        Assert.Equal(t + 5_000, asOf);

        // ...and expires at most MaxClockSkew early.
        engine.Clock.Advance(TimeSpan.FromSeconds(5));
        Assert.Null(engine.GetString("k"));
    }

    [Fact]
    public void The_floor_never_falls_when_an_older_stamp_is_applied()
    {
        using var engine = new TestEngine();
        var t = engine.NowUnixMs;

        engine.Machine.ApplyChunk([StampedDelete(1, "a", t + 1_000)]);
        engine.Machine.ApplyChunk([StampedDelete(2, "a", t), Insert(3, "b", "unstamped")]);

        Assert.Equal(t + 1_000, engine.Machine.TimeFloor);
        Assert.Equal(t + 1_000, engine.Reopen().TimeFloor);
    }
}
