using DEngine.StateMachine.Tests.Support;
using static DEngine.StateMachine.Tests.Support.SessionLog;
using static DEngine.StateMachine.Tests.Support.TestEngine;

namespace DEngine.StateMachine.Tests;

/// <summary>
/// Exactly-once writes in the state machine: the session table applies each (session, sequence) once,
/// answers repeats with the recorded result, refuses late duplicates and unknown or ended sessions, and
/// keeps all of it through a reopen, a snapshot install and ExpireSessions.
/// </summary>
public sealed class SessionTests
{
    private static readonly byte[] A = Id(1);
    private static readonly byte[] B = Id(2);

    [Fact]
    public void The_same_session_sequence_applied_twice_through_ApplyChunk_is_applied_once_and_answered_with_the_first_result()
    {
        using var engine = new TestEngine();
        var m = engine.Machine;
        Assert.Equal(ApplyStatus.Applied, m.ApplyChunk([Put(1, Session(A, 1, 1, first: true), "k", "first")])[0].Status);
        m.ApplyChunk([Put(2, Session(A, 2, 1), "k", "second")]);

        // The retry of sequence 1 arrives at a new index (re-proposed after a failover): not applied again.
        var retry = m.ApplyChunk([Put(3, Session(A, 1, 1), "k", "first")])[0];

        Assert.Equal(new ApplyResult(3, ApplyStatus.Applied, RecordedIndex: 1, Deduplicated: true), retry);
        Assert.Equal(1UL, retry.ResponseIndex);
        Assert.Equal("second", engine.GetString("k"));
        Assert.Equal(new LogPosition(3, 1), m.LastApplied);
    }

    [Fact]
    public void A_retried_CAS_that_succeeded_reports_success_again_and_a_failed_one_failure_again()
    {
        using var engine = new TestEngine();
        var m = engine.Machine;
        Assert.Equal(ApplyStatus.Applied, m.ApplyChunk([Cas(1, Session(A, 1, 1, first: true), "counter", null, "1")])[0].Status);
        Assert.Equal(ApplyStatus.CompareFailed, m.ApplyChunk([Cas(2, Session(A, 2, 1), "counter", "7", "8")])[0].Status);
        m.ApplyChunk([SessionLog.Put(3, Session(B, 1, 1, first: true), "counter", "7")]);

        // Without the table the first retry would fail (the key exists) and the second would now match.
        var results = m.ApplyChunk([Cas(4, Session(A, 1, 1), "counter", null, "1"), Cas(5, Session(A, 2, 1), "counter", "7", "8")]);

        Assert.Equal(new ApplyResult(4, ApplyStatus.Applied, RecordedIndex: 1, Deduplicated: true), results[0]);
        Assert.Equal(new ApplyResult(5, ApplyStatus.CompareFailed, RecordedIndex: 2, Deduplicated: true), results[1]);
        Assert.Equal("7", engine.GetString("counter"));
    }

    [Fact]
    public void The_same_sequence_twice_in_one_chunk_is_applied_once()
    {
        using var engine = new TestEngine();
        var results = engine.Machine.ApplyChunk(
        [
            Put(1, Session(A, 1, 1, first: true), "k", "a"),
            Put(2, Session(A, 2, 1), "k", "b"),
            Put(3, Session(A, 1, 1, first: true), "k", "a"),
            Cas(4, Session(A, 3, 1), "n", null, "1"),
            Cas(5, Session(A, 3, 1), "n", null, "1"),
        ]);

        Assert.Equal(
            [
                new ApplyResult(1, ApplyStatus.Applied),
                new ApplyResult(2, ApplyStatus.Applied),
                new ApplyResult(3, ApplyStatus.Applied, RecordedIndex: 1, Deduplicated: true),
                new ApplyResult(4, ApplyStatus.Applied),
                new ApplyResult(5, ApplyStatus.Applied, RecordedIndex: 4, Deduplicated: true),
            ],
            results);
        Assert.Equal("b", engine.GetString("k"));
        Assert.Equal(new SessionTableStats(1, 0, 3, engine.Machine.SessionTableStats.ApproxBytes), engine.Machine.SessionTableStats);
    }

