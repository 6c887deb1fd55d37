namespace DEngine.StateMachine;

/// <summary>
/// Options of <see cref="RocksDbStateMachine"/>. The RocksDB defaults are d-engine's tuning for its
/// state-machine column family; each can be overridden.
/// </summary>
public sealed class RocksDbStateMachineOptions
{
    /// <summary>Partition id, used in errors and metrics.</summary>
    public int PartitionId { get; set; }

    /// <summary>When writes are on stable storage. Default <see cref="DurabilityMode.Synced"/>.</summary>
    public DurabilityMode Durability { get; set; } = DurabilityMode.Synced;

    /// <summary>Largest key accepted by <see cref="Limits"/>, in bytes (apply does not check it). Default 4 KiB.</summary>
    public int MaxKeyBytes { get; set; } = 4 * 1024;

    /// <summary>Largest value accepted by <see cref="Limits"/>, in bytes (apply does not check it). Default 1 MiB.</summary>
    public int MaxValueBytes { get; set; } = 1024 * 1024;

    /// <summary>The limits above, for a sequencer to check commands before it logs them.</summary>
    public CommandLimits Limits => new(MaxKeyBytes, MaxValueBytes);

    /// <summary>Clock for TTL decisions of unstamped commands and for reads. Tests pass a fake.</summary>
    public TimeProvider TimeProvider { get; set; } = TimeProvider.System;

    /// <summary>
    /// How far the partition's time floor (the highest applied clock stamp) may count ahead of this
    /// engine's clock when judging expiry (see <see cref="RocksDbStateMachine.EffectiveNowUnixMs"/>).
    /// Default 5 s.
    /// </summary>
    public TimeSpan MaxClockSkew { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>Write buffer (memtable) size of the data column family. Default 128 MiB.</summary>
    public ulong WriteBufferSize { get; set; } = 128UL << 20;

    /// <summary>Memtables kept per column family. Default 4.</summary>
    public int MaxWriteBufferNumber { get; set; } = 4;

    /// <summary>Memtables merged in one flush. Default 2.</summary>
    public int MinWriteBufferNumberToMerge { get; set; } = 2;

    /// <summary>
    /// Background flush and compaction jobs. Default 8, which lets RocksDB run two flushes at once: a
    /// long flush of the data family no longer queues the small metadata family's flush behind it
    /// (its two 4 MiB memtables filled meanwhile and stalled writes for the whole flush).
    /// </summary>
    public int MaxBackgroundJobs { get; set; } = 8;

    /// <summary>Target SST file size. Default 64 MiB.</summary>
    public ulong TargetFileSizeBase { get; set; } = 64UL << 20;

    /// <summary>Bytes of level 1 (base level). Default 256 MiB.</summary>
    public ulong MaxBytesForLevelBase { get; set; } = 256UL << 20;

    /// <summary>RocksDB's dynamic level sizing. Default true.</summary>
    public bool LevelCompactionDynamicLevelBytes { get; set; } = true;

    /// <summary>LZ4 for most levels, Zstd for the bottommost (d-engine's choice). Default true.</summary>
    public bool Compression { get; set; } = true;

    /// <summary>Block cache size when no shared cache is given. Default 128 MiB.</summary>
    public ulong BlockCacheBytes { get; set; } = 128UL << 20;

    /// <summary>
    /// A block cache shared by every partition of a process; null = each state machine creates one of
    /// <see cref="BlockCacheBytes"/>.
    /// </summary>
    public RocksDbSharp.Cache? SharedBlockCache { get; set; }

    /// <summary>Write buffer of the small metadata and TTL-index column families. Default 4 MiB.</summary>
    public ulong AuxWriteBufferSize { get; set; } = 4UL << 20;

    /// <summary>A snapshot is due after this many applied entries since the last one (see <see cref="RocksDbStateMachine.ShouldSnapshot"/>); 0 turns the policy off. Default 10,000.</summary>
    public ulong SnapshotEveryEntries { get; set; } = 10_000;

    /// <summary>Snapshots kept on disk after a new one is taken; older ones are deleted. Default 2.</summary>
    public int SnapshotsToKeep { get; set; } = 2;

    /// <summary>
    /// A snapshot flushes the memtables while writes continue, then takes the checkpoint while writes
    /// wait. If the write-ahead log is still smaller than this many bytes then (the writes since the
    /// flush), the checkpoint copies it instead of flushing again, and opening the snapshot replays
    /// it. 0 always flushes inside the checkpoint. Default 64 MiB.
    /// </summary>
    public ulong SnapshotWalBytesWithoutFlush { get; set; } = 64UL << 20;

    /// <summary>
    /// The session table's bounds. Not an option: every replica must apply with the same bounds, so only
    /// tests lower them (to reach a bound in a few writes); production always uses <see cref="SessionLimits"/>.
    /// </summary>
    internal SessionBounds SessionBounds { get; set; } = SessionBounds.Default;

    /// <summary>Throws <see cref="ArgumentException"/> naming the first invalid option.</summary>
    public void Validate()
    {
        if (MaxKeyBytes < 1)
        {
            throw new ArgumentException($"{nameof(MaxKeyBytes)} must be at least 1 (was {MaxKeyBytes}).", nameof(MaxKeyBytes));
        }
        if (MaxValueBytes < 0)
        {
            throw new ArgumentException($"{nameof(MaxValueBytes)} must not be negative (was {MaxValueBytes}).", nameof(MaxValueBytes));
        }
        if (WriteBufferSize < (1UL << 20))
        {
            throw new ArgumentException($"{nameof(WriteBufferSize)} must be at least 1 MiB (was {WriteBufferSize}).", nameof(WriteBufferSize));
        }
        if (MaxWriteBufferNumber < 2 || MinWriteBufferNumberToMerge < 1 || MinWriteBufferNumberToMerge >= MaxWriteBufferNumber)
        {
            throw new ArgumentException($"{nameof(MaxWriteBufferNumber)} must be at least 2 and above {nameof(MinWriteBufferNumberToMerge)} (>= 1).", nameof(MaxWriteBufferNumber));
        }
        if (MaxBackgroundJobs < 1)
        {
            throw new ArgumentException($"{nameof(MaxBackgroundJobs)} must be at least 1.", nameof(MaxBackgroundJobs));
        }
        if (SnapshotsToKeep < 1)
        {
            throw new ArgumentException($"{nameof(SnapshotsToKeep)} must be at least 1 (was {SnapshotsToKeep}).", nameof(SnapshotsToKeep));
        }
        if (MaxClockSkew < TimeSpan.Zero || MaxClockSkew > TimeSpan.FromDays(1))
        {
            throw new ArgumentException($"{nameof(MaxClockSkew)} must be between 0 and 1 day (was {MaxClockSkew}).", nameof(MaxClockSkew));
        }
        ArgumentNullException.ThrowIfNull(TimeProvider, nameof(TimeProvider));
    }
}
