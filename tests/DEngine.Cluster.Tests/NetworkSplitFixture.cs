using System.Diagnostics;
using System.Net;
using DEngine.Client;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Orleans.Configuration;

namespace DEngine.Cluster.Tests;

/// <summary>
/// Three real silo processes of the Redis profile with replica groups of three, each in a network
/// namespace of its own, so a test can split one of them off for real (<c>ip link set … down</c>).
/// </summary>
/// <remarks>
/// Topology (every name starts with <see cref="Prefix"/>; all addresses are in 10.213.0.0/16, checked
/// unused at start):
/// <list type="bullet">
/// <item>a "store" bridge (10.213.1.0/24) with redis-server in a namespace of its own (10.213.1.2) and
/// one veth of every silo (10.213.1.10+i): the configuration store stays reachable from every side;</item>
/// <item>a "cluster" bridge (10.213.2.0/24) with the other veth of every silo (10.213.2.10+i, the
/// address each silo advertises for its silo and gateway ports) and the test process (10.213.2.1);</item>
/// <item>the test process is also on the store bridge (10.213.1.1), with a host route to silo 0's
/// cluster address through silo 0's store address: the "minority" client's way to silo 0's gateway
/// while silo 0's cluster link is down (an Orleans client must reach a gateway at the address the
/// silo advertises: the gateway forwards a request addressed to any other address as if to another silo).</item>
/// </list>
/// Taking down the bridge end of silo i's cluster veth leaves its side without carrier: packets to
/// and from the other silos and the majority client vanish silently, as in a real split, while its
/// store veth keeps Redis reachable. The root namespace does not forward between the bridges, and no
/// namespace has a route but its two connected subnets, so nothing goes around the cut.
/// Every process the fixture starts runs inside one of its namespaces; Dispose (and the start of
/// the next run, after a crash) kills what is left in them and deletes namespaces, veths and bridges.
/// </remarks>
public sealed class NetworkSplitFixture : IAsyncLifetime
{
    public const int Partitions = 6;
    public const int SiloCount = 3;

    /// <summary>The silo the test cuts off: it detects failures slowly (see <see cref="SiloArgs"/>).</summary>
    public const int CutSilo = 0;

    /// <summary>The prefix of every namespace and link this fixture creates (interface names have at most 15 characters).</summary>
    public const string Prefix = "dnsplit";

    private const string RedisNamespace = Prefix + "-redis";
    private const string StoreBridge = Prefix + "-st";
    private const string ClusterBridge = Prefix + "-cl";
    private const string RedisAddress = "10.213.1.2";
    private const int RedisPort = 6379;
    private const int SiloPort = 11111;
    private const int GatewayPort = 30000;
    private static readonly TimeSpan ReadyTimeout = TimeSpan.FromSeconds(90);

    private readonly List<IHost> _clientHosts = [];
    private readonly List<(string Name, ManagedProcess Process)> _incarnations = [];
    private ManagedProcess? _redis;

    public string Root { get; } = Path.Combine(Path.GetTempPath(), "dengine-netsplit-" + Guid.NewGuid().ToString("N"));

    public ManagedProcess?[] Running { get; } = new ManagedProcess?[SiloCount];

    /// <summary>A client on the majority side: its gateways are the silos other than <see cref="CutSilo"/>, on the cluster bridge.</summary>
    public IClusterClient Majority { get; private set; } = null!;

    /// <summary>A retrying DEngine client over <see cref="Majority"/> (status, read-back).</summary>
    public DEngineClient MajorityClient { get; private set; } = null!;

    /// <summary>A client on the minority side: its one gateway is <see cref="CutSilo"/>'s, reached over the store bridge (which stays up) by a host route.</summary>
    public IClusterClient Minority { get; private set; } = null!;

    /// <summary>The test's clock: monotonic, shared by every record of a history.</summary>
    public Stopwatch Clock { get; } = Stopwatch.StartNew();

    public static string SiloName(int index) => $"silo{index}";

    private static string SiloNamespace(int index) => $"{Prefix}-s{index}";

    private static string ClusterVeth(int index) => $"{Prefix}-{index}c";

    private static string StoreVeth(int index) => $"{Prefix}-{index}s";

    private static string ClusterAddress(int index) => $"10.213.2.{10 + index}";

