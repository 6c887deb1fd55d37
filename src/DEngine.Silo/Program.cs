using System.Net;
using DEngine.Orleans;
using DEngine.Orleans.Hosting;
using DEngine.Orleans.Ownership;
using DEngine.Orleans.Storage;
using StackExchange.Redis;
using DEngine.Silo;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Options;
using Orleans.Configuration;
using Orleans.Dashboard;
using DEngine;

// The DEngine silo host. Configuration, lowest to highest precedence: silo-config/appsettings.json,
// silo-config/appsettings.{Environment}.json, environment variables, command line.

SiloCommandLine parsed;
try
{
    parsed = SiloCommandLine.Parse(args);
}
catch (ArgumentException ex)
{
    Console.Error.WriteLine($"error: {ex.Message}");
    Console.Error.WriteLine("Run with --help for the options.");
    return 2;
}
if (parsed.ShowHelp)
{
    Console.WriteLine(SiloCommandLine.Help);
    return 0;
}

var configuration = new ConfigurationManager();
configuration
    .SetBasePath(Path.Combine(AppContext.BaseDirectory, "silo-config"))
    .AddJsonFile("appsettings.json", optional: true)
    .AddJsonFile($"appsettings.{parsed.Environment}.json", optional: true)
    .AddEnvironmentVariables()
    .AddCommandLine(parsed.ConfigurationArgs);

SiloSettings settings;
DEngineOptions engineOptions;
try
{
    settings = SiloSettings.Load(configuration, parsed.Environment);
    engineOptions = configuration.GetSection(DEngineOptions.SectionName).Get<DEngineOptions>() ?? new DEngineOptions();
    if (engineOptions.Validate() is { } problem)
    {
        throw new InvalidOperationException(problem);
    }
}
catch (InvalidOperationException ex)
{
    Console.Error.WriteLine($"error: invalid configuration: {ex.Message}");
    return 2;
}

// Two silos on one port would both listen (port sharing) and split the connections between them.
var listenAddress = settings.RedisConnectionString is null ? IPAddress.Loopback : settings.ListenOnAny ? IPAddress.Any : settings.AdvertisedIP;
if (PortGuard.FindPortInUse(listenAddress, ("Silo:SiloPort", settings.SiloPort), ("Silo:GatewayPort", settings.GatewayPort)) is { } portProblem)
{
    Console.Error.WriteLine($"error: {portProblem}");
    return 2;
}

// The Redis profile keeps the configuration records in Redis: refuse a Redis that can forget an
// acknowledged write, unless the operator says the cluster is throw-away.
if (settings.RedisConnectionString is { } redisToCheck)
{
    if (settings.RedisAllowVolatile)
    {
        Console.Error.WriteLine("warning: Redis:AllowVolatile is true: Redis is not checked for durable writes, and a Redis that loses writes loses partition ownership records (only for throw-away clusters).");
    }
    else if (await RedisDurability.FindProblemAsync(redisToCheck, TimeSpan.FromSeconds(10)) is { } redisProblem)
    {
        Console.Error.WriteLine($"error: {redisProblem} (or pass --Redis:AllowVolatile true for a throw-away cluster).");
        return 2;
    }
}

// Take the data directory's lock before anything starts, so a second silo on the same directory
// stops with one clear line (and the first is untouched).
var dataLock = new DataRootLock(Options.Create(engineOptions));
try
{
    await dataLock.Acquire();
}
catch (DEngineException ex)
{
    Console.Error.WriteLine($"error: {ex.Detail}");
    return 2;
}

IHostApplicationBuilder builder;
if (settings.DashboardEnabled)
{
    builder = WebApplication.CreateBuilder(new WebApplicationOptions { EnvironmentName = parsed.Environment, ContentRootPath = AppContext.BaseDirectory });
}
else
{
    builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { EnvironmentName = parsed.Environment, ContentRootPath = AppContext.BaseDirectory, DisableDefaults = false });
}
builder.Configuration.Sources.Clear();
builder.Configuration.AddConfiguration(configuration);
if (builder is WebApplicationBuilder dashboardHost)
{
    // After the sources are replaced: UseUrls writes the address into the builder's configuration,
    // and set before the Clear above it was dropped (Kestrel then listened on localhost:5000).
    dashboardHost.WebHost.UseUrls($"http://{settings.DashboardHost}:{settings.DashboardPort}");
}
builder.Services.Configure<HostOptions>(o => o.ShutdownTimeout = TimeSpan.FromSeconds(60));
builder.Services.AddSingleton(dataLock);

