using System.Net;
using System.Reflection;
using DEngine.Client;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Orleans.Configuration;

namespace DEngine.Cluster.Tests;

/// <summary>
/// A throw-away redis-server and three real silo processes on loopback using the Redis profile
/// (membership, reminders and configuration records in Redis), plus an Orleans client in the test.
/// Replication is the default (no flag: replica groups of three, MinReplicas 2), so every partition
/// has a copy on each silo and its primary moves only to one of them.
/// </summary>
public class RedisClusterFixture() : SiloProcessCluster(SiloCount), IAsyncLifetime
{
    public const int Partitions = 6;
    public const int SiloCount = 3;

    private ManagedProcess? _redis;
    private IHost? _clientHost;

    public string Root { get; } = Path.Combine(Path.GetTempPath(), "dengine-cluster-tests-" + Guid.NewGuid().ToString("N"));

    public int RedisPort { get; } = Ports.Free();

    public SiloSpec[] Silos { get; } = Enumerable.Range(0, SiloCount)
        .Select(i => new SiloSpec($"silo{i}", Ports.Free(), Ports.Free()))
        .ToArray();

    public DEngineClient Client { get; private set; } = null!;

    public async Task InitializeAsync()
    {
        Directory.CreateDirectory(Root);
        var redisServer = FindRedisServer();
        // Durable, as the silos require of a Redis holding ownership records: every write logged and fsynced.
        _redis = ManagedProcess.Start(redisServer, ["--port", RedisPort.ToString(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes", "--appendfsync", "always", "--dir", Root], "Ready to accept connections");
        await _redis.WaitReadyAsync(TimeSpan.FromSeconds(30));
        await Task.WhenAll(Enumerable.Range(0, SiloCount).Select(StartSiloAsync));

        _clientHost = await StartClientHostAsync(Silos);
        Client = _clientHost.Services.GetRequiredService<DEngineClient>();
        var grains = _clientHost.Services.GetRequiredService<IClusterClient>();
        LoadClient = new DEngineClient(grains, OneAttempt);
    }

    /// <summary>
    /// A client host whose static gateway list holds only <paramref name="gateways"/>' gateways, for a
    /// test that must keep calls off a silo (a paused process keeps its TCP connections open, so a
    /// client routing a grain through its gateway waits out every response timeout until it resumes).
    /// Its <see cref="DEngineClient"/> retries nothing (see <see cref="LoadClient"/>). Dispose the host.
    /// </summary>
    public async Task<(IHost Host, DEngineClient Client)> ConnectAsync(IEnumerable<SiloSpec> gateways)
    {
        var host = await StartClientHostAsync(gateways);
        return (host, new DEngineClient(host.Services.GetRequiredService<IClusterClient>(), OneAttempt));
    }

    private static async Task<IHost> StartClientHostAsync(IEnumerable<SiloSpec> gateways)
    {
        var builder = Host.CreateApplicationBuilder();
        builder.Logging.ClearProviders();
        builder.UseOrleansClient(client => client
            .UseStaticClustering(gateways.Select(s => new IPEndPoint(IPAddress.Loopback, s.GatewayPort)).ToArray())
            .Configure<ClusterOptions>(o =>
            {
                o.ClusterId = "dengine";
                o.ServiceId = "dengine";
            })
            // An Orleans client does not fail calls in flight through a gateway that was killed: they
            // wait for the response timeout (30 s by default), and every writer routed through the
            // killed silo stalled that long after each kill. 5 s, as the README recommends.
            .Configure<ClientMessagingOptions>(o => o.ResponseTimeout = TimeSpan.FromSeconds(5))
            .AddDEngineClient(o =>
            {
                o.MaxRetries = 10;
                o.MaxBackoff = TimeSpan.FromSeconds(1);
            }));
        var host = builder.Build();
        await host.StartAsync();
        return host;
    }

    /// <summary>
    /// Options of a client that sends each request once: no read retries, and a write deadline that
    /// has passed when the first attempt fails (writes are otherwise retried for 30 s).
    /// </summary>
    private static DEngineClientOptions OneAttempt => new() { MaxRetries = 0, CallDeadline = TimeSpan.FromTicks(1) };

    /// <summary>A client that does not retry: a load keeps moving while some partitions are away.</summary>
    public DEngineClient LoadClient { get; private set; } = null!;

    /// <summary>Flags every silo of this fixture gets beyond the profile's (none here: the default replication).</summary>
    protected virtual IEnumerable<string> ExtraSiloArgs => [];

    /// <summary>Starts silo <paramref name="index"/> on its name, ports and data directory, and waits until it is ready.</summary>
    public override async Task StartSiloAsync(int index)
    {
        var spec = Silos[index];
        await StartProcessAsync(index, spec.Name,
        [
            SiloDll, "--environment", "Redis", "--Redis:ConnectionString", $"127.0.0.1:{RedisPort}",
            "--name", spec.Name, "--data-dir", Path.Combine(Root, spec.Name),
            "--silo-port", spec.SiloPort.ToString(), "--gateway-port", spec.GatewayPort.ToString(),
            "--partitions", Partitions.ToString(), "--no-dashboard",
            "--Silo:Membership:ProbeTimeout", "00:00:01",
            "--Silo:Membership:NumMissedProbesLimit", "2",
            "--Silo:Membership:NumVotesForDeathDeclaration", "1",
            "--Silo:Membership:TableRefreshTimeout", "00:00:01",
            "--Silo:Membership:IAmAliveTablePublishTimeout", "00:00:02",
            .. ExtraSiloArgs,
        ]);
    }

    /// <summary>
    /// Waits (polling, with a deadline) until every partition serves with a replica on every silo and
    /// none catching up, so a test starts from a whole group whatever the one before it killed.
    /// </summary>
    public async Task<IReadOnlyList<DEngine.Orleans.PartitionStatus>> SettledAsync(TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        IReadOnlyList<DEngine.Orleans.PartitionStatus>? last = null;
        while (true)
        {
            try
            {
                last = await Client.GetStatusAsync();
                if (last.Count == Partitions && last.All(s => s.Replication is not { } r || (ReplicasOf(s).Length == SiloCount && !r.Contains("catching up", StringComparison.Ordinal))))
                {
                    return last;
                }
            }
            catch (Exception ex) when (ex is DEngineException or OrleansException or TimeoutException)
            {
                // A partition still taking over.
            }
            if (DateTime.UtcNow > deadline)
            {
                throw new TimeoutException($"the partitions did not settle with {SiloCount} replicas each within {timeout}: {(last is null ? "no complete status" : string.Join(" | ", last.Select(s => $"{s.Partition}@{s.Silo} {s.Replication}")))}");
            }
            await Task.Delay(200);
        }
    }

    /// <summary>The silo names of a replicated partition's replicas (from its status' "vN: a*, b, c; ..." text); empty for a single copy.</summary>
    public static string[] ReplicasOf(DEngine.Orleans.PartitionStatus status) =>
        status.Replication is not { } replication ? [] :
        [.. replication[(replication.IndexOf(':', StringComparison.Ordinal) + 1)..].Split(';')[0].Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(r => r.TrimEnd('*'))];

    /// <summary>The silo name in a partition status ("NAME (ADDRESS)"): the primary's, for a replicated partition.</summary>
    public static string SiloOf(DEngine.Orleans.PartitionStatus status) => status.Silo[..status.Silo.IndexOf(' ', StringComparison.Ordinal)];

    public async Task DisposeAsync()
    {
        if (_clientHost is not null)
        {
            try
            {
                await _clientHost.StopAsync(new CancellationTokenSource(TimeSpan.FromSeconds(5)).Token);
            }
            catch (OperationCanceledException)
            {
            }
            _clientHost.Dispose();
        }
        KillAll();
        _redis?.Dispose();
        try
        {
            Directory.Delete(Root, recursive: true);
        }
        catch (IOException)
        {
        }
    }

    /// <summary>The redis-server binary on PATH.</summary>
    internal static string FindRedisServer()
    {
        foreach (var dir in (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':').Append("/usr/bin").Append("/usr/sbin"))
        {
            var candidate = Path.Combine(dir, "redis-server");
            if (File.Exists(candidate))
            {
                return candidate;
            }
        }
        throw new InvalidOperationException("redis-server is not installed: these tests need it (apt-get install redis-server; .ci/run does this).");
    }

    /// <summary>The built silo host of this configuration (the tests run it with <c>dotnet</c>).</summary>
    internal static string SiloDll
    {
        get
        {
            var configuration = typeof(RedisClusterFixture).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>().First(a => a.Key == "Configuration").Value!;
            var dir = new DirectoryInfo(AppContext.BaseDirectory);
            while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "DEngine.Orleans.sln")))
            {
                dir = dir.Parent;
            }
            if (dir is null)
            {
                throw new InvalidOperationException("cannot find the repository root (DEngine.Orleans.sln) above " + AppContext.BaseDirectory);
            }
            return Path.Combine(dir.FullName, "src", "DEngine.Silo", "bin", configuration, "net10.0", "DEngine.Silo.dll");
        }
    }
}

/// <summary>
/// The README's Redis example: the same cluster with replica groups of three (Factor 3, MinReplicas 2;
/// the default, passed explicitly so the failover tests keep it whatever the default becomes). A
/// collection of its own, because its tests kill two of the three silos.
/// </summary>
public sealed class ReplicatedRedisClusterFixture : RedisClusterFixture
{
    /// <inheritdoc />
    protected override IEnumerable<string> ExtraSiloArgs => ["--DEngine:Replication:Factor", "3"];
}

[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class ReplicatedClusterCollection : ICollectionFixture<ReplicatedRedisClusterFixture>
{
    public const string Name = "replicated-redis-cluster";
}

public sealed record SiloSpec(string Name, int SiloPort, int GatewayPort);
