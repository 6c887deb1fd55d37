using System.Collections.Concurrent;
using System.Diagnostics;
using DEngine.Benchmarks.Harness;
using DEngine.Client;
using DEngine.Orleans;

namespace DEngine.Benchmarks.Suites;

/// <summary>
/// put-replicated: durable puts at 512 closed-loop writers on three in-process silos, replica groups
/// of three (Factor 3, MinReplicas 2) against a single copy (Factor 1) on three other silos of the
/// same process, in one run. Every silo is in this process, so all replicas' work shares the same
/// cores: process CPU per write is reported beside the throughput ratio.
/// </summary>
public static class ReplicationSuites
{
    private const int Silos = 3;
    private const int Writers = 512;
    private const int Rounds = 4;

    /// <summary>How long the replicated cluster may take to give every partition three replicas.</summary>
    private static readonly TimeSpan SettleTimeout = TimeSpan.FromSeconds(90);

    public static async Task<CaseResult> PutReplicatedAsync(BenchOptions o)
    {
        // Both clusters stay up and the sides alternate in rounds: this VM is shared, and one phase
        // per side let whatever else ran during it decide the ratio. The idle cluster only renews
        // leases (one heartbeat per partition per second).
        var single = await Side.StartAsync(o, replicationFactor: 1, "single copy (Factor 1), 3 silos");
        try
        {
            var replicated = await Side.StartAsync(o, replicationFactor: Silos, "replica groups (Factor 3, MinReplicas 2), 3 silos");
            try
            {
                var phase = TimeSpan.FromSeconds(o.Seconds / Rounds);
                var rampUp = TimeSpan.FromSeconds(Math.Min(0.25, o.WarmupSeconds));
                await single.RunAsync(TimeSpan.FromSeconds(o.WarmupSeconds), TimeSpan.Zero, record: false);
                await replicated.RunAsync(TimeSpan.FromSeconds(o.WarmupSeconds), TimeSpan.Zero, record: false);
                for (var round = 0; round < Rounds; round++)
                {
                    await single.RunAsync(rampUp, phase, record: true);
                    await replicated.RunAsync(rampUp, phase, record: true);
                }
                return await ReportAsync(single, replicated);
            }
            finally
            {
                await replicated.DisposeAsync();
            }
        }
        finally
        {
            await single.DisposeAsync();
        }
    }

    private static async Task<CaseResult> ReportAsync(Side single, Side replicated)
    {
        var ours = replicated.Measurement();
        var r = new CaseResult
        {
            Suite = "put-replicated",
            Case = $"{Writers} writers, 3 silos",
            Ours = ours,
            Target = "ratio >= 0.3; CPU/write <= 3.3 x Factor 1's",
        }.Against(single.Measurement());
        var cpuRatio = replicated.CpuPerWriteUs / single.CpuPerWriteUs;
        r.Counters["CPU us/write (Factor 3)"] = replicated.CpuPerWriteUs;
        r.Counters["CPU us/write (Factor 1)"] = single.CpuPerWriteUs;
        r.Counters["CPU-per-write ratio (Factor 3 / Factor 1)"] = cpuRatio;
        r.Counters["process CPU % of all cores (Factor 3)"] = replicated.CpuPercent;
        r.Counters["process CPU % of all cores (Factor 1)"] = single.CpuPercent;
        // Replicas sync their replicated logs themselves, not through WalSyncLoop: Factor 1's only.
        r.Counters["WalSyncLoop fsyncs/s, all silos (Factor 1)"] = single.SyncsPerSecond;
        // Writes per chunk decide the replicated side here: every chunk costs an fsync of each replica's log on this one disk (MaxChunksInFlight).
        r.Counters["writes per chunk (Factor 3)"] = replicated.WritesPerChunk;
        r.Counters["writes per chunk (Factor 1)"] = single.WritesPerChunk;
        r.Counters["failed writes (Factor 3)"] = replicated.Failures;
        r.Counters["failed writes (Factor 1)"] = single.Failures;
        r.Counters["s until 3 replicas everywhere (Factor 3)"] = replicated.SettleSeconds;
        var failures = single.FailureKinds + replicated.FailureKinds;
        r.Note = $"primaries per silo: Factor 1 {single.Layout}; Factor 3 {replicated.Layout}; Factor 3 after the run: {await replicated.ReplicationNowAsync()}"
            + (failures.Length > 0 ? $"; failures: Factor 1 [{single.FailureKinds}], Factor 3 [{replicated.FailureKinds}]" : "");
        r.Met = r.Comparisons[0].Ratio >= 0.3 && cpuRatio <= 3.3 && replicated.Failures == 0 && single.Failures == 0;
        return r;
    }

    /// <summary>One side: its three silos, its writers' key space, and what its measured rounds summed to.</summary>
    private sealed class Side : IAsyncDisposable
    {
        private readonly IReadOnlyList<SiloHost> _silos;
        private readonly int _factor;
        private readonly string _name;
        private readonly List<LatencyRecorder> _latencies = [];
        private readonly ConcurrentDictionary<string, long> _kinds = new();
        private long _ops;
        private double _seconds;
        private TimeSpan _cpu;
        private long _failures;
        private long _nextSequence;
        private long _syncs;
        private long _chunks;
        private long _writes;

        private Side(IReadOnlyList<SiloHost> silos, int factor, string name, double settleSeconds, string layout)
        {
            _silos = silos;
            _factor = factor;
            _name = name;
            SettleSeconds = settleSeconds;
            Layout = layout;
        }

        public double SettleSeconds { get; }

        public string Layout { get; }

