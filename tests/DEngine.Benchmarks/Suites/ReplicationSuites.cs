using System.Diagnostics;
using DEngine.Benchmarks.Harness;
using DEngine.Client;
using DEngine.Orleans;

namespace DEngine.Benchmarks.Suites;

/// <summary>
/// put-replicated: durable puts at 512 closed-loop writers on three in-process silos, replica groups
/// of three (Factor 3, MinReplicas 2) against a single copy (Factor 1) on the same three silos, in one
/// run. Every silo is in this process, so all replicas' work shares the same cores: CPU per write is
/// reported beside the throughput ratio.
/// </summary>
public static class ReplicationSuites
{
    private const int Silos = 3;
    private const int Writers = 512;

    /// <summary>How long the replicated cluster may take to give every partition three replicas.</summary>
    private static readonly TimeSpan SettleTimeout = TimeSpan.FromSeconds(90);

    public static async Task<CaseResult> PutReplicatedAsync(BenchOptions o)
    {
        var single = await MeasureAsync(o, replicationFactor: 1, "single copy (Factor 1), 3 silos");
        var replicated = await MeasureAsync(o, replicationFactor: Silos, "replica groups (Factor 3, MinReplicas 2), 3 silos");
        var r = new CaseResult
        {
            Suite = "put-replicated",
            Case = $"{Writers} writers, 3 silos",
            Ours = replicated.Measurement,
            Target = "ratio >= 0.3; CPU/write <= 3.3 x Factor 1's",
        }.Against(single.Measurement);
        var cpuRatio = replicated.CpuPerWriteUs / single.CpuPerWriteUs;
        r.Counters["CPU us/write (Factor 3)"] = replicated.CpuPerWriteUs;
        r.Counters["CPU us/write (Factor 1)"] = single.CpuPerWriteUs;
        r.Counters["CPU-per-write ratio (Factor 3 / Factor 1)"] = cpuRatio;
        r.Counters["process CPU % of all cores (Factor 3)"] = replicated.CpuPercent;
        r.Counters["process CPU % of all cores (Factor 1)"] = single.CpuPercent;
        r.Counters["failed writes (Factor 3)"] = replicated.Failures;
        r.Counters["failed writes (Factor 1)"] = single.Failures;
        r.Counters["s until 3 replicas everywhere (Factor 3)"] = replicated.SettleSeconds;
        r.Note = $"primaries per silo: Factor 1 {single.Layout}; Factor 3 {replicated.Layout}; after the run: {replicated.ReplicationAfter}"
            + (replicated.FailureKinds.Length + single.FailureKinds.Length > 0 ? $"; failures: {single.FailureKinds} / {replicated.FailureKinds}" : "");
        r.Met = r.Comparisons[0].Ratio >= 0.3 && cpuRatio <= 3.3 && replicated.Failures == 0 && single.Failures == 0;
        return r;
    }

    private sealed record Side(Measurement Measurement, double CpuPerWriteUs, double CpuPercent, long Failures, string FailureKinds, double SettleSeconds, string Layout, string ReplicationAfter);

    private static async Task<Side> MeasureAsync(BenchOptions o, int replicationFactor, string name)
    {
        var silos = await SiloHost.StartClusterAsync(o, Silos, replicationFactor);
        try
        {
            var client = silos[0].Client;
            var settle = Stopwatch.StartNew();
            var status = replicationFactor > 1 ? await SettledAsync(client) : await client.GetStatusAsync();
            var settleSeconds = settle.Elapsed.TotalSeconds;
            var layout = string.Join(", ", status.GroupBy(s => SiloName(s.Silo)).OrderBy(g => g.Key).Select(g => $"{g.Key} {g.Count()}"));
            long failures = 0;
            var kinds = new System.Collections.Concurrent.ConcurrentDictionary<string, long>();
            var used = TimeSpan.Zero;
            // Unique keys per writer and per side (the key space is the factor), ~100-byte values.
            var (ops, seconds, latencies) = await LoadDriver.ClosedLoopAsync(
                Writers, TimeSpan.FromSeconds(o.WarmupSeconds), TimeSpan.FromSeconds(o.Seconds),
                async (w, s) =>
                {
                    try
                    {
                        await client.PutAsync(Data.Key(((long)w << 36) + s, 20 + replicationFactor), Data.Value);
                    }
                    catch (Exception ex)
                    {
                        // A failed write is counted (and named in the note), not a crash of the whole suite.
                        Interlocked.Increment(ref failures);
                        kinds.AddOrUpdate(ex is DEngineException d ? d.Code.ToString() : ex.GetType().Name, 1, (_, n) => n + 1);
                    }
                },
                c => used = c);
            var after = await client.GetStatusAsync();
            var replicationAfter = replicationFactor > 1
                ? (after.All(s => ThreeReplicas(s.Replication)) ? "every partition still has 3 replicas" : string.Join(" | ", after.Where(s => !ThreeReplicas(s.Replication)).Select(s => $"p{s.Partition}: {s.Replication}")))
                : "single copy";
            return new Side(
                Measurement.FromLatencies($"DEngineClient.PutAsync x{Writers}, {name}", ops, seconds, latencies),
                ops > 0 ? used.TotalMicroseconds / ops : double.NaN,
                100 * used.TotalSeconds / (seconds * Environment.ProcessorCount),
                failures,
                string.Join(", ", kinds.Select(kv => $"{kv.Key} x{kv.Value}")),
                settleSeconds,
                layout,
                replicationAfter);
        }
        finally
        {
            foreach (var silo in silos.Reverse())
            {
                await silo.DisposeAsync();
            }
        }
    }

    /// <summary>Polls the partitions' status until every one has three replicas and nobody catching up.</summary>
    private static async Task<IReadOnlyList<PartitionStatus>> SettledAsync(DEngineClient client)
    {
        var deadline = Stopwatch.StartNew();
        IReadOnlyList<PartitionStatus> status = [];
        while (deadline.Elapsed < SettleTimeout)
        {
            status = await client.GetStatusAsync();
            if (status.All(s => ThreeReplicas(s.Replication)))
            {
                return status;
            }
            await Task.Delay(200);
        }
        throw new TimeoutException($"not every partition had 3 replicas within {SettleTimeout}: {string.Join(" | ", status.Where(s => !ThreeReplicas(s.Replication)).Select(s => $"p{s.Partition}: {s.Replication ?? "(single copy)"}"))}");
    }

    /// <summary>"v3: silo0*, silo1, silo2" with nothing after it (no learners catching up, not below the factor).</summary>
    private static bool ThreeReplicas(string? replication) =>
        replication is not null && !replication.Contains(';', StringComparison.Ordinal)
        && replication[(replication.IndexOf(": ", StringComparison.Ordinal) + 2)..].Split(", ").Length == Silos;

    private static string SiloName(string silo) => silo.IndexOf(' ', StringComparison.Ordinal) is var i and > 0 ? silo[..i] : silo;
}
