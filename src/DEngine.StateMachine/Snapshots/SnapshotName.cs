using System.Globalization;

namespace DEngine.StateMachine.Snapshots;

/// <summary>Snapshot directory names: <c>snapshot-{index}-{term}</c>, the label being the last entry inside.</summary>
public static class SnapshotName
{
    private const string Prefix = "snapshot-";

    /// <summary>The directory name of a snapshot whose last included entry is <paramref name="lastIncluded"/>.</summary>
    public static string Format(LogPosition lastIncluded) =>
        string.Create(CultureInfo.InvariantCulture, $"{Prefix}{lastIncluded.Index}-{lastIncluded.Term}");

    /// <summary>Parses a name made by <see cref="Format"/>; false for anything else (temp directories included).</summary>
    public static bool TryParse(string name, out LogPosition lastIncluded)
    {
        lastIncluded = default;
        if (!name.StartsWith(Prefix, StringComparison.Ordinal))
        {
            return false;
        }
        var rest = name.AsSpan(Prefix.Length);
        var dash = rest.IndexOf('-');
        if (dash <= 0
            || !ulong.TryParse(rest[..dash], NumberStyles.None, CultureInfo.InvariantCulture, out var index)
            || !ulong.TryParse(rest[(dash + 1)..], NumberStyles.None, CultureInfo.InvariantCulture, out var term))
        {
            return false;
        }
        lastIncluded = new LogPosition(index, term);
        return Format(lastIncluded) == name; // rejects leading zeros and other spellings
    }
}
