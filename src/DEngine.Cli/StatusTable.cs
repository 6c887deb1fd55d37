using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using DEngine.Orleans;

namespace DEngine.Cli;

/// <summary>Formats partition statuses as aligned text tables, or as JSON for scripts.</summary>
internal static class StatusTable
{
    private static readonly string[] Header = ["PARTITION", "SILO", "APPLIED", "EPOCH", "SNAPSHOT"];

    private static readonly string[] ReplicaHeader = ["PARTITION", "VERSION", "REPLICA", "ROLE", "APPLIED", "LOG", "LAG", "STATE"];

    /// <summary>Longest error text shown in the STATE column (the JSON output has all of it).</summary>
    private const int MaxErrorText = 60;

    private static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web)
    {
        WriteIndented = true,
        Converters = { new JsonStringEnumConverter(JsonNamingPolicy.KebabCaseLower) },
    };

    /// <summary>
    /// One header line and one line per partition; columns separated by at least two spaces. Replicated
    /// partitions add a REPLICAS column (configuration version, replicas with the primary starred, those
    /// catching up, a warning below the replica count or the write floor) and, after an empty line, a
    /// second table with one line per copy: its applied and log index, its lag behind the primary in
    /// entries and its state (away, a snapshot install with its progress, the last error).
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
        var text = new StringBuilder();
        Append(text, rows);
        var copies = new List<string[]> { ReplicaHeader };
        foreach (var s in list)
        {
            if (s.ReplicaGroup is not { } group)
            {
                continue;
            }
            foreach (var r in group.Replicas)
            {
                copies.Add(
                [
                    s.Partition.ToString(CultureInfo.InvariantCulture),
                    group.Version.ToString(CultureInfo.InvariantCulture),
                    r.Silo,
                    Role(r.Role),
                    r.AppliedIndex.ToString(CultureInfo.InvariantCulture),
                    r.LogIndex.ToString(CultureInfo.InvariantCulture),
                    r.Lag.ToString(CultureInfo.InvariantCulture),
                    State(r),
                ]);
            }
        }
        if (copies.Count > 1)
        {
            text.Append('\n');
            Append(text, copies);
        }
        return text.ToString();
    }

    /// <summary>The statuses as an indented JSON array (camelCase fields, enums as lower-case words), ending with a newline.</summary>
    public static string FormatJson(IEnumerable<PartitionStatus> statuses) =>
        JsonSerializer.Serialize(statuses.ToArray(), Json) + "\n";

    private static string Role(ReplicaRole role) => role switch
    {
        ReplicaRole.Primary => "primary",
        ReplicaRole.Replica => "replica",
        ReplicaRole.Learner => "learner",
        _ => role.ToString(),
    };

    /// <summary>What the copy is doing, when it is not simply in step: "-" when it is.</summary>
    private static string State(ReplicaStatus r)
    {
        var parts = new List<string>();
        if (!r.Active)
        {
            parts.Add("away");
        }
        if (r.Installing is { } install)
        {
            parts.Add(install.Snapshot is null
                ? "preparing a snapshot"
                : string.Create(CultureInfo.InvariantCulture, $"installing {install.Snapshot}: {install.BytesDone}/{install.TotalBytes} bytes ({install.Percent:0}%), {install.Files} files"));
        }
        else if (r.Role == ReplicaRole.Learner && r.Active)
        {
            parts.Add("catching up");
        }
        if (r.LastError is { } error)
        {
            parts.Add("failing: " + (error.Length > MaxErrorText ? error[..MaxErrorText] + "…" : error));
        }
        return parts.Count == 0 ? "-" : string.Join("; ", parts);
    }

    private static void Append(StringBuilder text, List<string[]> rows)
    {
        var widths = Enumerable.Range(0, rows[0].Length).Select(c => rows.Max(r => r[c].Length)).ToArray();
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
    }
}
