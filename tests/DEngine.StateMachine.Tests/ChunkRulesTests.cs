using DEngine.Protos.Client;
using DEngine.Protos.Common;
using DEngine.StateMachine.Tests.Support;
using Google.Protobuf;
using static DEngine.StateMachine.Tests.Support.Log;
using static DEngine.StateMachine.Tests.Support.TestEngine;

namespace DEngine.StateMachine.Tests;

/// <summary>Our chunk rules (DESIGN.md "The engine"): order, idempotence, rejection of bad input, limits, durability.</summary>
public sealed class ChunkRulesTests
{
    private static DEngineException Rejected(TestEngine engine, Entry[] chunk) =>
        Assert.Throws<DEngineException>(() => engine.Machine.ApplyChunk(chunk));

    /// <summary>Applies keys a=1, b=2 at indexes 1 and 2 (term 1).</summary>
    private static TestEngine EngineWithTwoEntries(Action<RocksDbStateMachineOptions>? configure = null)
    {
        var engine = new TestEngine(configure);
        engine.Machine.ApplyChunk([Insert(1, "a", "1"), Insert(2, "b", "2")]);
        return engine;
    }

    private static void AssertUnchanged(TestEngine engine)
    {
        Assert.Equal(new LogPosition(2, 1), engine.Machine.LastApplied);
        Assert.Equal("1", engine.GetString("a"));
        Assert.Equal("2", engine.GetString("b"));
        Assert.Equal(2, engine.Machine.Count());
        Assert.Equal(0, engine.Machine.TtlIndexCount());
    }

    [Fact]
    public void Redelivered_entries_are_skipped_and_reported_AlreadyApplied()
    {
        using var engine = EngineWithTwoEntries();

        // Entries 1 and 2 come again with other contents: they must not be re-applied.
        var results = engine.Machine.ApplyChunk([Insert(1, "a", "changed"), Delete(2, "b")]);

        Assert.Equal([ApplyStatus.AlreadyApplied, ApplyStatus.AlreadyApplied], results.Select(r => r.Status));
        Assert.Equal([1UL, 2], results.Select(r => r.Index));
        Assert.True(results.All(r => r.Succeeded));
        AssertUnchanged(engine);
    }

    [Fact]
    public void A_chunk_mixing_old_and_new_entries_applies_only_the_new_ones()
    {
        using var engine = EngineWithTwoEntries();

        var results = engine.Machine.ApplyChunk([Insert(2, "b", "changed"), Insert(3, "c", "3"), Cas(4, "b", "2", "cas")], ApplyDurability.Default);

        Assert.Equal([ApplyStatus.AlreadyApplied, ApplyStatus.Applied, ApplyStatus.Applied], results.Select(r => r.Status));
        Assert.Equal("cas", engine.GetString("b"));
        Assert.Equal("3", engine.GetString("c"));
        Assert.Equal(new LogPosition(4, 1), engine.Machine.LastApplied);
    }

    [Fact]
    public void Redelivery_after_reopen_is_still_skipped()
    {
        using var engine = EngineWithTwoEntries();
        engine.Reopen();

        var results = engine.Machine.ApplyChunk([Insert(2, "b", "changed")]);

        Assert.Equal(ApplyStatus.AlreadyApplied, Assert.Single(results).Status);
        AssertUnchanged(engine);
    }

    [Fact]
    public void A_chunk_starting_beyond_the_next_index_is_rejected_with_ChunkGap_and_nothing_applied()
    {
        using var engine = EngineWithTwoEntries(o => o.PartitionId = 7);

        var error = Rejected(engine, [Insert(4, "c", "4"), Insert(5, "d", "5")]);

        Assert.Equal(DEngineErrorCode.ChunkGap, error.Code);
        Assert.Equal(4UL, error.Index);
        Assert.Equal(7, error.Partition);
        Assert.False(error.IsRetryable);
        Assert.Null(engine.GetString("c"));
        AssertUnchanged(engine);
    }