    private static string StoreAddress(int index) => $"10.213.1.{10 + index}";

    public async Task InitializeAsync()
    {
        if (!OperatingSystem.IsLinux() || Environment.UserName != "root")
        {
            throw new InvalidOperationException($"the network split test needs Linux and root for `ip netns` (running as {Environment.UserName} on {Environment.OSVersion}).");
        }
        RemoveLeftovers();
        CheckAddressRangeUnused();
        CreateTopology();
        Directory.CreateDirectory(Root);

        var redisServer = RedisClusterFixture.FindRedisServer();
        // Durable, as the silos require; bound to the store bridge only, so protected mode (loopback
        // only without a password) is off: nothing outside the test's namespaces can reach it.
        _redis = ManagedProcess.Start("ip",
        [
            "netns", "exec", RedisNamespace, redisServer, "--port", RedisPort.ToString(), "--bind", RedisAddress, "--protected-mode", "no",
            "--save", "", "--appendonly", "yes", "--appendfsync", "always", "--dir", Root,
        ], "Ready to accept connections");
        await _redis.WaitReadyAsync(TimeSpan.FromSeconds(30));
        await Task.WhenAll(Enumerable.Range(0, SiloCount).Select(StartSiloAsync));

        Majority = await StartClientAsync(Enumerable.Range(0, SiloCount).Where(i => i != CutSilo).Select(i => new IPEndPoint(IPAddress.Parse(ClusterAddress(i)), GatewayPort)));
        MajorityClient = new DEngineClient(Majority, new DEngineClientOptions { MaxRetries = 10, MaxBackoff = TimeSpan.FromSeconds(1) });
        Minority = await StartClientAsync([new IPEndPoint(IPAddress.Parse(ClusterAddress(CutSilo)), GatewayPort)]);
    }

    /// <summary>Starts silo <paramref name="index"/> in its namespace and waits until it is ready.</summary>
    public async Task StartSiloAsync(int index)
    {
        var silo = ManagedProcess.Start("ip", ["netns", "exec", SiloNamespace(index), "dotnet", .. SiloArgs(index)], "DEngine silo ready:");
        // DENGINE_CLUSTER_LOGS=<dir> keeps every silo's output for a post-mortem, as in the other cluster tests.
        if (Environment.GetEnvironmentVariable("DENGINE_CLUSTER_LOGS") is { Length: > 0 } logs)
        {
            Directory.CreateDirectory(logs);
            silo.LogFile = Path.Combine(logs, $"netsplit-{SiloName(index)}-{DateTime.UtcNow:HHmmss.fff}.log");
        }
        Running[index] = silo;
        lock (_incarnations)
        {
            _incarnations.Add((SiloName(index), silo));
        }
        await silo.WaitReadyAsync(ReadyTimeout);
    }

    /// <summary>The output of every silo process started so far (restarted silos once per incarnation).</summary>
    public IReadOnlyList<(string Name, string Log)> SiloLogs()
    {
        lock (_incarnations)
        {
            return [.. _incarnations.Select(s => (s.Name, s.Process.Log))];
        }
    }

    /// <summary>Takes down the bridge end of silo <paramref name="index"/>'s cluster veth: it is split from the other silos and the majority client; Redis stays reachable.</summary>
    public void CutClusterLink(int index) => Ip("link", "set", ClusterVeth(index), "down");

    /// <summary>Brings silo <paramref name="index"/>'s cluster link back.</summary>
    public void RestoreClusterLink(int index) => Ip("link", "set", ClusterVeth(index), "up");

    /// <summary>SIGKILL silo <paramref name="index"/> (when a test gives up waiting for it to stop by itself).</summary>
    public void KillSilo(int index)
    {
        Running[index]?.Kill();
        Running[index] = null;
    }

    public async Task DisposeAsync()
    {
        foreach (var host in _clientHosts)
        {
            try
            {
                await host.StopAsync(new CancellationTokenSource(TimeSpan.FromSeconds(5)).Token);
            }
            catch (OperationCanceledException)
            {
            }
            host.Dispose();
        }
        lock (_incarnations)
        {
            foreach (var (_, process) in _incarnations)
            {
                process.Dispose();
            }
        }
        _redis?.Dispose();
        RemoveLeftovers();
        try
        {
            Directory.Delete(Root, recursive: true);
        }
        catch (IOException)
        {
        }
    }

