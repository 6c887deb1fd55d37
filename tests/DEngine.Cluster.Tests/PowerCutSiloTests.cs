using System.Net;
using System.Reflection;
using System.Text;
using DEngine.Client;
using DEngine.Orleans;
using DEngine.StateMachine.Tests.Support;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Orleans.Configuration;
using Xunit.Abstractions;

namespace DEngine.Cluster.Tests;

/// <summary>
/// Real silo processes (the local profile) whose data directory is on the power-cut file system: a
/// SIGKILL followed by a power cut, then a restart. Whatever was acknowledged must be served: a
/// missing fsync on the write path or in a partition move loses it here (a SIGKILL alone would not,
/// the page cache keeps it). A single copy per partition (<c>--DEngine:Replication:Factor 1</c>, set
/// explicitly: the default is 3): one silo alone, and a move that fetches the data onto another silo.
/// </summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class PowerCutSiloCollection
{
    public const string Name = "power-cut-silos";
}

[Trait("Category", "PowerCut")]
[Collection(PowerCutSiloCollection.Name)]
public sealed class PowerCutSiloTests(ITestOutputHelper output) : IDisposable
{
    private const int Partitions = 4;
    private static readonly TimeSpan ReadyTimeout = TimeSpan.FromSeconds(90);
    private readonly string _root = Path.Combine(Path.GetTempPath(), "dengine-powercut-silo-" + Guid.NewGuid().ToString("N")[..8]);
    private readonly List<ManagedProcess> _silos = [];
    private PowerCutFs? _fs; // unmounted after the silos using it are gone (see Dispose)

    [Fact]
    public async Task PowerCut_after_SIGKILL_of_a_silo_every_acknowledged_write_is_served_after_the_restart()
    {
        var fs = _fs = new PowerCutFs();
        var silo = new SiloSpec("a", Ports.Free(), Ports.Free());
        var dataDir = Path.Combine(fs.MountPoint, "a");
        var process = await StartSiloAsync(silo, dataDir, primary: null);

        var acknowledged = new Dictionary<string, string>();
        await using (var client = await Client.ConnectAsync([silo]))
        {
            // Every partition activated first (slow on a loaded machine), then four writers; the kill
            // lands while their last writes are in flight.
            await StatusWhenReadyAsync(client.Engine);
            using var stop = new CancellationTokenSource();
            var writers = Enumerable.Range(0, 4).Select(w => Task.Run(async () =>
            {
                for (var i = 0; !stop.IsCancellationRequested; i++)
                {
                    var key = $"w{w}-{i}";
                    try
                    {
                        await client.Engine.PutAsync(Encoding.UTF8.GetBytes(key), Encoding.UTF8.GetBytes("v" + i));
                    }
                    catch (Exception)
                    {
                        // Outcome unknown (a timeout, or the silo is gone): not counted as acknowledged.
                        if (stop.IsCancellationRequested)
                        {
                            return;
                        }
                        continue;
                    }
                    lock (acknowledged)
                    {
                        acknowledged[key] = "v" + i;
                    }
                }
            })).ToArray();
            var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(60);
            while (Count(acknowledged) < 400 && DateTime.UtcNow < deadline)
            {
                await Task.Delay(20);
            }
            process.Kill();
            stop.Cancel();
            await Task.WhenAll(writers).WaitAsync(TimeSpan.FromSeconds(60));
        }
        output.WriteLine($"{acknowledged.Count} writes acknowledged before the SIGKILL; {fs.Cut()}");
        Assert.True(acknowledged.Count >= 400, $"only {acknowledged.Count} writes were acknowledged");

        await StartSiloAsync(silo, dataDir, primary: null);
        await using (var client = await Client.ConnectAsync([silo]))
        {
            await AssertServedAsync(client.Engine, acknowledged);
        }
    }

