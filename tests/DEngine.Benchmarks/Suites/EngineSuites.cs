using DEngine.Benchmarks.Harness;
using DEngine.Protos.Client;
using DEngine.Protos.Common;
using DEngine.StateMachine;
using Google.Protobuf;
using RocksDbSharp;

namespace DEngine.Benchmarks.Suites;

/// <summary>The engine against raw RocksDB, single-threaded, same process, same disk.</summary>
public static class EngineSuites
{
    private const int Rounds = 4;

    /// <summary>apply: chunks of 1000 entries, fsync per chunk, vs a raw synced WriteBatch of the same 1000 puts.</summary>
    public static CaseResult Apply(BenchOptions o) => ApplyCase(o, "apply", "1000 entries/chunk, fsync per chunk", 1000);

    /// <summary>apply-small: chunks of one entry, fsync each, vs a raw synced single put.</summary>
    public static CaseResult ApplySmall(BenchOptions o) => ApplyCase(o, "apply-small", "1 entry/chunk, fsync each", 1);

    private static CaseResult ApplyCase(BenchOptions o, string suite, string name, int chunkSize)
    {
        var dirOurs = Data.TempDir(o, suite + "-ours");
        var dirRaw = Data.TempDir(o, suite + "-raw");
        try
        {
            using var engine = new RocksDbStateMachine(dirOurs);
            using var raw = new RawRocks(dirRaw);
            // A pool of distinct keys, cycled; entries are built once (the log's work, not apply's)
            // and renumbered before each apply, which costs about a microsecond per 1000 entries.
            var poolChunks = Math.Max(1, 64_000 / chunkSize);
            var keys = new byte[poolChunks][][];
            var chunks = new Entry[poolChunks][];
            for (var c = 0; c < poolChunks; c++)
            {
                keys[c] = new byte[chunkSize][];
                chunks[c] = new Entry[chunkSize];
                for (var i = 0; i < chunkSize; i++)
                {
                    keys[c][i] = Data.Key((long)c * chunkSize + i);
                    chunks[c][i] = Data.InsertEntry(0, keys[c][i], Data.Value);
                }
            }
            ulong next = 1;
            void Ours(long call)
            {
                var chunk = chunks[call % poolChunks];
                for (var i = 0; i < chunk.Length; i++)
                {
                    chunk[i].Index = next++;
                }
                engine.ApplyChunk(chunk);
            }
            void Raw(long call)
            {
                var k = keys[call % poolChunks];
                if (k.Length == 1)
                {
                    raw.Db.Put(k[0], Data.Value, raw.Data, raw.Synced);
                    return;
                }
                using var batch = new WriteBatch();
                for (var i = 0; i < k.Length; i++)
                {
                    batch.Put(k[i], Data.Value, raw.Data);
                }
                raw.Db.Write(batch, raw.Synced);
            }
            // Warm-up both (JIT, file creation).
            LoadDriver.Timed(TimeSpan.FromSeconds(o.WarmupSeconds / 2), Ours, recordLatency: false);
            LoadDriver.Timed(TimeSpan.FromSeconds(o.WarmupSeconds / 2), Raw, recordLatency: false);
            var phase = TimeSpan.FromSeconds(o.Seconds / Rounds);
            var (ours, baseline) = LoadDriver.Alternate(
                Rounds,
                () => LoadDriver.Timed(phase, Ours, chunkSize),
                () => LoadDriver.Timed(phase, Raw, chunkSize),
                "engine ApplyChunk",
                chunkSize == 1 ? "raw synced Put" : "raw synced WriteBatch",
                "entries/s");
            var result = new CaseResult { Suite = suite, Case = name, Ours = ours, Target = "ratio >= 0.90" }.Against(baseline);
            result.Met = result.Comparisons[0].Ratio >= 0.90;
            result.Counters["chunks/s (ours)"] = ours.Rate / chunkSize;
            result.Counters["batches/s (raw)"] = baseline.Rate / chunkSize;
            return result;
        }
        finally
        {
            Data.DeleteDir(dirOurs);
            Data.DeleteDir(dirRaw);
        }
    }

