using DEngine.StateMachine.Tests.Support;
using static DEngine.StateMachine.Tests.Support.Log;
using static DEngine.StateMachine.Tests.Support.TestEngine;

namespace DEngine.StateMachine.Tests;

/// <summary>d-engine's RocksDB state-machine cases: serving state, prefix scans and CompareAndSwap.</summary>
public sealed class RocksDbCasesTests
{
    [Fact]
    public void Get_fails_with_NotServing_after_Stop_and_works_after_Start()
    {
        using var engine = new TestEngine();
        var machine = engine.Machine;
        machine.Start();
        machine.ApplyChunk([Insert(1, "test_key", "test_value")]);
        Assert.Equal("test_value", engine.GetString("test_key"));

        machine.Stop();

        var error = Assert.Throws<DEngineException>(() => machine.Get(Utf8("test_key")));
        Assert.Equal(DEngineErrorCode.NotServing, error.Code);
        Assert.True(error.IsRetryable);
        machine.Start();
        Assert.Equal("test_value", engine.GetString("test_key"));
    }

    [Fact]
    public void Every_read_and_apply_fails_with_NotServing_while_stopped_and_nothing_is_applied()
    {
        using var engine = new TestEngine(o => o.PartitionId = 5);
        var machine = engine.Machine;
        machine.ApplyChunk([Insert(1, "k", "v")]);
        machine.Stop();

        var attempts = new Action[]
        {
            () => machine.GetMulti([Utf8("k")]),
            () => machine.ScanPrefix(Utf8("k")),
            () => machine.TryGetExpiry(Utf8("k"), out _),
            () => machine.Count(),
            () => machine.ApplyChunk([Insert(2, "k", "changed")]),
        };
        foreach (var attempt in attempts)
        {
            var error = Assert.Throws<DEngineException>(attempt);
            Assert.Equal(DEngineErrorCode.NotServing, error.Code);
            Assert.Equal(5, error.Partition);
        }

        machine.Start();
        Assert.Equal("v", engine.GetString("k"));
        Assert.Equal(new LogPosition(1, 1), machine.LastApplied);
    }

    [Fact]
    public void A_disposed_machine_fails_reads_with_NotServing_and_disposes_again_safely()
    {
        using var engine = new TestEngine();
        var machine = engine.Machine;
        machine.ApplyChunk([Insert(1, "k", "v")]);

        machine.Dispose();

        Assert.False(machine.IsRunning);
        Assert.Equal(DEngineErrorCode.NotServing, Assert.Throws<DEngineException>(() => machine.Get(Utf8("k"))).Code);
        Assert.Equal(DEngineErrorCode.NotServing, Assert.Throws<DEngineException>(() => machine.GetMulti([Utf8("k")])).Code);
        machine.Stop();
        machine.Dispose();
    }

    [Fact]
    public void ScanPrefix_returns_only_keys_with_the_prefix_in_key_order()
    {
        using var engine = new TestEngine();
        engine.Machine.ApplyChunk([Insert(1, "/services/node2", "b"), Insert(2, "/services/node1", "a"), Insert(3, "/other/key", "x")]);

        var scan = engine.Machine.ScanPrefix(Utf8("/services/"));

        Assert.Equal(["/services/node1", "/services/node2"], scan.Entries.Select(e => Text(e.Key)));
        Assert.Equal(["a", "b"], scan.Entries.Select(e => Text(e.Value)));
    }

    [Fact]
    public void ScanPrefix_upper_bound_excludes_the_adjacent_namespace()
    {
        using var engine = new TestEngine();
        // '/' + 1 == '0', and "/t" sorts right after "/services/...": neither may leak in.
        engine.Machine.ApplyChunk([Insert(1, "/services/last", "1"), Insert(2, "/t/trap", "2"), Insert(3, "/services0", "3")]);

        var scan = engine.Machine.ScanPrefix(Utf8("/services/"));

        Assert.Equal(["/services/last"], scan.Entries.Select(e => Text(e.Key)));
    }

