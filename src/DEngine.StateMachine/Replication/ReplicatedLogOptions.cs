namespace DEngine.StateMachine.Replication;

/// <summary>Options of <see cref="ReplicatedLog"/>.</summary>
public sealed class ReplicatedLogOptions
{
    /// <summary>Default of <see cref="SegmentBytes"/>: 64 MiB.</summary>
    public const long DEFAULT_SEGMENT_BYTES = 64L << 20;

    /// <summary>Smallest accepted <see cref="SegmentBytes"/>: 4 KiB.</summary>
    public const long MIN_SEGMENT_BYTES = 4L << 10;

    /// <summary>
    /// Size after which appends go to a new segment file. Compaction deletes whole segments only, so
    /// this is also how many bytes of compacted entries may linger on disk. Default 64 MiB.
    /// </summary>
    public long SegmentBytes { get; set; } = DEFAULT_SEGMENT_BYTES;

    /// <summary>Throws <see cref="ArgumentException"/> naming the first invalid option.</summary>
    public void Validate()
    {
        if (SegmentBytes < MIN_SEGMENT_BYTES)
        {
            throw new ArgumentException($"{nameof(SegmentBytes)} must be at least {MIN_SEGMENT_BYTES} bytes (was {SegmentBytes}).", nameof(SegmentBytes));
        }
    }
}
