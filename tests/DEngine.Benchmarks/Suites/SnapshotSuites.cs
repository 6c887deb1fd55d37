using System.Diagnostics;
using DEngine.Benchmarks.Harness;
using DEngine.Client;
using DEngine.Orleans;
using DEngine.Orleans.Snapshots;
using DEngine.Protos.Client;
using DEngine.Protos.Common;
using DEngine.Protos.Storage;
using DEngine.StateMachine;
using DEngine.StateMachine.Snapshots;
using Google.Protobuf;
using Microsoft.Extensions.Logging.Abstractions;
using RocksDbSharp;

namespace DEngine.Benchmarks.Suites;

/// <summary>
/// snapshot: checkpoint of N keys (engine CreateSnapshot), fetch of that snapshot (SnapshotFetcher
/// from a local chunk reader, and across two in-process silos) against a plain copy of the same
/// files, and install into a fresh engine.
/// </summary>
public static class SnapshotSuites
{
    private const string CheckpointTarget = "checkpoint <= 0.5 s";
    private const string FetchTarget = "fetch >= 0.5 x copy";
    private const string InstallTarget = "install <= 3 s";
    private const int CopyRounds = 3;

    /// <summary>The engine part: checkpoint, local fetch vs copy, install. Returns the rows and the File.Copy rate for the cross-silo rows.</summary>
    public static (List<CaseResult> Rows, Measurement Copy) Engine(BenchOptions o)
    {
        var rows = new List<CaseResult>();
        var n = o.SnapshotKeys;
        var dirEngine = Data.TempDir(o, "snap-engine");
        var dirRaw = Data.TempDir(o, "snap-raw");
        var dirWork = Data.TempDir(o, "snap-work");
        try
        {
            using var engine = new RocksDbStateMachine(dirEngine);
            LogPosition label;
            // Load: N inserts in chunks of 1000, WAL synced once at the end (the engine's own data path).
            using (var raw = new RawRocks(dirRaw))
            {
                ulong index = 1;
                // Distinct random values: the shared benchmark value would compress to almost nothing
                // (1M keys made a 27 MB snapshot) and flatter every figure here.
                var rng = new Random(13);
                for (var start = 0; start < n; start += 1000)
                {
                    var count = Math.Min(1000, n - start);
                    var entries = new ApplyEntry[count];
                    using var batch = new WriteBatch();
                    for (var i = 0; i < count; i++)
                    {
                        var key = Data.Key(start + i, space: 13);
                        var value = new byte[Data.ValueBytes];
                        rng.NextBytes(value);
                        var insert = new WriteCommand.Types.Insert { Key = UnsafeByteOperations.UnsafeWrap(key), Value = UnsafeByteOperations.UnsafeWrap(value) };
                        entries[i] = new ApplyEntry(index++, 1, new WriteCommand { Insert = insert });
                        batch.Put(key, value, raw.Data);
                    }
                    engine.ApplyCommands(entries, ApplyDurability.Deferred);
                    raw.Db.Write(batch, raw.Buffered);
                }
                engine.SyncWal();
                label = engine.LastApplied;

                // Reference: a bare RocksDB checkpoint (flush of the memtables + hard links) of the same
                // data, unflushed like the engine's, to split CreateSnapshot's time.
                var rawCheckpointDir = Path.Combine(dirWork, "raw-checkpoint");
                // Split: the data family's memtable flush first, then the checkpoint itself (links + small files).
                var sw = Stopwatch.StartNew();
                Native.Instance.rocksdb_flush_cf(raw.Db.Handle, new FlushOptions().SetWaitForFlush(true).Handle, raw.Data.Handle);
                var rawFlushSeconds = sw.Elapsed.TotalSeconds;
                sw.Restart();
                using (var checkpoint = raw.Db.Checkpoint())
                {
                    checkpoint.Save(rawCheckpointDir, 0);
                }
                var rawLinkSeconds = sw.Elapsed.TotalSeconds;
                var rawCheckpointSeconds = rawFlushSeconds + rawLinkSeconds;
                Data.DeleteDir(rawCheckpointDir);

                // (a) checkpoint: the whole CreateSnapshot call, while a writer keeps applying 1-entry
                // chunks: its longest apply is how long the snapshot held writes up.
                // Baseline for that: the same writer for one second with no snapshot (GC pauses and
                // memtable switches stall it too).
                var next = label.Index + 1;
                var writtenKeys = 0;
                var (quietLongest, _) = RunWriter(engine, ref next, ref writtenKeys, n, () => Thread.Sleep(1000));
                var createSeconds = 0.0;
                SnapshotInfo info = null!;
                var (longestApply, writerApplies) = RunWriter(engine, ref next, ref writtenKeys, n, () =>
                {
                    sw.Restart();
                    info = engine.CreateSnapshot();
                    createSeconds = sw.Elapsed.TotalSeconds;
                });
                label = info.LastIncluded;
                // Hashing alone: SHA-256 of the same files again (page cache warm, as it is inside CreateSnapshot right after the checkpoint).
                sw.Restart();
                var rehash = SnapshotManifest.Build(info.Directory, label);
                var hashSeconds = sw.Elapsed.TotalSeconds;
                var mb = info.TotalBytes / 1e6;

                var checkpointRow = new CaseResult
                {
                    Suite = "snapshot",
                    Case = $"checkpoint, engine, {n} keys",
                    Ours = new Measurement("engine CreateSnapshot (total)", 1, createSeconds, createSeconds * 1000, createSeconds * 1000, "snapshots/s"),
                    Target = CheckpointTarget,
                    Note = "ours' p50/p99 = the one CreateSnapshot call (ms): memtable flush (writes continue) + checkpoint (writes wait: links + WAL since the flush) + SHA-256 of every file + fsyncs + manifest",
                };
                checkpointRow.Against(new Measurement("bare RocksDB flush + checkpoint, same data", 1, rawCheckpointSeconds, rawCheckpointSeconds * 1000, rawCheckpointSeconds * 1000, "snapshots/s"));
                checkpointRow.Met = createSeconds <= 0.5;
                checkpointRow.Counters["CreateSnapshot s"] = createSeconds;
                checkpointRow.Counters["writes held up, longest 1-entry apply during CreateSnapshot ms"] = longestApply.TotalMilliseconds;
                checkpointRow.Counters["1-entry applies by the concurrent writer"] = writerApplies;
                checkpointRow.Counters["same writer for 1 s without a snapshot, longest apply ms"] = quietLongest.TotalMilliseconds;
                checkpointRow.Counters["bare RocksDB checkpoint s"] = rawCheckpointSeconds;
                checkpointRow.Counters["of which memtable flush s"] = rawFlushSeconds;
                checkpointRow.Counters["of which checkpoint after flush s"] = rawLinkSeconds;
                checkpointRow.Counters["SHA-256 of the files s"] = hashSeconds;
                checkpointRow.Counters["SHA-256 MB/s"] = mb / hashSeconds;
                checkpointRow.Counters["rest s (fsyncs, manifest, rename, metadata)"] = Math.Max(0, createSeconds - rawCheckpointSeconds - hashSeconds);
                checkpointRow.Counters["snapshot MB"] = mb;
                checkpointRow.Counters["files"] = info.FileCount;
                checkpointRow.Counters["files rehashed"] = rehash.Files.Count;
                rows.Add(checkpointRow);

                // (b) fetch (local chunk reader) vs plain copies of the same files.
                var manifestBytes = File.ReadAllBytes(Path.Combine(info.Directory, SnapshotManifest.FileName));
                var offer = new SnapshotOffer(0, Path.GetFileName(info.Directory), label.Index, label.Term, info.Metadata.Checksum.ToByteArray(), manifestBytes, info.TotalBytes);
                var files = SnapshotManifest.Parse(manifestBytes).Files;
                var chunks = files.Sum(f => (f.Size + SnapshotServerGrain.MaxChunkBytes - 1) / SnapshotServerGrain.MaxChunkBytes);
                var fetcher = new SnapshotFetcher(NullLogger.Instance);
                // Off the caller like the grain's ReadChunk (a chunk read can overlap the fetcher's write).
                ChunkReader local = (file, offset, length) => Task.Run(() => ReadChunkLocally(Path.Combine(info.Directory, file), offset, length));

                double fetchSeconds = 0, copySeconds = 0, streamSeconds = 0;
                string fetched = "";
                for (var r = 0; r < CopyRounds; r++)
                {
                    var copyDir = Path.Combine(dirWork, $"copy-{r}");
                    Directory.CreateDirectory(copyDir);
                    sw.Restart();
                    foreach (var f in files)
                    {
                        File.Copy(Path.Combine(info.Directory, f.Name), Path.Combine(copyDir, f.Name));
                    }
                    copySeconds += sw.Elapsed.TotalSeconds;
                    Data.DeleteDir(copyDir);

                    var streamDir = Path.Combine(dirWork, $"stream-{r}");
                    Directory.CreateDirectory(streamDir);
                    sw.Restart();
                    foreach (var f in files)
                    {
                        using var input = new FileStream(Path.Combine(info.Directory, f.Name), FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16);
                        using var output = new FileStream(Path.Combine(streamDir, f.Name), FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 16);
                        input.CopyTo(output, SnapshotServerGrain.MaxChunkBytes);
                    }
                    streamSeconds += sw.Elapsed.TotalSeconds;
                    Data.DeleteDir(streamDir);

                    fetched = Path.Combine(dirWork, $"fetch-{r}");
                    sw.Restart();
                    fetcher.FetchAsync(offer, local, fetched).GetAwaiter().GetResult();
                    fetchSeconds += sw.Elapsed.TotalSeconds;
                    if (r < CopyRounds - 1)
                    {
                        Data.DeleteDir(fetched);
                    }
                }
                var bytesAll = info.TotalBytes * CopyRounds / 1e6;
                var fetchMeasured = new Measurement("SnapshotFetcher, local ChunkReader", bytesAll, fetchSeconds, Unit: "MB/s");
                var copy = new Measurement("File.Copy of the same files", bytesAll, copySeconds, Unit: "MB/s");
                var stream = new Measurement("FileStream.CopyTo (1 MiB buffer)", bytesAll, streamSeconds, Unit: "MB/s");
                var fetchRow = new CaseResult { Suite = "snapshot", Case = $"fetch, same machine, {mb:0} MB", Ours = fetchMeasured, Target = FetchTarget }.Against(copy).Against(stream);
                fetchRow.Met = fetchRow.Comparisons[0].Ratio >= 0.5;
                fetchRow.Counters["chunks per fetch"] = chunks;
                fetchRow.Counters["ms per chunk (fetch)"] = fetchSeconds / CopyRounds / chunks * 1000;
                fetchRow.Counters["ms per MiB (File.Copy)"] = copySeconds / CopyRounds / (info.TotalBytes / 1048576.0) * 1000;
                fetchRow.Counters["CRC-32C MB/s"] = CrcRate();
                fetchRow.Note = $"{CopyRounds} rounds each, alternating; page cache warm on both sides; no fsync on either side";
                rows.Add(fetchRow);

                // (c) install the fetched copy into a fresh engine.
                var dirFresh = Path.Combine(dirWork, "fresh");
                using var fresh = new RocksDbStateMachine(dirFresh);
                sw.Restart();
                SnapshotManifest.Verify(fetched, info.Metadata.Checksum.Span);
                var verifySeconds = sw.Elapsed.TotalSeconds;
                sw.Restart();
                fresh.InstallSnapshot(fetched, info.Metadata);
                var installSeconds = sw.Elapsed.TotalSeconds;
                if (fresh.LastApplied != label)
                {
                    throw new InvalidOperationException($"install: applied position {fresh.LastApplied}, expected {label}");
                }
                _ = fresh.Get(Data.Key(n / 2, space: 13)) ?? throw new InvalidOperationException("install: a loaded key is missing");
                var installRow = new CaseResult
                {
                    Suite = "snapshot",
                    Case = $"install, fresh engine, {mb:0} MB",
                    Ours = new Measurement("engine InstallSnapshot", 1, installSeconds, installSeconds * 1000, installSeconds * 1000, "installs/s"),
                    Target = InstallTarget,
                    Note = "ours' p50/p99 = the one InstallSnapshot call (ms): verify (SHA-256 of every file) + link/copy + open twice + switch",
                };
                installRow.Met = installSeconds <= 3;
                installRow.Counters["InstallSnapshot s"] = installSeconds;
                installRow.Counters["of which verify (SHA-256) s, measured apart"] = verifySeconds;
                rows.Add(installRow);
                return (rows, copy);
            }
        }
        finally
        {
            Data.DeleteDir(dirEngine);
            Data.DeleteDir(dirRaw);
            Data.DeleteDir(dirWork);
        }
    }