    [Fact]
    public void After_a_reopen_of_a_buffered_write_the_replayed_entries_and_a_re_proposed_retry_are_not_applied_again()
    {
        using var engine = new TestEngine();
        engine.Machine.ApplyChunk([Put(1, Session(A, 1, 1, first: true), "k", "a")]);
        engine.Machine.ApplyChunk([Put(2, Session(A, 2, 1), "k", "b"), Cas(3, Session(A, 3, 1), "n", null, "1")], ApplyDurability.Deferred);
        var before = engine.Machine.SessionTableStats;

        var m = engine.Reopen();

        // The log replays from the start (an external log does not know what survived) ...
        var replay = m.ApplyChunk([Put(1, Session(A, 1, 1, first: true), "k", "a"), Put(2, Session(A, 2, 1), "k", "b"), Cas(3, Session(A, 3, 1), "n", null, "1")]);
        Assert.All(replay, r => Assert.Equal(ApplyStatus.AlreadyApplied, r.Status));
        // ... and the client's retries, re-proposed at new indexes, find their recorded results.
        var retries = m.ApplyChunk([Cas(4, Session(A, 3, 1), "n", null, "1"), Put(5, Session(A, 1, 1), "k", "a")]);

        Assert.Equal(new ApplyResult(4, ApplyStatus.Applied, RecordedIndex: 3, Deduplicated: true), retries[0]);
        Assert.Equal(new ApplyResult(5, ApplyStatus.Applied, RecordedIndex: 1, Deduplicated: true), retries[1]);
        Assert.Equal("b", engine.GetString("k"));
        Assert.Equal(before, m.SessionTableStats);
    }

    [Fact]
    public void After_a_snapshot_install_on_a_fresh_machine_a_repeated_write_is_deduplicated()
    {
        using var source = new TestEngine();
        source.Machine.ApplyChunk([Put(1, Session(A, 1, 1, first: true), "k", "a"), Cas(2, Session(A, 2, 1), "n", null, "1")]);
        var snapshot = source.Machine.CreateSnapshot();

        using var target = new TestEngine();
        target.Machine.InstallSnapshot(snapshot.Directory, snapshot.Metadata);

        Assert.True(target.Machine.HasSession(A));
        Assert.Equal(source.Machine.SessionTableStats, target.Machine.SessionTableStats);
        var retry = target.Machine.ApplyChunk([Cas(3, Session(A, 2, 1), "n", null, "1")])[0];
        Assert.Equal(new ApplyResult(3, ApplyStatus.Applied, RecordedIndex: 2, Deduplicated: true), retry);
        Assert.Equal("1", target.GetString("n"));
    }

    [Fact]
    public void A_write_below_the_low_water_mark_is_a_late_duplicate_and_writes_nothing()
    {
        using var engine = new TestEngine();
        var m = engine.Machine;
        m.ApplyChunk([Put(1, Session(A, 1, 1, first: true), "k", "a"), Put(2, Session(A, 2, 1), "k", "b")]);
        m.ApplyChunk([Put(3, Session(A, 3, 3), "other", "c")]);
        var stats = m.SessionTableStats;

        var late = m.ApplyChunk([Put(4, Session(A, 1, 1), "k", "a"), Put(5, Session(A, 2, 2), "k", "x")]);

        Assert.Equal([new ApplyResult(4, ApplyStatus.LateDuplicate), new ApplyResult(5, ApplyStatus.LateDuplicate)], late);
        Assert.False(late[0].Succeeded);
        Assert.Equal("b", engine.GetString("k"));
        Assert.Equal(stats, m.SessionTableStats);
    }

