using DEngine.Protos.Client;
using DEngine.Protos.Common;
using Google.Protobuf;
using static DEngine.Orleans.Tests.Keys;

namespace DEngine.Orleans.Tests;

[Collection(ClusterCollection.Name)]
public sealed class SequencingTests(ClusterFixture fixture)
{
    [Fact]
    public async Task Fifty_concurrent_cas_incrementers_end_with_the_exact_count_and_one_entry_per_attempt()
    {
        const int writers = 50;
        const int incrementsEach = 4;
        var key = InPartition(3, "counter");
        var grain = fixture.Grains.GetGrain<IStateMachineGrain>(3);
        await fixture.Client.PutAsync(key, B("0"));
        var before = await grain.GetStatus();
        var attempts = 0;

        await Task.WhenAll(Enumerable.Range(0, writers).Select(async _ =>
        {
            for (var done = 0; done < incrementsEach;)
            {
                var current = await fixture.Client.GetAsync(key);
                var next = B((int.Parse(S(current)) + 1).ToString());
                Interlocked.Increment(ref attempts);
                if (await fixture.Client.CompareAndSwapAsync(key, current, next))
                {
                    done++;
                }
            }
        }));

        var after = await grain.GetStatus();
        Assert.Equal(writers * incrementsEach, int.Parse(S(await fixture.Client.GetAsync(key))));
        // Every CAS attempt, matched or not, is exactly one log entry: none lost, none doubled.
        Assert.Equal((ulong)attempts, after.AppliedIndex - before.AppliedIndex);
    }

    [Fact]
    public async Task Concurrent_puts_to_one_partition_are_committed_in_fewer_chunks_than_writes()
    {
        const int writes = 400;
        var grain = fixture.Grains.GetGrain<IStateMachineGrain>(5);
        var before = await grain.GetStatus();

        var keys = Enumerable.Range(0, writes).Select(_ => InPartition(5, "gc")).ToArray();

        await Task.WhenAll(keys.Select((key, i) => grain.Put(key, B("v" + i), 0)));

        var after = await grain.GetStatus();
        var chunks = after.ChunksApplied - before.ChunksApplied;
        Assert.Equal(writes, after.WritesApplied - before.WritesApplied);
        Assert.True(chunks < writes, $"{writes} concurrent puts took {chunks} chunks");
    }

    [Fact]
    public async Task Puts_acknowledge_consecutive_indexes_and_a_read_sees_every_acknowledged_write()
    {
        var grain = fixture.Grains.GetGrain<IStateMachineGrain>(6);
        var keys = Enumerable.Range(0, 100).Select(_ => InPartition(6, "ack")).ToArray();
        var indexes = await Task.WhenAll(keys.Select(k => grain.Put(k, k, 0)));

        Assert.Equal(indexes.Length, indexes.Distinct().Count());
        var values = await grain.GetMulti(keys);
        Assert.All(values.Zip(keys), p => Assert.Equal(p.Second, p.First));
    }

    [Fact]
    public async Task ApplyChunk_from_an_external_driver_applies_d_engine_entries_skips_redelivery_and_refuses_a_gap()
    {
        var grain = fixture.Grains.GetGrain<IStateMachineGrain>(7);
        var status = await grain.GetStatus();
        var next = status.AppliedIndex + 1;
        var k1 = InPartition(7, "ext");
        var k2 = InPartition(7, "ext");
        Entry Insert(ulong index, byte[] key, string value) => new()
        {
            Index = index,
            Term = status.Epoch,
            Payload = new EntryPayload
            {
                Command = new WriteCommand { Insert = new WriteCommand.Types.Insert { Key = ByteString.CopyFrom(key), Value = ByteString.CopyFromUtf8(value) } }.ToByteString(),
            },
        };
        var chunk = new[]
        {
            Insert(next, k1, "a"),
            new Entry { Index = next + 1, Term = status.Epoch, Payload = new EntryPayload { Noop = new Noop() } },
            Insert(next + 2, k2, "b"),
        };

        var outcomes = await grain.ApplyChunk(chunk);
        Assert.Equal([EntryStatus.Applied, EntryStatus.Applied, EntryStatus.Applied], outcomes.Select(o => o.Status));
        Assert.Equal("a", S(await grain.Get(k1)));
        Assert.Equal("b", S(await grain.Get(k2)));

        var redelivered = await grain.ApplyChunk(chunk);
        Assert.All(redelivered, o => Assert.Equal(EntryStatus.AlreadyApplied, o.Status));

        var gap = await Assert.ThrowsAsync<DEngineException>(() => grain.ApplyChunk([Insert(next + 5, k1, "gap")]));
        Assert.Equal(DEngineErrorCode.ChunkGap, gap.Code);
        Assert.Equal(7, gap.Partition);
        Assert.Equal("a", S(await grain.Get(k1)));
        Assert.Equal(next + 2, (await grain.GetStatus()).AppliedIndex);

        var malformed = new Entry { Index = next + 3, Term = status.Epoch, Payload = new EntryPayload { Command = ByteString.CopyFrom(0xFF, 0xFF, 0xFF) } };
        var bad = await Assert.ThrowsAsync<DEngineException>(() => grain.ApplyChunk([malformed]));
        Assert.Equal(DEngineErrorCode.MalformedEntry, bad.Code);
        Assert.Equal(next + 3, bad.Index);
        Assert.Equal(next + 2, (await grain.GetStatus()).AppliedIndex);
    }
}