    [Fact]
    public async Task PowerCut_after_a_partition_moved_to_a_silo_and_that_silo_was_killed_its_data_on_that_silo_is_intact()
    {
        var fs = _fs = new PowerCutFs();
        var a = new SiloSpec("a", Ports.Free(), Ports.Free());
        var b = new SiloSpec("b", Ports.Free(), Ports.Free());
        // Only b's data is on the power-cut file system: the primary keeps running through the cut.
        await StartSiloAsync(a, Path.Combine(_root, "a"), primary: null);
        var bDataDir = Path.Combine(fs.MountPoint, "b");
        var bProcess = await StartSiloAsync(b, bDataDir, primary: a);

        var acknowledged = new Dictionary<string, string>();
        int partition;
        await using (var client = await Client.ConnectAsync([a, b]))
        {
            var statuses = await StatusWhenReadyAsync(client.Engine);
            partition = statuses.First(s => s.Silo.StartsWith("a ", StringComparison.Ordinal)).Partition;
            for (var i = 0; acknowledged.Count < 300; i++)
            {
                var key = $"move-{i}";
                if (KeyRouting.PartitionOf(Encoding.UTF8.GetBytes(key), Partitions) == partition)
                {
                    await client.Engine.PutAsync(Encoding.UTF8.GetBytes(key), Encoding.UTF8.GetBytes($"before-{i}"));
                    acknowledged[key] = $"before-{i}";
                }
            }

            // The move fetches a snapshot onto b (on the mount), installs it, and names b the owner.
            var moved = await client.Engine.MovePartitionAsync(partition, "b", TimeSpan.FromSeconds(90));
            output.WriteLine($"partition {partition} moved: {moved.Silo} at {moved.AppliedIndex}");
            Assert.StartsWith("b ", moved.Silo, StringComparison.Ordinal);
            foreach (var key in acknowledged.Keys.Take(20).ToArray())
            {
                await client.Engine.PutAsync(Encoding.UTF8.GetBytes(key), "after"u8.ToArray());
                acknowledged[key] = "after";
            }
        }

        bProcess.Kill();
        output.WriteLine(fs.Cut());

        // What the cut left on b's disk, read by opening the partition's database there. (Restarting
        // b and reading through the cluster would also test the local profile's ownership records,
        // which live in memory on whichever silo hosts them: when that was b, a serves its stale
        // pre-move copy. That is issue 11 item 1, not durability; the silo restart is covered above.)
        using var engine = new DEngine.StateMachine.RocksDbStateMachine(Path.Combine(bDataDir, "partitions", partition.ToString()));
        var wrong = acknowledged
            .Where(p => (engine.Get(Encoding.UTF8.GetBytes(p.Key)) is { } v ? Encoding.UTF8.GetString(v) : null) != p.Value)
            .Select(p => p.Key)
            .ToArray();
        Assert.True(wrong.Length == 0, $"{wrong.Length} of {acknowledged.Count} acknowledged writes missing on b after the power cut: {string.Join(", ", wrong.Take(10))}");
    }

