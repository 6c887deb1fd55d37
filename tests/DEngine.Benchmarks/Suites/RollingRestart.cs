using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;
using DEngine.Benchmarks.Harness;
using DEngine.Client;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Orleans.Configuration;

namespace DEngine.Benchmarks.Suites;

/// <summary>
/// rolling-restart (opt-in command, like soak: it runs real silo processes and needs redis-server):
/// three silos of the Redis profile with replica groups of three, a steady closed-loop write load
/// through a retrying client, and the same load measured twice in one run: with no roll (baseline),
/// then while every silo is restarted in turn (SIGTERM, start, wait until every partition has its
/// three replicas back). Reports p50/p99/max write latency of both, the longest pause (the longest
/// time in which no write completed) and the writes that failed (reached the caller as an error).
/// </summary>
public static class RollingRestart
{
    private const int Silos = 3;
    private const int Partitions = 16;
    private static readonly TimeSpan ReadyTimeout = TimeSpan.FromSeconds(120);

    public static async Task<int> RunAsync(string[] args)
    {
        var writers = 8;
        var baselineSeconds = 30.0;
        string? outFile = null;
        string? logs = null;
        var redisGateways = false;
        for (var i = 0; i < args.Length; i++)
        {
            switch (args[i])
            {
                case "--writers" when i + 1 < args.Length:
                    writers = int.Parse(args[++i], CultureInfo.InvariantCulture);
                    break;
                case "--baseline-seconds" when i + 1 < args.Length:
                    baselineSeconds = double.Parse(args[++i], CultureInfo.InvariantCulture);
                    break;
                case "--out" when i + 1 < args.Length:
                    outFile = args[++i];
                    break;
                case "--redis-gateways":
                    redisGateways = true;
                    break;
                case "--logs" when i + 1 < args.Length:
                    logs = Path.GetFullPath(args[++i]);
                    Directory.CreateDirectory(logs);
                    break;
                default:
                    Console.Error.WriteLine($"error: unknown argument '{args[i]}'\nusage: ... -- rolling-restart [--writers N] [--baseline-seconds N] [--out FILE] [--logs DIR] [--redis-gateways]");
                    return 2;
            }
        }
        var root = Path.Combine(Path.GetTempPath(), "dengine-bench-roll-" + Guid.NewGuid().ToString("N")[..8]);
        Directory.CreateDirectory(root);
        var redisPort = FreePort();
        var specs = Enumerable.Range(0, Silos).Select(i => (Name: $"roll-{i}", SiloPort: FreePort(), GatewayPort: FreePort())).ToArray();
        var running = new Child?[Silos];
        using var redis = Child.Start(FindOnPath("redis-server"), ["--port", redisPort.ToString(CultureInfo.InvariantCulture), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes", "--appendfsync", "always", "--dir", root], "Ready to accept connections");
        IHost? clientHost = null;
        try
        {
            await redis.WaitReadyAsync(TimeSpan.FromSeconds(30));
            async Task StartSiloAsync(int i)
            {
                var s = specs[i];
                running[i] = Child.Start("dotnet",
                [
                    SiloDll(), "--environment", "Redis", "--Redis:ConnectionString", $"127.0.0.1:{redisPort}",
                    "--name", s.Name, "--data-dir", Path.Combine(root, s.Name),
                    "--silo-port", s.SiloPort.ToString(CultureInfo.InvariantCulture), "--gateway-port", s.GatewayPort.ToString(CultureInfo.InvariantCulture),
                    "--partitions", Partitions.ToString(CultureInfo.InvariantCulture), "--no-dashboard",
                    "--Silo:Membership:ProbeTimeout", "00:00:01", "--Silo:Membership:NumMissedProbesLimit", "2",
                    "--Silo:Membership:NumVotesForDeathDeclaration", "1", "--Silo:Membership:TableRefreshTimeout", "00:00:01",
                    "--Silo:Membership:IAmAliveTablePublishTimeout", "00:00:02",
                    .. (logs is null ? Array.Empty<string>() : ["--Logging:LogLevel:Orleans", "Information", "--Logging:LogLevel:DEngine", "Debug"]),
                ], "DEngine silo ready:", logs is null ? null : Path.Combine(logs, s.Name + ".log"));
                await running[i]!.WaitReadyAsync(ReadyTimeout);
            }
            await Task.WhenAll(Enumerable.Range(0, Silos).Select(StartSiloAsync));
            clientHost = await StartClientAsync(specs.Select(s => s.GatewayPort), redisGateways ? $"127.0.0.1:{redisPort}" : null);
            var client = clientHost.Services.GetRequiredService<DEngineClient>();
            await SettledAsync(client);
            Console.WriteLine($"rolling-restart: {Silos} silos (Redis profile, Factor 3, MinReplicas 2), {Partitions} partitions, {writers} closed-loop writers, client gateways: {(redisGateways ? "from Redis" : "static list")}");

            var load = new Load(client, writers, logs is null ? null : Path.Combine(logs, "slow-writes.log"));
            load.Start();
            // Warm-up, then the baseline window (no roll), then the roll window, in one run.
            await Task.Delay(TimeSpan.FromSeconds(5));
            var baselineFrom = Stopwatch.GetTimestamp();
            await Task.Delay(TimeSpan.FromSeconds(baselineSeconds));
            var rollFrom = Stopwatch.GetTimestamp();
            for (var i = 0; i < Silos; i++)
            {
                var step = Stopwatch.StartNew();
                await running[i]!.StopAsync(TimeSpan.FromSeconds(90));
                running[i]!.Dispose();
                running[i] = null;
                var stopped = step.Elapsed;
                await StartSiloAsync(i);
                await SettledAsync(client);
                Console.WriteLine($"  {specs[i].Name}: stopped in {stopped.TotalSeconds:0.0} s, back with every replica after {step.Elapsed.TotalSeconds:0.0} s");
            }
            var rollTo = Stopwatch.GetTimestamp();
            await load.StopAsync();

            var baseline = load.Window(baselineFrom, rollFrom);
            var roll = load.Window(rollFrom, rollTo);
            Console.WriteLine();
            Console.WriteLine("| window | writes | writes/s | p50 ms | p99 ms | max ms | longest pause ms | failed |");
            Console.WriteLine("| --- | --- | --- | --- | --- | --- | --- | --- |");
            foreach (var (name, w) in new[] { ("no roll (baseline)", baseline), ("rolling restart", roll) })
            {
                Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"| {name} | {w.Writes} | {w.Rate:0} | {w.P50:0.0} | {w.P99:0.0} | {w.Max:0} | {w.LongestPause:0} | {w.Failed} |"));
            }
            if (!load.Failures.IsEmpty)
            {
                Console.WriteLine($"failures, e.g.: {string.Join(" | ", load.Failures.Take(3))}");
            }
            if (outFile is not null)
            {
                Report.WriteJson(outFile, new { date = DateTimeOffset.UtcNow.ToString("o", CultureInfo.InvariantCulture), command = "rolling-restart " + string.Join(' ', args), machine = Machine.Describe(), writers, gateways = redisGateways ? "redis" : "static", baseline, roll });
            }
            return 0;
        }
        finally
        {
            if (clientHost is not null)
            {
                await clientHost.StopAsync(new CancellationTokenSource(TimeSpan.FromSeconds(5)).Token);
                clientHost.Dispose();
            }
            foreach (var silo in running)
            {
                silo?.Dispose();
            }
            redis.Dispose();
            try
            {
                Directory.Delete(root, recursive: true);
            }
            catch (IOException)
            {
            }
        }
    }

