using System.Diagnostics.Metrics;

namespace DEngine.Orleans.Diagnostics;

/// <summary>The silo's DEngine instruments (meter <c>DEngine.Orleans</c>).</summary>
public sealed class DEngineMetrics
{
    /// <summary>The meter name, for exporters.</summary>
    public const string MeterName = "DEngine.Orleans";

    private readonly Counter<long> _chunks;
    private readonly Counter<long> _writes;
    private readonly Histogram<int> _chunkSize;

    /// <summary>Creates the instruments on <paramref name="factory"/>'s meter.</summary>
    public DEngineMetrics(IMeterFactory factory)
    {
        var meter = factory.Create(MeterName);
        _chunks = meter.CreateCounter<long>("dengine.chunks.applied", description: "Chunks applied (one atomic write each).");
        _writes = meter.CreateCounter<long>("dengine.writes.applied", description: "Client writes applied.");
        _chunkSize = meter.CreateHistogram<int>("dengine.chunk.entries", description: "Entries per applied chunk (group commit size).");
        KeysExpired = meter.CreateCounter<long>("dengine.ttl.keys_expired", description: "Expired keys deleted by cleanup.");
        CleanupLag = meter.CreateHistogram<double>("dengine.ttl.cleanup_lag", unit: "ms", description: "Time from a key's expiry to its deletion.");
        WritesOverloaded = meter.CreateCounter<long>("dengine.writes.overloaded", description: "Client writes refused with Overloaded (the partition's queue was full; nothing applied).");
    }

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
}