    [Fact]
    public void A_gap_inside_a_chunk_is_rejected_with_ChunkGap_and_its_first_entries_are_not_applied()
    {
        using var engine = EngineWithTwoEntries();

        var error = Rejected(engine, [Insert(3, "c", "3"), Insert(5, "e", "5")]);

        Assert.Equal(DEngineErrorCode.ChunkGap, error.Code);
        Assert.Equal(5UL, error.Index);
        Assert.Null(engine.GetString("c"));
        AssertUnchanged(engine);
    }

    [Theory]
    [InlineData(new ulong[] { 3, 5, 4 }, 4UL)]
    [InlineData(new ulong[] { 3, 3 }, 3UL)]
    [InlineData(new ulong[] { 2, 1 }, 1UL)]
    public void A_chunk_whose_indexes_do_not_increase_is_rejected_with_ChunkOutOfOrder_and_nothing_applied(ulong[] indexes, ulong offending)
    {
        using var engine = EngineWithTwoEntries();

        var error = Rejected(engine, indexes.Select(i => Insert(i, "x" + i, "changed")).ToArray());

        Assert.Equal(DEngineErrorCode.ChunkOutOfOrder, error.Code);
        Assert.Equal(offending, error.Index);
        Assert.Null(engine.GetString("x3"));
        AssertUnchanged(engine);
    }

    [Fact]
    public void An_entry_with_a_term_below_the_applied_term_is_rejected_with_StaleEpoch_and_nothing_applied()
    {
        // Epoch fencing where the data is: once a newer epoch (term 3) has written, a writer still
        // on an older epoch cannot append, even with the right next index.
        using var engine = EngineWithTwoEntries();
        engine.Machine.ApplyChunk([Insert(3, "c", "3", term: 3)]);

        var error = Rejected(engine, [Insert(4, "d", "stale", term: 2)]);

        Assert.Equal(DEngineErrorCode.StaleEpoch, error.Code);
        Assert.True(error.Code.IsRetryable());
        Assert.Equal(4UL, error.Index);
        Assert.Null(engine.GetString("d"));
        Assert.Equal(new LogPosition(3, 3), engine.Machine.LastApplied);
    }

    [Fact]
    public void Terms_falling_inside_one_chunk_reject_the_whole_chunk_with_StaleEpoch()
    {
        using var engine = EngineWithTwoEntries();

        var error = Rejected(engine, [Insert(3, "c", "3", term: 2), Insert(4, "d", "4", term: 1)]);

        Assert.Equal(DEngineErrorCode.StaleEpoch, error.Code);
        Assert.Equal(4UL, error.Index);
        Assert.Null(engine.GetString("c"));
        AssertUnchanged(engine);
    }

    [Fact]
    public void A_redelivered_entry_with_an_older_term_is_still_only_AlreadyApplied()
    {
        using var engine = EngineWithTwoEntries();
        engine.Machine.ApplyChunk([Insert(3, "c", "3", term: 2)]);

        var results = engine.Machine.ApplyChunk([Insert(2, "b", "2", term: 1), Insert(3, "c", "3", term: 2), Insert(4, "d", "4", term: 2)]);

        Assert.Equal([ApplyStatus.AlreadyApplied, ApplyStatus.AlreadyApplied, ApplyStatus.Applied], results.Select(r => r.Status));
        Assert.Equal(new LogPosition(4, 2), engine.Machine.LastApplied);
    }

    [Fact]
    public void An_empty_chunk_is_rejected_with_InvalidArgument()
    {
        using var engine = EngineWithTwoEntries();
        Assert.Equal(DEngineErrorCode.InvalidArgument, Rejected(engine, []).Code);
        AssertUnchanged(engine);
    }

    [Fact]
    public void A_command_that_is_not_a_WriteCommand_rejects_the_chunk_with_MalformedEntry_naming_the_entry()
    {
        using var engine = EngineWithTwoEntries();
        var garbage = new Entry { Index = 4, Term = 1, Payload = new EntryPayload { Command = B(0xFF, 0xFF, 0xFF) } };

        var error = Rejected(engine, [Insert(3, "c", "3"), garbage, Insert(5, "e", "5")]);

        Assert.Equal(DEngineErrorCode.MalformedEntry, error.Code);
        Assert.Equal(4UL, error.Index);
        Assert.Null(engine.GetString("c"));
        AssertUnchanged(engine);
    }

