namespace DEngine.StateMachine;

/// <summary>Key-range helpers for prefix scans.</summary>
public static class PrefixRange
{
    /// <summary>
    /// The smallest key greater than every key starting with <paramref name="prefix"/>: drop trailing
    /// 0xFF bytes, then increment the last byte. Null when the prefix is all 0xFF (no upper bound exists).
    /// </summary>
    public static byte[]? Successor(ReadOnlySpan<byte> prefix)
    {
        var end = prefix.Length;
        while (end > 0 && prefix[end - 1] == 0xFF)
        {
            end--;
        }
        if (end == 0)
        {
            return null;
        }
        var upper = prefix[..end].ToArray();
        upper[^1]++;
        return upper;
    }
}