    private string[] SiloArgs(int index)
    {
        // The majority silos detect a silent silo within about 3 s (1 s probes, 2 misses, as the other
        // cluster tests). Two votes declare a silo dead, so the one silo that is cut off cannot
        // declare the two others dead (with one vote, each side could evict the other). The cut silo
        // itself notices slowly (5 s probes, 3 misses, a 30 s table refresh): it lives on, still
        // believing it is primary, well after the majority has promoted another replica: the case the
        // read lease and the configuration version must cover (as a paused or slow node would).
        string[] membership = index == CutSilo
            ? ["--Silo:Membership:ProbeTimeout", "00:00:05", "--Silo:Membership:NumMissedProbesLimit", "3", "--Silo:Membership:TableRefreshTimeout", "00:00:30"]
            : ["--Silo:Membership:ProbeTimeout", "00:00:01", "--Silo:Membership:NumMissedProbesLimit", "2", "--Silo:Membership:TableRefreshTimeout", "00:00:01"];
        return
        [
            RedisClusterFixture.SiloDll, "--environment", "Redis", "--Redis:ConnectionString", $"{RedisAddress}:{RedisPort}",
            "--name", SiloName(index), "--data-dir", Path.Combine(Root, SiloName(index)),
            "--silo-port", SiloPort.ToString(), "--gateway-port", GatewayPort.ToString(),
            "--Silo:AdvertisedIP", ClusterAddress(index),
            "--partitions", Partitions.ToString(), "--no-dashboard",
            "--DEngine:Replication:Factor", "3",
            .. membership,
            "--Silo:Membership:NumVotesForDeathDeclaration", "2",
            "--Silo:Membership:IAmAliveTablePublishTimeout", "00:00:02",
        ];
    }

    private async Task<IClusterClient> StartClientAsync(IEnumerable<IPEndPoint> gateways)
    {
        var builder = Host.CreateApplicationBuilder();
        builder.Logging.ClearProviders();
        builder.UseOrleansClient(client => client
            .UseStaticClustering([.. gateways])
            .Configure<ClusterOptions>(o =>
            {
                o.ClusterId = "dengine";
                o.ServiceId = "dengine";
            })
            // A call through a split gateway never fails by itself: it waits for the response timeout.
            .Configure<ClientMessagingOptions>(o => o.ResponseTimeout = TimeSpan.FromSeconds(5))
            // DEngine's serializers: session writes and scans carry protobuf messages.
            .AddDEngineClient());
        var host = builder.Build();
        _clientHosts.Add(host);
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        await host.StartAsync(timeout.Token).WaitAsync(TimeSpan.FromSeconds(35));
        return host.Services.GetRequiredService<IClusterClient>();
    }

    private static void CreateTopology()
    {
        Ip("link", "add", StoreBridge, "type", "bridge");
        Ip("addr", "add", "10.213.1.1/24", "dev", StoreBridge);
        Ip("link", "set", StoreBridge, "up");
        Ip("link", "add", ClusterBridge, "type", "bridge");
        Ip("addr", "add", "10.213.2.1/24", "dev", ClusterBridge);
        Ip("link", "set", ClusterBridge, "up");

        AddNamespace(RedisNamespace);
        AddVeth(RedisNamespace, Prefix + "-rs", "st", StoreBridge, RedisAddress);
        for (var i = 0; i < SiloCount; i++)
        {
            AddNamespace(SiloNamespace(i));
            AddVeth(SiloNamespace(i), StoreVeth(i), "st", StoreBridge, StoreAddress(i));
            AddVeth(SiloNamespace(i), ClusterVeth(i), "cl", ClusterBridge, ClusterAddress(i));
        }
        // The minority client's path to the cut silo: its cluster address through its store veth.
        Ip("route", "add", ClusterAddress(CutSilo) + "/32", "via", StoreAddress(CutSilo), "dev", StoreBridge);
    }

    private static void AddNamespace(string name)
    {
        Ip("netns", "add", name);
        Ip("-n", name, "link", "set", "lo", "up");
    }