    /// <summary>get: engine Get vs raw Get of the same keys, block cache warm, data flushed to SST files.</summary>
    public static CaseResult Get(BenchOptions o)
    {
        var dirOurs = Data.TempDir(o, "get-ours");
        var dirRaw = Data.TempDir(o, "get-raw");
        try
        {
            using var engine = new RocksDbStateMachine(dirOurs);
            using var raw = new RawRocks(dirRaw);
            var n = o.ReadKeys;
            var keys = new byte[n][];
            ulong index = 1;
            for (var start = 0; start < n; start += 1000)
            {
                var count = Math.Min(1000, n - start);
                var entries = new Entry[count];
                using var batch = new WriteBatch();
                for (var i = 0; i < count; i++)
                {
                    var key = keys[start + i] = Data.Key(start + i);
                    entries[i] = Data.InsertEntry(index++, key, Data.Value);
                    batch.Put(key, Data.Value, raw.Data);
                }
                engine.ApplyChunk(entries, ApplyDurability.Deferred);
                raw.Db.Write(batch, raw.Buffered);
            }
            engine.Flush();
            raw.FlushData();
            // Warm the block cache: every key once on each side.
            foreach (var key in keys)
            {
                _ = engine.Get(key) ?? throw new InvalidOperationException("loaded key missing");
                _ = raw.Db.Get(key, raw.Data) ?? throw new InvalidOperationException("loaded key missing");
            }
            var order = new int[1 << 16];
            var rng = new Random(7);
            for (var i = 0; i < order.Length; i++)
            {
                order[i] = rng.Next(n);
            }
            const int PerCall = 256;
            void Ours(long call)
            {
                var at = (int)(call * PerCall & (order.Length - 1));
                for (var i = 0; i < PerCall; i++)
                {
                    _ = engine.Get(keys[order[(at + i) & (order.Length - 1)]]);
                }
            }
            void Raw(long call)
            {
                var at = (int)(call * PerCall & (order.Length - 1));
                for (var i = 0; i < PerCall; i++)
                {
                    _ = raw.Db.Get(keys[order[(at + i) & (order.Length - 1)]], raw.Data);
                }
            }
            LoadDriver.Timed(TimeSpan.FromSeconds(o.WarmupSeconds / 2), Ours, recordLatency: false);
            LoadDriver.Timed(TimeSpan.FromSeconds(o.WarmupSeconds / 2), Raw, recordLatency: false);
            var phase = TimeSpan.FromSeconds(o.Seconds / Rounds);
            var (ours, baseline) = LoadDriver.Alternate(
                Rounds,
                () => NoLatency(LoadDriver.Timed(phase, Ours, PerCall, recordLatency: false)),
                () => NoLatency(LoadDriver.Timed(phase, Raw, PerCall, recordLatency: false)),
                "engine Get", "raw Get", "gets/s");
            var result = new CaseResult { Suite = "get", Case = $"warm cache, {n} keys, 1 thread", Ours = ours, Target = "ratio >= 0.90" }.Against(baseline);
            result.Met = result.Comparisons[0].Ratio >= 0.90;
            result.Counters["ns/get (ours)"] = 1e9 / ours.Rate;
            result.Counters["ns/get (raw)"] = 1e9 / baseline.Rate;
            return result;
        }
        finally
        {
            Data.DeleteDir(dirOurs);
            Data.DeleteDir(dirRaw);
        }
    }

    private static (long, double, LatencyRecorder?) NoLatency((long Ops, double Seconds, LatencyRecorder? L) r) => (r.Ops, r.Seconds, null);