    /// <summary>Waits (polling, with a deadline) until every partition serves with three replicas and none catching up.</summary>
    private static async Task SettledAsync(DEngineClient client)
    {
        var deadline = DateTime.UtcNow + ReadyTimeout;
        while (true)
        {
            try
            {
                var statuses = await client.GetStatusAsync();
                if (statuses.Count == Partitions && statuses.All(s => s.Replication is { } r && r.Split(';')[0].Split(',').Length == Silos && !r.Contains("catching up", StringComparison.Ordinal)))
                {
                    return;
                }
            }
            catch (Exception ex) when (ex is DEngineException or OrleansException or TimeoutException)
            {
            }
            if (DateTime.UtcNow > deadline)
            {
                throw new TimeoutException($"the partitions did not settle with {Silos} replicas within {ReadyTimeout}");
            }
            await Task.Delay(200);
        }
    }

    /// <summary>
    /// The load's client: a static gateway list (as the README's examples), or with
    /// <paramref name="redis"/> the gateways the silos publish in the Redis membership table
    /// (refreshed every second; a stopping silo's "stop sending to this gateway" notice then matches).
    /// </summary>
    private static async Task<IHost> StartClientAsync(IEnumerable<int> gateways, string? redis)
    {
        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true });
        builder.Logging.ClearProviders();
        builder.UseOrleansClient(client => (redis is null
                ? client.UseStaticClustering([.. gateways.Select(p => new IPEndPoint(IPAddress.Loopback, p))])
                : client.UseRedisClustering(o => o.ConfigurationOptions = StackExchange.Redis.ConfigurationOptions.Parse(redis))
                    .Configure<GatewayOptions>(o => o.GatewayListRefreshPeriod = TimeSpan.FromSeconds(1)))
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
        var host = builder.Build();
        await host.StartAsync();
        return host;
    }

    private static string SiloDll()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "DEngine.Orleans.sln")))
        {
            dir = dir.Parent;
        }
        var dll = dir is null ? null : Path.Combine(dir.FullName, "src", "DEngine.Silo", "bin", "Release", "net10.0", "DEngine.Silo.dll");
        return dll is not null && File.Exists(dll) ? dll : throw new InvalidOperationException("build the silo first: dotnet build DEngine.Orleans.sln -c Release");
    }

    private static string FindOnPath(string name) =>
        (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':').Append("/usr/bin").Append("/usr/sbin").Select(d => Path.Combine(d, name)).FirstOrDefault(File.Exists)
        ?? throw new InvalidOperationException($"{name} is not installed (apt-get install redis-server).");

    private static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }

    /// <summary>The figures of one window: writes that completed in it, their latencies, the longest gap without a completed write, and the failures.</summary>
    public sealed record WindowFigures(int Writes, double Rate, double P50, double P99, double Max, double LongestPause, int Failed);

    /// <summary>Closed-loop writers of unique keys; every write's end instant and latency is kept (Stopwatch ticks).</summary>
    private sealed class Load(DEngineClient client, int writers, string? slowLog)
    {
        private static readonly long Slow = Stopwatch.Frequency; // writes slower than 1 s are listed in --logs DIR/slow-writes.log
        private readonly CancellationTokenSource _stop = new();
        private readonly List<Task> _tasks = [];
        private readonly ConcurrentQueue<(long End, long Ticks, bool Ok)> _writes = new();

        public ConcurrentQueue<string> Failures { get; } = new();

        public void Start()
        {
            for (var w = 0; w < writers; w++)
            {
                var writer = w;
                _tasks.Add(Task.Run(async () =>
                {
                    var value = Encoding.UTF8.GetBytes(new string('v', 100));
                    for (var n = 0; !_stop.IsCancellationRequested; n++)
                    {
                        var started = Stopwatch.GetTimestamp();
                        var ok = true;
                        try
                        {
                            await client.PutAsync(Encoding.UTF8.GetBytes($"roll/w{writer}/{n}"), value);
                        }
#pragma warning disable CA1031 // Every error that reaches the caller is counted as a failed write.
                        catch (Exception ex)
#pragma warning restore CA1031
                        {
                            ok = false;
                            Failures.Enqueue($"{ex.GetType().Name}: {ex.Message}");
                        }
                        var end = Stopwatch.GetTimestamp();
                        _writes.Enqueue((end, end - started, ok));
                        if (slowLog is not null && end - started > Slow)
                        {
                            var key = Encoding.UTF8.GetBytes($"roll/w{writer}/{n}");
                            var partition = await client.PartitionOfAsync(key);
                            var line = string.Create(CultureInfo.InvariantCulture, $"{DateTime.UtcNow:HH:mm:ss.fff} slow write roll/w{writer}/{n} partition {partition} took {(end - started) * 1000.0 / Stopwatch.Frequency:0} ms ok={ok}");
                            lock (_writes)
                            {
                                File.AppendAllText(slowLog, line + Environment.NewLine);
                            }
                        }
                    }
                }));
            }
        }

        public async Task StopAsync()
        {
            await _stop.CancelAsync();
            await Task.WhenAll(_tasks);
        }

        public WindowFigures Window(long from, long to)
        {
            var inside = _writes.Where(w => w.End >= from && w.End < to).OrderBy(w => w.End).ToArray();
            var latencies = new LatencyRecorder();
            foreach (var w in inside.Where(w => w.Ok))
            {
                latencies.Record(w.Ticks);
            }
            var longest = 0L;
            var previous = from;
            foreach (var w in inside.Where(w => w.Ok))
            {
                longest = Math.Max(longest, w.End - previous);
                previous = w.End;
            }
            longest = Math.Max(longest, to - previous);
            var ms = 1000.0 / Stopwatch.Frequency;
            var seconds = (to - from) / (double)Stopwatch.Frequency;
            var ok = inside.Count(w => w.Ok);
            return new WindowFigures(ok, ok / seconds, latencies.PercentileMs(50) ?? 0, latencies.PercentileMs(99) ?? 0, latencies.PercentileMs(100) ?? 0, longest * ms, inside.Length - ok);
        }
    }

    /// <summary>A child process whose output is drained; waits for a ready line; SIGTERM to stop, SIGKILL on dispose.</summary>
    private sealed class Child : IDisposable
    {
        private readonly Process _process;
        private readonly TaskCompletionSource _ready = new(TaskCreationOptions.RunContinuationsAsynchronously);

        private readonly StreamWriter? _log;
        private bool _closed;

        private Child(Process process, string marker, string? logFile)
        {
            _process = process;
            _log = logFile is null ? null : new StreamWriter(logFile, append: true) { AutoFlush = true };
            DataReceivedEventHandler onLine = (_, e) =>
            {
                if (_log is not null && e.Data is { } logged)
                {
                    lock (_log)
                    {
                        if (!_closed)
                        {
                            _log.WriteLine($"{DateTime.UtcNow:HH:mm:ss.fff} {logged}");
                        }
                    }
                }
                if (e.Data is { } line && line.Contains(marker, StringComparison.Ordinal))
                {
                    _ready.TrySetResult();
                }
            };
            process.OutputDataReceived += onLine;
            process.ErrorDataReceived += onLine;
            process.Exited += (_, _) => _ready.TrySetException(new InvalidOperationException($"{process.StartInfo.FileName} exited with {process.ExitCode} before it was ready"));
        }

        public static Child Start(string file, IEnumerable<string> args, string marker, string? logFile = null)
        {
            var info = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
            foreach (var a in args)
            {
                info.ArgumentList.Add(a);
            }
            var process = new Process { StartInfo = info, EnableRaisingEvents = true };
            var child = new Child(process, marker, logFile);
            process.Start();
            process.BeginOutputReadLine();
            process.BeginErrorReadLine();
            return child;
        }

        public Task WaitReadyAsync(TimeSpan timeout) => _ready.Task.WaitAsync(timeout);

        public async Task StopAsync(TimeSpan timeout)
        {
            if (_process.HasExited)
            {
                return;
            }
            using (var term = Process.Start("kill", ["-TERM", _process.Id.ToString(CultureInfo.InvariantCulture)]))
            {
                await term!.WaitForExitAsync();
            }
            await _process.WaitForExitAsync().WaitAsync(timeout);
        }

        public void Dispose()
        {
            try
            {
                if (!_process.HasExited)
                {
                    _process.Kill(entireProcessTree: true);
                    _process.WaitForExit(10_000);
                }
            }
            catch (InvalidOperationException)
            {
            }
            _process.Dispose();
            if (_log is not null)
            {
                lock (_log)
                {
                    _closed = true;
                    _log.Dispose();
                }
            }
        }
    }
}