    /// <summary>What SnapshotServerGrain.ReadChunk does, on this machine, without the grain call.</summary>
    private static SnapshotChunkData ReadChunkLocally(string path, long offset, int length)
    {
        var buffer = new byte[length];
        var read = 0;
        using (var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1))
        {
            stream.Position = offset;
            while (read < length)
            {
                var k = stream.Read(buffer, read, length - read);
                if (k == 0)
                {
                    break;
                }
                read += k;
            }
        }
        var data = read == length ? buffer : buffer.AsSpan(0, read).ToArray();
        return new SnapshotChunkData(data, Crc32C.Compute(data));
    }

    private static double CrcRate()
    {
        var data = new byte[SnapshotServerGrain.MaxChunkBytes];
        new Random(1).NextBytes(data);
        var sw = Stopwatch.StartNew();
        var rounds = 0;
        while (sw.Elapsed.TotalSeconds < 0.2)
        {
            _ = Crc32C.Compute(data);
            rounds++;
        }
        return rounds * (data.Length / 1e6) / sw.Elapsed.TotalSeconds;
    }

    /// <summary>
    /// Cross-silo: two in-process silos; one partition loaded with N keys on one silo; (1) a
    /// SnapshotFetcher on the other silo pulls a fresh snapshot through ISnapshotServerGrain.ReadChunk
    /// (silo-to-silo calls over loopback TCP); (2) DEngineClient.MovePartitionAsync moves the
    /// partition there, reporting LastTransfer (checkpoint on the source + fetch + install + ownership).
    /// </summary>
    public static async Task<List<CaseResult>> CrossSiloAsync(BenchOptions o, Measurement copy)
    {
        var rows = new List<CaseResult>();
        var silos = await SiloHost.StartClusterAsync(o, 2);
        var dirWork = Data.TempDir(o, "snap-cross");
        try
        {
            var client = silos[0].Client;
            const int Partition = 3;
            var before = await client.GetPartitionStatusAsync(Partition);
            var source = silos.First(s => before.Silo.StartsWith(s.Name + " ", StringComparison.Ordinal));
            var target = silos.First(s => s != source);

            // Load the partition with N keys that route to it, through its grain's ApplyChunk.
            var n = o.SnapshotKeys;
            var grain = source.Grains.GetGrain<IStateMachineGrain>(Partition);
            var index = before.AppliedIndex + 1;
            var chunk = new List<Entry>(1000);
            var loaded = 0;
            var rng = new Random(14);
            var loadClock = Stopwatch.StartNew();
            for (long i = 0; loaded < n; i++)
            {
                var key = Data.Key(i, space: 14);
                if (KeyRouting.PartitionOf(key, SiloHost.Partitions) != Partition)
                {
                    continue;
                }
                var value = new byte[Data.ValueBytes];
                rng.NextBytes(value);
                chunk.Add(Data.InsertEntry(index++, key, value));
                loaded++;
                if (chunk.Count == 1000 || loaded == n)
                {
                    await grain.ApplyChunk([.. chunk]);
                    chunk.Clear();
                }
            }
            var loadSeconds = loadClock.Elapsed.TotalSeconds;

            // (1) direct cross-silo fetch of a fresh snapshot, from the other silo.
            var snapshot = await client.CreateSnapshotAsync(Partition);
            var server = target.Grains.GetGrain<ISnapshotServerGrain>(source.Name);
            var manifest = new MemoryStream();
            for (long at = 0; ; at += SnapshotServerGrain.MaxChunkBytes)
            {
                var part = await server.ReadChunk(Partition, snapshot.Name, SnapshotManifest.FileName, at, SnapshotServerGrain.MaxChunkBytes);
                manifest.Write(part.Data);
                if (part.Data.Length < SnapshotServerGrain.MaxChunkBytes)
                {
                    break;
                }
            }
            var checksum = Convert.FromHexString(snapshot.ChecksumHex);
            var offer = new SnapshotOffer(Partition, snapshot.Name, snapshot.Index, snapshot.Term, checksum, manifest.ToArray(), snapshot.Bytes);
            var files = SnapshotManifest.Parse(offer.Manifest).Files;
            var chunks = files.Sum(f => (f.Size + SnapshotServerGrain.MaxChunkBytes - 1) / SnapshotServerGrain.MaxChunkBytes);
            var fetcher = new SnapshotFetcher(NullLogger.Instance);
            var sw = Stopwatch.StartNew();
            await fetcher.FetchAsync(offer, (file, offset, length) => server.ReadChunk(Partition, snapshot.Name, file, offset, length), Path.Combine(dirWork, "fetch"));
            var fetchSeconds = sw.Elapsed.TotalSeconds;
            var mb = snapshot.Bytes / 1e6;
            var fetchRow = new CaseResult
            {
                Suite = "snapshot",
                Case = $"fetch, cross-silo (2 silos, loopback), {mb:0} MB",
                Ours = new Measurement("SnapshotFetcher over ReadChunk grain calls", mb, fetchSeconds, Unit: "MB/s"),
                Target = FetchTarget,
            }.Against(copy);
            fetchRow.Met = fetchRow.Comparisons[0].Ratio >= 0.5;
            fetchRow.Counters["keys in the partition"] = loaded;
            fetchRow.Counters["load s"] = loadSeconds;
            fetchRow.Counters["chunks"] = chunks;
            fetchRow.Counters["ms per chunk"] = fetchSeconds / chunks * 1000;
            fetchRow.Note = "baseline: the File.Copy rate of the engine case (same machine, same run)";
            rows.Add(fetchRow);

            // (2) the partition move as a user runs it.
            sw.Restart();
            var after = await client.MovePartitionAsync(Partition, target.Name, TimeSpan.FromMinutes(5));
            var moveWall = sw.Elapsed.TotalSeconds;
            var t = after.LastTransfer ?? throw new InvalidOperationException("move: no LastTransfer on the new silo");
            var moveRow = new CaseResult
            {
                Suite = "snapshot",
                Case = $"move, MovePartitionAsync, {t.Bytes / 1e6:0} MB",
                Ours = new Measurement("LastTransfer (checkpoint+fetch+install)", t.Bytes / 1e6, t.Seconds, Unit: "MB/s"),
                Target = "(reported)",
            }.Against(copy);
            moveRow.Counters["LastTransfer s"] = t.Seconds;
            moveRow.Counters["MovePartitionAsync wall s"] = moveWall;
            moveRow.Counters["chunks refetched"] = t.ChunksRefetched;
            moveRow.Note = "LastTransfer.Seconds runs from PrepareHandover (a fresh checkpoint on the source) to the ownership transfer, so it includes checkpoint and install";
            rows.Add(moveRow);
            if (after.AppliedIndex != index - 1)
            {
                throw new InvalidOperationException($"move: applied index {after.AppliedIndex} on the new silo, expected {index - 1}");
            }
        }
        finally
        {
            foreach (var silo in silos.Reverse())
            {
                await silo.DisposeAsync();
            }
            Data.DeleteDir(dirWork);
        }
        return rows;
    }

    /// <summary>
    /// Applies 1-entry chunks on a dedicated thread while <paramref name="during"/> runs on this one;
    /// returns the longest single apply and how many there were.
    /// </summary>
    private static (TimeSpan Longest, int Applies) RunWriter(RocksDbStateMachine engine, ref ulong next, ref int writtenKeys, int keySpaceStart, Action during)
    {
        using var stop = new CancellationTokenSource();
        using var started = new ManualResetEventSlim();
        var first = next;
        var keyBase = keySpaceStart + writtenKeys;
        var writer = Task.Factory.StartNew(() =>
        {
            var index = first;
            var longest = TimeSpan.Zero;
            var applies = 0;
            var clock = new Stopwatch();
            while (!stop.IsCancellationRequested)
            {
                var key = Data.Key(keyBase + applies, space: 13);
                var insert = new WriteCommand.Types.Insert { Key = UnsafeByteOperations.UnsafeWrap(key), Value = UnsafeByteOperations.UnsafeWrap(Data.Value) };
                clock.Restart();
                engine.ApplyCommands([new ApplyEntry(index++, 1, new WriteCommand { Insert = insert })], ApplyDurability.Deferred);
                longest = clock.Elapsed > longest ? clock.Elapsed : longest;
                applies++;
                started.Set();
            }
            return (longest, applies);
        }, TaskCreationOptions.LongRunning);
        started.Wait();
        during();
        stop.Cancel();
        var result = writer.Result;
        next = first + (ulong)result.applies;
        writtenKeys += result.applies;
        return result;
    }
}