        public long Failures => Interlocked.Read(ref _failures);

        public string FailureKinds => string.Join(", ", _kinds.Select(kv => $"{kv.Key} x{kv.Value}"));

        /// <summary>fsyncs of every silo's WalSyncLoop (primary and replicas) per second of the measured rounds.</summary>
        public double SyncsPerSecond => _seconds > 0 ? _syncs / _seconds : double.NaN;

        /// <summary>Writes per chunk the primaries committed (how much the writers batched up).</summary>
        public double WritesPerChunk => _chunks > 0 ? _writes / (double)_chunks : double.NaN;

        public double CpuPerWriteUs => _ops > 0 ? _cpu.TotalMicroseconds / _ops : double.NaN;

        public double CpuPercent => _seconds > 0 ? 100 * _cpu.TotalSeconds / (_seconds * Environment.ProcessorCount) : double.NaN;

        private DEngineClient Client => _silos[0].Client;

        public static async Task<Side> StartAsync(BenchOptions o, int replicationFactor, string name)
        {
            var silos = await SiloHost.StartClusterAsync(o, Silos, replicationFactor, clusterId: $"dengine-bench-r{replicationFactor}");
            try
            {
                var settle = Stopwatch.StartNew();
                var status = replicationFactor > 1 ? await SettledAsync(silos[0].Client) : await silos[0].Client.GetStatusAsync();
                var layout = string.Join(", ", status.GroupBy(s => SiloName(s.Silo)).OrderBy(g => g.Key).Select(g => $"{g.Key} {g.Count()}"));
                return new Side(silos, replicationFactor, name, settle.Elapsed.TotalSeconds, layout);
            }
            catch
            {
                await DisposeAllAsync(silos);
                throw;
            }
        }

        /// <summary>One closed loop of <see cref="Writers"/> writers; its measured window is added to this side when <paramref name="record"/>.</summary>
        public async Task RunAsync(TimeSpan rampUp, TimeSpan duration, bool record)
        {
            // Unique keys: each loop continues its workers' sequences, in a key space of this side's own.
            var sequenceBase = _nextSequence;
            var (syncsBefore, chunksBefore, writesBefore) = await CountersAsync();
            long highest = 0;
            var used = TimeSpan.Zero;
            var (ops, seconds, latencies) = await LoadDriver.ClosedLoopAsync(Writers, rampUp, duration, async (w, s) =>
            {
                InterlockedMax(ref highest, s);
                try
                {
                    await Client.PutAsync(Data.Key(((long)w << 36) + sequenceBase + s, 20 + _factor), Data.Value);
                }
                catch (Exception ex)
                {
                    // Counted and named in the report; a failed write must not end the whole suite.
                    Interlocked.Increment(ref _failures);
                    _kinds.AddOrUpdate(ex is DEngineException d ? d.Code.ToString() : ex.GetType().Name, 1, (_, n) => n + 1);
                }
            }, c => used = c);
            _nextSequence = sequenceBase + highest + 1;
            if (record)
            {
                // Over the whole loop (ramp-up and drain included): fsyncs/s is a little above the measured window's.
                var (syncsAfter, chunksAfter, writesAfter) = await CountersAsync();
                _syncs += syncsAfter - syncsBefore;
                _chunks += chunksAfter - chunksBefore;
                _writes += writesAfter - writesBefore;
                _ops += ops;
                _seconds += seconds;
                _cpu += used;
                _latencies.Add(latencies);
            }
        }

        private async Task<(long Syncs, long Chunks, long Writes)> CountersAsync()
        {
            var status = await Client.GetStatusAsync();
            return (_silos.Sum(s => s.SyncLoop.Syncs), status.Sum(s => s.ChunksApplied), status.Sum(s => s.WritesApplied));
        }

        public Measurement Measurement() =>
            Harness.Measurement.FromLatencies($"DEngineClient.PutAsync x{Writers}, {_name}", _ops, _seconds, LatencyRecorder.Merge(_latencies));

        public async Task<string> ReplicationNowAsync()
        {
            var status = await Client.GetStatusAsync();
            var missing = status.Where(s => !ThreeReplicas(s.Replication)).Select(s => $"p{s.Partition}: {s.Replication ?? "(single copy)"}").ToArray();
            return missing.Length == 0 ? "every partition has 3 replicas" : string.Join(" | ", missing);
        }

        public ValueTask DisposeAsync() => new(DisposeAllAsync(_silos));

        private static async Task DisposeAllAsync(IReadOnlyList<SiloHost> silos)
        {
            foreach (var silo in silos)
            {
                silo.BeginStopping();
            }
            // The joining silos first, the development-clustering primary last.
            foreach (var silo in silos.Reverse())
            {
                await silo.DisposeAsync();
            }
        }

        private static void InterlockedMax(ref long target, long value)
        {
            long seen;
            while (value > (seen = Interlocked.Read(ref target)) && Interlocked.CompareExchange(ref target, value, seen) != seen)
            {
            }
        }
    }

    /// <summary>Polls the partitions' status until every one has three replicas and none catching up.</summary>
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

    /// <summary>"v3: silo0*, silo1, silo2" with nothing after it (no learners catching up, not below the factor or the floor).</summary>
    private static bool ThreeReplicas(string? replication) =>
        replication is not null && !replication.Contains(';', StringComparison.Ordinal)
        && replication[(replication.IndexOf(": ", StringComparison.Ordinal) + 2)..].Split(", ").Length == Silos;

    private static string SiloName(string silo) => silo.IndexOf(' ', StringComparison.Ordinal) is var i and > 0 ? silo[..i] : silo;
}
