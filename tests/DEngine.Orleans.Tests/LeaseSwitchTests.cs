using DEngine.Client;
using DEngine.Orleans.Hosting;
using Orleans.TestingHost;
using static DEngine.Orleans.Tests.Keys;

namespace DEngine.Orleans.Tests;

/// <summary>
/// A one-silo cluster with TTLs switched off (DEngine:Lease:Enabled=false); a single copy per partition
/// (DEngine:Replication:Factor 1), as a one-silo deployment runs.
/// </summary>
public sealed class LeaseDisabledFixture : IAsyncLifetime
{
    public string Root { get; } = Path.Combine(Path.GetTempPath(), "dengine-nolease-" + Guid.NewGuid().ToString("N"));

    public InProcessTestCluster Cluster { get; private set; } = null!;

    public async Task InitializeAsync()
    {
        var builder = new InProcessTestClusterBuilder(1);
        builder.ConfigureSilo((siloOptions, silo) => silo.AddDEngine(o =>
        {
            o.DataRoot = Path.Combine(Root, siloOptions.SiloName);
            o.Partitions = ClusterFixture.Partitions;
            o.WriteBufferMiB = 4;
            o.BlockCacheMiB = 8;
            o.Lease.Enabled = false;
            o.Replication.Factor = 1;
        }));
        builder.ConfigureClient(client => client.AddDEngineClient());
        Cluster = builder.Build();
        await Cluster.DeployAsync();
    }

    public async Task DisposeAsync()
    {
        await Cluster.DisposeAsync();
        try
        {
            Directory.Delete(Root, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}

public sealed class LeaseSwitchTests(LeaseDisabledFixture fixture) : IClassFixture<LeaseDisabledFixture>
{
    [Fact]
    public async Task With_leases_disabled_a_ttl_put_fails_with_FeatureNotEnabled_before_it_is_sequenced()
    {
        var grain = fixture.Cluster.Client.GetGrain<IStateMachineGrain>(1);
        var key = InPartition(1, "nolease");
        var before = await grain.GetStatus();

        var error = await Assert.ThrowsAsync<DEngineException>(() => grain.Put(key, B("v"), 30));

        Assert.Equal(DEngineErrorCode.FeatureNotEnabled, error.Code);
        Assert.False(error.IsRetryable);
        Assert.Equal(before.AppliedIndex, (await grain.GetStatus()).AppliedIndex); // no logged entry
        Assert.Null(await grain.Get(key));

        await grain.Put(key, B("plain"), 0);
        Assert.Equal("plain", S(await grain.Get(key)));
    }
}