    [Fact]
    public void A_WriteCommand_without_an_operation_rejects_the_chunk_with_MalformedEntry()
    {
        using var engine = EngineWithTwoEntries();
        var empty = new Entry { Index = 4, Term = 1, Payload = new EntryPayload { Command = ByteString.Empty } };

        var error = Rejected(engine, [Insert(3, "c", "3"), empty]);

        Assert.Equal(DEngineErrorCode.MalformedEntry, error.Code);
        Assert.Equal(4UL, error.Index);
        AssertUnchanged(engine);
    }

    [Fact]
    public void An_entry_without_payload_rejects_the_chunk_with_MalformedEntry_naming_the_entry()
    {
        using var engine = EngineWithTwoEntries();

        var error = Rejected(engine, [Insert(3, "c", "3"), new Entry { Index = 4, Term = 1 }]);

        Assert.Equal(DEngineErrorCode.MalformedEntry, error.Code);
        Assert.Equal(4UL, error.Index);
        AssertUnchanged(engine);
    }

    [Fact]
    public void An_entry_with_an_empty_payload_oneof_rejects_the_chunk_with_MalformedEntry()
    {
        using var engine = EngineWithTwoEntries();

        var error = Rejected(engine, [new Entry { Index = 3, Term = 1, Payload = new EntryPayload() }]);

        Assert.Equal(DEngineErrorCode.MalformedEntry, error.Code);
        Assert.Equal(3UL, error.Index);
        AssertUnchanged(engine);
    }

    [Fact]
    public void ApplyCommands_rejects_a_command_without_operation_with_MalformedEntry()
    {
        using var engine = EngineWithTwoEntries();

        var error = Assert.Throws<DEngineException>(() => engine.Machine.ApplyCommands(
        [
            new ApplyEntry(3, 1, InsertCommand(B("c"), B("3"))),
            new ApplyEntry(4, 1, new WriteCommand()),
        ]));

        Assert.Equal(DEngineErrorCode.MalformedEntry, error.Code);
        Assert.Equal(4UL, error.Index);
        AssertUnchanged(engine);
    }

    public static TheoryData<string, Entry> EmptyKeyCommands => new()
    {
        { "insert", Insert(3, "", "v") },
        { "delete", Delete(3, "") },
        { "cas", Cas(3, "", null, "v") },
        { "expire", ExpireKeys(3, 1, [new ExpiredKey([], 1)]) },
    };

    [Theory]
    [MemberData(nameof(EmptyKeyCommands))]
    public void An_empty_key_rejects_the_chunk_with_InvalidArgument(string operation, Entry entry)
    {
        using var engine = EngineWithTwoEntries();

        var error = Rejected(engine, [entry]);

        Assert.True(error.Code == DEngineErrorCode.InvalidArgument, $"{operation}: {error.Code}");
        Assert.Equal(3UL, error.Index);
        AssertUnchanged(engine);
    }

    // Limits are checked when a command is sequenced (CommandLimits, called by the partition grain),
    // never when an entry is applied: an accepted entry applies on every engine whatever its limits.

    [Fact]
    public void Keys_and_values_at_the_limits_pass_the_sequencing_check_and_apply()
    {
        using var engine = EngineWithTwoEntries(o => { o.MaxKeyBytes = 8; o.MaxValueBytes = 16; });
        Entry[] chunk = [Insert(3, new string('k', 8), new string('v', 16)), Cas(4, new string('c', 8), null, new string('v', 16))];

        engine.Options.Limits.Validate(EntryDecoder.Decode(chunk, 0), 0);
        engine.Machine.ApplyChunk(chunk);

        Assert.Equal(new string('v', 16), engine.GetString(new string('k', 8)));
        Assert.Equal(new string('v', 16), engine.GetString(new string('c', 8)));
    }

