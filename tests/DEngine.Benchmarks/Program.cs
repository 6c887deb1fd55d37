using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using DEngine.Benchmarks.Harness;
using DEngine.Benchmarks.Suites;

// DEngine benchmark harness: every suite measures ours and a baseline in the same run on the same
// machine and reports the ratio. Never assert timings on its output.

if (args.Length > 0 && args[0] == "soak")
{
    // Opt-in bounded soak run: not a suite, never part of the default list or --quick.
    return await Soak.RunAsync(args[1..]);
}

if (args.Length > 0 && args[0] == "rolling-restart")
{
    // Opt-in, like soak: real silo processes and redis-server; latency during a roll against no roll, in one run.
    return await RollingRestart.RunAsync(args[1..]);
}

BenchOptions options;
try
{
    options = BenchOptions.Parse(args);
}
catch (ArgumentException ex)
{
    if (ex.Message != "help")
    {
        Console.Error.WriteLine($"error: {ex.Message}");
    }
    Console.Error.WriteLine(BenchOptions.Usage);
    return ex.Message == "help" ? 0 : 2;
}

var machine = Machine.Describe();
Console.WriteLine($"DEngine benchmarks {(options.Quick ? "(quick) " : "")}— {machine["cpu"]}, {machine["cores"]} cores, {machine["memory"]}, {RuntimeInformation.FrameworkDescription}");
Console.WriteLine($"suites: {string.Join(' ', options.Suites)}; {options.Seconds.ToString(CultureInfo.InvariantCulture)} s measured per phase after {options.WarmupSeconds.ToString(CultureInfo.InvariantCulture)} s warm-up");

var results = new List<CaseResult>();
var total = Stopwatch.StartNew();
foreach (var suite in options.Suites)
{
    var sw = Stopwatch.StartNew();
    Console.Write($"  {suite} ... ");
    try
    {
        switch (suite)
        {
            case "apply":
                results.Add(EngineSuites.Apply(options));
                break;
            case "apply-small":
                results.Add(EngineSuites.ApplySmall(options));
                break;
            case "get":
                results.Add(EngineSuites.Get(options));
                break;
            case "put-e2e":
                results.AddRange(await ClusterSuites.PutE2eAsync(options));
                break;
            case "put-single":
                results.Add(await ClusterSuites.PutSingleAsync(options));
                break;
            case "put-replicated":
                results.Add(await ReplicationSuites.PutReplicatedAsync(options));
                break;
            case "get-e2e":
                results.Add(await ClusterSuites.GetE2eAsync(options));
                break;
            case "ttl":
                results.Add(EngineSuites.TtlEngine(options));
                results.Add(await ClusterSuites.TtlSiloAsync(options));
                break;
            case "sessions":
                results.Add(SessionSuites.Run(options));
                break;
            case "snapshot":
                var (snapshotRows, copy) = SnapshotSuites.Engine(options);
                results.AddRange(snapshotRows);
                results.AddRange(await SnapshotSuites.CrossSiloAsync(options, copy));
                break;
        }
        Console.WriteLine($"{sw.Elapsed.TotalSeconds:0.0} s");
    }
    catch (Exception ex)
    {
        Console.WriteLine("FAILED");
        Console.Error.WriteLine(ex);
        results.Add(new CaseResult { Suite = suite, Case = "(failed)", Note = $"{ex.GetType().Name}: {ex.Message}" });
    }
}
Console.WriteLine();
Console.WriteLine(Report.Table(results));
Console.WriteLine($"total {total.Elapsed.TotalSeconds:0.0} s");

if (options.OutFile is not null)
{
    Report.WriteJson(options.OutFile, new
    {
        date = DateTimeOffset.UtcNow.ToString("o", CultureInfo.InvariantCulture),
        command = "dotnet run -c Release --project tests/DEngine.Benchmarks -- " + string.Join(' ', args),
        machine,
        quick = options.Quick,
        secondsPerPhase = options.Seconds,
        results,
    });
    Console.WriteLine($"wrote {options.OutFile}");
}
return results.Any(r => r.Case == "(failed)") ? 1 : 0;
