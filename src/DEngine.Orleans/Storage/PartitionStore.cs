using DEngine.StateMachine;
using Microsoft.Extensions.Options;
using RocksDbSharp;

namespace DEngine.Orleans.Storage;

/// <summary>
/// Silo-wide storage resources: where partitions live on disk, the block cache they share, and the
/// options each partition's engine opens with.
/// </summary>
public sealed class PartitionStore(IOptions<DEngineOptions> options, TimeProvider time)
{
    private readonly DEngineOptions _options = options.Value;
    private readonly Lazy<Cache> _cache = new(() => Cache.CreateLru((ulong)options.Value.BlockCacheMiB << 20));

    /// <summary>The silo's data root, absolute.</summary>
    public string DataRoot { get; } = Path.GetFullPath(options.Value.DataRoot);

    /// <summary>The clock used for TTL decisions.</summary>
    public TimeProvider Time => time;

    /// <summary>The directory of partition <paramref name="partition"/>.</summary>
    public string PartitionPath(int partition) => Path.Combine(DataRoot, "partitions", partition.ToString(System.Globalization.CultureInfo.InvariantCulture));

    /// <summary>Opens (creating if needed) the engine of <paramref name="partition"/>. Blocking I/O: call off the grain's turn.</summary>
    public RocksDbStateMachine Open(int partition) =>
        new(PartitionPath(partition), new RocksDbStateMachineOptions
        {
            PartitionId = partition,
            Durability = _options.Durability,
            MaxKeyBytes = _options.MaxKeyBytes,
            MaxValueBytes = _options.MaxValueBytes,
            TimeProvider = time,
            SharedBlockCache = _cache.Value,
            WriteBufferSize = (ulong)_options.WriteBufferMiB << 20,
        });
}
