using DEngine.Protos.Common;
using DEngine.Protos.Storage;
using DEngine.StateMachine.Tests.Support;
using Google.Protobuf;
using static DEngine.StateMachine.Tests.Support.Log;
using static DEngine.StateMachine.Tests.Support.TestEngine;

namespace DEngine.StateMachine.Tests;

/// <summary>d-engine's shared state-machine suite (StateMachineTestSuite), one test per case, each on a fresh directory.</summary>
public sealed class SharedSuiteTests
{
    [Fact]
    public void A_fresh_machine_serves_and_Stop_and_Start_toggle_IsRunning()
    {
        using var engine = new TestEngine();
        var machine = engine.Machine;
        Assert.True(machine.IsRunning);
        machine.Start();
        Assert.True(machine.IsRunning);
        machine.Stop();
        Assert.False(machine.IsRunning);
        machine.Start();
        Assert.True(machine.IsRunning);
    }

    [Fact]
    public void Insert_then_Delete_makes_the_key_readable_then_absent()
    {
        using var engine = new TestEngine();
        engine.Machine.ApplyChunk([Insert(1, "test_key", "test_value")]);
        Assert.Equal("test_value", engine.GetString("test_key"));

        engine.Machine.ApplyChunk([Delete(2, "test_key")]);
        Assert.Null(engine.GetString("test_key"));
    }

    [Fact]
    public void One_chunk_applies_its_entries_in_order_and_records_the_last_position()
    {
        using var engine = new TestEngine();
        var results = engine.Machine.ApplyChunk(
        [
            Insert(1, "key1", "value1"),
            Insert(2, "key2", "value2"),
            Delete(3, "key1"),
            Insert(4, "key3", "value3"),
        ]);

        Assert.Equal([1UL, 2, 3, 4], results.Select(r => r.Index));
        Assert.All(results, r => Assert.Equal(ApplyStatus.Applied, r.Status));
        Assert.Null(engine.GetString("key1"));
        Assert.Equal("value2", engine.GetString("key2"));
        Assert.Equal("value3", engine.GetString("key3"));
        Assert.Equal(new LogPosition(4, 1), engine.Machine.LastApplied);
    }

    [Fact]
    public void Cas_on_lock_takes_it_when_absent_moves_it_on_match_and_keeps_it_on_mismatch()
    {
        using var engine = new TestEngine();
        var machine = engine.Machine;
        machine.Start();

        var first = machine.ApplyChunk([Cas(1, "lock", null, "owner1")]);
        Assert.Equal(ApplyStatus.Applied, first[0].Status);
        Assert.True(first[0].Succeeded);
        Assert.Equal("owner1", engine.GetString("lock"));

        var second = machine.ApplyChunk([Cas(2, "lock", "owner1", "owner2")]);
        Assert.True(second[0].Succeeded);
        Assert.Equal("owner2", engine.GetString("lock"));

        var third = machine.ApplyChunk([Cas(3, "lock", "wrong", "owner3")]);
        Assert.Equal(ApplyStatus.CompareFailed, third[0].Status);
        Assert.False(third[0].Succeeded);
        Assert.Equal("owner2", engine.GetString("lock"));
        // A failed CAS still consumes its index.
        Assert.Equal(new LogPosition(3, 1), machine.LastApplied);
        machine.Stop();
    }

    [Fact]
    public void LastApplied_is_zero_after_Reset_and_follows_the_applied_entries()
    {
        using var engine = new TestEngine();
        engine.Machine.Reset();
        Assert.Equal(new LogPosition(0, 0), engine.Machine.LastApplied);
        Assert.Equal(LogPosition.None, engine.Machine.LastApplied);

        engine.Machine.ApplyChunk([Insert(1, "a", "1"), Insert(2, "b", "2"), Insert(3, "c", "3")]);
        Assert.Equal(new LogPosition(3, 1), engine.Machine.LastApplied);
    }

    [Fact]
    public void Data_and_LastApplied_survive_Stop_Dispose_and_reopen()
    {
        using var engine = new TestEngine();
        engine.Machine.ApplyChunk([Insert(1, "drop_test_key1", "v1"), Insert(2, "drop_test_key2", "v2"), Insert(3, "drop_test_key3", "v3")]);
        var before = engine.Machine.LastApplied;
        engine.Machine.Stop();

        engine.Reopen();

        Assert.True(engine.Machine.IsRunning);
        Assert.Equal(new LogPosition(3, 1), before);
        Assert.Equal(before, engine.Machine.LastApplied);
        Assert.Equal("v1", engine.GetString("drop_test_key1"));
        Assert.Equal("v2", engine.GetString("drop_test_key2"));
        Assert.Equal("v3", engine.GetString("drop_test_key3"));
    }

