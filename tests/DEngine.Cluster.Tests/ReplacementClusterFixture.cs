using System.Net;
using DEngine.Client;
using DEngine.Cluster.Tests.Support;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Orleans.Configuration;

namespace DEngine.Cluster.Tests;

/// <summary>
/// Four real silo processes of the Redis profile with replica groups of three and
/// DEngine:Replication:ReplaceAfter shortened to <see cref="ReplaceAfter"/>, so one silo is always
/// free to take a replacement; failure detection tuned to a few seconds as in <see cref="RedisClusterFixture"/>.
/// </summary>
public sealed class ReplacementClusterFixture() : SiloProcessCluster(SiloCount), IAsyncLifetime
{
    public const int Partitions = 6;
    public const int SiloCount = 4;
    public const int Factor = 3;

    /// <summary>ReplaceAfter of the silos: above the replica timeout (6 s), short enough for a test.</summary>
    public static readonly TimeSpan ReplaceAfter = TimeSpan.FromSeconds(10);

    private ManagedProcess? _redis;
    private IHost? _clientHost;

    public string Root { get; } = Path.Combine(Path.GetTempPath(), "dengine-replace-tests-" + Guid.NewGuid().ToString("N"));

    public int RedisPort { get; } = Ports.Free();

    public SiloSpec[] Silos { get; } = Enumerable.Range(0, SiloCount).Select(i => new SiloSpec($"silo{i}", Ports.Free(), Ports.Free())).ToArray();

    public DEngineClient Client { get; private set; } = null!;

    /// <summary>The data directory of silo <paramref name="index"/>.</summary>
    public string DataDir(int index) => Path.Combine(Root, Silos[index].Name);

    /// <summary>True while silo <paramref name="index"/>'s data directory holds a copy (database or log) of <paramref name="partition"/>.</summary>
    public bool HasCopyOnDisk(int index, int partition) =>
        Directory.Exists(Path.Combine(DataDir(index), "partitions", partition.ToString(System.Globalization.CultureInfo.InvariantCulture)))
        || Directory.Exists(Path.Combine(DataDir(index), "logs", partition.ToString(System.Globalization.CultureInfo.InvariantCulture)));

    public async Task InitializeAsync()
    {
        Directory.CreateDirectory(Root);
        _redis = ManagedProcess.Start(RedisClusterFixture.FindRedisServer(), ["--port", RedisPort.ToString(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes", "--appendfsync", "always", "--dir", Root], "Ready to accept connections");
        await _redis.WaitReadyAsync(TimeSpan.FromSeconds(30));
        await Task.WhenAll(Enumerable.Range(0, SiloCount).Select(StartSiloAsync));
        var builder = Host.CreateApplicationBuilder();
        builder.Logging.ClearProviders();
        builder.UseOrleansClient(client => client
            .UseStaticClustering(Silos.Select(s => new IPEndPoint(IPAddress.Loopback, s.GatewayPort)).ToArray())
            .Configure<ClusterOptions>(o =>
            {
                o.ClusterId = "dengine";
                o.ServiceId = "dengine";
            })
            .Configure<ClientMessagingOptions>(o => o.ResponseTimeout = TimeSpan.FromSeconds(5))
            .AddDEngineClient(o =>
            {
                o.MaxRetries = 10;
                o.MaxBackoff = TimeSpan.FromSeconds(1);
            }));
        _clientHost = builder.Build();
        await _clientHost.StartAsync();
        Client = _clientHost.Services.GetRequiredService<DEngineClient>();
    }

    /// <inheritdoc />
    public override async Task StartSiloAsync(int index)
    {
        var spec = Silos[index];
        await StartProcessAsync(index, "replace-" + spec.Name,
        [
            RedisClusterFixture.SiloDll, "--environment", "Redis", "--Redis:ConnectionString", $"127.0.0.1:{RedisPort}",
            "--name", spec.Name, "--data-dir", DataDir(index),
            "--silo-port", spec.SiloPort.ToString(), "--gateway-port", spec.GatewayPort.ToString(),
            "--partitions", Partitions.ToString(), "--no-dashboard",
            "--Silo:Membership:ProbeTimeout", "00:00:01",
            "--Silo:Membership:NumMissedProbesLimit", "2",
            "--Silo:Membership:NumVotesForDeathDeclaration", "1",
            "--Silo:Membership:TableRefreshTimeout", "00:00:01",
            "--Silo:Membership:IAmAliveTablePublishTimeout", "00:00:02",
            "--DEngine:Replication:Factor", Factor.ToString(),
            "--DEngine:Replication:ReplaceAfter", ReplaceAfter.ToString(),
        ]);
    }

    /// <summary>The names of the silos running now.</summary>
    public string[] LiveNames() => [.. Enumerable.Range(0, SiloCount).Where(i => Running[i] is { HasExited: false }).Select(i => Silos[i].Name)];

    /// <summary>
    /// Waits (polling, with a deadline) until every partition serves with <see cref="Factor"/>
    /// replicas, all on running silos, none being built, and no silo draining.
    /// </summary>
    public async Task<IReadOnlyList<DEngine.Orleans.PartitionStatus>> SettledAsync(TimeSpan timeout)
    {
        IReadOnlyList<DEngine.Orleans.PartitionStatus>? last = null;
        await Poll.UntilAsync(async () =>
        {
            last = await Client.GetStatusAsync();
            var live = LiveNames();
            return last.Count == Partitions && last.All(s => IsWhole(s, live));
        }, timeout, () => $"the partitions did not settle with {Factor} live replicas each: {Describe(last)}");
        return last!;
    }

    /// <summary>A partition with <see cref="Factor"/> replicas, all in <paramref name="live"/>, and no copy being built.</summary>
    public static bool IsWhole(DEngine.Orleans.PartitionStatus status, IReadOnlyCollection<string> live) =>
        status.Replication is { } text
        && RedisClusterFixture.ReplicasOf(status) is { Length: Factor } replicas
        && replicas.All(live.Contains)
        && !text.Contains("catching up", StringComparison.Ordinal)
        && !text.Contains("installing", StringComparison.Ordinal);

    public static string Describe(IReadOnlyList<DEngine.Orleans.PartitionStatus>? statuses) =>
        statuses is null ? "no complete status" : string.Join(" | ", statuses.Select(s => $"{s.Partition}@{RedisClusterFixture.SiloOf(s)} {s.Replication}"));

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
}

[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class ReplacementClusterCollection : ICollectionFixture<ReplacementClusterFixture>
{
    public const string Name = "replacement-redis-cluster";
}
