using System.Diagnostics.Metrics;
using DEngine.Orleans.Configuration;

namespace DEngine.Orleans.Diagnostics;

/// <summary>The silo's DEngine instruments (meter <c>DEngine.Orleans</c>).</summary>
public sealed class DEngineMetrics
{
    /// <summary>The meter name, for exporters.</summary>
    public const string MeterName = "DEngine.Orleans";

    /// <summary>Reconfiguration reason: a replica left the configuration.</summary>
    public const string ReasonRemoved = "removed";

    /// <summary>Reconfiguration reason: a replica joined the configuration.</summary>
    public const string ReasonAdded = "added";

    /// <summary>Reconfiguration reason: another silo became the primary.</summary>
    public const string ReasonPrimaryChange = "primary-change";

    private readonly Counter<long> _chunks;
    private readonly Counter<long> _writes;
    private readonly Histogram<int> _chunkSize;
    private readonly Histogram<long> _replicationLag;
    private readonly Histogram<double> _commitLatency;
    private readonly Counter<long> _reconfigurations;
    private readonly UpDownCounter<long> _rebuilds;
    private readonly Counter<long> _snapshotBytes;

    /// <summary>Creates the instruments on <paramref name="factory"/>'s meter.</summary>
    public DEngineMetrics(IMeterFactory factory)
    {
        ArgumentNullException.ThrowIfNull(factory);
        var meter = factory.Create(MeterName);
        Meter = meter;
        _chunks = meter.CreateCounter<long>("dengine.chunks.applied", description: "Chunks applied (one atomic write each).");
        _writes = meter.CreateCounter<long>("dengine.writes.applied", description: "Client writes applied.");
        _chunkSize = meter.CreateHistogram<int>("dengine.chunk.entries", description: "Entries per applied chunk (group commit size).");
        KeysExpired = meter.CreateCounter<long>("dengine.ttl.keys_expired", description: "Expired keys deleted by cleanup.");
        CleanupLag = meter.CreateHistogram<double>("dengine.ttl.cleanup_lag", unit: "ms", description: "Time from a key's expiry to its deletion.");
        WritesOverloaded = meter.CreateCounter<long>("dengine.writes.overloaded", description: "Client writes refused with Overloaded (the partition's queue was full; nothing applied).");
        _replicationLag = meter.CreateHistogram<long>("dengine.replication.lag", unit: "{entry}", description: "Entries a replica (or learner) is behind its primary's log, sampled by the primary at every message to it, answered or not.");
        _commitLatency = meter.CreateHistogram<double>("dengine.replication.commit_latency", unit: "ms", description: "Time from a chunk's append at the primary to its commit (durable in every replica's log).");
        _reconfigurations = meter.CreateCounter<long>("dengine.replication.reconfigurations", description: "Configuration changes stored, by reason (removed, added, primary-change); one change can count under several reasons. Counted by the silo that stores the configuration.");
        _rebuilds = meter.CreateUpDownCounter<long>("dengine.replication.rebuilds_in_progress", description: "Snapshot installs (a copy rebuilt from its primary's checkpoint) running on this silo.");
        _snapshotBytes = meter.CreateCounter<long>("dengine.replication.snapshot_bytes", unit: "By", description: "Snapshot bytes fetched by this silo's copies from their primaries (chunks that arrived, refetches included).");
    }

    /// <summary>The meter the instruments are on (a listener can tell this silo's measurements from another's).</summary>
    public Meter Meter { get; }

    /// <summary>Writes refused because a partition's queue was at its bound.</summary>
    public Counter<long> WritesOverloaded { get; }

    /// <summary>Expired keys deleted by cleanup.</summary>
    public Counter<long> KeysExpired { get; }

    /// <summary>Lag from expiry to deletion.</summary>
    public Histogram<double> CleanupLag { get; }

    /// <summary>Records one applied chunk of <paramref name="entries"/> entries.</summary>
    public void ChunkApplied(int partition, int entries)
    {
        var tag = new KeyValuePair<string, object?>("partition", partition);
        _chunks.Add(1, tag);
        _writes.Add(entries, tag);
        _chunkSize.Record(entries, tag);
    }

    /// <summary>Records that <paramref name="replica"/> is <paramref name="entries"/> entries behind its primary's log.</summary>
    public void ReplicaLag(int partition, string replica, ulong entries) =>
        _replicationLag.Record((long)Math.Min(entries, long.MaxValue), new("partition", partition), new("replica", replica));

    /// <summary>Records the time from a chunk's append to its commit.</summary>
    public void Committed(int partition, TimeSpan latency) =>
        _commitLatency.Record(latency.TotalMilliseconds, new KeyValuePair<string, object?>("partition", partition));

    /// <summary>
    /// Counts a stored change from <paramref name="before"/> to <paramref name="after"/> under each
    /// reason it has: one per replica removed, one per replica added, one when the primary is another
    /// silo. The first configuration of a partition (from version 0) is no reconfiguration.
    /// </summary>
    public void Reconfigured(int partition, PartitionConfiguration before, PartitionConfiguration after)
    {
        ArgumentNullException.ThrowIfNull(before);
        ArgumentNullException.ThrowIfNull(after);
        if (before.Version == 0)
        {
            return;
        }
        var removed = before.Replicas.Count(r => !after.Contains(r.Silo));
        var added = after.Replicas.Count(r => !before.Contains(r.Silo));
        var partitionTag = new KeyValuePair<string, object?>("partition", partition);
        if (removed > 0)
        {
            _reconfigurations.Add(removed, partitionTag, new("reason", ReasonRemoved));
        }
        if (added > 0)
        {
            _reconfigurations.Add(added, partitionTag, new("reason", ReasonAdded));
        }
        if (before.Primary?.Silo != after.Primary?.Silo)
        {
            _reconfigurations.Add(1, partitionTag, new("reason", ReasonPrimaryChange));
        }
    }

    /// <summary>A snapshot install into a copy of <paramref name="partition"/> started (+1) or ended (-1, call exactly once per start).</summary>
    public void Rebuilding(int partition, int delta) =>
        _rebuilds.Add(delta, new KeyValuePair<string, object?>("partition", partition));

    /// <summary>Counts <paramref name="bytes"/> of a snapshot fetched into a copy of <paramref name="partition"/>.</summary>
    public void SnapshotBytesMoved(int partition, long bytes) =>
        _snapshotBytes.Add(bytes, new KeyValuePair<string, object?>("partition", partition));
}
