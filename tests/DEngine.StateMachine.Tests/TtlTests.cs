using DEngine.Protos.Common;
using DEngine.StateMachine.Tests.Support;
using static DEngine.StateMachine.Tests.Support.Log;
using static DEngine.StateMachine.Tests.Support.TestEngine;

namespace DEngine.StateMachine.Tests;

/// <summary>
/// TTL (DESIGN.md "TTL"; d-engine's lease cases adapted): absolute expiry, invisibility at once,
/// cleanup through ExpireKeys commands, determinism. Time comes from the fake clock only.
/// </summary>
public sealed class TtlTests
{
    private static ExpiredKey Expired(string key, ulong expiresAtUnixMs) => new(Utf8(key), expiresAtUnixMs);

    private static void AssertExpiredKeys(IReadOnlyList<ExpiredKey> actual, params (string Key, ulong ExpiresAt)[] expected)
    {
        Assert.Equal(expected, actual.Select(e => (Text(e.Key)!, e.ExpiresAtUnixMs)));
    }

    [Fact]
    public void A_ttl_key_is_readable_until_its_expiry_and_invisible_to_every_read_from_it_on()
    {
        using var engine = new TestEngine();
        var machine = engine.Machine;
        var start = engine.NowUnixMs;
        machine.ApplyChunk([Insert(1, "/lease/k", "v", ttlSecs: 5), Insert(2, "/lease/plain", "p")]);
        byte[][] keys = [Utf8("/lease/k"), Utf8("/lease/plain")];

        engine.Clock.Advance(TimeSpan.FromMilliseconds(4_999));
        Assert.Equal("v", engine.GetString("/lease/k"));
        Assert.Equal(["v", "p"], machine.GetMulti(keys).Select(Text));
        Assert.Equal(["/lease/k", "/lease/plain"], machine.ScanPrefix(Utf8("/lease/")).Entries.Select(e => Text(e.Key)));
        Assert.True(machine.TryGetExpiry(Utf8("/lease/k"), out var expiry));
        Assert.Equal(start + 5_000, expiry);
        Assert.Equal(2, machine.Count());
        Assert.Empty(machine.FindExpired(engine.NowUnixMs, 100));

        engine.Clock.Advance(TimeSpan.FromMilliseconds(1));
        Assert.Null(engine.GetString("/lease/k"));
        Assert.Equal([null, "p"], machine.GetMulti(keys).Select(Text));
        Assert.Equal(["/lease/plain"], machine.ScanPrefix(Utf8("/lease/")).Entries.Select(e => Text(e.Key)));
        Assert.False(machine.TryGetExpiry(Utf8("/lease/k"), out _));
        Assert.Equal(1, machine.Count());
        AssertExpiredKeys(machine.FindExpired(engine.NowUnixMs, 100), ("/lease/k", start + 5_000));

        // The expired key counts as absent for CAS, and the CAS value carries no TTL.
        var cas = machine.ApplyChunk([Cas(3, "/lease/k", null, "taken")]);
        Assert.True(Assert.Single(cas).Succeeded);
        Assert.Equal("taken", engine.GetString("/lease/k"));
        Assert.True(machine.TryGetExpiry(Utf8("/lease/k"), out var after));
        Assert.Null(after);
    }

    [Fact]
    public void Cas_with_AsOf_judges_expiry_at_that_time_not_at_the_clock()
    {
        using var engine = new TestEngine();
        var expiresAt = engine.NowUnixMs + 60_000;
        engine.Machine.ApplyChunk([Insert(1, "k", "v", ttlSecs: 60, expiresAtUnixMs: expiresAt)]);

        // As of one millisecond before expiry the key exists; as of its expiry it is absent.
        var results = engine.Machine.ApplyChunk([Cas(2, "k", null, "early", asOfUnixMs: expiresAt - 1), Cas(3, "k", null, "late", asOfUnixMs: expiresAt)]);

        Assert.Equal([ApplyStatus.CompareFailed, ApplyStatus.Applied], results.Select(r => r.Status));
        Assert.Equal("late", engine.GetString("k"));
    }

