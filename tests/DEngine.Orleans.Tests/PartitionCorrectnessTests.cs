using System.Diagnostics.Metrics;
using DEngine.Orleans.Diagnostics;
using static DEngine.Orleans.Tests.Keys;

namespace DEngine.Orleans.Tests;

/// <summary>One silo with a fake DEngine clock, small queue and chunk bounds, and a holdable WAL sync.</summary>
public sealed class PartitionCorrectnessFixture : IAsyncLifetime
{
    public const int MaxQueuedWrites = 64;
    public const long MaxQueuedBytes = 512 * 1024;
    public const long MaxChunkBytes = 256 * 1024;

    public OneSiloCluster Silo { get; private set; } = null!;

    public async Task InitializeAsync() => Silo = await OneSiloCluster.StartAsync(o =>
    {
        o.MaxQueuedWrites = MaxQueuedWrites;
        o.MaxQueuedBytes = MaxQueuedBytes;
        o.MaxChunkBytes = MaxChunkBytes;
    });

    public async Task DisposeAsync() => await Silo.DisposeAsync();
}

public sealed class PartitionCorrectnessTests(PartitionCorrectnessFixture fixture) : IClassFixture<PartitionCorrectnessFixture>
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(20);

    private OneSiloCluster Silo => fixture.Silo;

    private IStateMachineGrain Partition(int p) => Silo.Grains.GetGrain<IStateMachineGrain>(p);

    [Fact]
    public async Task No_read_and_no_acknowledgement_shows_a_chunk_that_is_applied_but_not_synced()
    {
        var grain = Partition(1);
        var k1 = InPartition(1, "durable");
        var k2 = InPartition(1, "durable");
        await grain.Put(InPartition(1, "warm"), B("0"), 0);
        try
        {
            Silo.Gate.Hold();
            var w1 = grain.Put(k1, B("v1"), 0);
            await Silo.Gate.WaitForHeldRoundsAsync(1); // chunk 1 applied, its fsync held

            // The race of issue 11: a read arriving now, then chunk 2 applied right after chunk 1's sync.
            var early = grain.Get(k2);
            var w2 = grain.Put(k2, B("v2"), 0);
            // Answered after both were taken in (one client's calls reach the activation in order).
            await grain.GetStatus().WaitAsync(Bound);
            Silo.Gate.Pass(1);
            await w1.WaitAsync(Bound);
            await Silo.Gate.WaitForHeldRoundsAsync(2); // chunk 2 applied, its fsync held

            Assert.Null(await early.WaitAsync(Bound));
            Assert.False(w2.IsCompleted, "a write was acknowledged before its chunk was synced");
            Assert.Equal("v1", S(await grain.Get(k1).WaitAsync(Bound)));
            Assert.Null(await grain.Get(k2).WaitAsync(Bound));
            var both = await grain.GetMulti([k1, k2]).WaitAsync(Bound);
            Assert.Equal("v1", S(both[0]));
            Assert.Null(both[1]);
            var scan = await grain.ScanPrefix(B("durable-")).WaitAsync(Bound);
            Assert.DoesNotContain(scan.Entries, e => e.Key.Span.SequenceEqual(k2));
            Assert.Contains(scan.Entries, e => e.Key.Span.SequenceEqual(k1));
            Assert.False((await grain.GetTtl(k2).WaitAsync(Bound)).Exists);

            Silo.Gate.Open();
            var index2 = await w2.WaitAsync(Bound);
            Assert.Equal("v2", S(await grain.Get(k2)));
            Assert.Equal(index2, (await grain.ScanPrefix(B("durable-"))).Revision);
        }
        finally
        {
            Silo.Gate.Open();
        }
    }

    [Fact]
    public async Task A_cas_or_ttl_queued_behind_a_slow_fsync_is_judged_when_it_is_sequenced_not_when_it_arrived()
    {
        var grain = Partition(2);
        var key = InPartition(2, "cas");
        await grain.Put(key, B("v"), 10);
        try
        {
            Silo.Gate.Hold();
            var blocker = grain.Put(InPartition(2, "blocker"), B("x"), 0);
            await Silo.Gate.WaitForHeldRoundsAsync(1);
            var cas = grain.CompareAndSwap(key, B("v"), B("new"));
            var lease = InPartition(2, "lease");
            var leasePut = grain.Put(lease, B("l"), 10);
            // Answered after both were taken in (one client's calls reach the activation in order).
            await grain.GetStatus().WaitAsync(Bound);
            // They wait in the queue while the key's TTL runs out (reads now report it absent).
            Silo.Clock.Advance(TimeSpan.FromSeconds(11));
            var sequencedAt = (ulong)Silo.Clock.GetUtcNow().ToUnixTimeMilliseconds();

            Silo.Gate.Open();

            Assert.False(await cas.WaitAsync(Bound));
            await blocker.WaitAsync(Bound);
            await leasePut.WaitAsync(Bound);
            Assert.Null(await grain.Get(key));
            // The TTL counts from when the put was sequenced, not from when it arrived.
            Assert.Equal(sequencedAt + 10_000, (await grain.GetTtl(lease)).ExpiresAtUnixMs);
        }
        finally
        {
            Silo.Gate.Open();
        }
    }

    [Fact]
    public async Task GetTtl_reports_the_remaining_time_from_one_clock_reading_even_when_the_clock_passes_expiry_during_the_call()
    {
        var grain = Partition(3);
        var key = InPartition(3, "ttl");
        await grain.Put(key, B("v"), 2);
        Silo.Clock.Advance(TimeSpan.FromSeconds(1));

        KeyTtl ttl;
        // Every clock reading now moves the clock 1.5 s: a second reading would be past the expiry.
        Silo.Clock.AutoAdvanceAmount = TimeSpan.FromMilliseconds(1500);
        try
        {
            ttl = await grain.GetTtl(key);
        }
        finally
        {
            Silo.Clock.AutoAdvanceAmount = TimeSpan.Zero;
        }

        Assert.True(ttl.Exists);
        Assert.InRange(ttl.RemainingMs!.Value, 1, 2000);
        Assert.False((await grain.GetTtl(key)).Exists);
    }

    [Fact]
    public async Task Under_open_loop_overload_the_queue_stops_at_its_bounds_the_excess_gets_Overloaded_and_all_accepted_writes_are_applied()
    {
        const int partition = 4;
        var grain = Partition(partition);
        var overloaded = 0L;
        using var listener = new MeterListener();
        listener.InstrumentPublished = (instrument, l) =>
        {
            if (instrument.Meter.Name == DEngineMetrics.MeterName && instrument.Name == "dengine.writes.overloaded")
            {
                l.EnableMeasurementEvents(instrument);
            }
        };
        listener.SetMeasurementEventCallback<long>((_, value, _, _) => Interlocked.Add(ref overloaded, value));
        listener.Start();
        var before = await grain.GetStatus();
        try
        {
            // Entries bound: 200 small writers against a queue of 64 while the disk is stuck.
            Silo.Gate.Hold();
            var first = grain.Put(InPartition(partition, "first"), B("x"), 0);
            await Silo.Gate.WaitForHeldRoundsAsync(1);
            var small = Enumerable.Range(0, 200).Select(_ => InPartition(partition, "small")).ToArray();
            var smallWrites = small.Select(k => grain.Put(k, new byte[1024], 0)).ToArray();
            var refused = await RefusedAsync(smallWrites, 200 - PartitionCorrectnessFixture.MaxQueuedWrites);

            Assert.All(refused, e => Assert.True(e.Code == DEngineErrorCode.Overloaded && e.IsRetryable, e.Message));
            Silo.Gate.Open();
            await first.WaitAsync(Bound);
            await Task.WhenAll(smallWrites.Where(t => t.Status != TaskStatus.Faulted)).WaitAsync(Bound);
            var accepted = small.Where((_, i) => smallWrites[i].Status != TaskStatus.Faulted).ToArray();
            var values = await grain.GetMulti(small);
            for (var i = 0; i < small.Length; i++)
            {
                Assert.Equal(smallWrites[i].Status != TaskStatus.Faulted, values[i] is not null);
            }
            Assert.Equal(PartitionCorrectnessFixture.MaxQueuedWrites, accepted.Length);

            // Bytes bound: 100 KiB writes against 512 KiB of queue; chunks of at most 256 KiB.
            var middle = await grain.GetStatus();
            Silo.Gate.Hold();
            var second = grain.Put(InPartition(partition, "second"), B("x"), 0);
            await Silo.Gate.WaitForHeldRoundsAsync(1);
            var large = Enumerable.Range(0, 20).Select(_ => InPartition(partition, "large")).ToArray();
            var largeWrites = large.Select(k => grain.Put(k, new byte[100 * 1024], 0)).ToArray();
            var refusedLarge = await RefusedAsync(largeWrites, 15);
            Silo.Gate.Open();
            await second.WaitAsync(Bound);
            await Task.WhenAll(largeWrites.Where(t => t.Status != TaskStatus.Faulted)).WaitAsync(Bound);
            Assert.Equal(15, largeWrites.Count(t => t.IsFaulted));
            Assert.All(refusedLarge, e => Assert.Equal(DEngineErrorCode.Overloaded, e.Code));
            var after = await grain.GetStatus();
            // "second" is one chunk; five 100 KiB writes need at least three more chunks of <= 256 KiB.
            Assert.True(after.ChunksApplied - middle.ChunksApplied >= 4, $"{after.ChunksApplied - middle.ChunksApplied} chunks");
            Assert.Equal(before.WritesApplied + 1 + 64 + 1 + 5, after.WritesApplied);
            Assert.Equal(200 - 64 + 15, Interlocked.Read(ref overloaded));

            // A value larger than a whole chunk still forms a chunk of its own.
            var huge = InPartition(partition, "huge");
            await grain.Put(huge, new byte[300 * 1024], 0);
            Assert.Equal(300 * 1024, (await grain.Get(huge))!.Length);
        }
        finally
        {
            Silo.Gate.Open();
        }
    }

    /// <summary>Waits (bounded) until <paramref name="expected"/> of the writes have failed; returns their errors.</summary>
    private static async Task<List<DEngineException>> RefusedAsync(Task<ulong>[] writes, int expected)
    {
        var deadline = DateTime.UtcNow + Bound;
        while (writes.Count(t => t.IsFaulted) < expected && DateTime.UtcNow < deadline)
        {
            await Task.Delay(10);
        }
        return writes.Where(t => t.IsFaulted).Select(t => Assert.IsType<DEngineException>(t.Exception!.InnerException)).ToList();
    }
}
