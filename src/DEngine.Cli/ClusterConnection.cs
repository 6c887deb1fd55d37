using System.Net;
using DEngine.Client;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Orleans.Configuration;

namespace DEngine.Cli;

/// <summary>
/// An Orleans client connected to a DEngine cluster through static gateways, for one command. One
/// <see cref="DEngineClient"/> per invocation, so one client session: the retries of the
/// invocation's write reuse its (session, sequence) and apply it at most once.
/// </summary>
internal sealed class ClusterConnection : IAsyncDisposable
{
    /// <summary>How long connecting (and the first call to the cluster) may take before the CLI gives up.</summary>
    public static readonly TimeSpan ConnectTimeout = TimeSpan.FromSeconds(10);

    /// <summary>
    /// How long one request may wait for its response: a third of the client's write deadline
    /// (30 s), so a write whose answer died with its gateway or primary is sent again, under the same
    /// session and sequence, within the deadline.
    /// </summary>
    public static readonly TimeSpan ResponseTimeout = TimeSpan.FromSeconds(10);

    private const int ConnectRetries = 3;

    private static readonly TimeSpan ConnectRetryDelay = TimeSpan.FromMilliseconds(500);

    private static readonly TimeSpan StopTimeout = TimeSpan.FromSeconds(3);

    private readonly IHost _host;

    private ClusterConnection(IHost host, DEngineClient client)
    {
        _host = host;
        Client = client;
    }

    /// <summary>The DEngine client over the connection.</summary>
    public DEngineClient Client { get; }

    /// <summary>
    /// Connects to the first reachable gateway and reads the partition count, all within
    /// <see cref="ConnectTimeout"/>. Throws <see cref="CliException"/> naming the gateways when that fails.
    /// </summary>
    public static async Task<ClusterConnection> ConnectAsync(IReadOnlyList<string> gatewayTexts, bool verbose, CancellationToken cancellationToken)
    {
        var named = string.Join(", ", gatewayTexts);
        var endpoints = await Gateways.ResolveAsync(gatewayTexts, cancellationToken);
        var host = Build(endpoints, verbose);
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(ConnectTimeout);
        try
        {
            // WaitAsync bounds the wait even if a step does not observe the token.
            await host.StartAsync(timeout.Token).WaitAsync(timeout.Token);
            var client = host.Services.GetRequiredService<DEngineClient>();
            await client.GetPartitionCountAsync().WaitAsync(timeout.Token);
            return new ClusterConnection(host, client);
        }
        catch (Exception ex) when (ex is not DEngineException)
        {
            await StopQuietlyAsync(host);
            if (cancellationToken.IsCancellationRequested)
            {
                throw new OperationCanceledException("cancelled while connecting", ex, cancellationToken);
            }
            var reason = ex is OperationCanceledException or TimeoutException
                ? $"no answer within {ConnectTimeout.TotalSeconds:0} s"
                : FirstLine(ex.Message);
            throw new CliException($"cannot connect to the DEngine gateway {named}: {reason}", ex);
        }
    }

    /// <inheritdoc />
    public ValueTask DisposeAsync() => new(StopQuietlyAsync(_host));

    private static IHost Build(IPEndPoint[] endpoints, bool verbose)
    {
        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true, ApplicationName = "dengine" });
        builder.Logging.ClearProviders();
        if (verbose)
        {
            builder.Logging
                .AddSimpleConsole(o => o.SingleLine = true)
                .AddFilter(level => level >= LogLevel.Information);
            builder.Services.Configure<Microsoft.Extensions.Logging.Console.ConsoleLoggerOptions>(o => o.LogToStandardErrorThreshold = LogLevel.Trace);
        }
        // Ctrl+C belongs to System.CommandLine (it cancels the command); the host must not swallow it.
        builder.Services.AddSingleton<IHostLifetime, PassiveLifetime>();
        builder.UseOrleansClient(client =>
        {
            client.UseStaticClustering(endpoints);
            client.Configure<ClusterOptions>(o =>
            {
                o.ClusterId = "dengine";
                o.ServiceId = "dengine";
            });
            client.Configure<ClientMessagingOptions>(o => o.ResponseTimeout = ResponseTimeout);
            client.Configure<ConnectionOptions>(o => o.OpenConnectionTimeout = TimeSpan.FromSeconds(3));
            // Orleans asks this filter whether to try connecting again; a few quick retries cover a
            // silo that is just starting, then the real reason (e.g. ConnectionRefused) surfaces.
            var attempts = 0;
            client.UseConnectionRetryFilter(async (_, token) =>
            {
                if (++attempts > ConnectRetries)
                {
                    return false;
                }
                await Task.Delay(ConnectRetryDelay, token);
                return true;
            });
            // One write per invocation: each attempt waits the whole response timeout (a first
            // activation on a cold silo can take seconds), so the user gets the partition's own answer
            // (a refusal names its reason) rather than an attempt abandoned after 1 s.
            client.AddDEngineClient(o => o.AttemptTimeout = ResponseTimeout);
        });
        return builder.Build();
    }

    private static async Task StopQuietlyAsync(IHost host)
    {
        try
        {
            using var stop = new CancellationTokenSource(StopTimeout);
            await host.StopAsync(stop.Token).WaitAsync(StopTimeout);
        }
        catch (Exception)
        {
            // The command's outcome is already decided; a slow or failed shutdown must not change it.
        }
        try
        {
            await ((IAsyncDisposable)host).DisposeAsync().AsTask().WaitAsync(StopTimeout);
        }
        catch (Exception)
        {
            // As above.
        }
    }

    private static string FirstLine(string message)
    {
        var end = message.IndexOfAny(['\r', '\n']);
        return end < 0 ? message : message[..end];
    }

    private sealed class PassiveLifetime : IHostLifetime
    {
        public Task WaitForStartAsync(CancellationToken cancellationToken) => Task.CompletedTask;

        public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
    }
}