    [Fact]
    public void Re_put_with_a_longer_ttl_cancels_the_old_expiry()
    {
        using var engine = new TestEngine();
        var machine = engine.Machine;
        var start = engine.NowUnixMs;
        machine.ApplyChunk([Insert(1, "k", "value1", ttlSecs: 2)]);
        machine.ApplyChunk([Insert(2, "k", "value2", ttlSecs: 10)]);

        engine.Clock.Advance(TimeSpan.FromSeconds(3));

        Assert.Equal("value2", engine.GetString("k"));
        Assert.True(machine.TryGetExpiry(Utf8("k"), out var expiry));
        Assert.Equal(start + 10_000, expiry);
        // The old index entry is still listed, but cleaning it up leaves the key alone.
        var planned = machine.FindExpired(engine.NowUnixMs, 100);
        AssertExpiredKeys(planned, ("k", start + 2_000));
        var results = machine.ApplyChunk([ExpireKeys(3, engine.NowUnixMs, planned)]);
        Assert.Equal(0, Assert.Single(results).KeysExpired);
        Assert.Equal("value2", engine.GetString("k"));
        Assert.Equal(1, machine.TtlIndexCount());
        Assert.Equal(start + 10_000, machine.EarliestExpiry());

        engine.Clock.Advance(TimeSpan.FromSeconds(7));
        Assert.Null(engine.GetString("k"));
    }

    [Fact]
    public void Delete_removes_the_ttl_and_a_plain_re_put_never_expires()
    {
        using var engine = new TestEngine();
        var machine = engine.Machine;
        machine.ApplyChunk([Insert(1, "k", "leased", ttlSecs: 5)]);
        machine.ApplyChunk([Delete(2, "k")]);
        Assert.Null(engine.GetString("k"));
        Assert.False(machine.TryGetExpiry(Utf8("k"), out _));

        machine.ApplyChunk([Insert(3, "k", "plain")]);
        engine.Clock.Advance(TimeSpan.FromDays(1));

        Assert.Equal("plain", engine.GetString("k"));
        var planned = machine.FindExpired(engine.NowUnixMs, 100);
        var results = machine.ApplyChunk([ExpireKeys(4, engine.NowUnixMs, planned)]);
        Assert.Equal(0, Assert.Single(results).KeysExpired);
        Assert.Equal("plain", engine.GetString("k"));
        Assert.Equal(0, machine.TtlIndexCount());
    }

    [Fact]
    public void Overwrite_without_ttl_clears_the_ttl()
    {
        using var engine = new TestEngine();
        engine.Machine.ApplyChunk([Insert(1, "k", "leased", ttlSecs: 5)]);
        Assert.True(engine.Machine.TryGetExpiry(Utf8("k"), out var leased));
        Assert.NotNull(leased);

        engine.Machine.ApplyChunk([Insert(2, "k", "plain")]);

        Assert.True(engine.Machine.TryGetExpiry(Utf8("k"), out var expiry));
        Assert.Null(expiry);
        engine.Clock.Advance(TimeSpan.FromSeconds(10));
        Assert.Equal("plain", engine.GetString("k"));
    }

    [Fact]
    public void A_stamped_insert_expires_at_its_stamp_not_at_clock_plus_ttl()
    {
        using var engine = new TestEngine();
        var stamp = engine.NowUnixMs + 60_000;
        engine.Machine.ApplyChunk([Insert(1, "k", "v", ttlSecs: 5, expiresAtUnixMs: stamp)]);

        Assert.True(engine.Machine.TryGetExpiry(Utf8("k"), out var expiry));
        Assert.Equal(stamp, expiry);
        engine.Clock.Advance(TimeSpan.FromSeconds(10));
        Assert.Equal("v", engine.GetString("k"));
        engine.Clock.Advance(TimeSpan.FromSeconds(50));
        Assert.Null(engine.GetString("k"));
    }

    [Fact]
    public void A_stamp_already_in_the_past_makes_the_key_invisible_at_once()
    {
        using var engine = new TestEngine();
        engine.Machine.ApplyChunk([Insert(1, "k", "v", ttlSecs: 5, expiresAtUnixMs: engine.NowUnixMs - 1)]);
        Assert.Null(engine.GetString("k"));
        Assert.Single(engine.Machine.FindExpired(engine.NowUnixMs, 10));
    }

