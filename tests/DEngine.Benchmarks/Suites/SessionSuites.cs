using System.Diagnostics;
using DEngine.Benchmarks.Harness;
using DEngine.Protos.Client;
using DEngine.StateMachine;
using Google.Protobuf;

namespace DEngine.Benchmarks.Suites;

/// <summary>
/// sessions: exactly-once writes through the state machine. Many simulated clients write with
/// sessions (sequence, low-water mark, the first-write flag, some retries), their idle sessions are
/// ended by ExpireSessions and old tombstones purged, as the primary's scheduler would; the baseline
/// is the same writes without a session, in the same run, alternating. Reports the cost per write
/// (wall and process CPU) of both and the session table's size over the run.
/// </summary>
public static class SessionSuites
{
    private const int Rounds = 4;
    private const int ChunkSize = 100;

    /// <summary>Writes a client may have in flight: its low-water mark trails its sequence by this much.</summary>
    private const int Window = 4;

    /// <summary>Simulated milliseconds per chunk (the stamps the sequencer would write).</summary>
    private const ulong MsPerChunk = 20;

    /// <summary>Session timeout and tombstone retention, simulated.</summary>
    private const ulong TimeoutMs = 2_000;

    /// <summary>Every this many chunks the scheduler plans and applies one ExpireSessions command.</summary>
    private const int ExpireEveryChunks = 20;

    public static CaseResult Run(BenchOptions o)
    {
        var clients = o.Quick ? 64 : 1024;
        var dirOurs = Data.TempDir(o, "sessions-ours");
        var dirBase = Data.TempDir(o, "sessions-base");
        try
        {
            using var ours = new RocksDbStateMachine(dirOurs);
            using var baseline = new RocksDbStateMachine(dirBase);
            var workload = new Workload(ours, clients);
            var plain = new Workload(baseline, clients);

            var warm = TimeSpan.FromSeconds(o.WarmupSeconds / 2);
            LoadDriver.Timed(warm, _ => workload.Chunk(withSession: true), recordLatency: false);
            LoadDriver.Timed(warm, _ => plain.Chunk(withSession: false), recordLatency: false);

            var phase = TimeSpan.FromSeconds(o.Seconds / Rounds);
            TimeSpan cpuOurs = TimeSpan.Zero, cpuBase = TimeSpan.Zero;
            var samples = new List<SessionTableStats>();
            var (withSessions, without) = LoadDriver.Alternate(
                Rounds,
                () =>
                {
                    var r = MeasureCpu(() => LoadDriver.Timed(phase, _ => workload.Chunk(withSession: true), workload.WritesPerChunk, recordLatency: false), ref cpuOurs);
                    samples.Add(ours.SessionTableStats);
                    return r;
                },
                () => MeasureCpu(() => LoadDriver.Timed(phase, _ => plain.Chunk(withSession: false), plain.WritesPerChunk, recordLatency: false), ref cpuBase),
                "writes with sessions", "same writes, no session", "writes/s");

            var result = new CaseResult
            {
                Suite = "sessions",
                Case = $"{clients} clients, {ChunkSize} writes/chunk, fsync per chunk, window {Window}, expiry every {ExpireEveryChunks} chunks",
                Ours = withSessions,
                Target = "ratio >= 0.80, table bounded",
            }.Against(without);
            var ratio = result.Comparisons[0].Ratio;
            var cpuPerWriteOurs = cpuOurs.TotalMicroseconds / withSessions.Ops;
            var cpuPerWriteBase = cpuBase.TotalMicroseconds / without.Ops;
            result.Counters["us/write (sessions)"] = 1e6 / withSessions.Rate;
            result.Counters["us/write (no session)"] = 1e6 / without.Rate;
            result.Counters["CPU us/write (sessions)"] = cpuPerWriteOurs;
            result.Counters["CPU us/write (no session)"] = cpuPerWriteBase;
            result.Counters["CPU-per-write ratio"] = cpuPerWriteOurs / cpuPerWriteBase;
            for (var i = 0; i < samples.Count; i++)
            {
                result.Counters[$"table after round {i + 1}: sessions"] = samples[i].Sessions;
                result.Counters[$"table after round {i + 1}: tombstones"] = samples[i].Tombstones;
                result.Counters[$"table after round {i + 1}: responses"] = samples[i].RecordedResponses;
                result.Counters[$"table after round {i + 1}: KiB"] = samples[i].ApproxBytes / 1024.0;
            }
            result.Counters["sessions opened"] = workload.Opened;
            result.Counters["sessions ended by ExpireSessions"] = workload.Ended;
            result.Counters["retries answered from the table"] = workload.Deduplicated;
            result.Counters["writes refused"] = workload.Refused;
            // Bounded: each live session keeps at most its window of responses, and the sessions alive
            // at once are the clients plus those that left within the timeout (tombstones likewise).
            var maxSessions = samples.Max(s => s.Sessions);
            var bound = clients + workload.MaxChurnWithin(TimeoutMs * 2);
            var bounded = maxSessions <= bound && samples.All(s => s.RecordedResponses <= s.Sessions * Window) && samples.Max(s => s.Tombstones) <= bound;
            result.Counters["table bound (sessions)"] = bound;
            result.Met = ratio >= 0.80 && bounded && workload.Refused == 0;
            if (!bounded)
            {
                result.Note = "session table above its bound";
            }
            return result;
        }
        finally
        {
            Data.DeleteDir(dirOurs);
            Data.DeleteDir(dirBase);
        }
    }

