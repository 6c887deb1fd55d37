using System.Collections.Concurrent;
using System.Diagnostics.Metrics;
using DEngine.Orleans.Diagnostics;
using DEngine.StateMachine;
using Microsoft.Extensions.Options;
using RocksDbSharp;

namespace DEngine.Orleans.Storage;

/// <summary>
/// Silo-wide storage resources: where partitions live on disk, the block cache they share, the
/// options each partition's engine opens with, and the engines open right now (for metrics).
/// </summary>
public sealed class PartitionStore
{
    private readonly DEngineOptions _options;
    private readonly TimeProvider _time;
    private readonly Lazy<Cache> _cache;
    private readonly ConcurrentDictionary<int, IStateMachine> _open = new();

    /// <summary>Creates the store and its gauges.</summary>
    public PartitionStore(IOptions<DEngineOptions> options, TimeProvider time, IMeterFactory meters)
    {
        _options = options.Value;
        _time = time;
        _cache = new(() => Cache.CreateLru((ulong)_options.BlockCacheMiB << 20));
        DataRoot = Path.GetFullPath(_options.DataRoot);
        var meter = meters.Create(DEngineMetrics.MeterName);
        meter.CreateObservableGauge("dengine.ttl.keys", ObserveTtlKeys, description: "Keys with a TTL in the partitions open on this silo (RocksDB estimate of the TTL index).");
        meter.CreateObservableGauge("dengine.partitions.open", () => _open.Count, description: "Partitions whose database is open on this silo.");
        meter.CreateObservableGauge("dengine.clock.skew", ObserveClockSkew, unit: "ms", description: "How far each open partition's time floor (the highest clock stamp it applied) is ahead of this silo's clock; 0 when it is not. Beyond DEngine:MaxClockSkew the floor counts only up to clock + MaxClockSkew.");
    }

    /// <summary>The silo's data root, absolute.</summary>
    public string DataRoot { get; }

    /// <summary>The clock used for TTL decisions.</summary>
    public TimeProvider Time => _time;

    /// <summary>The partitions whose database is open on this silo now.</summary>
    public IReadOnlyCollection<int> OpenPartitions => _open.Keys.ToArray();

    /// <summary>Whether the database of <paramref name="partition"/> is open on this silo now.</summary>
    public bool IsOpen(int partition) => _open.ContainsKey(partition);

    /// <summary>The engine of <paramref name="partition"/> if its database is open on this silo now.</summary>
    public bool TryGetOpen(int partition, [System.Diagnostics.CodeAnalysis.MaybeNullWhen(false)] out IStateMachine engine) => _open.TryGetValue(partition, out engine);

    /// <summary>Whether this silo has a directory for <paramref name="partition"/> (it may hold its data).</summary>
    public bool HasData(int partition) => Directory.Exists(PartitionPath(partition));

    /// <summary>The directory of partition <paramref name="partition"/>.</summary>
    public string PartitionPath(int partition) => Path.Combine(DataRoot, "partitions", partition.ToString(System.Globalization.CultureInfo.InvariantCulture));

    /// <summary>Opens (creating if needed) the engine of <paramref name="partition"/>. Blocking I/O: call off the grain's turn.</summary>
    public IStateMachine Open(int partition) => OpenWith(partition, _options.Durability);

    /// <summary>
    /// Opens the engine of a replicated partition's copy: Relaxed durability (apply never fsyncs, reads
    /// are live), because the copy's log makes entries durable and only committed entries are applied.
    /// Blocking I/O: call off the grain's turn.
    /// </summary>
    public IStateMachine OpenReplicated(int partition) => OpenWith(partition, DurabilityMode.Relaxed);

    private IStateMachine OpenWith(int partition, DurabilityMode durability)
    {
        var engine = new RocksDbStateMachine(PartitionPath(partition), new RocksDbStateMachineOptions
        {
            PartitionId = partition,
            Durability = durability,
            MaxKeyBytes = _options.MaxKeyBytes,
            MaxValueBytes = _options.MaxValueBytes,
            TimeProvider = _time,
            MaxClockSkew = _options.MaxClockSkew,
            SharedBlockCache = _cache.Value,
            WriteBufferSize = (ulong)_options.WriteBufferMiB << 20,
        });
        _open[partition] = engine;
        return engine;
    }

    /// <summary>Flushes and closes an engine opened by <see cref="Open"/>. Blocking I/O: call off the grain's turn.</summary>
    public void Close(IStateMachine engine)
    {
        _open.TryRemove(new KeyValuePair<int, IStateMachine>(engine.PartitionId, engine));
        try
        {
            engine.Flush();
        }
        finally
        {
            engine.Dispose();
        }
    }

    private IEnumerable<Measurement<long>> ObserveClockSkew()
    {
        var now = TtlClock.NowUnixMs(_time);
        foreach (var (partition, engine) in _open)
        {
            var floor = engine.TimeFloor;
            yield return new Measurement<long>(floor > now ? (long)Math.Min(floor - now, long.MaxValue) : 0, new KeyValuePair<string, object?>("partition", partition));
        }
    }

    private IEnumerable<Measurement<long>> ObserveTtlKeys()
    {
        foreach (var (partition, engine) in _open)
        {
            long estimate;
            try
            {
                estimate = engine.TtlIndexEstimate;
            }
            catch (DEngineException)
            {
                continue; // closing right now
            }
            yield return new Measurement<long>(estimate, new KeyValuePair<string, object?>("partition", partition));
        }
    }
}