    [Fact]
    public void Data_and_LastApplied_survive_Dispose_without_Stop_even_for_deferred_chunks()
    {
        using var engine = new TestEngine();
        engine.Machine.ApplyChunk([Insert(1, "drop_meta_key1", "v1"), Insert(2, "drop_meta_key2", "v2")]);
        engine.Machine.ApplyChunk([Insert(3, "drop_meta_key3", "v3")], ApplyDurability.Deferred);

        engine.Reopen();

        Assert.Equal(3UL, engine.Machine.LastApplied.Index);
        Assert.Equal("v1", engine.GetString("drop_meta_key1"));
        Assert.Equal("v3", engine.GetString("drop_meta_key3"));
        Assert.Equal(3UL, engine.Machine.DurableIndex);
    }

    [Fact]
    public void Snapshot_metadata_survives_reopen()
    {
        using var engine = new TestEngine();
        engine.Machine.ApplyChunk([Insert(1, "a", "1"), Insert(2, "b", "2")]);
        var metadata = new SnapshotMetadata
        {
            LastIncluded = new LogId { Index = 2, Term = 1 },
            Checksum = ByteString.CopyFrom(new byte[32]),
        };
        engine.Machine.PersistSnapshotMetadata(metadata);
        engine.Machine.Flush();

        engine.Reopen();

        Assert.Equal(metadata, engine.Machine.SnapshotMetadata);
        Assert.Equal(new LogPosition(2, 1), engine.Machine.LastApplied);
    }

    [Fact]
    public void Reset_clears_data_applied_position_and_snapshot_metadata_and_keeps_serving()
    {
        using var engine = new TestEngine();
        var machine = engine.Machine;
        machine.ApplyChunk([Insert(1, "key1", "value1"), Insert(2, "key2", "value2"), Insert(3, "key3", "value3")]);
        machine.PersistSnapshotMetadata(new SnapshotMetadata { LastIncluded = new LogId { Index = 3, Term = 1 }, Checksum = ByteString.CopyFrom(new byte[32]) });
        Assert.NotNull(machine.SnapshotMetadata);

        machine.Reset();

        Assert.True(machine.IsRunning);
        Assert.Null(engine.GetString("key1"));
        Assert.Null(engine.GetString("key2"));
        Assert.Null(engine.GetString("key3"));
        Assert.Equal(LogPosition.None, machine.LastApplied);
        Assert.Null(machine.SnapshotMetadata);
        Assert.Equal(0, machine.Count());

        machine.ApplyChunk([Insert(1, "new_key1", "n1"), Insert(2, "new_key2", "n2")]);
        Assert.Equal("n1", engine.GetString("new_key1"));
        Assert.Equal("n2", engine.GetString("new_key2"));
        Assert.Equal(new LogPosition(2, 1), machine.LastApplied);

        // The reset is durable, not just a cleared cache.
        engine.Reopen();
        Assert.Null(engine.Machine.SnapshotMetadata);
        Assert.Null(engine.GetString("key3"));
        Assert.Equal(new LogPosition(2, 1), engine.Machine.LastApplied);
    }

    [Fact]
    public void Reset_of_a_stopped_machine_leaves_it_stopped()
    {
        using var engine = new TestEngine();
        engine.Machine.ApplyChunk([Insert(1, "k", "v")]);
        engine.Machine.Stop();

        engine.Machine.Reset();

        Assert.False(engine.Machine.IsRunning);
        engine.Machine.Start();
        Assert.Null(engine.GetString("k"));
    }

    [Fact]
    public void GetMulti_returns_values_in_request_order()
    {
        using var engine = new TestEngine();
        engine.Machine.ApplyChunk([Insert(1, "key_a", "value_a"), Insert(2, "key_b", "value_b"), Insert(3, "key_c", "value_c")]);

        var values = engine.Machine.GetMulti([Utf8("key_c"), Utf8("key_a"), Utf8("key_b")]);

        Assert.Equal(["value_c", "value_a", "value_b"], values.Select(Text));
    }

    [Fact]
    public void GetMulti_returns_null_for_absent_keys()
    {
        using var engine = new TestEngine();
        var values = engine.Machine.GetMulti([Utf8("ghost_1"), Utf8("ghost_2")]);
        Assert.Equal([null, null], values);
    }