    /// <summary>
    /// ttl (engine): N keys expiring at the same instant, deleted by FindExpired + an ExpireKeys
    /// command of up to 1000 keys (the grain's default round), fsync per command; vs raw synced
    /// WriteBatches deleting 1000 known keys each.
    /// </summary>
    public static CaseResult TtlEngine(BenchOptions o)
    {
        var dirOurs = Data.TempDir(o, "ttl-ours");
        var dirRaw = Data.TempDir(o, "ttl-raw");
        try
        {
            using var engine = new RocksDbStateMachine(dirOurs);
            using var raw = new RawRocks(dirRaw);
            var n = o.TtlKeys;
            var keys = new byte[n][];
            var expiry = (ulong)DateTimeOffset.UtcNow.ToUnixTimeMilliseconds() - 1000; // all expired, at the same instant
            ulong index = 1;
            for (var start = 0; start < n; start += 1000)
            {
                var count = Math.Min(1000, n - start);
                var entries = new ApplyEntry[count];
                using var batch = new WriteBatch();
                for (var i = 0; i < count; i++)
                {
                    var key = keys[start + i] = Data.Key(start + i, space: 3);
                    var insert = new WriteCommand.Types.Insert { Key = UnsafeByteOperations.UnsafeWrap(key), Value = UnsafeByteOperations.UnsafeWrap(Data.Value), TtlSecs = 1, ExpiresAtUnixMs = expiry };
                    entries[i] = new ApplyEntry(index++, 1, new WriteCommand { Insert = insert });
                    batch.Put(key, Data.Value, raw.Data);
                }
                engine.ApplyCommands(entries, ApplyDurability.Deferred);
                raw.Db.Write(batch, raw.Buffered);
            }
            engine.SyncWal();
            raw.Db.Put([0], [0], raw.Data, raw.Synced);

            // Raw: batched synced deletes of keys it already knows.
            var rawTime = System.Diagnostics.Stopwatch.StartNew();
            for (var start = 0; start < n; start += 1000)
            {
                using var batch = new WriteBatch();
                for (var i = start; i < Math.Min(n, start + 1000); i++)
                {
                    batch.Delete(keys[i], raw.Data);
                }
                raw.Db.Write(batch, raw.Synced);
            }
            var rawSeconds = rawTime.Elapsed.TotalSeconds;

            // Ours: what the partition grain does per round, minus Orleans.
            var oursTime = System.Diagnostics.Stopwatch.StartNew();
            long deleted = 0;
            long rounds = 0;
            var findTicks = 0L;
            while (true)
            {
                var now = (ulong)DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
                var t0 = System.Diagnostics.Stopwatch.GetTimestamp();
                var due = engine.FindExpired(now, 1000);
                findTicks += System.Diagnostics.Stopwatch.GetTimestamp() - t0;
                if (due.Count == 0)
                {
                    break;
                }
                var command = new WriteCommand.Types.ExpireKeys { AsOfUnixMs = now };
                foreach (var k in due)
                {
                    command.Keys.Add(new WriteCommand.Types.ExpiredKey { Key = UnsafeByteOperations.UnsafeWrap(k.Key), ExpiresAtUnixMs = k.ExpiresAtUnixMs });
                }
                var results = engine.ApplyCommands([new ApplyEntry(index++, 1, new WriteCommand { ExpireKeys = command })]);
                deleted += results[0].KeysExpired;
                rounds++;
            }
            var oursSeconds = oursTime.Elapsed.TotalSeconds;
            if (deleted != n)
            {
                throw new InvalidOperationException($"ttl: expected {n} keys deleted, engine deleted {deleted}");
            }
            var ours = new Measurement("engine FindExpired+ExpireKeys", deleted, oursSeconds, Unit: "keys/s");
            var baseline = new Measurement("raw synced batched deletes", n, rawSeconds, Unit: "keys/s");
            var result = new CaseResult { Suite = "ttl", Case = $"engine, {n} keys expiring at once", Ours = ours, Target = "ratio >= 0.80" }.Against(baseline);
            result.Met = result.Comparisons[0].Ratio >= 0.80;
            result.Counters["rounds"] = rounds;
            result.Counters["FindExpired share of time"] = findTicks / (double)System.Diagnostics.Stopwatch.Frequency / oursSeconds;
            return result;
        }
        finally
        {
            Data.DeleteDir(dirOurs);
            Data.DeleteDir(dirRaw);
        }
    }
}
