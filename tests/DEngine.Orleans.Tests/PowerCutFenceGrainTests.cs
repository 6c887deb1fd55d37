using DEngine.Client;
using DEngine.Orleans.Hosting;
using DEngine.Orleans.Ownership;
using DEngine.StateMachine.Tests.Support;
using Microsoft.Extensions.DependencyInjection;
using Orleans.Storage;
using Orleans.TestingHost;
using Xunit.Abstractions;
using static DEngine.Orleans.Tests.Keys;

namespace DEngine.Orleans.Tests;

/// <summary>
/// Item 4 through the partition grain, with the power-cut file system failing fsync with EIO: the
/// writer of the unsynced chunk gets OutcomeUnknown, the partition stops serving, and once fsync
/// works again it reopens after a full sync and serves exactly what the disk holds (checked by
/// cutting the power afterwards, and in the other test by cutting it before the reopen).
/// </summary>
[Trait("Category", "PowerCut")]
public sealed class PowerCutFenceGrainTests(ITestOutputHelper output)
{
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(60);

    [Fact]
    public async Task PowerCut_fence_the_writer_gets_OutcomeUnknown_the_partition_stops_serving_and_reopens_serving_what_survives_a_cut()
    {
        using var fs = new PowerCutFs();
        await using var cluster = await SingleSilo.StartAsync(fs.MountPoint);
        var grain = cluster.Grain;
        var key = B("fenced-key");
        await grain.Put(key, B("v1"), 0);

        fs.FailFsync(); // every fsync fails, so the reopen cannot succeed yet either
        var lost = await Assert.ThrowsAsync<DEngineException>(() => grain.Put(key, B("v2"), 0));
        Assert.Equal(DEngineErrorCode.OutcomeUnknown, lost.Code);
        Assert.Equal(DEngineErrorCode.NotServing, (await Assert.ThrowsAsync<DEngineException>(() => grain.Get(key))).Code);
        Assert.Equal(DEngineErrorCode.NotServing, (await Assert.ThrowsAsync<DEngineException>(() => grain.Put(B("other"), B("x"), 0))).Code);

        fs.StopFailingFsync();
        var served = await ReadWhenServingAsync(grain, key);
        output.WriteLine($"served after the reopen: {S(served)}; {fs.Stats()}");
        Assert.Contains(S(served), new[] { "v1", "v2" });

        // What it served must be on disk: cut, reopen the partition, read again.
        output.WriteLine(fs.Cut());
        await cluster.DeactivateAsync();
        Assert.Equal(S(served), S(await ReadWhenServingAsync(grain, key)));
    }

    [Fact]
    public async Task PowerCut_fence_with_the_power_cut_before_the_reopen_serves_what_the_disk_holds()
    {
        using var fs = new PowerCutFs();
        await using var cluster = await SingleSilo.StartAsync(fs.MountPoint);
        var grain = cluster.Grain;
        var key = B("fenced-key");
        await grain.Put(key, B("v1"), 0);

        fs.FailFsync();
        Assert.Equal(DEngineErrorCode.OutcomeUnknown, (await Assert.ThrowsAsync<DEngineException>(() => grain.Put(key, B("v2"), 0))).Code);

        // v2 is in the memtable and the page cache only; the cut takes it from the disk.
        output.WriteLine(fs.Cut());
        fs.StopFailingFsync();
        Assert.Equal("v1", S(await ReadWhenServingAsync(grain, key)));
    }

    /// <summary>Reads until the partition serves again (polling another component's recovery, with a deadline).</summary>
    private static async Task<byte[]?> ReadWhenServingAsync(IStateMachineGrain grain, byte[] key)
    {
        var deadline = DateTime.UtcNow + Deadline;
        while (true)
        {
            try
            {
                return await grain.Get(key);
            }
            catch (DEngineException ex) when (ex.Code.IsRetryable() && DateTime.UtcNow < deadline)
            {
                await Task.Delay(50);
            }
        }
    }

    /// <summary>One in-process silo with one partition whose data directory is on the given path.</summary>
    private sealed class SingleSilo : IAsyncDisposable
    {
        private readonly InProcessTestCluster _cluster;

        private SingleSilo(InProcessTestCluster cluster)
        {
            _cluster = cluster;
        }

        public IStateMachineGrain Grain => _cluster.Client.GetGrain<IStateMachineGrain>(0);

        public static async Task<SingleSilo> StartAsync(string dataRoot)
        {
            var ownership = new SharedGrainStorage();
            var builder = new InProcessTestClusterBuilder(1);
            builder.ConfigureSilo((siloOptions, silo) =>
            {
                silo.Services.AddKeyedSingleton<IGrainStorage>(PartitionOwnerGrain.StorageName, ownership);
                silo.AddDEngine(o =>
                {
                    o.DataRoot = Path.Combine(dataRoot, siloOptions.SiloName);
                    o.Partitions = 1;
                    o.WriteBufferMiB = 4;
                    o.BlockCacheMiB = 8;
                    // The single-copy fence (the WAL fsync of the partition's own database); one silo, one copy.
                    o.Replication.Factor = 1;
                });
                silo.UseInMemoryReminderService();
            });
            // The client's DEngine registration brings the protobuf codecs.
            builder.ConfigureClient(client => client.AddDEngineClient(o => o.MaxRetries = 0));
            var cluster = builder.Build();
            await cluster.DeployAsync();
            return new SingleSilo(cluster);
        }

        /// <summary>Deactivates the partition grain (closing its database) and waits until it is gone.</summary>
        public async Task DeactivateAsync()
        {
            await _cluster.DeactivateAsync(Grain);
            await _cluster.WaitForDeactivationAsync(Grain);
        }

        public async ValueTask DisposeAsync() => await _cluster.DisposeAsync();
    }
}
