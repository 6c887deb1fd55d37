using System.Globalization;
using System.Text;
using DEngine.Orleans;

namespace DEngine.Cli;

/// <summary>Formats partition statuses as an aligned text table.</summary>
internal static class StatusTable
{
    private static readonly string[] Header = ["PARTITION", "SILO", "APPLIED", "EPOCH", "SNAPSHOT"];

    /// <summary>
    /// One header line and one line per partition; columns separated by at least two spaces. Replicated
    /// partitions add a REPLICAS column: configuration version, replicas (primary starred), those
    /// catching up, and a warning below the replica count or the write floor.
    /// </summary>
    public static string Format(IEnumerable<PartitionStatus> statuses)
    {
        var list = statuses.ToList();
        var replicated = list.Any(s => s.Replication is not null);
        string[] header = replicated ? [.. Header, "REPLICAS"] : Header;
        var rows = new List<string[]> { header };
        foreach (var s in list)
        {
            string[] row =
            [
                s.Partition.ToString(CultureInfo.InvariantCulture),
                s.Silo,
                string.Create(CultureInfo.InvariantCulture, $"{s.AppliedIndex}/{s.AppliedTerm}"),
                s.Epoch.ToString(CultureInfo.InvariantCulture),
                s.SnapshotIndex is { } index ? string.Create(CultureInfo.InvariantCulture, $"{index}/{s.SnapshotTerm ?? 0}") : "-",
            ];
            rows.Add(replicated ? [.. row, s.Replication ?? "-"] : row);
        }
        var widths = Enumerable.Range(0, header.Length).Select(c => rows.Max(r => r[c].Length)).ToArray();
        var text = new StringBuilder();
        foreach (var row in rows)
        {
            for (var c = 0; c < row.Length; c++)
            {
                if (c == row.Length - 1)
                {
                    text.Append(row[c]);
                }
                else
                {
                    text.Append(row[c].PadRight(widths[c] + 2));
                }
            }
            text.Append('\n');
        }
        return text.ToString();
    }
}