    public static TheoryData<string, Entry> OversizeCommands => new()
    {
        { "insert key", Insert(4, new string('k', 9), "v") },
        { "insert value", Insert(4, "k", new string('v', 17)) },
        { "delete key", Delete(4, new string('k', 9)) },
        { "cas key", Cas(4, new string('k', 9), null, "v") },
        { "cas new value", Cas(4, "k", null, new string('v', 17)) },
        { "cas expected value", Cas(4, "k", new string('v', 17), "v") },
    };

    [Theory]
    [MemberData(nameof(OversizeCommands))]
    public void The_sequencing_check_rejects_an_oversize_key_or_value_with_LimitExceeded_naming_the_entry(string what, Entry oversize)
    {
        var limits = new CommandLimits(maxKeyBytes: 8, maxValueBytes: 16);

        var error = Assert.Throws<DEngineException>(() => limits.Validate(EntryDecoder.Decode([Insert(3, "c", "3"), oversize], 7), 7));

        Assert.True(error.Code == DEngineErrorCode.LimitExceeded, $"{what}: {error.Code}");
        Assert.Equal(4UL, error.Index);
        Assert.Equal(7, error.Partition);
    }

    [Theory]
    [MemberData(nameof(OversizeCommands))]
    public void Apply_does_not_check_limits_so_an_entry_accepted_elsewhere_applies_on_an_engine_with_lower_limits(string what, Entry oversize)
    {
        using var engine = EngineWithTwoEntries(o => { o.MaxKeyBytes = 8; o.MaxValueBytes = 16; });

        var results = engine.Machine.ApplyChunk([Insert(3, "c", "3"), oversize]);

        Assert.True(results.Count == 2, what);
        Assert.Equal(new LogPosition(4, 1), engine.Machine.LastApplied);
        Assert.Equal("3", engine.GetString("c"));
    }

    [Fact]
    public void ExpireKeys_keys_are_not_size_checked_when_sequenced()
    {
        var limits = new CommandLimits(maxKeyBytes: 8, maxValueBytes: 16);

        limits.Validate(EntryDecoder.Decode([ExpireKeys(3, 1, [new ExpiredKey(new byte[64], 1)])], 0), 0);
    }

    [Fact]
    public void Keys_written_under_a_higher_limit_are_cleaned_up_after_reopening_with_a_lower_one_together_with_client_writes()
    {
        using var engine = new TestEngine(o => o.MaxKeyBytes = 100);
        var now = engine.NowUnixMs;
        var longKey = new string('L', 80);
        engine.Machine.ApplyChunk([Insert(1, longKey, "old", ttlSecs: 1, expiresAtUnixMs: now + 1000)]);
        engine.Options.MaxKeyBytes = 16;
        engine.Reopen();
        engine.Clock.Advance(TimeSpan.FromSeconds(2));
        var due = engine.Machine.FindExpired(engine.NowUnixMs, 10);
        Entry[] chunk = [ExpireKeys(2, engine.NowUnixMs, due), Insert(3, "short", "new")];

        engine.Options.Limits.Validate(EntryDecoder.Decode(chunk, 0), 0);
        var results = engine.Machine.ApplyChunk(chunk);

        Assert.Equal(1, results[0].KeysExpired);
        Assert.Equal("new", engine.GetString("short"));
        Assert.Equal(0, engine.Machine.TtlIndexCount());
    }

    [Fact]
    public void Noop_and_membership_entries_advance_the_applied_index()
    {
        using var engine = new TestEngine();

        var results = engine.Machine.ApplyChunk([Noop(1), AddNode(2, 3), Insert(3, "k", "v"), Noop(4, term: 2)]);

        Assert.Equal([ApplyStatus.Applied, ApplyStatus.Applied, ApplyStatus.Applied, ApplyStatus.Applied], results.Select(r => r.Status));
        Assert.Equal(new LogPosition(4, 2), engine.Machine.LastApplied);
        Assert.Equal(1, engine.Machine.Count());

        engine.Machine.ApplyChunk([AddNode(5, 4, term: 3)]);
        Assert.Equal(new LogPosition(5, 3), engine.Machine.LastApplied);
        Assert.Equal(5UL, engine.Machine.ScanPrefix(Utf8("k")).Revision);
    }

