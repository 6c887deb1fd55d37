using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace DEngine.Cli.Tests;

/// <summary>
/// One real silo process (4 partitions, free ports, a temporary data directory) shared by a test
/// class. It runs as README's one-silo Quickstart does, with <c>--DEngine:Replication:Factor 1</c>
/// (a single copy per partition): with the default Factor 3 one silo refuses every write.
/// </summary>
public class SiloFixture : IAsyncLifetime
{
    public const int Partitions = 4;

    private static readonly TimeSpan ReadyTimeout = TimeSpan.FromSeconds(60);

    private readonly StringBuilder _log = new();
    private Process? _silo;
    private Task? _drain;

    public int GatewayPort { get; private set; }

    public int SiloPort { get; private set; }

    public string Gateway => $"127.0.0.1:{GatewayPort}";

    public string DataDir { get; } = Path.Combine(Path.GetTempPath(), "dengine-cli-tests-" + Guid.NewGuid().ToString("N"));

    /// <summary>The replication flags of the silo: a single copy, as README's one-silo Quickstart.</summary>
    protected virtual IEnumerable<string> ReplicationArgs => ["--DEngine:Replication:Factor", "1"];

    /// <summary>The dashboard flags of the silo: off, unless a fixture tests the dashboard.</summary>
    protected virtual IEnumerable<string> DashboardArgs => ["--no-dashboard"];

    /// <summary>Starts the silo; a restart (after <see cref="KillAsync"/>) keeps its ports and data directory.</summary>
    public async Task InitializeAsync()
    {
        if (SiloPort == 0)
        {
            ChoosePorts();
        }
        var siloPort = SiloPort;
        var start = new ProcessStartInfo("dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        string[] args =
        [
            ProcessRunner.SiloDll, "--data-dir", DataDir, "--silo-port", siloPort.ToString(), "--gateway-port", GatewayPort.ToString(),
            "--partitions", Partitions.ToString(),
            .. DashboardArgs,
            .. ReplicationArgs,
        ];
        foreach (var arg in args)
        {
            start.ArgumentList.Add(arg);
        }
        _silo = Process.Start(start) ?? throw new InvalidOperationException("the silo did not start");
        _silo.ErrorDataReceived += (_, e) =>
        {
            lock (_log)
            {
                _log.AppendLine(e.Data);
            }
        };
        _silo.BeginErrorReadLine();

        try
        {
            await WaitUntilReadyAsync(_silo);
        }
        catch
        {
            await DisposeAsync();
            throw;
        }
        // Keep draining stdout so the silo never blocks on a full pipe.
        _drain = Task.Run(async () =>
        {
            while (await _silo.StandardOutput.ReadLineAsync() is { } line)
            {
                lock (_log)
                {
                    _log.AppendLine(line);
                }
            }
        });
    }

    private async Task WaitUntilReadyAsync(Process silo)
    {
        using var deadline = new CancellationTokenSource(ReadyTimeout);
        try
        {
            while (true)
            {
                var line = await silo.StandardOutput.ReadLineAsync(deadline.Token)
                    ?? throw new InvalidOperationException($"the silo exited before it was ready:\n{Log()}");
                lock (_log)
                {
                    _log.AppendLine(line);
                }
                if (line.StartsWith("DEngine silo ready:", StringComparison.Ordinal))
                {
                    return;
                }
            }
        }
        catch (OperationCanceledException)
        {
            throw new TimeoutException($"the silo was not ready within {ReadyTimeout}:\n{Log()}");
        }
    }

    /// <summary>Picks two free ports for the silo (done by the first start unless called before).</summary>
    public void ChoosePorts()
    {
        SiloPort = FreePort();
        GatewayPort = FreePort();
        while (GatewayPort == SiloPort)
        {
            GatewayPort = FreePort();
        }
    }

    /// <summary>SIGKILL: the silo gets no chance to close anything, its sockets are left to the kernel.</summary>
    public async Task KillAsync()
    {
        if (_silo is { HasExited: false })
        {
            _silo.Kill(entireProcessTree: true);
            using var deadline = new CancellationTokenSource(TimeSpan.FromSeconds(30));
            await _silo.WaitForExitAsync(deadline.Token);
        }
        if (_drain is not null)
        {
            await _drain.WaitAsync(TimeSpan.FromSeconds(10));
            _drain = null;
        }
        _silo?.Dispose();
        _silo = null;
    }

    public async Task DisposeAsync()
    {
        await KillAsync();
        try
        {
            Directory.Delete(DataDir, recursive: true);
        }
        catch (IOException)
        {
        }
    }

    /// <summary>Runs the CLI against this silo.</summary>
    public Task<ProcessResult> CliAsync(params string[] args) =>
        ProcessRunner.RunAsync(ProcessRunner.CliDll, ["--gateway", Gateway, .. args], TimeSpan.FromSeconds(60));

    public string Log()
    {
        lock (_log)
        {
            return _log.ToString();
        }
    }

    internal static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }
}