    [Fact]
    public void Raising_the_low_water_mark_drops_the_recorded_responses_below_it()
    {
        using var engine = new TestEngine();
        var m = engine.Machine;
        m.ApplyChunk([Put(1, Session(A, 1, 1, first: true), "k", "1"), Put(2, Session(A, 2, 1), "k", "2"), Put(3, Session(A, 3, 1), "k", "3")]);
        Assert.Equal(3, m.SessionTableStats.RecordedResponses);

        m.ApplyChunk([Put(4, Session(A, 4, 3), "k", "4")]);

        Assert.Equal(2, m.SessionTableStats.RecordedResponses); // 3 and 4
        engine.Reopen();
        m = engine.Machine;
        Assert.Equal(ApplyStatus.LateDuplicate, m.ApplyChunk([Put(5, Session(A, 2, 2), "k", "2")])[0].Status);
        Assert.True(m.ApplyChunk([Put(6, Session(A, 3, 3), "k", "3")])[0].Deduplicated);
        // A lower low-water sent later never lowers the stored one.
        m.ApplyChunk([Put(7, Session(A, 5, 1), "k", "5")]);
        Assert.Equal(ApplyStatus.LateDuplicate, m.ApplyChunk([Put(8, Session(A, 2, 1), "k", "2")])[0].Status);
        Assert.Equal("5", engine.GetString("k"));
        engine.Close();
        // On disk too: the record holds exactly 3, 4 and 5 (a 20-byte header and 17 bytes per response).
        var record = RawDatabase.ReadFamily(engine.Path, RocksDbStateMachine.SessionsFamily).Single(e => e.Key[0] == 0x01);
        Assert.Equal(20 + (3 * 17), record.Value.Length);
    }

    [Fact]
    public void A_write_of_an_unknown_session_without_the_first_write_flag_is_refused_with_SessionExpired()
    {
        using var engine = new TestEngine();
        var m = engine.Machine;

        var result = m.ApplyChunk([Put(1, Session(A, 5, 5), "k", "a")])[0];

        Assert.Equal(new ApplyResult(1, ApplyStatus.SessionExpired), result);
        Assert.False(result.Succeeded);
        Assert.Null(engine.GetString("k"));
        Assert.False(m.HasSession(A));
        Assert.Equal(SessionTableStats.Empty, m.SessionTableStats);
        Assert.Equal(new LogPosition(1, 1), m.LastApplied);
    }

    [Fact]
    public void ExpireSessions_ends_an_idle_session_its_tombstone_refuses_writes_and_a_purge_removes_the_tombstone()
    {
        using var engine = new TestEngine();
        var m = engine.Machine;
        var t = engine.NowUnixMs;
        m.ApplyChunk([Put(1, Session(A, 1, 1, first: true), "k", "a", asOfUnixMs: t), Put(2, Session(B, 1, 1, first: true), "j", "b", asOfUnixMs: t + 5_000)]);

        var idle = m.IdleSessions(t + 1, 100);
        Assert.Equal([new IdleSession(A, t)], idle, new IdleSessionComparer());
        var expired = m.ApplyChunk([ExpireSessions(3, t + 60_000, idle)])[0];

        Assert.Equal(1, expired.KeysExpired);
        Assert.False(m.HasSession(A));
        Assert.True(m.HasSessionTombstone(A));
        Assert.True(m.HasSession(B));
        Assert.Equal(new SessionTableStats(1, 1, 1, m.SessionTableStats.ApproxBytes), m.SessionTableStats);
        // Its late retry and even a write flagged as first are refused; nothing is written.
        var refused = m.ApplyChunk([Put(4, Session(A, 1, 1), "k", "again"), Put(5, Session(A, 2, 2, first: true), "k", "again")]);
        Assert.All(refused, r => Assert.Equal(ApplyStatus.SessionExpired, r.Status));
        Assert.Equal("a", engine.GetString("k"));

        Assert.Empty(m.TombstonesBefore(t + 60_000, 10));
        var old = m.TombstonesBefore(t + 60_001, 10);
        Assert.Equal([Convert.ToHexString(A)], old.Select(Convert.ToHexString));
        Assert.Equal(0, m.ApplyChunk([ExpireSessions(6, t + 120_000, [], old)])[0].KeysExpired);

        Assert.False(m.HasSessionTombstone(A));
        Assert.Equal(new SessionTableStats(1, 0, 1, m.SessionTableStats.ApproxBytes), m.SessionTableStats);
        // Without the tombstone a write not flagged as first finds no session: still refused.
        Assert.Equal(ApplyStatus.SessionExpired, m.ApplyChunk([Put(7, Session(A, 3, 3), "k", "again")])[0].Status);
        Assert.Equal("a", engine.GetString("k"));
    }