    [Fact]
    public void GetMulti_of_no_keys_returns_empty()
    {
        using var engine = new TestEngine();
        Assert.Empty(engine.Machine.GetMulti([]));
    }

    [Fact]
    public void GetMulti_with_partial_hits_returns_null_only_for_the_missing_keys()
    {
        using var engine = new TestEngine();
        engine.Machine.ApplyChunk([Insert(1, "present", "v")]);

        var values = engine.Machine.GetMulti([Utf8("missing_before"), Utf8("present"), Utf8("missing_after")]);

        Assert.Equal([null, "v", null], values.Select(Text));
    }

    [Fact]
    public void GetMulti_repeats_a_duplicated_key()
    {
        using var engine = new TestEngine();
        engine.Machine.ApplyChunk([Insert(1, "k", "v")]);
        Assert.Equal(["v", null, "v"], engine.Machine.GetMulti([Utf8("k"), Utf8("x"), Utf8("k")]).Select(Text));
    }

    public static TheoryData<string, string[], string[], string[]> CoherenceCases => new()
    {
        {
            "/service/payment/",
            ["addr", "version", "health"],
            ["10.0.0.1:8080", "v2.2", "healthy"],
            ["10.0.0.2:8080", "v2.3", "starting"]
        },
        {
            "/election/",
            ["leader", "term", "lease_expire"],
            ["node-3", "42", "1748600000"],
            ["node-5", "43", "1748603600"]
        },
        {
            "/quota/tenant-A/",
            ["limit", "used", "window_start"],
            ["1000", "850", "1748599900"],
            ["1000", "0", "1748603500"]
        },
        {
            "/svc/",
            ["addr", "version", "health"],
            ["10.0.0.1:8080", "v1", "healthy"],
            ["10.0.0.2:8080", "v2", "starting"]
        },
    };

    [Theory]
    [MemberData(nameof(CoherenceCases))]
    public void GetMulti_after_a_second_chunk_returns_only_the_second_chunks_values(string prefix, string[] names, string[] v1, string[] v2)
    {
        using var engine = new TestEngine();
        var keys = names.Select(n => Utf8(prefix + n)).ToArray();
        engine.Machine.ApplyChunk(names.Select((n, i) => Insert((ulong)i + 1, prefix + n, v1[i])).ToArray());
        Assert.Equal(v1, engine.Machine.GetMulti(keys).Select(Text));

        engine.Machine.ApplyChunk(names.Select((n, i) => Insert((ulong)(names.Length + i + 1), prefix + n, v2[i])).ToArray());

        Assert.Equal(v2, engine.Machine.GetMulti(keys).Select(Text));
    }

    [Fact]
    public async Task GetMulti_never_mixes_two_chunks_while_a_writer_alternates_them()
    {
        using var engine = new TestEngine();
        var machine = engine.Machine;
        string[] names = ["/svc/addr", "/svc/version", "/svc/health"];
        string[][] versions = [["10.0.0.1:8080", "v1", "healthy"], ["10.0.0.2:8080", "v2", "starting"]];
        var keys = names.Select(Utf8).ToArray();

        var index = 0UL;
        void WriteVersion(int version)
        {
            var chunk = new Entry[names.Length];
            for (var i = 0; i < names.Length; i++)
            {
                chunk[i] = Insert(++index, names[i], versions[version][i]);
            }
            machine.ApplyChunk(chunk);
        }

        WriteVersion(0);
        using var readerDone = new CancellationTokenSource();
        var writer = Task.Run(() =>
        {
            for (var n = 1; !readerDone.IsCancellationRequested; n++)
            {
                WriteVersion(n % 2);
            }
        });

        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        var seen = new int[2];
        var reads = 0;
        try
        {
            while (reads < 5_000 || seen[0] == 0 || seen[1] == 0)
            {
                Assert.True(DateTime.UtcNow < deadline, $"reader saw v1 {seen[0]} and v2 {seen[1]} times in {reads} reads before the deadline");
                var values = machine.GetMulti(keys).Select(Text).ToArray();
                var version = Array.FindIndex(versions, v => v.SequenceEqual(values));
                Assert.True(version >= 0, $"torn read: [{string.Join(", ", values)}]");
                seen[version]++;
                reads++;
            }
        }
        finally
        {
            readerDone.Cancel();
            await writer;
        }
    }
}