    [Fact]
    public void Only_expired_keys_are_found_and_removed_when_expired_and_valid_keys_mix()
    {
        using var engine = new TestEngine();
        var machine = engine.Machine;
        var start = engine.NowUnixMs;
        machine.ApplyChunk([Insert(1, "expire_soon", "1", ttlSecs: 1), Insert(2, "expire_late", "2", ttlSecs: 3600), Insert(3, "permanent", "3")]);

        engine.Clock.Advance(TimeSpan.FromSeconds(2));

        var planned = machine.FindExpired(engine.NowUnixMs, 100);
        AssertExpiredKeys(planned, ("expire_soon", start + 1_000));
        var results = machine.ApplyChunk([ExpireKeys(4, engine.NowUnixMs, planned)]);
        Assert.Equal(1, Assert.Single(results).KeysExpired);
        Assert.Null(engine.GetString("expire_soon"));
        Assert.Equal("2", engine.GetString("expire_late"));
        Assert.Equal("3", engine.GetString("permanent"));
        Assert.Equal(1, machine.TtlIndexCount());
        Assert.Equal(start + 3_600_000, machine.EarliestExpiry());
    }

    [Fact]
    public void FindExpired_lists_oldest_expiry_first_and_honours_max()
    {
        using var engine = new TestEngine();
        var now = engine.NowUnixMs;
        engine.Machine.ApplyChunk(
        [
            Insert(1, "c", "v", ttlSecs: 1, expiresAtUnixMs: now + 3_000),
            Insert(2, "a", "v", ttlSecs: 1, expiresAtUnixMs: now + 2_000),
            Insert(3, "b", "v", ttlSecs: 1, expiresAtUnixMs: now + 1_000),
            Insert(4, "d", "v", ttlSecs: 1, expiresAtUnixMs: now + 9_000),
        ]);

        AssertExpiredKeys(engine.Machine.FindExpired(now + 3_000, 100), ("b", now + 1_000), ("a", now + 2_000), ("c", now + 3_000));
        AssertExpiredKeys(engine.Machine.FindExpired(now + 3_000, 2), ("b", now + 1_000), ("a", now + 2_000));
        AssertExpiredKeys(engine.Machine.FindExpired(now + 2_999, 100), ("b", now + 1_000), ("a", now + 2_000));
        Assert.Empty(engine.Machine.FindExpired(now + 3_000, 0));
        Assert.Equal(now + 1_000, engine.Machine.EarliestExpiry());
    }

    [Fact]
    public void A_thousand_keys_with_one_expiry_are_all_found_and_removed_by_one_ExpireKeys_command()
    {
        using var engine = new TestEngine();
        var machine = engine.Machine;
        const int count = 1000;
        machine.ApplyChunk(Enumerable.Range(1, count).Select(i => Insert((ulong)i, $"/many/{i:D4}", "v", ttlSecs: 5)).ToArray());
        engine.Clock.Advance(TimeSpan.FromSeconds(5));
        Assert.Empty(machine.ScanPrefix(Utf8("/many/")).Entries);

        var planned = machine.FindExpired(engine.NowUnixMs, 10_000);
        Assert.Equal(count, planned.Count);
        Assert.Equal(count, planned.Select(p => Text(p.Key)).Distinct().Count());

        var results = machine.ApplyChunk([ExpireKeys(count + 1, engine.NowUnixMs, planned)]);

        Assert.Equal(count, Assert.Single(results).KeysExpired);
        Assert.Empty(machine.FindExpired(engine.NowUnixMs, 10_000));
        Assert.Null(machine.EarliestExpiry());
        Assert.Equal(0, machine.TtlIndexCount());
        engine.Close();
        Assert.Empty(RawDatabase.ReadFamily(engine.Path, RocksDbStateMachine.DataFamily));
        Assert.Empty(RawDatabase.ReadFamily(engine.Path, RocksDbStateMachine.TtlFamily));
    }

    [Fact]
    public void Reset_clears_the_ttl_state()
    {
        using var engine = new TestEngine();
        engine.Machine.ApplyChunk([Insert(1, "a", "1", ttlSecs: 5), Insert(2, "b", "2", ttlSecs: 3600)]);

        engine.Machine.Reset();
        engine.Clock.Advance(TimeSpan.FromDays(1));

        Assert.Null(engine.GetString("a"));
        Assert.Null(engine.GetString("b"));
        Assert.Empty(engine.Machine.FindExpired(engine.NowUnixMs, 100));
        Assert.Null(engine.Machine.EarliestExpiry());
        Assert.Equal(0, engine.Machine.TtlIndexCount());
    }

