using System.Diagnostics.Metrics;
using DEngine.Orleans.Diagnostics;
using static DEngine.Orleans.Tests.Keys;

namespace DEngine.Orleans.Tests;

[Collection(ClusterCollection.Name)]
public sealed class TtlTests(ClusterFixture fixture)
{
    [Fact]
    public async Task A_key_with_ttl_is_readable_before_expiry_absent_after_and_physically_deleted_by_the_expiry_timer()
    {
        var grain = fixture.Grains.GetGrain<IStateMachineGrain>(4);
        var key = InPartition(4, "ttl");
        var before = await grain.GetStatus();

        await grain.Put(key, B("short-lived"), 1);
        var ttl = await grain.GetTtl(key);
        Assert.True(ttl.Exists);
        var expiresAt = ttl.ExpiresAtUnixMs!.Value;
        if ((ulong)DateTimeOffset.UtcNow.ToUnixTimeMilliseconds() < expiresAt)
        {
            Assert.Equal("short-lived", S(await grain.Get(key)));
        }

        // Waiting for real time here: the partition's own timer must fire. Poll with a deadline.
        var deadline = DateTime.UtcNow.AddSeconds(15);
        PartitionStatus status;
        do
        {
            status = await grain.GetStatus();
            if ((ulong)DateTimeOffset.UtcNow.ToUnixTimeMilliseconds() >= expiresAt)
            {
                Assert.Null(await grain.Get(key));
            }
        }
        while (status.KeysExpired == before.KeysExpired && DateTime.UtcNow < deadline);

        Assert.True(status.KeysExpired > before.KeysExpired, "the expired key was not deleted within 15 s");
        Assert.Null(await grain.Get(key));
        Assert.False((await grain.GetTtl(key)).Exists);
    }

    [Fact]
    public async Task Cleanup_reports_expired_keys_and_lag_and_the_ttl_key_gauge_on_the_DEngine_meter()
    {
        long expired = 0;
        var lagSamples = 0;
        long ttlKeys = 0;
        using var listener = new MeterListener();
        listener.InstrumentPublished = (instrument, l) =>
        {
            if (instrument.Meter.Name == DEngineMetrics.MeterName)
            {
                l.EnableMeasurementEvents(instrument);
            }
        };
        listener.SetMeasurementEventCallback<long>((instrument, value, _, _) =>
        {
            if (instrument.Name == "dengine.ttl.keys_expired")
            {
                Interlocked.Add(ref expired, value);
            }
            else if (instrument.Name == "dengine.ttl.keys")
            {
                Interlocked.Add(ref ttlKeys, value);
            }
        });
        listener.SetMeasurementEventCallback<double>((instrument, _, _, _) =>
        {
            if (instrument.Name == "dengine.ttl.cleanup_lag")
            {
                Interlocked.Increment(ref lagSamples);
            }
        });
        listener.Start();

        var grain = fixture.Grains.GetGrain<IStateMachineGrain>(2);
        await grain.Put(InPartition(2, "metric-long"), B("v"), 3600);
        listener.RecordObservableInstruments();
        Assert.True(Interlocked.Read(ref ttlKeys) >= 1, "the ttl key gauge did not count the key");

        await grain.Put(InPartition(2, "metric"), B("v"), 1);
        var deadline = DateTime.UtcNow.AddSeconds(15);
        while (Interlocked.Read(ref expired) == 0 && DateTime.UtcNow < deadline)
        {
            await Task.Delay(50);
        }

        Assert.True(Interlocked.Read(ref expired) >= 1, "no expired key was reported within 15 s");
        Assert.True(Volatile.Read(ref lagSamples) >= 1);
    }

    [Fact]
    public async Task A_key_without_ttl_is_never_removed_by_cleanup()
    {
        var grain = fixture.Grains.GetGrain<IStateMachineGrain>(4);
        var key = InPartition(4, "keep");
        await grain.Put(key, B("forever"), 0);

        await grain.CleanupExpired();

        Assert.Equal("forever", S(await grain.Get(key)));
    }
}
