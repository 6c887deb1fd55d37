using System.Net;
using DEngine.Client;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Orleans.Configuration;

namespace DEngine.Cluster.Tests;

/// <summary>
/// README's "Three local silos as one cluster": three real silo processes in the local profile (no
/// Redis; silo a is the primary, b and c join it with <c>--primary</c>), on free loopback ports, with
/// an Orleans client in the test. Only README's flags (plus <c>--no-dashboard</c>, so no test binds
/// the dashboard's fixed port), so replication is the default: replica groups of three.
/// </summary>
public sealed class LocalClusterFixture() : SiloProcessCluster(3), IAsyncLifetime
{
    private IHost? _clientHost;

    public string Root { get; } = Path.Combine(Path.GetTempPath(), "dengine-local-tests-" + Guid.NewGuid().ToString("N"));

    public SiloSpec[] Silos { get; } = new[] { "a", "b", "c" }.Select(name => new SiloSpec(name, Ports.Free(), Ports.Free())).ToArray();

    /// <summary>Retries a little (a read that meets a moving partition), then reports the error.</summary>
    public DEngineClient Client { get; private set; } = null!;

    /// <summary>Retries long enough to ride out a move (for writes and final checks).</summary>
    public DEngineClient PatientClient { get; private set; } = null!;

    public async Task InitializeAsync()
    {
        Directory.CreateDirectory(Root);
        await StartSiloAsync(0);
        await Task.WhenAll(StartSiloAsync(1), StartSiloAsync(2));

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
            // DEngine's serializers: session writes and scans carry protobuf messages.
            .AddDEngineClient());
        _clientHost = builder.Build();
        await _clientHost.StartAsync();
        var grains = _clientHost.Services.GetRequiredService<IClusterClient>();
        Client = new DEngineClient(grains, new DEngineClientOptions { MaxRetries = 2, MaxBackoff = TimeSpan.FromMilliseconds(200) });
        PatientClient = new DEngineClient(grains, new DEngineClientOptions { MaxRetries = 20, MaxBackoff = TimeSpan.FromSeconds(1) });
    }

    /// <summary>Starts silo <paramref name="index"/> (a, b or c) with README's flags and waits until it is ready.</summary>
    public override async Task StartSiloAsync(int index)
    {
        var spec = Silos[index];
        var args = new List<string>
        {
            RedisClusterFixture.SiloDll,
            "--name", spec.Name, "--data-dir", Path.Combine(Root, spec.Name),
            "--silo-port", spec.SiloPort.ToString(), "--gateway-port", spec.GatewayPort.ToString(),
        };
        if (index > 0)
        {
            args.AddRange(["--primary", $"127.0.0.1:{Silos[0].SiloPort}"]);
        }
        args.Add("--no-dashboard");
        await StartProcessAsync(index, $"local-{spec.Name}", args);
    }

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
        try
        {
            Directory.Delete(Root, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}
