using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Text.RegularExpressions;
using DEngine.Benchmarks.Harness;
using DEngine.Client;

namespace DEngine.Benchmarks.Suites;

/// <summary>
/// soak: an opt-in bounded run (not a suite, never in --quick or CI). Two in-process silos, mixed
/// load through <see cref="DEngineClient"/> (puts with and without TTL, gets, deletes, CAS),
/// an on-demand snapshot every 15 s, a partition move every minute, TTL expiry all along, and a
/// TTL probe that checks expired keys are gone. Prints a line every 10 s (ops/s, p50/p99 per
/// operation kind over the interval, errors) and every error as it happens; a summary at the end.
/// </summary>
public static partial class Soak
{
    public const string Usage =
        """
        usage: dotnet run -c Release --project tests/DEngine.Benchmarks -- soak [--minutes N] [--workers N] [--silos 1|2] [--work-dir DIR]
        --minutes N  how long to run (default 5)
        --workers N  closed-loop client workers (default 32)
        --silos N    1 or 2 in-process silos (default 2; with 2 a partition moves every minute)
        """;

    private static readonly string[] Kinds = ["put", "put-ttl", "get", "delete", "cas"];
    private const int KeySpace = 50_000;
    private static readonly TimeSpan ReportEvery = TimeSpan.FromSeconds(10);
    private static readonly TimeSpan SnapshotEvery = TimeSpan.FromSeconds(15);
    private static readonly TimeSpan MoveEvery = TimeSpan.FromMinutes(1);

    private sealed class Interval
    {
        public readonly LatencyRecorder[] Latency = Kinds.Select(_ => new LatencyRecorder()).ToArray();
        public readonly object[] Locks = Kinds.Select(_ => new object()).ToArray();
        public long Errors;
    }