    /// <summary>The status of every partition; the first activations on a loaded machine can outlast a response timeout, so it polls with a deadline.</summary>
    private static async Task<IReadOnlyList<DEngine.Orleans.PartitionStatus>> StatusWhenReadyAsync(DEngineClient client)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(90);
        while (true)
        {
            try
            {
                return await client.GetStatusAsync();
            }
            catch (TimeoutException) when (DateTime.UtcNow < deadline)
            {
            }
        }
    }

    private static int Count(Dictionary<string, string> acknowledged)
    {
        lock (acknowledged)
        {
            return acknowledged.Count;
        }
    }

    private static async Task AssertServedAsync(DEngineClient client, Dictionary<string, string> acknowledged)
    {
        var keys = acknowledged.Keys.Order(StringComparer.Ordinal).ToArray();
        var values = await client.GetMultiAsync(keys.Select(k => Encoding.UTF8.GetBytes(k)).ToArray());
        var wrong = keys.Zip(values)
            .Where(p => (p.Second is null ? null : Encoding.UTF8.GetString(p.Second)) != acknowledged[p.First])
            .Select(p => $"{p.First}={(p.Second is null ? "<absent>" : Encoding.UTF8.GetString(p.Second))} (acknowledged {acknowledged[p.First]})")
            .ToArray();
        Assert.True(wrong.Length == 0, $"{wrong.Length} of {keys.Length} acknowledged writes not served after the power cut: {string.Join(", ", wrong.Take(10))}");
    }

    private async Task<ManagedProcess> StartSiloAsync(SiloSpec spec, string dataDir, SiloSpec? primary)
    {
        var args = new List<string>
        {
            SiloDll, "--name", spec.Name, "--data-dir", dataDir,
            "--silo-port", spec.SiloPort.ToString(), "--gateway-port", spec.GatewayPort.ToString(),
            "--partitions", Partitions.ToString(), "--no-dashboard", "--DEngine:Replication:Factor", "1",
        };
        if (primary is not null)
        {
            args.AddRange(["--primary", $"127.0.0.1:{primary.SiloPort}"]);
        }
        var silo = ManagedProcess.Start("dotnet", args, "DEngine silo ready:");
        _silos.Add(silo);
        await silo.WaitReadyAsync(ReadyTimeout);
        return silo;
    }

    public void Dispose()
    {
        foreach (var silo in _silos)
        {
            silo.Dispose();
        }
        _fs?.Dispose();
        try
        {
            Directory.Delete(_root, recursive: true);
        }
        catch (IOException)
        {
            // never created (everything was on the mount), or still busy
        }
    }

    private static string SiloDll
    {
        get
        {
            var configuration = typeof(PowerCutSiloTests).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>().First(a => a.Key == "Configuration").Value!;
            var dir = new DirectoryInfo(AppContext.BaseDirectory);
            while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "DEngine.Orleans.sln")))
            {
                dir = dir.Parent;
            }
            return dir is null
                ? throw new InvalidOperationException("cannot find the repository root (DEngine.Orleans.sln) above " + AppContext.BaseDirectory)
                : Path.Combine(dir.FullName, "src", "DEngine.Silo", "bin", configuration, "net10.0", "DEngine.Silo.dll");
        }
    }

    /// <summary>An Orleans client host with the DEngine client, through the given silos' gateways.</summary>
    private sealed class Client : IAsyncDisposable
    {
        private readonly IHost _host;

        private Client(IHost host)
        {
            _host = host;
            Engine = host.Services.GetRequiredService<DEngineClient>();
        }

        public DEngineClient Engine { get; }

        public static async Task<Client> ConnectAsync(SiloSpec[] silos)
        {
            var builder = Host.CreateApplicationBuilder();
            builder.Logging.ClearProviders();
            builder.UseOrleansClient(client => client
                .UseStaticClustering(silos.Select(s => new IPEndPoint(IPAddress.Loopback, s.GatewayPort)).ToArray())
                .Configure<ClusterOptions>(o =>
                {
                    o.ClusterId = "dengine";
                    o.ServiceId = "dengine";
                })
                .Configure<ClientMessagingOptions>(o => o.ResponseTimeout = TimeSpan.FromSeconds(15))
                .AddDEngineClient(o =>
                {
                    o.MaxRetries = 20;
                    o.MaxBackoff = TimeSpan.FromSeconds(1);
                }));
            var host = builder.Build();
            await host.StartAsync().WaitAsync(TimeSpan.FromSeconds(30));
            return new Client(host);
        }

        public async ValueTask DisposeAsync()
        {
            try
            {
                await _host.StopAsync(new CancellationTokenSource(TimeSpan.FromSeconds(5)).Token);
            }
            catch (OperationCanceledException)
            {
            }
            _host.Dispose();
        }
    }
}
