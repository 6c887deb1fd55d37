using DEngine.Client;
using DEngine.Orleans.Hosting;
using DEngine.Orleans.Ownership;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Orleans;
using Orleans.Configuration;
using Orleans.Hosting;
using Orleans.Storage;
using Orleans.TestingHost;

namespace DEngine.Orleans.Tests;

/// <summary>
/// A 3-silo in-process cluster; every silo has its own data directory under one temporary root
/// (named after the silo, so a restarted silo finds its data again) and short membership timeouts.
/// A single copy per partition (DEngine:Replication:Factor 1, set explicitly: the default is 3): the
/// tests over it pin the single-copy path (ownership records and the holders registry, relocation
/// by snapshot fetch, ApplyChunk from an external log, a crashed silo's partitions unavailable until
/// it returns). <see cref="ReplicatedClusterFixture"/> runs the default, replica groups of three.
/// </summary>
public class ClusterFixture : IAsyncLifetime
{
    public const int Partitions = 8;

    /// <summary>DEngine:Replication:Factor of every silo: 1 here (the single-copy path; the product's default is 3).</summary>
    protected virtual int ReplicationFactor => 1;

    /// <summary>Silos the cluster starts with: 3 here.</summary>
    protected virtual int SiloCount => 3;

    /// <summary>DEngine:Partitions of every silo: <see cref="Partitions"/> here.</summary>
    protected virtual int PartitionCount => Partitions;

    /// <summary>More silo configuration of a derived fixture.</summary>
    protected virtual void ConfigureSiloExtra(ISiloBuilder silo)
    {
    }

    private readonly SharedGrainStorage _ownership = new();

    /// <summary>The configuration records' store, shared by the silos (ownership and holders records).</summary>
    public SharedGrainStorage Records => _ownership;

    public string Root { get; } = Path.Combine(Path.GetTempPath(), "dengine-cluster-" + Guid.NewGuid().ToString("N"));

    public InProcessTestCluster Cluster { get; private set; } = null!;

    public DEngineClient Client { get; private set; } = null!;

    public IGrainFactory Grains => Cluster.Client;

    public async Task InitializeAsync()
    {
        var builder = new InProcessTestClusterBuilder((short)SiloCount);
        builder.ConfigureSilo((siloOptions, silo) =>
        {
            silo.Services.AddKeyedSingleton<IGrainStorage>(PartitionOwnerGrain.StorageName, _ownership);
            silo.AddDEngine(o =>
            {
                // A single copy per partition unless a derived fixture says otherwise (ReplicatedClusterFixture).
                o.Replication.Factor = ReplicationFactor;
                o.Replication.LeaseDuration = TimeSpan.FromSeconds(2);
                o.Replication.HeartbeatInterval = TimeSpan.FromMilliseconds(500);
                o.Replication.ReplicaTimeout = TimeSpan.FromSeconds(3);
                // No balancing on its own: these tests pick partitions by the silo that leads them; the
                // balancing tests run rounds explicitly (PrimaryBalancer.RoundAsync).
                o.Replication.BalanceInterval = TimeSpan.Zero;
                o.DataRoot = Path.Combine(Root, siloOptions.SiloName);
                o.Partitions = PartitionCount;
                o.WriteBufferMiB = 4;
                o.BlockCacheMiB = 8;
                o.Lease.ReminderPeriod = TimeSpan.FromSeconds(1);
                o.HandoverWait = TimeSpan.FromSeconds(5);
            });
            ConfigureSiloExtra(silo);
            silo.UseInMemoryReminderService();
            silo.Configure<ReminderOptions>(o => o.MinimumReminderPeriod = TimeSpan.FromSeconds(1));
            silo.Configure<ClusterMembershipOptions>(o =>
            {
                o.ProbeTimeout = TimeSpan.FromSeconds(1);
                o.NumMissedProbesLimit = 2;
                o.NumVotesForDeathDeclaration = 1;
                o.TableRefreshTimeout = TimeSpan.FromSeconds(1);
                o.IAmAliveTablePublishTimeout = TimeSpan.FromSeconds(1);
            });
        });
        if (FileLoggerProvider.Directory is { } logs)
        {
            System.IO.Directory.CreateDirectory(logs);
            builder.ConfigureSiloHost((options, host) => host.Logging.AddProvider(new FileLoggerProvider(Path.Combine(logs, options.SiloName + ".log"))));
        }
        builder.ConfigureClient(client => client.AddDEngineClient(o => o.MaxRetries = 12));
        Cluster = builder.Build();
        await Cluster.DeployAsync();
        Client = Cluster.Client.ServiceProvider.GetRequiredService<DEngineClient>();
        for (var i = 0; i < Cluster.Silos.Count; i++)
        {
            _live[Cluster.Silos[i].Name] = (Cluster.Silos[i], i);
        }
    }

