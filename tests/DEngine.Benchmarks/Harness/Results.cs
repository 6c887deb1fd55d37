namespace DEngine.Benchmarks.Harness;

/// <summary>One measured side of a comparison.</summary>
public sealed record Measurement(string Name, double Ops, double Seconds, double? P50Ms = null, double? P99Ms = null, string Unit = "ops/s")
{
    public double Rate => Seconds > 0 ? Ops / Seconds : 0;

    public static Measurement FromLatencies(string name, double ops, double seconds, LatencyRecorder? latencies, string unit = "ops/s") =>
        new(name, ops, seconds, latencies?.PercentileMs(50), latencies?.PercentileMs(99), unit);
}

/// <summary>Ours against one baseline: the ratio is ours / baseline (rates), higher is better.</summary>
public sealed record Comparison(Measurement Baseline, double Ratio);

/// <summary>A row group of the report: one case, ours, its baselines, the target and the verdict.</summary>
public sealed class CaseResult
{
    public required string Suite { get; init; }

    public required string Case { get; init; }

    public Measurement? Ours { get; init; }

    public List<Comparison> Comparisons { get; } = [];

    public string Target { get; init; } = "";

    /// <summary>True/false when the target applies to this case, null when it does not (or could not be measured).</summary>
    public bool? Met { get; set; }

    /// <summary>Counters and derived figures that explain the result (fsyncs/s, entries per chunk, CPU).</summary>
    public Dictionary<string, double> Counters { get; } = [];

    public string Note { get; set; } = "";

    public CaseResult Against(Measurement baseline)
    {
        Comparisons.Add(new Comparison(baseline, baseline.Rate > 0 && Ours is not null ? Ours.Rate / baseline.Rate : 0));
        return this;
    }
}