    [Fact]
    public void A_ttl_of_ulong_MaxValue_saturates_and_the_key_stays_readable()
    {
        using var engine = new TestEngine();

        engine.Machine.ApplyChunk([Insert(1, "forever", "v", ttlSecs: ulong.MaxValue)]);

        Assert.Equal("v", engine.GetString("forever"));
        Assert.True(engine.Machine.TryGetExpiry(Utf8("forever"), out var expiry));
        Assert.Equal(ulong.MaxValue, expiry);
        engine.Clock.Advance(TimeSpan.FromDays(365 * 100));
        Assert.Equal("v", engine.GetString("forever"));
    }

    [Theory]
    [InlineData(0UL, 0UL, 0UL)]
    [InlineData(1_000UL, 5UL, 6_000UL)]
    [InlineData(ulong.MaxValue - 999, 1UL, ulong.MaxValue)]
    [InlineData(615UL, ulong.MaxValue / 1000, ulong.MaxValue)]
    [InlineData(616UL, ulong.MaxValue / 1000, ulong.MaxValue)]
    [InlineData(0UL, ulong.MaxValue / 1000, ulong.MaxValue / 1000 * 1000)]
    public void TtlClock_ExpiryFrom_adds_seconds_and_saturates_instead_of_overflowing(ulong now, ulong ttlSecs, ulong expected)
    {
        Assert.Equal(expected, TtlClock.ExpiryFrom(now, ttlSecs));
    }

    [Fact]
    public void Default_apply_is_durable_before_it_returns()
    {
        using var engine = new TestEngine();
        engine.Machine.ApplyChunk([Insert(1, "k", "v")]);
        Assert.Equal(1UL, engine.Machine.DurableIndex);
    }

    [Fact]
    public void Deferred_apply_lags_DurableIndex_until_SyncWal_catches_it_up()
    {
        using var engine = new TestEngine();
        engine.Machine.ApplyChunk([Insert(1, "a", "1")]);

        engine.Machine.ApplyChunk([Insert(2, "b", "2"), Insert(3, "c", "3")], ApplyDurability.Deferred);
        engine.Machine.ApplyChunk([Insert(4, "d", "4")], ApplyDurability.Deferred);

        Assert.Equal(new LogPosition(4, 1), engine.Machine.LastApplied);
        Assert.Equal(1UL, engine.Machine.DurableIndex);

        Assert.Equal(4UL, engine.Machine.SyncWal());
        Assert.Equal(4UL, engine.Machine.DurableIndex);
    }

    [Fact]
    public void Relaxed_durability_advances_DurableIndex_only_through_SyncWal()
    {
        using var engine = new TestEngine(o => o.Durability = DurabilityMode.Relaxed);

        engine.Machine.ApplyChunk([Insert(1, "a", "1"), Insert(2, "b", "2")]);
        Assert.Equal(0UL, engine.Machine.DurableIndex);

        Assert.Equal(2UL, engine.Machine.SyncWal());
        Assert.Equal(2UL, engine.Machine.DurableIndex);
    }

    [Fact]
    public void Invalid_options_are_rejected_naming_the_option()
    {
        var error = Assert.Throws<ArgumentException>(() => new RocksDbStateMachineOptions { MaxKeyBytes = 0 }.Validate());
        Assert.Equal(nameof(RocksDbStateMachineOptions.MaxKeyBytes), error.ParamName);
        error = Assert.Throws<ArgumentException>(() => new RocksDbStateMachineOptions { MaxValueBytes = -1 }.Validate());
        Assert.Equal(nameof(RocksDbStateMachineOptions.MaxValueBytes), error.ParamName);
    }
}