builder.UseOrleans(silo =>
{
    if (settings.RedisConnectionString is { } redis)
    {
        // Cluster profile: membership, reminders and ownership records in Redis, so silos on
        // several machines form one cluster and ownership survives any silo.
        silo.UseRedisClustering(o => o.ConfigurationOptions = ConfigurationOptions.Parse(redis));
        silo.ConfigureEndpoints(settings.AdvertisedIP, settings.SiloPort, settings.GatewayPort, listenOnAnyHostAddress: settings.ListenOnAny);
        silo.Configure<ClusterOptions>(o =>
        {
            o.ClusterId = settings.ClusterId;
            o.ServiceId = settings.ServiceId;
        });
        silo.UseRedisReminderService(o => o.ConfigurationOptions = ConfigurationOptions.Parse(redis));
        silo.Services.AddRedisGrainStorage(PartitionOwnerGrain.StorageName, o => o.ConfigurationOptions = ConfigurationOptions.Parse(redis));
    }
    else
    {
        silo.UseLocalhostClustering(settings.SiloPort, settings.GatewayPort, settings.Primary, settings.ServiceId, settings.ClusterId);
        silo.UseInMemoryReminderService();
    }
    silo.Configure<SiloOptions>(o => o.SiloName = settings.Name);
    // Failure detection (probe timeouts, votes) is tunable, e.g. --Silo:Membership:ProbeTimeout 00:00:02.
    silo.Services.AddOptions<ClusterMembershipOptions>().Bind(configuration.GetSection("Silo:Membership"));
    silo.AddDEngine();
    if (settings.DashboardEnabled)
    {
        silo.AddDashboard();
    }
});

IHost host;
if (builder is WebApplicationBuilder webBuilder)
{
    var app = webBuilder.Build();
    app.MapOrleansDashboard();
    host = app;
}
else
{
    host = ((HostApplicationBuilder)builder).Build();
}

var dataRoot = Path.GetFullPath(engineOptions.DataRoot);
host.Services.GetRequiredService<IHostApplicationLifetime>().ApplicationStarted.Register(() =>
{
    var address = settings.RedisConnectionString is null ? "127.0.0.1" : settings.AdvertisedIP.ToString();
    Console.WriteLine($"DEngine silo ready: silo={address}:{settings.SiloPort} gateway={address}:{settings.GatewayPort} data={dataRoot} partitions={engineOptions.Partitions}");
    if (settings.DashboardEnabled)
    {
        Console.WriteLine($"Dashboard: http://{settings.DashboardHost}:{settings.DashboardPort}/");
    }
});

try
{
    await host.RunAsync();
    return 0;
}
catch (OptionsValidationException ex)
{
    Console.Error.WriteLine($"error: invalid configuration: {string.Join("; ", ex.Failures)}");
    return 2;
}
catch (Exception ex) when (ex is DEngineException or IOException or System.Net.Sockets.SocketException or Orleans.Runtime.OrleansException)
{
    Console.Error.WriteLine($"error: the silo stopped: {ex.Message}");
    return 2;
}

