using System.Net;
using System.Net.Sockets;
using System.Runtime.CompilerServices;
using DEngine.Client;
using DEngine.Orleans.Hosting;
using DEngine.Orleans.Storage;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Orleans.Configuration;

namespace DEngine.Benchmarks.Harness;

/// <summary>
/// One in-process silo with DEngine (16 partitions, a temporary data directory, in-memory grain
/// storage for ownership records, in-memory reminders). The client is the silo's own
/// <see cref="IClusterClient"/>: calls take Orleans' local path (no socket, no gateway), so the
/// figures are the grain, scheduler and storage cost without network transport.
/// </summary>
public sealed class SiloHost : IAsyncDisposable
{
    public const int Partitions = 16;

    private const string DefaultClusterId = "dengine-bench";

    private readonly IHost _host;
    private readonly string _root;
    private readonly StrongBox<bool> _stopping;

    private SiloHost(IHost host, string root, string name, IPEndPoint siloEndpoint, StrongBox<bool> stopping)
    {
        _stopping = stopping;
        _host = host;
        _root = root;
        Name = name;
        SiloEndpoint = siloEndpoint;
        Grains = host.Services.GetRequiredService<IClusterClient>();
        Client = new DEngineClient(Grains);
        SyncLoop = host.Services.GetRequiredService<WalSyncLoop>();
    }

    public IClusterClient Grains { get; }

    public DEngineClient Client { get; }

    public WalSyncLoop SyncLoop { get; }

    /// <summary>The silo's name: its stable identity for partition ownership (what MovePartitionAsync takes).</summary>
    public string Name { get; }

    /// <summary>The silo-to-silo endpoint (a second silo joins through the first one's).</summary>
    public IPEndPoint SiloEndpoint { get; }

    /// <summary>One silo alone (the single-silo suites).</summary>
    public static Task<SiloHost> StartAsync(BenchOptions options) => StartAsync(options, "bench-silo-0", primary: null, replicationFactor: 1, DefaultClusterId);

    /// <summary>
    /// <paramref name="count"/> silos in this process forming one cluster over localhost: the first is
    /// the primary (development clustering), the others join through its endpoint. Calls between them
    /// go over loopback TCP like calls between machines. Every silo has its own data directory.
    /// <paramref name="replicationFactor"/> is DEngine:Replication:Factor on every silo: 1 is the
    /// single-copy path; above 1 MinReplicas is 2 (the default floor of Factor 3), so replication
    /// messages cross silos over loopback. Two clusters can run in one process side by side under
    /// different <paramref name="clusterId"/>s.
    /// </summary>
    public static async Task<IReadOnlyList<SiloHost>> StartClusterAsync(BenchOptions options, int count, int replicationFactor = 1, string clusterId = DefaultClusterId)
    {
        var silos = new List<SiloHost> { await StartAsync(options, "bench-silo-0", primary: null, replicationFactor, clusterId) };
        for (var i = 1; i < count; i++)
        {
            silos.Add(await StartAsync(options, $"bench-silo-{i}", silos[0].SiloEndpoint, replicationFactor, clusterId));
        }
        return silos;
    }

    private static async Task<SiloHost> StartAsync(BenchOptions options, string name, IPEndPoint? primary, int replicationFactor, string clusterId)
    {
        var root = Data.TempDir(options, "silo");
        var siloPort = FreePort();
        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true });
        builder.Logging.ClearProviders();
        builder.Logging.AddSimpleConsole();
        builder.Logging.SetMinimumLevel(LogLevel.Warning);
        // On 2 saturated cores the watchdog reports its own thread as late; that is the load, not a fault.
        builder.Logging.AddFilter("Orleans.Runtime.Watchdog", LogLevel.Error);
        // Stopping the bench's silos (the last one has nowhere to hand its partitions to) is not what is measured: quiet then.
        var stopping = new StrongBox<bool>();
        builder.Logging.AddFilter((_, _, level) => level >= (stopping.Value ? LogLevel.Critical : LogLevel.Warning));
        builder.UseOrleans(silo =>
        {
            silo.UseLocalhostClustering(siloPort, FreePort(), primary, serviceId: clusterId, clusterId: clusterId);
            silo.Configure<SiloOptions>(o => o.SiloName = name);
            silo.UseInMemoryReminderService();
            silo.AddDEngine(o =>
            {
                // A single copy per partition unless the suite asks for replica groups (put-replicated).
                o.Replication.Factor = replicationFactor;
                if (replicationFactor > 1)
                {
                    o.Replication.MinReplicas = 2;
                }
                o.DataRoot = root;
                o.Partitions = Partitions;
            });
        });
        var host = builder.Build();
        await host.StartAsync();
        var silo = new SiloHost(host, root, name, new IPEndPoint(IPAddress.Loopback, siloPort), stopping);
        // Activate every partition (opens its database) before anything is measured.
        await silo.Client.GetStatusAsync();
        return silo;
    }

    /// <summary>
    /// Quiets this silo's logs as <see cref="DisposeAsync"/> does, before it is stopped: a cluster
    /// being torn down logs, on the silos still up, replicas that cannot be reached (not measured).
    /// </summary>
    public void BeginStopping() => _stopping.Value = true;

    public async ValueTask DisposeAsync()
    {
        _stopping.Value = true;
        await _host.StopAsync();
        _host.Dispose();
        Data.DeleteDir(_root);
    }

    private static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }
}
