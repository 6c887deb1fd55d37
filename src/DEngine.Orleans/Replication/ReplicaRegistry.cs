using System.Collections.Concurrent;
using DEngine.Orleans.Storage;
using DEngine.StateMachine.Replication;
using DEngine.StateMachine.Snapshots;

namespace DEngine.Orleans.Replication;

/// <summary>
/// The copies of replicated partitions this silo holds, open once each and shared by the replica
/// endpoint (<see cref="ReplicaGrain"/>) and a primary on this silo. A copy is its partition's
/// database (opened with Relaxed durability: the log makes entries durable, see
/// <see cref="ReplicaCopy"/>) and its log in <c>{DataRoot}/logs/{partition}</c>.
/// </summary>
/// <param name="store">Where the partitions' databases live.</param>
/// <param name="time">The clock of the copies.</param>
/// <param name="options">The silo's options (the log's compaction interval and segment size); null: the defaults.</param>
/// <param name="metrics">The silo's instruments (snapshot installs, and the primaries started over these copies); null: recorded nowhere.</param>
public sealed class ReplicaRegistry(PartitionStore store, TimeProvider time, Microsoft.Extensions.Options.IOptions<DEngineOptions>? options = null, Diagnostics.DEngineMetrics? metrics = null) : IDisposable
{
    private readonly Configuration.ReplicationOptions _replication = options?.Value.Replication ?? new();
    private readonly ConcurrentDictionary<int, Lazy<ReplicaCopy>> _copies = new();
    private readonly ConcurrentDictionary<int, byte> _primaries = new();
    private readonly ConcurrentDictionary<int, ulong> _lastPrimaryVersion = new();
    private readonly object _closeGate = new();
    private bool _closed;
    // One gate per partition: an open (and the use it records) and a drop of the same copy never overlap.
    private readonly ConcurrentDictionary<int, object> _gates = new();
    private readonly ConcurrentDictionary<int, long> _lastUsed = new();
    private readonly long _startedAt = time.GetTimestamp();

    /// <summary>The directory of partition <paramref name="partition"/>'s log.</summary>
    public string LogPath(int partition) => Path.Combine(store.DataRoot, "logs", partition.ToString(System.Globalization.CultureInfo.InvariantCulture));

    /// <summary>The directory of partition <paramref name="partition"/>'s database.</summary>
    public string PartitionPathOf(int partition) => store.PartitionPath(partition);

    /// <summary>Where a snapshot for partition <paramref name="partition"/>'s copy is fetched to before it is installed.</summary>
    public string IncomingPath(int partition) => Path.Combine(store.PartitionPath(partition), "incoming");

    /// <summary>The snapshot installs running on this silo's copies (they outlive the replica endpoint's calls).</summary>
    public SnapshotInstalls Installs { get; } = new(time, metrics);

    /// <summary>The silo's instruments, for the primaries that run over these copies (null: none).</summary>
    public Diagnostics.DEngineMetrics? Metrics => metrics;

    /// <summary>The partitions whose primary runs on this silo now (for the handover at shutdown).</summary>
    public IReadOnlyCollection<int> Primaries => _primaries.Keys.ToArray();

    /// <summary>
    /// The configuration version of the last primary of <paramref name="partition"/> that ran in this
    /// process, or 0. When it is the stored version and no primary runs here now, the last lease
    /// holder was that activation, which stopped serving when it deactivated (and had waited out every
    /// older lease before it served): a new activation here need not wait for a lease.
    /// </summary>
    public ulong LastPrimaryVersion(int partition) => _lastPrimaryVersion.TryGetValue(partition, out var version) ? version : 0;

    /// <summary>Records that the primary of <paramref name="partition"/> runs here (true) or no longer does (false), and the configuration version it ran last.</summary>
    public void SetPrimary(int partition, bool here, ulong version)
    {
        _lastPrimaryVersion[partition] = version;
        if (here)
        {
            _primaries[partition] = 0;
        }
        else
        {
            _primaries.TryRemove(partition, out _);
        }
    }

    /// <summary>The partitions with a copy open here now.</summary>
    public IReadOnlyCollection<int> OpenPartitions => _copies.Where(c => c.Value.IsValueCreated).Select(c => c.Key).ToArray();