    [Fact]
    public void ScanPrefix_of_a_missing_namespace_returns_empty()
    {
        using var engine = new TestEngine();
        engine.Machine.ApplyChunk([Insert(1, "/services/a", "1")]);

        var scan = engine.Machine.ScanPrefix(Utf8("/missing/"));

        Assert.Empty(scan.Entries);
        Assert.Equal(1UL, scan.Revision);
    }

    [Fact]
    public void ScanPrefix_revision_is_the_applied_index()
    {
        using var engine = new TestEngine();
        engine.Machine.ApplyChunk([Insert(1, "/r/a", "1"), Insert(2, "/r/b", "2"), Insert(3, "/r/c", "3")]);

        var scan = engine.Machine.ScanPrefix(Utf8("/r/"));

        Assert.Equal(3, scan.Entries.Count);
        Assert.Equal(3UL, scan.Revision);

        engine.Machine.ApplyChunk([Noop(4)]);
        Assert.Equal(4UL, engine.Machine.ScanPrefix(Utf8("/r/")).Revision);
    }

    [Fact]
    public void ScanPrefix_carries_past_a_trailing_0xFF_in_the_prefix()
    {
        using var engine = new TestEngine();
        byte[] match = [0x61, 0xFF, (byte)'n', (byte)'o', (byte)'d', (byte)'e'];
        byte[] decoy = [0x62, (byte)'d', (byte)'e', (byte)'c', (byte)'o', (byte)'y'];
        engine.Machine.ApplyChunk([Insert(1, B(match), B("node")), Insert(2, B(decoy), B("decoy"))]);

        var scan = engine.Machine.ScanPrefix([0x61, 0xFF]);

        var entry = Assert.Single(scan.Entries);
        Assert.Equal(match, entry.Key);
    }

    [Fact]
    public void ScanPrefix_of_an_empty_prefix_returns_empty()
    {
        using var engine = new TestEngine();
        engine.Machine.ApplyChunk([Insert(1, "/a", "1"), Insert(2, "b", "2")]);

        var scan = engine.Machine.ScanPrefix([]);

        Assert.Empty(scan.Entries);
        Assert.Equal(2UL, scan.Revision);
    }

    [Fact]
    public void ScanPrefix_of_an_all_0xFF_prefix_scans_to_the_end_without_an_upper_bound()
    {
        using var engine = new TestEngine();
        byte[] match = [0xFF, 0xFF, 0x01];
        byte[] below = [0xFE, 0xAA];
        engine.Machine.ApplyChunk([Insert(1, B(match), B("m")), Insert(2, B(below), B("b"))]);

        var scan = engine.Machine.ScanPrefix([0xFF, 0xFF]);

        var entry = Assert.Single(scan.Entries);
        Assert.Equal(match, entry.Key);
    }

    [Theory]
    [InlineData(new byte[] { 0x61 }, new byte[] { 0x62 })]
    [InlineData(new byte[] { 0x61, 0xFF }, new byte[] { 0x62 })]
    [InlineData(new byte[] { 0x61, 0xFF, 0xFF }, new byte[] { 0x62 })]
    [InlineData(new byte[] { 0x00, 0xFE, 0xFF }, new byte[] { 0x00, 0xFF })]
    public void PrefixRange_Successor_drops_trailing_0xFF_and_increments_the_last_byte(byte[] prefix, byte[] expected)
    {
        Assert.Equal(expected, PrefixRange.Successor(prefix));
    }

    [Theory]
    [InlineData(new byte[] { 0xFF })]
    [InlineData(new byte[] { 0xFF, 0xFF, 0xFF })]
    public void PrefixRange_Successor_of_an_all_0xFF_prefix_is_null(byte[] prefix)
    {
        Assert.Null(PrefixRange.Successor(prefix));
    }

    [Fact]
    public void Cas_with_a_matching_expected_value_succeeds_and_writes_the_new_value()
    {
        using var engine = new TestEngine();
        engine.Machine.ApplyChunk([Insert(1, "k", "old")]);

        var results = engine.Machine.ApplyChunk([Cas(2, "k", "old", "new")]);

        Assert.True(Assert.Single(results).Succeeded);
        Assert.Equal("new", engine.GetString("k"));
    }