    [Fact]
    public void A_session_written_after_the_expiry_was_planned_survives_ExpireSessions()
    {
        using var engine = new TestEngine();
        var m = engine.Machine;
        var t = engine.NowUnixMs;
        m.ApplyChunk([Put(1, Session(A, 1, 1, first: true), "k", "a", asOfUnixMs: t)]);
        var planned = m.IdleSessions(t + 1, 10);
        Assert.Single(planned);

        m.ApplyChunk([Put(2, Session(A, 2, 1), "k", "b", asOfUnixMs: t + 10)]);
        var result = m.ApplyChunk([ExpireSessions(3, t + 20, planned)])[0];

        Assert.Equal(0, result.KeysExpired);
        Assert.True(m.HasSession(A));
        Assert.False(m.HasSessionTombstone(A));
        Assert.True(m.ApplyChunk([Put(4, Session(A, 2, 1), "k", "b")])[0].Deduplicated);
        // The activity index moved with the write: idle only before its new stamp.
        Assert.Empty(m.IdleSessions(t + 10, 10));
        Assert.Equal([t + 10], m.IdleSessions(t + 11, 10).Select(s => s.LastActiveUnixMs));
    }

    [Fact]
    public void An_unstamped_write_records_the_time_floor_as_its_activity_and_idle_sessions_come_least_recent_first()
    {
        using var engine = new TestEngine();
        var m = engine.Machine;
        var t = engine.NowUnixMs;
        m.ApplyChunk([SessionLog.Put(1, Session(B, 1, 1, first: true), "b", "1", asOfUnixMs: t + 5_000), Put(2, Session(A, 1, 1, first: true), "a", "1")]);
        m.ApplyChunk([Put(3, Session(Id(3), 1, 1, first: true), "c", "1", asOfUnixMs: t + 1_000)]);

        var idle = m.IdleSessions(ulong.MaxValue, 10);

        // A's write carried no stamp: its activity is the floor as of that entry (B's stamp before it);
        // equal stamps (the same second) come in id order.
        Assert.Equal([(Id(3), t + 1_000), (A, t + 5_000), (B, t + 5_000)], idle.Select(s => (s.Id, s.LastActiveUnixMs)), new TupleComparer());
        Assert.Single(m.IdleSessions(ulong.MaxValue, 1));
        // Within a second's bucket the exact stamps decide: B was active at t + 5000, not before.
        Assert.Equal([Convert.ToHexString(Id(3))], m.IdleSessions(t + 5_000, 10).Select(s => Convert.ToHexString(s.Id)));
    }

    [Fact]
    public void Writes_without_a_session_behave_as_before_and_leave_the_session_table_empty()
    {
        using var engine = new TestEngine();
        var m = engine.Machine;
        var results = m.ApplyChunk([Log.Insert(1, "k", "a"), Log.Insert(2, "k", "a"), Log.Cas(3, "n", null, "1"), Log.Cas(4, "n", null, "1"), Log.Delete(5, "k")]);

        Assert.Equal([ApplyStatus.Applied, ApplyStatus.Applied, ApplyStatus.Applied, ApplyStatus.CompareFailed, ApplyStatus.Applied], results.Select(r => r.Status));
        Assert.All(results, r => Assert.False(r.Deduplicated));
        Assert.Equal(SessionTableStats.Empty, m.SessionTableStats);
        engine.Close();
        Assert.Empty(RawDatabase.ReadFamily(engine.Path, RocksDbStateMachine.SessionsFamily));
    }