    /// <summary>A veth pair: <paramref name="bridgeEnd"/> on <paramref name="bridge"/> in this namespace, <paramref name="inner"/> with <paramref name="address"/>/24 in <paramref name="ns"/>.</summary>
    private static void AddVeth(string ns, string bridgeEnd, string inner, string bridge, string address)
    {
        Ip("link", "add", bridgeEnd, "type", "veth", "peer", "name", inner, "netns", ns);
        Ip("link", "set", bridgeEnd, "master", bridge, "up");
        Ip("-n", ns, "addr", "add", address + "/24", "dev", inner);
        Ip("-n", ns, "link", "set", inner, "up");
    }

    /// <summary>Refuses to run when anything else on this machine uses 10.213.0.0/16 (the split would not be the test's alone).</summary>
    private static void CheckAddressRangeUnused()
    {
        var used = Ip("-o", "addr", "show").Split('\n').Concat(Ip("-o", "route", "show").Split('\n'))
            .Where(line => System.Text.RegularExpressions.Regex.IsMatch(line, @"\b10\.213\."))
            .ToArray();
        if (used.Length > 0)
        {
            throw new InvalidOperationException($"10.213.0.0/16 is in use on this machine, the network split test needs it for itself:\n{string.Join('\n', used)}");
        }
    }

    /// <summary>
    /// Kills what runs in this fixture's namespaces (a silo or redis-server of a crashed run: nothing
    /// else is ever started in them) and deletes the namespaces (their veths go with them) and the bridges.
    /// </summary>
    private static void RemoveLeftovers()
    {
        var namespaces = TryIp("netns", "list").Split('\n', StringSplitOptions.RemoveEmptyEntries)
            .Select(line => line.Split(' ')[0])
            .Where(name => name.StartsWith(Prefix + "-", StringComparison.Ordinal));
        foreach (var ns in namespaces)
        {
            foreach (var pid in TryIp("netns", "pids", ns).Split('\n', StringSplitOptions.RemoveEmptyEntries))
            {
                KillIfOurs(int.Parse(pid.Trim()));
            }
            TryIp("netns", "del", ns);
        }
        var links = TryIp("-o", "link", "show").Split('\n', StringSplitOptions.RemoveEmptyEntries)
            .Select(line => line.Split(':', 3)[1].Trim().Split('@')[0])
            .Where(name => name.StartsWith(Prefix + "-", StringComparison.Ordinal));
        foreach (var link in links)
        {
            TryIp("link", "del", link);
        }
    }

    private static void KillIfOurs(int pid)
    {
        string commandLine;
        try
        {
            commandLine = File.ReadAllText($"/proc/{pid}/cmdline").Replace('\0', ' ');
        }
        catch (IOException)
        {
            return;
        }
        if (commandLine.Contains("DEngine.Silo.dll", StringComparison.Ordinal) || commandLine.Contains("redis-server", StringComparison.Ordinal))
        {
            try
            {
                using var process = Process.GetProcessById(pid);
                process.Kill();
                process.WaitForExit(10_000);
            }
            catch (ArgumentException)
            {
                // Already gone.
            }
        }
    }

    private static string Ip(params string[] args)
    {
        var (code, output, error) = RunIp(args);
        if (code != 0)
        {
            throw new InvalidOperationException($"`ip {string.Join(' ', args)}` failed with exit code {code}: {error.Trim()}");
        }
        return output;
    }

    private static string TryIp(params string[] args) => RunIp(args).Output;

    private static (int Code, string Output, string Error) RunIp(string[] args)
    {
        var info = new ProcessStartInfo("ip") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var arg in args)
        {
            info.ArgumentList.Add(arg);
        }
        Process process;
        try
        {
            process = Process.Start(info) ?? throw new InvalidOperationException("could not start ip");
        }
        catch (System.ComponentModel.Win32Exception ex)
        {
            throw new InvalidOperationException($"`ip` (iproute2) is not installed: the network split test needs it (apt-get install iproute2; .ci/run does this). {ex.Message}");
        }
        using (process)
        {
            var error = process.StandardError.ReadToEndAsync();
            var output = process.StandardOutput.ReadToEnd();
            if (!process.WaitForExit(30_000))
            {
                process.Kill();
                throw new TimeoutException($"`ip {string.Join(' ', args)}` did not finish within 30 s");
            }
            return (process.ExitCode, output, error.Result);
        }
    }
}

[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class NetworkSplitCollection : ICollectionFixture<NetworkSplitFixture>
{
    public const string Name = "network-split";
}