    private readonly Dictionary<string, (InProcessSiloHandle Handle, int Instance)> _live = [];
    private readonly Dictionary<string, int> _stopped = [];

    /// <summary>Silos started again by a test (not in the cluster's own list).</summary>
    protected IEnumerable<InProcessSiloHandle> Extra => _live.Values.Select(v => v.Handle).Where(h => !Cluster.Silos.Contains(h));

    /// <summary>Names of the silos running now (the first is the primary, which tests never stop).</summary>
    public IReadOnlyList<string> LiveSilos => [.. _live.OrderBy(p => p.Value.Instance).Select(p => p.Key)];

    /// <summary>Stops a silo: gracefully (it hands its partitions over) or, with <paramref name="kill"/>, without the handover.</summary>
    public async Task StopSiloAsync(string name, bool kill = false)
    {
        var (handle, instance) = _live[name];
        _live.Remove(name);
        _stopped[name] = instance;
        if (kill)
        {
            await Cluster.KillSiloAsync(handle);
        }
        else
        {
            await Cluster.StopSiloAsync(handle);
        }
    }

    /// <summary>Starts a stopped silo again under its name, on its data directory.</summary>
    public async Task StartSiloAsync(string name)
    {
        var instance = _stopped[name];
        _stopped.Remove(name);
        var handle = await Cluster.StartSiloAsync(instance, Cluster.Options);
        _live[name] = (handle, instance);
    }

    /// <summary>The services of silo <paramref name="name"/> (e.g. its primary balancer).</summary>
    public IServiceProvider ServicesOf(string name) => Cluster.Silos.Concat(Extra).First(s => s.Name == name).ServiceProvider;

    /// <summary>The silo name in a partition status ("NAME (ADDRESS)").</summary>
    public static string SiloOf(PartitionStatus status) => status.Silo[..status.Silo.IndexOf(' ', StringComparison.Ordinal)];

    public async Task DisposeAsync()
    {
        // Silos started again by a test are not in the cluster's own list: stop them here.
        foreach (var (handle, _) in _live.Values.Where(v => !Cluster.Silos.Contains(v.Handle)).ToArray())
        {
            await Cluster.StopSiloAsync(handle);
        }
        await Cluster.DisposeAsync();
        try
        {
            Directory.Delete(Root, recursive: true);
        }
        catch (IOException)
        {
            // Best effort: a silo that did not stop cleanly may still hold a file.
        }
    }
}

/// <summary>The same 3-silo cluster with replica groups of three (Factor 3, MinReplicas 2) and a short lease and replica timeout.</summary>
public sealed class ReplicatedClusterFixture : ClusterFixture
{
    /// <inheritdoc />
    protected override int ReplicationFactor => 3;

    /// <summary>Drops replication messages between chosen silos (a network split, in process).</summary>
    public Replication.ReplicationFaults Faults { get; } = new();

    /// <inheritdoc />
    protected override void ConfigureSiloExtra(ISiloBuilder silo) => silo.AddIncomingGrainCallFilter(Faults);

    /// <summary>The replica registry of silo <paramref name="name"/> (its copies).</summary>
    public DEngine.Orleans.Replication.ReplicaRegistry RegistryOf(string name) =>
        Cluster.Silos.Concat(Extra).First(s => s.Name == name).ServiceProvider.GetRequiredService<DEngine.Orleans.Replication.ReplicaRegistry>();
}

/// <summary>
/// Four silos, one partition with replica groups of three: one silo holds no copy, a target for
/// replica moves and drains that leaves the other partitions nothing to move.
/// </summary>
public sealed class SpareSiloClusterFixture : ClusterFixture
{
    /// <inheritdoc />
    protected override int ReplicationFactor => 3;

    /// <inheritdoc />
    protected override int SiloCount => 4;

    /// <inheritdoc />
    protected override int PartitionCount => 1;
}

[CollectionDefinition(Name)]
public sealed class SpareSiloClusterCollection : ICollectionFixture<SpareSiloClusterFixture>
{
    public const string Name = "spare-silo-cluster";
}

[CollectionDefinition(Name)]
public sealed class ReplicatedClusterCollection : ICollectionFixture<ReplicatedClusterFixture>
{
    public const string Name = "replicated-cluster";
}

[CollectionDefinition(Name)]
public sealed class ClusterCollection : ICollectionFixture<ClusterFixture>
{
    public const string Name = "cluster";
}