    [Fact]
    public void The_table_state_is_in_the_sessions_family_only_and_invisible_to_user_reads()
    {
        using var engine = new TestEngine();
        engine.Machine.ApplyChunk([Put(1, Session(A, 1, 1, first: true), "k", "a")]);

        Assert.Equal(["k"], engine.Machine.ScanPrefix([(byte)'k']).Entries.Select(e => Text(e.Key)));
        Assert.Null(engine.Machine.Get([0x01, .. A]));
        Assert.Equal(1, engine.Machine.Count());
        engine.Close();
        Assert.Equal(3, RawDatabase.ReadFamily(engine.Path, RocksDbStateMachine.SessionsFamily).Count); // stats, record, activity index
    }

    [Fact]
    public void At_the_per_session_bound_a_new_write_is_refused_not_applied_until_the_low_water_mark_rises()
    {
        using var engine = new TestEngine(o => o.SessionBounds = new SessionBounds(3, 100, 100));
        var m = engine.Machine;
        m.ApplyChunk([Put(1, Session(A, 1, 1, first: true), "k", "1"), Put(2, Session(A, 2, 1), "k", "2"), Put(3, Session(A, 3, 1), "k", "3")]);

        var refused = m.ApplyChunk([Put(4, Session(A, 4, 1), "k", "4")])[0];

        Assert.Equal(new ApplyResult(4, ApplyStatus.SessionExpired), refused);
        Assert.Equal("3", engine.GetString("k"));
        Assert.Equal(3, m.SessionTableStats.RecordedResponses);
        // The recorded writes still answer their retries.
        Assert.True(m.ApplyChunk([Put(5, Session(A, 1, 1), "k", "1")])[0].Deduplicated);
        // Once the client raises its low-water mark, there is room again.
        Assert.Equal(ApplyStatus.Applied, m.ApplyChunk([Put(6, Session(A, 4, 2), "k", "4")])[0].Status);
        Assert.Equal("4", engine.GetString("k"));
        Assert.Equal(3, m.SessionTableStats.RecordedResponses);
    }

    [Fact]
    public void At_the_partition_bounds_a_new_session_or_a_new_response_is_refused()
    {
        using var engine = new TestEngine(o => o.SessionBounds = new SessionBounds(10, 2, 3));
        var m = engine.Machine;
        m.ApplyChunk([Put(1, Session(A, 1, 1, first: true), "a", "1"), Put(2, Session(B, 1, 1, first: true), "b", "1")]);

        // A third session: too many sessions.
        Assert.Equal(ApplyStatus.SessionExpired, m.ApplyChunk([Put(3, Session(Id(3), 1, 1, first: true), "c", "1")])[0].Status);
        Assert.False(m.HasSession(Id(3)));
        // A third response is room, a fourth is not.
        Assert.Equal(ApplyStatus.Applied, m.ApplyChunk([Put(4, Session(A, 2, 1), "a", "2")])[0].Status);
        Assert.Equal(ApplyStatus.SessionExpired, m.ApplyChunk([Put(5, Session(B, 2, 1), "b", "2")])[0].Status);
        Assert.Equal("1", engine.GetString("b"));
        Assert.Equal(new SessionTableStats(2, 0, 3, m.SessionTableStats.ApproxBytes), m.SessionTableStats);
        // A write that also drops its session's old responses fits.
        Assert.Equal(ApplyStatus.Applied, m.ApplyChunk([Put(6, Session(B, 2, 2), "b", "2")])[0].Status);
        Assert.Equal(3, m.SessionTableStats.RecordedResponses);
    }

