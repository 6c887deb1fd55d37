using System.Diagnostics;

namespace DEngine.Benchmarks.Harness;

/// <summary>Stopwatch-based load: closed-loop async workers, or a synchronous loop on this thread.</summary>
public static class LoadDriver
{
    /// <summary>
    /// <paramref name="concurrency"/> workers each run <paramref name="operation"/>(worker, sequence)
    /// back to back (closed loop). Operations completing during the measured window (after the
    /// warm-up) are counted and their latencies recorded.
    /// </summary>
    public static async Task<(long Ops, double Seconds, LatencyRecorder Latencies)> ClosedLoopAsync(
        int concurrency, TimeSpan warmup, TimeSpan duration, Func<int, long, Task> operation, Action<TimeSpan>? measuredCpu = null)
    {
        var recording = 0;
        var stop = 0;
        var recorders = new LatencyRecorder[concurrency];
        var workers = new Task[concurrency];
        for (var w = 0; w < concurrency; w++)
        {
            var worker = w;
            var recorder = recorders[w] = new LatencyRecorder();
            workers[w] = Task.Run(async () =>
            {
                long seq = 0;
                while (Volatile.Read(ref stop) == 0)
                {
                    var start = Stopwatch.GetTimestamp();
                    await operation(worker, seq++).ConfigureAwait(false);
                    if (Volatile.Read(ref recording) == 1)
                    {
                        recorder.Record(Stopwatch.GetTimestamp() - start);
                    }
                }
            });
        }
        await Task.Delay(warmup).ConfigureAwait(false);
        var cpuBefore = Process.GetCurrentProcess().TotalProcessorTime;
        var sw = Stopwatch.StartNew();
        Volatile.Write(ref recording, 1);
        await Task.Delay(duration).ConfigureAwait(false);
        Volatile.Write(ref recording, 0);
        var seconds = sw.Elapsed.TotalSeconds;
        measuredCpu?.Invoke(Process.GetCurrentProcess().TotalProcessorTime - cpuBefore);
        Volatile.Write(ref stop, 1);
        await Task.WhenAll(workers).ConfigureAwait(false);
        var all = LatencyRecorder.Merge(recorders);
        return (all.Count, seconds, all);
    }

    /// <summary>Runs <paramref name="operation"/> on this thread until <paramref name="duration"/> has passed; each call counts <c>opsPerCall</c> operations.</summary>
    public static (long Ops, double Seconds, LatencyRecorder? Latencies) Timed(TimeSpan duration, Action<long> operation, int opsPerCall = 1, bool recordLatency = true)
    {
        var recorder = recordLatency ? new LatencyRecorder() : null;
        var end = Stopwatch.GetTimestamp() + (long)(duration.TotalSeconds * Stopwatch.Frequency);
        var begin = Stopwatch.GetTimestamp();
        long calls = 0;
        long now;
        do
        {
            var start = Stopwatch.GetTimestamp();
            operation(calls++);
            now = Stopwatch.GetTimestamp();
            recorder?.Record(now - start);
        }
        while (now < end);
        return (calls * opsPerCall, (now - begin) / (double)Stopwatch.Frequency, recorder);
    }

    /// <summary>
    /// Alternates baseline and ours in <paramref name="rounds"/> rounds (machines drift; alternating
    /// spreads the drift over both) and sums each side.
    /// </summary>
    public static (Measurement Ours, Measurement Baseline) Alternate(
        int rounds, Func<(long Ops, double Seconds, LatencyRecorder? Lat)> ours, Func<(long Ops, double Seconds, LatencyRecorder? Lat)> baseline,
        string oursName, string baselineName, string unit = "ops/s")
    {
        long oOps = 0, bOps = 0;
        double oSec = 0, bSec = 0;
        var oLat = new List<LatencyRecorder>();
        var bLat = new List<LatencyRecorder>();
        for (var r = 0; r < rounds; r++)
        {
            var b = baseline();
            bOps += b.Ops;
            bSec += b.Seconds;
            if (b.Lat is not null)
            {
                bLat.Add(b.Lat);
            }
            var o = ours();
            oOps += o.Ops;
            oSec += o.Seconds;
            if (o.Lat is not null)
            {
                oLat.Add(o.Lat);
            }
        }
        return (
            Measurement.FromLatencies(oursName, oOps, oSec, oLat.Count > 0 ? LatencyRecorder.Merge(oLat) : null, unit),
            Measurement.FromLatencies(baselineName, bOps, bSec, bLat.Count > 0 ? LatencyRecorder.Merge(bLat) : null, unit));
    }
}