    /// <summary>The copy of <paramref name="partition"/>, opened (and replayed) on first use. Blocking I/O: call off a grain's turn.</summary>
    public ReplicaCopy Open(int partition)
    {
        lock (_closeGate)
        {
            if (_closed)
            {
                throw new DEngineException(DEngineErrorCode.NotServing, "This silo is stopping; its copies are closed. Retry: another replica answers.", partition);
            }
        }
        lock (GateOf(partition))
        {
            _lastUsed[partition] = time.GetTimestamp();
            var lazy = _copies.GetOrAdd(partition, p => new Lazy<ReplicaCopy>(() => OpenCopy(p), LazyThreadSafetyMode.ExecutionAndPublication));
            try
            {
                return lazy.Value;
            }
            catch
            {
                // A failed open is not cached: the next call tries again.
                _copies.TryRemove(new KeyValuePair<int, Lazy<ReplicaCopy>>(partition, lazy));
                throw;
            }
        }
    }

    /// <summary>The partitions this silo has a copy of on disk (a log directory), open or not.</summary>
    public IReadOnlyList<int> CopiesOnDisk()
    {
        var logs = Path.Combine(store.DataRoot, "logs");
        if (!Directory.Exists(logs))
        {
            return [];
        }
        return [.. Directory.EnumerateDirectories(logs)
            .Select(Path.GetFileName)
            .Select(name => int.TryParse(name, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var p) ? p : -1)
            .Where(p => p >= 0)
            .Order()];
    }

    /// <summary>How long nothing has used the copy of <paramref name="partition"/> (no primary's message, no open) in this process.</summary>
    public TimeSpan IdleFor(int partition) => time.GetElapsedTime(_lastUsed.TryGetValue(partition, out var at) ? at : _startedAt);

    /// <summary>
    /// Deletes this silo's copy of <paramref name="partition"/> (database, log and version file) when
    /// it has been idle for at least <paramref name="idle"/>, no primary runs here and no snapshot
    /// install runs into it; false, changing nothing, otherwise. The caller has checked that the
    /// latest stored configuration does not count this copy; the idle check, made under the
    /// partition's gate, covers a primary that started shipping to it since (every message opens the
    /// copy, and a learner is added to a configuration only after acknowledging messages). Blocking I/O.
    /// </summary>
    public bool TryDropIdle(int partition, TimeSpan idle)
    {
        lock (GateOf(partition))
        {
            if (IdleFor(partition) < idle || _primaries.ContainsKey(partition) || Installs.IsRunning(partition))
            {
                return false;
            }
            if (_copies.TryRemove(partition, out var lazy) && lazy.IsValueCreated)
            {
                lazy.Value.Dispose();
            }
            DeleteDirectory(store.PartitionPath(partition));
            DeleteDirectory(LogPath(partition));
            File.Delete(LogPath(partition) + ".version");
            _lastUsed.TryRemove(partition, out _);
            return true;
        }
    }

    private object GateOf(int partition) => _gates.GetOrAdd(partition, _ => new object());

    private static void DeleteDirectory(string path)
    {
        if (Directory.Exists(path))
        {
            Directory.Delete(path, recursive: true);
        }
    }

    /// <summary>The copy of <paramref name="partition"/> if it is open here now.</summary>
    public bool TryGet(int partition, [System.Diagnostics.CodeAnalysis.MaybeNullWhen(false)] out ReplicaCopy copy)
    {
        copy = null;
        if (_copies.TryGetValue(partition, out var lazy) && lazy.IsValueCreated)
        {
            copy = lazy.Value;
            return true;
        }
        return false;
    }

    /// <summary>Closes every copy (silo stop); later opens fail with NotServing.</summary>
    public void Dispose()
    {
        lock (_closeGate)
        {
            _closed = true;
        }
        foreach (var lazy in _copies.Values)
        {
            if (lazy.IsValueCreated)
            {
                lazy.Value.Dispose();
            }
        }
        _copies.Clear();
    }

    private ReplicaCopy OpenCopy(int partition)
    {
        DurableFiles.CreateDirectoryDurably(Path.Combine(store.DataRoot, "logs"));
        var engine = store.OpenReplicated(partition);
        try
        {
            var log = LogPath(partition);
            var logOptions = new ReplicatedLogOptions { SegmentBytes = _replication.LogSegmentBytes };
            return new ReplicaCopy(partition, engine, ReplicatedLog.Open(log, partition, logOptions, store.Time), (ulong)_replication.LogCompactionEntries, versionFile: log + ".version", time: time, closeEngine: store.Close);
        }
        catch
        {
            store.Close(engine);
            throw;
        }
    }
}