    [Theory]
    [InlineData("empty id")]
    [InlineData("long id")]
    [InlineData("sequence 0")]
    [InlineData("low-water above sequence")]
    [InlineData("session on ExpireKeys")]
    [InlineData("ExpireSessions empty id")]
    [InlineData("purge empty id")]
    public void Bad_session_fields_are_MalformedEntry_and_nothing_of_the_chunk_is_applied(string bad)
    {
        using var engine = new TestEngine();
        var m = engine.Machine;
        var entry = bad switch
        {
            "empty id" => Put(2, Session([], 1, 1, first: true), "x", "1"),
            "long id" => Put(2, Session(new byte[SessionLimits.MaxSessionIdBytes + 1], 1, 1, first: true), "x", "1"),
            "sequence 0" => Put(2, Session(A, 0, 0, first: true), "x", "1"),
            "low-water above sequence" => Put(2, Session(A, 2, 3, first: true), "x", "1"),
            "session on ExpireKeys" => WithSession(Log.ExpireKeys(2, 1, []), Session(A, 1, 1, first: true)),
            "ExpireSessions empty id" => ExpireSessions(2, 1, [new IdleSession([], 1)]),
            _ => ExpireSessions(2, 1, [], [[]]),
        };

        var error = Assert.Throws<DEngineException>(() => m.ApplyChunk([Put(1, Session(B, 1, 1, first: true), "y", "1"), entry]));

        Assert.Equal(DEngineErrorCode.MalformedEntry, error.Code);
        Assert.Equal(2UL, error.Index);
        Assert.Equal(LogPosition.None, m.LastApplied);
        Assert.Null(engine.GetString("y"));
        Assert.Equal(SessionTableStats.Empty, m.SessionTableStats);
    }

    [Fact]
    public void The_sequencer_check_refuses_what_apply_would_refuse_with_InvalidArgument_and_passes_a_good_session()
    {
        foreach (var bad in new[] { Session([], 1), Session(new byte[SessionLimits.MaxSessionIdBytes + 1], 1), Session(A, 0), Session(A, 2, 3) })
        {
            var error = Assert.Throws<DEngineException>(() => CommandLimits.ValidateSession(bad, 7));
            Assert.Equal(DEngineErrorCode.InvalidArgument, error.Code);
            Assert.Equal(7, error.Partition);
        }
        CommandLimits.ValidateSession(Session(A, 3, 3, first: true), 7);
        CommandLimits.ValidateSession(null, 7);
    }

    [Fact]
    public void A_session_id_of_the_maximum_length_is_accepted()
    {
        using var engine = new TestEngine();
        var id = Enumerable.Repeat((byte)7, SessionLimits.MaxSessionIdBytes).ToArray();
        Assert.Equal(ApplyStatus.Applied, engine.Machine.ApplyChunk([Put(1, Session(id, 1, 1, first: true), "x", "1")])[0].Status);
        Assert.True(engine.Machine.HasSession(id));
    }

    [Fact]
    public void The_session_table_and_its_stats_survive_a_reopen_and_a_reset_clears_them()
    {
        using var engine = new TestEngine();
        engine.Machine.ApplyChunk([Put(1, Session(A, 1, 1, first: true), "k", "a"), Put(2, Session(B, 1, 1, first: true), "k", "b")]);
        var stats = engine.Machine.SessionTableStats;
        Assert.True(stats.ApproxBytes > 0);

        var m = engine.Reopen();
        Assert.Equal(stats, m.SessionTableStats);
        Assert.True(m.HasSession(A));

        m.Reset();
        Assert.Equal(SessionTableStats.Empty, m.SessionTableStats);
        Assert.False(m.HasSession(A));
    }

    private static Protos.Common.Entry WithSession(Protos.Common.Entry entry, Protos.Client.ClientSession session)
    {
        var command = Protos.Client.WriteCommand.Parser.ParseFrom(entry.Payload.Command);
        command.Session = session;
        return Log.Command(entry.Index, command);
    }

    private sealed class IdleSessionComparer : IEqualityComparer<IdleSession>
    {
        public bool Equals(IdleSession x, IdleSession y) => x.Id.AsSpan().SequenceEqual(y.Id) && x.LastActiveUnixMs == y.LastActiveUnixMs;

        public int GetHashCode(IdleSession obj) => obj.LastActiveUnixMs.GetHashCode();
    }

    private sealed class TupleComparer : IEqualityComparer<(byte[] Id, ulong Stamp)>
    {
        public bool Equals((byte[] Id, ulong Stamp) x, (byte[] Id, ulong Stamp) y) => x.Id.AsSpan().SequenceEqual(y.Id) && x.Stamp == y.Stamp;

        public int GetHashCode((byte[] Id, ulong Stamp) obj) => obj.Stamp.GetHashCode();
    }
}