    [Fact]
    public void Without_ttl_keys_FindExpired_is_empty_and_EarliestExpiry_is_null()
    {
        using var engine = new TestEngine();
        engine.Machine.ApplyChunk(Enumerable.Range(1, 5).Select(i => Insert((ulong)i, $"plain{i}", "v")).ToArray());
        engine.Clock.Advance(TimeSpan.FromDays(365));

        Assert.Empty(engine.Machine.FindExpired(engine.NowUnixMs, 100));
        Assert.Empty(engine.Machine.FindExpired(ulong.MaxValue, 100));
        Assert.Null(engine.Machine.EarliestExpiry());
        Assert.Equal(5, engine.Machine.Count());
    }

    [Fact]
    public void Unexpired_ttl_keys_are_not_found_and_stay_readable()
    {
        using var engine = new TestEngine();
        engine.Machine.ApplyChunk(Enumerable.Range(1, 5).Select(i => Insert((ulong)i, $"leased{i}", "v", ttlSecs: 3600)).ToArray());
        engine.Clock.Advance(TimeSpan.FromMinutes(59));

        Assert.Empty(engine.Machine.FindExpired(engine.NowUnixMs, 100));
        Assert.Equal(5, engine.Machine.Count());
    }

    [Fact]
    public void ExpireKeys_as_of_a_time_before_the_expiry_keeps_the_key_and_its_index_entry()
    {
        using var engine = new TestEngine();
        var expiresAt = engine.NowUnixMs + 5_000;
        engine.Machine.ApplyChunk([Insert(1, "k", "v", ttlSecs: 5)]);

        var results = engine.Machine.ApplyChunk([ExpireKeys(2, expiresAt - 1, [Expired("k", expiresAt)])]);

        Assert.Equal(0, Assert.Single(results).KeysExpired);
        Assert.Equal("v", engine.GetString("k"));
        Assert.Equal(1, engine.Machine.TtlIndexCount());
    }

    /// <summary>Applies "renewed", "made_plain" and "gone" with a 5 s TTL (indexes 1-3), moves the clock past it and plans their cleanup.</summary>
    private static IReadOnlyList<ExpiredKey> PlanExpiryOfThreeKeys(TestEngine engine)
    {
        engine.Machine.ApplyChunk([Insert(1, "renewed", "old", ttlSecs: 5), Insert(2, "made_plain", "old", ttlSecs: 5), Insert(3, "gone", "old", ttlSecs: 5)]);
        engine.Clock.Advance(TimeSpan.FromSeconds(6));
        var planned = engine.Machine.FindExpired(engine.NowUnixMs, 100);
        Assert.Equal(3, planned.Count);
        return planned;
    }

    [Fact]
    public void A_key_re_put_between_planning_and_applying_ExpireKeys_survives_it()
    {
        using var engine = new TestEngine();
        var machine = engine.Machine;
        var planned = PlanExpiryOfThreeKeys(engine);

        machine.ApplyChunk([Insert(4, "renewed", "new", ttlSecs: 60), Insert(5, "made_plain", "new")]);
        var results = machine.ApplyChunk([ExpireKeys(6, engine.NowUnixMs, planned)]);

        Assert.Equal(1, Assert.Single(results).KeysExpired);
        Assert.Equal("new", engine.GetString("renewed"));
        Assert.Equal("new", engine.GetString("made_plain"));
        Assert.Null(engine.GetString("gone"));
        // Only the renewed key's fresh index entry is left.
        Assert.Equal(1, machine.TtlIndexCount());
        Assert.Equal(engine.NowUnixMs + 60_000, machine.EarliestExpiry());
    }