    public static async Task<int> RunAsync(string[] args)
    {
        double minutes = 5;
        var workers = 32;
        var siloCount = 2;
        var workDir = Path.GetTempPath();
        for (var i = 0; i < args.Length; i++)
        {
            string Next() => ++i < args.Length ? args[i] : throw new ArgumentException($"{args[i - 1]} needs a value");
            switch (args[i])
            {
                case "--minutes":
                    minutes = double.Parse(Next(), CultureInfo.InvariantCulture);
                    break;
                case "--workers":
                    workers = int.Parse(Next(), CultureInfo.InvariantCulture);
                    break;
                case "--silos":
                    siloCount = int.Parse(Next(), CultureInfo.InvariantCulture);
                    break;
                case "--work-dir":
                    workDir = Next();
                    break;
                case "-h" or "--help":
                    Console.WriteLine(Usage);
                    return 0;
                default:
                    Console.Error.WriteLine($"error: unknown argument '{args[i]}'");
                    Console.Error.WriteLine(Usage);
                    return 2;
            }
        }
        if (minutes <= 0 || workers < 1 || siloCount is < 1 or > 2)
        {
            Console.Error.WriteLine("error: --minutes must be > 0, --workers >= 1, --silos 1 or 2");
            return 2;
        }

        var options = BenchOptions.Parse(["--work-dir", workDir]);
        var machine = Machine.Describe();
        Console.WriteLine($"DEngine soak — {machine["cpu"]}, {machine["cores"]} cores, {machine["memory"]}, {machine["runtime"]}");
        Console.WriteLine($"{minutes.ToString(CultureInfo.InvariantCulture)} min, {siloCount} silo(s), {SiloHost.Partitions} partitions, {workers} workers, {KeySpace} keys; mix: put 30 %, put-ttl(1-3 s) 15 %, get 30 %, delete 10 %, cas 15 %; snapshot every {SnapshotEvery.TotalSeconds:0} s{(siloCount == 2 ? $", partition move every {MoveEvery.TotalSeconds:0} s" : "")}");
        var silos = siloCount == 1 ? [await SiloHost.StartAsync(options)] : await SiloHost.StartClusterAsync(options, siloCount);
        var client = silos[0].Client;
        var clock = Stopwatch.StartNew();
        var end = TimeSpan.FromMinutes(minutes);
        var current = new Interval();
        var totals = Kinds.Select(_ => new LatencyRecorder()).ToArray();
        var errorCounts = new ConcurrentDictionary<string, long>();
        long totalErrors = 0, snapshots = 0, moves = 0, ttlChecks = 0;
        var stop = new CancellationTokenSource();

        void Error(string what, Exception ex)
        {
            Interlocked.Increment(ref totalErrors);
            Interlocked.Increment(ref Volatile.Read(ref current).Errors);
            var detail = ex is DEngineException d ? $"{ex.GetType().Name}({d.Code})" : ex.GetType().Name;
            var message = ex.Message.ReplaceLineEndings(" ");
            Console.WriteLine($"  ! [{clock.Elapsed.TotalSeconds,6:0.0} s] {what}: {detail}: {message}");
            errorCounts.AddOrUpdate($"{what}: {detail}: {Digits().Replace(message, "N")}", 1, (_, c) => c + 1);
        }

        async Task Worker(int id)
        {
            var rng = new Random(id);
            var value = new byte[Data.ValueBytes];
            while (!stop.IsCancellationRequested)
            {
                var key = Data.Key(rng.Next(KeySpace), space: 20);
                var roll = rng.Next(100);
                var kind = roll < 30 ? 0 : roll < 45 ? 1 : roll < 75 ? 2 : roll < 85 ? 3 : 4;
                rng.NextBytes(value);
                long start = 0;
                try
                {
                    byte[]? expected = null;
                    if (kind == 4)
                    {
                        expected = await client.GetAsync(key);
                    }
                    start = Stopwatch.GetTimestamp();
                    switch (kind)
                    {
                        case 0:
                            await client.PutAsync(key, value.ToArray());
                            break;
                        case 1:
                            await client.PutAsync(key, value.ToArray(), (ulong)rng.Next(1, 4));
                            break;
                        case 2:
                            var got = await client.GetAsync(key);
                            if (got is not null && got.Length != Data.ValueBytes)
                            {
                                throw new InvalidDataException($"get returned {got.Length} bytes, every write is {Data.ValueBytes}");
                            }
                            break;
                        case 3:
                            await client.DeleteAsync(key);
                            break;
                        default:
                            await client.CompareAndSwapAsync(key, expected, value.ToArray());
                            break;
                    }
                    var ticks = Stopwatch.GetTimestamp() - start;
                    var interval = Volatile.Read(ref current);
                    lock (interval.Locks[kind])
                    {
                        interval.Latency[kind].Record(ticks);
                    }
                }
                catch (Exception ex) when (!stop.IsCancellationRequested || ex is not OperationCanceledException)
                {
                    Error(Kinds[kind], ex);
                }
            }
        }

        // Every second a key of its own written with a 1 s TTL; 3 s later it must be gone.
        async Task TtlProbe()
        {
            var pending = new Queue<(byte[] Key, TimeSpan CheckAt)>();
            long n = 0;
            while (!stop.IsCancellationRequested)
            {
                try
                {
                    var key = Data.Key(n++, space: 21);
                    await client.PutAsync(key, Data.Value, ttlSeconds: 1);
                    pending.Enqueue((key, clock.Elapsed + TimeSpan.FromSeconds(3)));
                    while (pending.Count > 0 && pending.Peek().CheckAt <= clock.Elapsed)
                    {
                        var (probe, _) = pending.Dequeue();
                        Interlocked.Increment(ref ttlChecks);
                        if (await client.GetAsync(probe) is not null)
                        {
                            throw new InvalidDataException("a key written with a 1 s TTL was still readable 3 s later");
                        }
                    }
                }
                catch (Exception ex) when (!stop.IsCancellationRequested)
                {
                    Error("ttl-probe", ex);
                }
                await Delay(TimeSpan.FromSeconds(1));
            }
        }

        async Task Snapshots()
        {
            var p = 0;
            while (!stop.IsCancellationRequested)
            {
                await Delay(SnapshotEvery);
                if (stop.IsCancellationRequested)
                {
                    break;
                }
                var partition = p++ % SiloHost.Partitions;
                try
                {
                    var sw = Stopwatch.StartNew();
                    var s = await client.CreateSnapshotAsync(partition);
                    Interlocked.Increment(ref snapshots);
                    Console.WriteLine($"  . [{clock.Elapsed.TotalSeconds,6:0.0} s] snapshot of partition {partition}: {s.Name}, {s.Files} files, {s.Bytes / 1e6:0.0} MB in {sw.Elapsed.TotalMilliseconds:0} ms");
                }
                catch (Exception ex) when (!stop.IsCancellationRequested)
                {
                    Error("snapshot", ex);
                }
            }
        }

        async Task Moves()
        {
            var p = 5;
            while (!stop.IsCancellationRequested)
            {
                await Delay(MoveEvery);
                if (stop.IsCancellationRequested)
                {
                    break;
                }
                var partition = p++ % SiloHost.Partitions;
                try
                {
                    var status = await client.GetPartitionStatusAsync(partition);
                    var target = silos.First(s => !status.Silo.StartsWith(s.Name + " ", StringComparison.Ordinal)).Name;
                    var sw = Stopwatch.StartNew();
                    var after = await client.MovePartitionAsync(partition, target, TimeSpan.FromMinutes(2));
                    Interlocked.Increment(ref moves);
                    var t = after.LastTransfer;
                    Console.WriteLine($"  > [{clock.Elapsed.TotalSeconds,6:0.0} s] moved partition {partition} to {target} in {sw.Elapsed.TotalSeconds:0.00} s" +
                        (t is null ? "" : $" (LastTransfer {t.Bytes / 1e6:0.0} MB in {t.Seconds:0.00} s, {t.MegabytesPerSecond:0.0} MB/s, {t.ChunksRefetched} chunks refetched)"));
                }
                catch (Exception ex) when (!stop.IsCancellationRequested)
                {
                    Error("move", ex);
                }
            }
        }

        async Task Delay(TimeSpan t)
        {
            try
            {
                await Task.Delay(t, stop.Token);
            }
            catch (OperationCanceledException)
            {
            }
        }

        var tasks = new List<Task>();
        for (var w = 0; w < workers; w++)
        {
            var id = w;
            tasks.Add(Task.Run(() => Worker(id)));
        }
        tasks.Add(Task.Run(TtlProbe));
        tasks.Add(Task.Run(Snapshots));
        if (silos.Count > 1)
        {
            tasks.Add(Task.Run(Moves));
        }

        long expiredBefore = (await client.GetStatusAsync()).Sum(s => s.KeysExpired);
        var expiredStart = expiredBefore;
        var intervalStart = clock.Elapsed;
        var cpuBefore = Process.GetCurrentProcess().TotalProcessorTime;
        Console.WriteLine($"{"t s",6} | {"ops/s",8} | " + string.Join(" | ", Kinds.Select(k => $"{k + "/s",8} {"p50",5} {"p99",5}")) + " | expired | errors | CPU %   (p50/p99 in ms over the interval)");
        while (clock.Elapsed < end)
        {
            var wait = intervalStart + ReportEvery - clock.Elapsed;
            if (wait > TimeSpan.Zero)
            {
                await Task.Delay(wait < end - clock.Elapsed ? wait : end - clock.Elapsed + TimeSpan.FromMilliseconds(1));
            }
            var done = Interlocked.Exchange(ref current, new Interval());
            var now = clock.Elapsed;
            var seconds = (now - intervalStart).TotalSeconds;
            intervalStart = now;
            long expired;
            try
            {
                expired = (await client.GetStatusAsync()).Sum(s => s.KeysExpired);
            }
            catch (Exception ex)
            {
                Error("status", ex);
                expired = expiredBefore;
            }
            var cpu = Process.GetCurrentProcess().TotalProcessorTime;
            var cells = new List<string>();
            long ops = 0;
            for (var k = 0; k < Kinds.Length; k++)
            {
                // A worker that picked up the old interval just before the swap may still record into it: read under its lock.
                lock (done.Locks[k])
                {
                    var l = done.Latency[k];
                    ops += l.Count;
                    totals[k] = LatencyRecorder.Merge([totals[k], l]);
                    cells.Add($"{l.Count / seconds,8:#,0} {l.PercentileMs(50) ?? 0,5:0.00} {l.PercentileMs(99) ?? 0,5:0.00}");
                }
            }
            Console.WriteLine($"{now.TotalSeconds,6:0} | {ops / seconds,8:#,0} | {string.Join(" | ", cells)} | {expired - expiredBefore,7:#,0} | {done.Errors,6} | {100 * (cpu - cpuBefore).TotalSeconds / seconds / Environment.ProcessorCount,5:0}");
            cpuBefore = cpu;
            expiredBefore = expired;
        }
        await stop.CancelAsync();
        await Task.WhenAll(tasks);
        var elapsed = clock.Elapsed.TotalSeconds;

        Console.WriteLine();
        Console.WriteLine($"summary after {elapsed:0} s: {totals.Sum(t => t.Count):#,0} operations ({totals.Sum(t => t.Count) / elapsed:#,0} ops/s), {snapshots} snapshots, {moves} partition moves, {expiredBefore - expiredStart:#,0} keys expired by the partitions' timers, {ttlChecks} TTL probes checked, {totalErrors} errors");
        for (var k = 0; k < Kinds.Length; k++)
        {
            Console.WriteLine($"  {Kinds[k],-8} {totals[k].Count,10:#,0} ops  p50 {totals[k].PercentileMs(50) ?? 0,7:0.000} ms  p99 {totals[k].PercentileMs(99) ?? 0,7:0.000} ms  max {totals[k].PercentileMs(100) ?? 0,8:0.000} ms");
        }
        if (errorCounts.IsEmpty)
        {
            Console.WriteLine("  errors: none");
        }
        else
        {
            Console.WriteLine("  errors (deduplicated; digits shown as N):");
            foreach (var (what, count) in errorCounts.OrderByDescending(p => p.Value))
            {
                Console.WriteLine($"    {count,6} x {what}");
            }
        }
        foreach (var silo in silos.Reverse())
        {
            await silo.DisposeAsync();
        }
        return totalErrors == 0 ? 0 : 1;
    }

    [GeneratedRegex(@"\d+")]
    private static partial Regex Digits();
}
