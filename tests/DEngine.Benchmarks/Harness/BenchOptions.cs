namespace DEngine.Benchmarks.Harness;

/// <summary>Command line of the harness: suites to run, size, output file.</summary>
public sealed class BenchOptions
{
    public static readonly string[] AllSuites = ["apply", "apply-small", "get", "put-e2e", "put-single", "put-replicated", "get-e2e", "ttl", "snapshot", "sessions"];

    public List<string> Suites { get; } = [];

    public bool Quick { get; private set; }

    public string? OutFile { get; private set; }

    /// <summary>Where temporary databases go (default: the system temp directory).</summary>
    public string WorkDir { get; private set; } = Path.GetTempPath();

    /// <summary>Measured seconds per phase of a throughput case.</summary>
    public double Seconds { get; private set; } = 5;

    /// <summary>Warm-up seconds before a phase is measured.</summary>
    public double WarmupSeconds { get; private set; } = 2;

    /// <summary>Keys loaded for the read suites.</summary>
    public int ReadKeys { get; private set; } = 200_000;

    /// <summary>Keys expiring at once in the ttl suite.</summary>
    public int TtlKeys { get; private set; } = 1_000_000;

    /// <summary>Keys expiring at once in the through-the-silo part of the ttl suite.</summary>
    public int TtlSiloKeys { get; private set; } = 200_000;

    /// <summary>Keys in the snapshot suite's engine and in its moved partition.</summary>
    public int SnapshotKeys { get; private set; } = 1_000_000;

    public static string Usage =>
        """
        usage: dotnet run -c Release --project tests/DEngine.Benchmarks -- [SUITE...] [--quick] [--out FILE]
                      [--seconds N] [--warmup N] [--work-dir DIR]
        suites: apply apply-small get put-e2e put-single put-replicated get-e2e ttl snapshot sessions (default: all)
        --quick      every suite small (the whole run stays under a minute); never assert timings on it
        --out FILE   also write the results as JSON
        --seconds N  measured seconds per phase (default 5; --quick 0.6)
        soak mode (opt-in, not a suite): ... -- soak [--minutes N] [--workers N] [--silos 1|2]
        rolling restart (opt-in, not a suite; needs redis-server and a Release build of the silo):
                     ... -- rolling-restart [--writers N] [--baseline-seconds N] [--out FILE] [--logs DIR] [--redis-gateways]
        """;

    public static BenchOptions Parse(string[] args)
    {
        var o = new BenchOptions();
        double? seconds = null, warmup = null;
        for (var i = 0; i < args.Length; i++)
        {
            var a = args[i];
            switch (a)
            {
                case "--quick":
                    o.Quick = true;
                    break;
                case "--out":
                    o.OutFile = Next(args, ref i, a);
                    break;
                case "--seconds":
                    seconds = double.Parse(Next(args, ref i, a), System.Globalization.CultureInfo.InvariantCulture);
                    break;
                case "--warmup":
                    warmup = double.Parse(Next(args, ref i, a), System.Globalization.CultureInfo.InvariantCulture);
                    break;
                case "--work-dir":
                    o.WorkDir = Next(args, ref i, a);
                    break;
                case "-h" or "--help":
                    throw new ArgumentException("help");
                default:
                    if (a.StartsWith('-') || !AllSuites.Contains(a))
                    {
                        throw new ArgumentException($"unknown argument '{a}'");
                    }
                    o.Suites.Add(a);
                    break;
            }
        }
        if (o.Suites.Count == 0)
        {
            o.Suites.AddRange(AllSuites);
        }
        if (o.Quick)
        {
            o.Seconds = 0.6;
            o.WarmupSeconds = 0.3;
            o.ReadKeys = 20_000;
            o.TtlKeys = 20_000;
            o.TtlSiloKeys = 10_000;
            o.SnapshotKeys = 20_000;
        }
        o.Seconds = seconds ?? o.Seconds;
        o.WarmupSeconds = warmup ?? o.WarmupSeconds;
        return o;
    }

    private static string Next(string[] args, ref int i, string name) =>
        ++i < args.Length ? args[i] : throw new ArgumentException($"{name} needs a value");
}
