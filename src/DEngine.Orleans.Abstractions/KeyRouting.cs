using System.IO.Hashing;

namespace DEngine.Orleans;

/// <summary>
/// Maps keys to partitions. The mapping is part of the data format and never changes:
/// <c>partition = XxHash64(key bytes, seed 0) mod partitions</c>, with the 64-bit hash read as an
/// unsigned integer. Any client in any language can compute it.
/// </summary>
public static class KeyRouting
{
    /// <summary>The partition of <paramref name="key"/> in a cluster of <paramref name="partitions"/> partitions.</summary>
    public static int PartitionOf(ReadOnlySpan<byte> key, int partitions)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(partitions, 1);
        return (int)(XxHash64.HashToUInt64(key) % (ulong)partitions);
    }
}
