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
                await grain.Put(key, B("old"), 1);
            }
        }
        finally
        {
            await first.StopAsync();
        }

        // Restarted on the same data with a lower limit, on a silo whose clock is 3 s behind.
        var clock = new FakeTimeProvider(start - TimeSpan.FromSeconds(3));
        await using var second = await OneSiloCluster.StartAsync(o => o.MaxKeyBytes = 64, clock, first.Root, first.Ownership);
        var restarted = second.Grains.GetGrain<IStateMachineGrain>(partition);
        var skew = await ObservedSkewAsync(restarted, partition);
        Assert.InRange(skew, 2_000, 3_000); // the floor (the first silo's stamps) is ~3 s ahead of this clock
        clock.Advance(TimeSpan.FromSeconds(5));
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
