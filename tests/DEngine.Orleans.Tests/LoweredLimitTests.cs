using System.Diagnostics.Metrics;
using DEngine.Orleans.Diagnostics;
using Microsoft.Extensions.Time.Testing;
using static DEngine.Orleans.Tests.Keys;

namespace DEngine.Orleans.Tests;

public sealed class LoweredLimitTests
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(20);

    [Fact]
    public async Task Keys_written_under_a_higher_MaxKeyBytes_are_cleaned_up_after_a_restart_with_a_lower_one_and_client_writes_in_the_same_chunk_succeed()
    {
        const int partition = 5;
        var start = DateTimeOffset.UtcNow;
        var longKeys = Enumerable.Range(0, 3).Select(_ => InPartition(partition, "long-" + new string('x', 100))).ToArray();
        var first = await OneSiloCluster.StartAsync(o => o.MaxKeyBytes = 256, new FakeTimeProvider(start));
        try
        {
            var grain = first.Grains.GetGrain<IStateMachineGrain>(partition);
            foreach (var key in longKeys)
            {
                await grain.Put(key, B("old"), 3600);
            }
        }
        finally
        {
            await first.StopAsync();
        }

        // Restarted on the same data with a lower limit. Activated before the TTL runs out, so its
        // expiry timer is an hour (of real time) away and the cleanup below is the only one.
        var clock = new FakeTimeProvider(start);
        await using var second = await OneSiloCluster.StartAsync(o => o.MaxKeyBytes = 64, clock, first.Root, first.Ownership);
        var restarted = second.Grains.GetGrain<IStateMachineGrain>(partition);
        await restarted.GetStatus();
        clock.Advance(TimeSpan.FromHours(2));
        var shortKey = InPartition(partition, "short");
        try
        {
            second.Gate.Hold();
            var blocker = restarted.Put(InPartition(partition, "blocker"), B("x"), 0);
            await second.Gate.WaitForHeldRoundsAsync(1);
            // Both queue behind the held chunk and are sequenced into one chunk.
            var planned = await restarted.CleanupExpired().WaitAsync(Bound);
            var put = restarted.Put(shortKey, B("new"), 0);
            // Answered after the put was taken in (one client's calls reach the activation in order).
            await restarted.GetStatus().WaitAsync(Bound);
            second.Gate.Open();

            Assert.Equal(longKeys.Length, planned);
            var blockerIndex = await blocker.WaitAsync(Bound);
            // Queued together behind the held chunk, so drained into one chunk: cleanup, then the put.
            Assert.Equal(blockerIndex + 2, await put.WaitAsync(Bound));
        }
        finally
        {
            second.Gate.Open();
        }

        var status = await restarted.GetStatus();
        Assert.Equal(longKeys.Length, status.KeysExpired);
        Assert.Equal("new", S(await restarted.Get(shortKey)));
        // Client writes over the new limit are still refused when they are sequenced.
        var refused = await Assert.ThrowsAsync<DEngineException>(() => restarted.Put(longKeys[0], B("again"), 0));
        Assert.Equal(DEngineErrorCode.LimitExceeded, refused.Code);
    }

    [Fact]
    public async Task The_clock_skew_gauge_shows_how_far_the_partitions_time_floor_is_ahead_of_this_silos_clock()
    {
        const int partition = 6;
        var start = DateTimeOffset.UtcNow;
        var first = await OneSiloCluster.StartAsync(clock: new FakeTimeProvider(start + TimeSpan.FromSeconds(20)));
        try
        {
            await first.Grains.GetGrain<IStateMachineGrain>(partition).Put(InPartition(partition, "fast"), B("v"), 0);
        }
        finally
        {
            await first.StopAsync();
        }

        // The same data on a silo whose clock is 20 s behind the one that stamped it.
        await using var second = await OneSiloCluster.StartAsync(clock: new FakeTimeProvider(start), root: first.Root, ownership: first.Ownership);
        var skew = await ObservedSkewAsync(second.Grains.GetGrain<IStateMachineGrain>(partition), partition);

        Assert.Equal(20_000, skew);
    }

    /// <summary>The dengine.clock.skew gauge for <paramref name="partition"/> (activating it first).</summary>
    private static async Task<long> ObservedSkewAsync(IStateMachineGrain grain, int partition)
    {
        await grain.GetStatus();
        long skew = -1;
        using var listener = new MeterListener();
        listener.InstrumentPublished = (instrument, l) =>
        {
            if (instrument.Meter.Name == DEngineMetrics.MeterName && instrument.Name == "dengine.clock.skew")
            {
                l.EnableMeasurementEvents(instrument);
            }
        };
        listener.SetMeasurementEventCallback<long>((_, value, tags, _) =>
        {
            foreach (var tag in tags)
            {
                if (tag.Key == "partition" && tag.Value is int p && p == partition)
                {
                    skew = value;
                }
            }
        });
        listener.Start();
        listener.RecordObservableInstruments();
        return skew;
    }
}