    private static (long, double, LatencyRecorder?) MeasureCpu(Func<(long Ops, double Seconds, LatencyRecorder? L)> run, ref TimeSpan cpu)
    {
        var before = Process.GetCurrentProcess().TotalProcessorTime;
        var r = run();
        cpu += Process.GetCurrentProcess().TotalProcessorTime - before;
        return (r.Ops, r.Seconds, null);
    }

    /// <summary>Simulated clients writing to one partition; one call applies one chunk (and sometimes an expiry round).</summary>
    private sealed class Workload(RocksDbStateMachine engine, int clients)
    {
        private readonly Random _random = new(11);
        private readonly Client[] _clients = Enumerable.Range(0, clients).Select(_ => new Client()).ToArray();
        private readonly ulong _start = (ulong)DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
        private readonly List<ulong> _leftAt = [];
        private ulong _index;
        private long _chunks;
        private int _keys;

        public int WritesPerChunk => ChunkSize;

        public long Opened { get; private set; }

        public long Ended { get; private set; }

        public long Deduplicated { get; private set; }

        public long Refused { get; private set; }

        private ulong Now => _start + ((ulong)_chunks * MsPerChunk);

        public void Chunk(bool withSession)
        {
            _chunks++;
            var now = Now;
            var entries = new ApplyEntry[ChunkSize];
            for (var i = 0; i < ChunkSize; i++)
            {
                var client = _clients[_random.Next(_clients.Length)];
                var key = Data.Key(_keys++ & 0xFFFF, space: 5);
                var command = new WriteCommand
                {
                    Insert = new WriteCommand.Types.Insert { Key = UnsafeByteOperations.UnsafeWrap(key), Value = UnsafeByteOperations.UnsafeWrap(Data.Value), AsOfUnixMs = now },
                };
                if (withSession)
                {
                    // 1 write in 100 is a retry of the client's previous one (its answer was lost).
                    var retry = client.Sequence > 0 && _random.Next(100) == 0;
                    var sequence = retry ? client.Sequence : ++client.Sequence;
                    if (sequence == 1 && !retry)
                    {
                        Opened++;
                    }
                    command.Session = new ClientSession
                    {
                        SessionId = client.Id,
                        Sequence = sequence,
                        LowWater = sequence > Window ? sequence - Window + 1 : 1,
                        FirstToPartition = sequence == 1,
                    };
                }
                entries[i] = new ApplyEntry(++_index, 1, command);
            }
            foreach (var r in engine.ApplyCommands(entries))
            {
                if (r.Deduplicated)
                {
                    Deduplicated++;
                }
                else if (!r.Succeeded)
                {
                    Refused++;
                }
            }
            if (!withSession)
            {
                return;
            }
            // Clients come and go: about one leaves per chunk and a new one (a new session) takes its place.
            var leaving = _random.Next(_clients.Length);
            _clients[leaving] = new Client();
            _leftAt.Add(now);
            if (_chunks % ExpireEveryChunks == 0)
            {
                Expire(now);
            }
        }

        /// <summary>The scheduler's round: end sessions idle for the timeout, purge tombstones older than the retention.</summary>
        private void Expire(ulong now)
        {
            var idle = engine.IdleSessions(now - TimeoutMs, 1000);
            var old = engine.TombstonesBefore(now - TimeoutMs, 1000);
            if (idle.Count == 0 && old.Count == 0)
            {
                return;
            }
            var command = new WriteCommand.Types.ExpireSessions { AsOfUnixMs = now };
            foreach (var s in idle)
            {
                command.Sessions.Add(new WriteCommand.Types.ExpiredSession { SessionId = UnsafeByteOperations.UnsafeWrap(s.Id), LastActiveUnixMs = s.LastActiveUnixMs });
            }
            foreach (var id in old)
            {
                command.PurgeTombstones.Add(UnsafeByteOperations.UnsafeWrap(id));
            }
            Ended += engine.ApplyCommands([new ApplyEntry(++_index, 1, new WriteCommand { ExpireSessions = command })])[0].KeysExpired;
        }

        /// <summary>The most clients that left within any window of <paramref name="ms"/> simulated milliseconds.</summary>
        public int MaxChurnWithin(ulong ms)
        {
            var most = 0;
            var from = 0;
            for (var to = 0; to < _leftAt.Count; to++)
            {
                while (_leftAt[to] - _leftAt[from] > ms)
                {
                    from++;
                }
                most = Math.Max(most, to - from + 1);
            }
            // Plus one expiry round of lag on each side.
            return most + (int)(2 * ExpireEveryChunks);
        }
    }

    private sealed class Client
    {
        public ByteString Id { get; } = ByteString.CopyFrom(Guid.NewGuid().ToByteArray());

        public ulong Sequence { get; set; }
    }
}