namespace DEngine.Silo
{
    /// <summary>The silo's own settings (section <c>Silo</c> and <c>Dashboard</c>).</summary>
    internal sealed record SiloSettings(
        int SiloPort,
        int GatewayPort,
        IPEndPoint? Primary,
        string Name,
        string ClusterId,
        string ServiceId,
        bool DashboardEnabled,
        string DashboardHost,
        int DashboardPort,
        string? RedisConnectionString,
        IPAddress AdvertisedIP,
        bool ListenOnAny,
        bool RedisAllowVolatile)
    {
        public static SiloSettings Load(IConfiguration configuration, string environment)
        {
            var siloPort = Port(configuration, "Silo:SiloPort", 11111);
            var gatewayPort = Port(configuration, "Silo:GatewayPort", 30000);
            IPEndPoint? primary = null;
            var primaryText = configuration["Silo:Primary"];
            if (!string.IsNullOrWhiteSpace(primaryText))
            {
                if (!IPEndPoint.TryParse(primaryText.Replace("localhost", "127.0.0.1", StringComparison.OrdinalIgnoreCase), out primary) || primary.Port == 0)
                {
                    throw new InvalidOperationException($"Silo:Primary (--primary) must be HOST:PORT with an IP address, e.g. 127.0.0.1:11111 (was '{primaryText}').");
                }
            }
            var dashboardText = configuration["Dashboard:Enabled"];
            bool dashboard;
            if (string.IsNullOrWhiteSpace(dashboardText))
            {
                dashboard = string.Equals(environment, "Development", StringComparison.OrdinalIgnoreCase);
            }
            else if (!bool.TryParse(dashboardText, out dashboard))
            {
                throw new InvalidOperationException($"Dashboard:Enabled must be true or false (was '{dashboardText}').");
            }
            var clustering = configuration["Silo:Clustering"] is { Length: > 0 } c ? c : "Localhost";
            string? redis = null;
            if (string.Equals(clustering, "Redis", StringComparison.OrdinalIgnoreCase))
            {
                redis = configuration["Redis:ConnectionString"];
                if (string.IsNullOrWhiteSpace(redis))
                {
                    throw new InvalidOperationException("Redis:ConnectionString must be set when Silo:Clustering is Redis (e.g. 127.0.0.1:6379).");
                }
            }
            else if (!string.Equals(clustering, "Localhost", StringComparison.OrdinalIgnoreCase))
            {
                throw new InvalidOperationException($"Silo:Clustering must be Localhost or Redis (was '{clustering}').");
            }
            var advertisedText = configuration["Silo:AdvertisedIP"] is { Length: > 0 } a ? a : "127.0.0.1";
            if (!IPAddress.TryParse(advertisedText, out var advertised))
            {
                throw new InvalidOperationException($"Silo:AdvertisedIP must be an IP address other silos and clients can reach (was '{advertisedText}').");
            }
            var listenText = configuration["Silo:ListenOnAnyHostAddress"];
            var listenOnAny = false;
            if (!string.IsNullOrWhiteSpace(listenText) && !bool.TryParse(listenText, out listenOnAny))
            {
                throw new InvalidOperationException($"Silo:ListenOnAnyHostAddress must be true or false (was '{listenText}').");
            }
            var volatileText = configuration["Redis:AllowVolatile"];
            var allowVolatile = false;
            if (!string.IsNullOrWhiteSpace(volatileText) && !bool.TryParse(volatileText, out allowVolatile))
            {
                throw new InvalidOperationException($"Redis:AllowVolatile must be true or false (was '{volatileText}').");
            }
            return new SiloSettings(
                siloPort,
                gatewayPort,
                primary,
                configuration["Silo:Name"] is { Length: > 0 } name ? name : $"silo-{siloPort}",
                configuration["Silo:ClusterId"] is { Length: > 0 } cluster ? cluster : "dengine",
                configuration["Silo:ServiceId"] is { Length: > 0 } service ? service : "dengine",
                dashboard,
                configuration["Dashboard:Host"] is { Length: > 0 } host ? host : "127.0.0.1",
                Port(configuration, "Dashboard:Port", 8080),
                redis,
                advertised,
                listenOnAny,
                allowVolatile);
        }

        private static int Port(IConfiguration configuration, string key, int fallback)
        {
            var text = configuration[key];
            if (string.IsNullOrWhiteSpace(text))
            {
                return fallback;
            }
            if (!int.TryParse(text, out var port) || port is < 1 or > 65535)
            {
                throw new InvalidOperationException($"{key} must be a port number between 1 and 65535 (was '{text}').");
            }
            return port;
        }
    }
}