    [Fact]
    public void A_key_re_put_earlier_in_the_same_chunk_as_ExpireKeys_survives_it()
    {
        using var engine = new TestEngine();
        var machine = engine.Machine;
        var planned = PlanExpiryOfThreeKeys(engine);

        var results = machine.ApplyChunk(
        [
            Insert(4, "renewed", "new", ttlSecs: 60),
            Insert(5, "made_plain", "new"),
            ExpireKeys(6, engine.NowUnixMs, planned),
        ]);

        Assert.Equal(1, results[2].KeysExpired);
        Assert.Equal("new", engine.GetString("renewed"));
        Assert.Equal("new", engine.GetString("made_plain"));
        Assert.Null(engine.GetString("gone"));
        Assert.Equal(1, machine.TtlIndexCount());
    }

    [Fact]
    public void Ttl_state_survives_reopen_and_expires_afterwards()
    {
        using var engine = new TestEngine();
        var start = engine.NowUnixMs;
        engine.Machine.ApplyChunk([Insert(1, "short", "s", ttlSecs: 2), Insert(2, "long", "l", ttlSecs: 3600), Insert(3, "none", "n")]);
        engine.Machine.Stop();

        engine.Reopen();
        Assert.Equal("s", engine.GetString("short"));
        engine.Clock.Advance(TimeSpan.FromSeconds(3));

        Assert.Null(engine.GetString("short"));
        Assert.Equal("l", engine.GetString("long"));
        Assert.Equal("n", engine.GetString("none"));
        var planned = engine.Machine.FindExpired(engine.NowUnixMs, 100);
        AssertExpiredKeys(planned, ("short", start + 2_000));
        Assert.Equal(1, engine.Machine.ApplyChunk([ExpireKeys(4, engine.NowUnixMs, planned)])[0].KeysExpired);
    }

    [Fact]
    public void The_same_stamped_chunks_on_engines_with_different_clocks_give_identical_databases()
    {
        const ulong t0 = 1_800_000_000_000; // 2027-01-15, before both clocks
        Entry[][] chunks =
        [
            [
                Insert(1, "/d/a", "a", ttlSecs: 10, expiresAtUnixMs: t0 + 10_000),
                Insert(2, "/d/b", "b"),
                Insert(3, "/d/c", "c", ttlSecs: 5, expiresAtUnixMs: t0 + 5_000),
                Cas(4, "/d/b", "b", "b2", asOfUnixMs: t0),
                Noop(5),
            ],
            [
                Cas(6, "/d/c", null, "c2", asOfUnixMs: t0 + 6_000),
                Cas(7, "/d/a", null, "a-taken-too-early", asOfUnixMs: t0 + 9_999),
                Delete(8, "/d/b"),
                Insert(9, "/d/a", "a2", ttlSecs: 20, expiresAtUnixMs: t0 + 20_000),
                ExpireKeys(10, t0 + 15_000, [Expired("/d/a", t0 + 10_000), Expired("/d/c", t0 + 5_000)]),
            ],
            [
                Insert(11, "/d/e", "e", ttlSecs: 1, expiresAtUnixMs: t0 + 1_000),
                Insert(12, "/d/f", "f", ttlSecs: 1, expiresAtUnixMs: t0 + 30_000),
                ExpireKeys(13, t0 + 2_000, [Expired("/d/e", t0 + 1_000), Expired("/d/f", t0 + 30_000)]),
                AddNode(14, 2, term: 2),
            ],
        ];

        using var early = new TestEngine(start: new DateTimeOffset(2030, 1, 1, 0, 0, 0, TimeSpan.Zero));
        using var late = new TestEngine(start: new DateTimeOffset(2045, 6, 1, 12, 0, 0, TimeSpan.Zero));
        var earlyResults = chunks.SelectMany(c => early.Machine.ApplyChunk(c)).ToArray();
        var lateResults = chunks.SelectMany(c => late.Machine.ApplyChunk(c)).ToArray();
        early.Close();
        late.Close();

        Assert.Equal(earlyResults, lateResults);
        Assert.Equal(ApplyStatus.CompareFailed, earlyResults[6].Status);
        Assert.Equal(1, earlyResults[12].KeysExpired);
        Assert.Equal(
            ["/d/a", "/d/c", "/d/f"],
            RawDatabase.ReadFamily(early.Path, RocksDbStateMachine.DataFamily).Select(e => Text(e.Key)));
        Assert.Equal(RawDatabase.Digest(early.Path), RawDatabase.Digest(late.Path));
    }
}