    [Fact]
    public void Cas_with_a_mismatching_expected_value_fails_and_preserves_the_value()
    {
        using var engine = new TestEngine();
        engine.Machine.ApplyChunk([Insert(1, "k", "current")]);

        var results = engine.Machine.ApplyChunk([Cas(2, "k", "wrong_expected", "new")]);

        Assert.Equal(ApplyStatus.CompareFailed, Assert.Single(results).Status);
        Assert.Equal("current", engine.GetString("k"));
    }

    [Fact]
    public void Cas_expecting_absent_on_an_absent_key_succeeds()
    {
        using var engine = new TestEngine();

        var results = engine.Machine.ApplyChunk([Cas(1, "new_key", null, "value")]);

        Assert.True(Assert.Single(results).Succeeded);
        Assert.Equal("value", engine.GetString("new_key"));
    }

    [Fact]
    public void Cas_expecting_absent_on_an_existing_key_fails()
    {
        using var engine = new TestEngine();
        engine.Machine.ApplyChunk([Insert(1, "k", "exists")]);

        var results = engine.Machine.ApplyChunk([Cas(2, "k", null, "new")]);

        Assert.False(Assert.Single(results).Succeeded);
        Assert.Equal("exists", engine.GetString("k"));
    }

    [Fact]
    public void Cas_expecting_an_empty_value_matches_an_empty_value_but_not_an_absent_key()
    {
        using var engine = new TestEngine();
        engine.Machine.ApplyChunk([Insert(1, "empty", "")]);

        var results = engine.Machine.ApplyChunk([Cas(2, "empty", "", "filled"), Cas(3, "absent", "", "filled")]);

        Assert.Equal([ApplyStatus.Applied, ApplyStatus.CompareFailed], results.Select(r => r.Status));
        Assert.Equal("filled", engine.GetString("empty"));
        Assert.Null(engine.GetString("absent"));
    }

    [Fact]
    public void Two_Cas_on_one_key_in_one_chunk_the_second_sees_the_first_write()
    {
        using var engine = new TestEngine();
        engine.Machine.ApplyChunk([Insert(1, "k", "v0")]);

        var results = engine.Machine.ApplyChunk([Cas(2, "k", "v0", "v1"), Cas(3, "k", "v0", "v2")]);

        Assert.Equal([ApplyStatus.Applied, ApplyStatus.CompareFailed], results.Select(r => r.Status));
        Assert.Equal("v1", engine.GetString("k"));
    }

    [Fact]
    public void Cas_sees_an_insert_and_a_delete_earlier_in_the_same_chunk()
    {
        using var engine = new TestEngine();

        var results = engine.Machine.ApplyChunk(
        [
            Insert(1, "a", "v1"),
            Cas(2, "a", "v1", "v2"),
            Insert(3, "b", "x"),
            Delete(4, "b"),
            Cas(5, "b", null, "recreated"),
        ]);

        Assert.Equal([ApplyStatus.Applied, ApplyStatus.Applied, ApplyStatus.Applied, ApplyStatus.Applied, ApplyStatus.Applied], results.Select(r => r.Status));
        Assert.Equal("v2", engine.GetString("a"));
        Assert.Equal("recreated", engine.GetString("b"));
    }

    [Fact]
    public void Delete_removes_the_key()
    {
        using var engine = new TestEngine();
        engine.Machine.ApplyChunk([Insert(1, "k", "v")]);
        engine.Machine.ApplyChunk([Delete(2, "k")]);
        Assert.Null(engine.GetString("k"));
        Assert.Equal(0, engine.Machine.Count());
    }

    [Fact]
    public void Delete_of_an_absent_key_is_applied_and_advances_the_index()
    {
        using var engine = new TestEngine();
        var results = engine.Machine.ApplyChunk([Delete(1, "never")]);
        Assert.Equal(ApplyStatus.Applied, Assert.Single(results).Status);
        Assert.Equal(new LogPosition(1, 1), engine.Machine.LastApplied);
    }

    [Fact]
    public void A_second_machine_on_the_same_directory_fails_with_StorageFailure()
    {
        using var engine = new TestEngine();
        var error = Assert.Throws<DEngineException>(() => new RocksDbStateMachine(engine.Path, engine.Options));
        Assert.Equal(DEngineErrorCode.StorageFailure, error.Code);
    }
}
