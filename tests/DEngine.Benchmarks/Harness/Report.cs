using System.Globalization;
using System.Text;
using System.Text.Json;

namespace DEngine.Benchmarks.Harness;

/// <summary>The stdout table and the JSON file.</summary>
public static class Report
{
    public static string Table(IReadOnlyList<CaseResult> results)
    {
        var rows = new List<string[]>
        {
            new[] { "suite", "case", "ours", "rate", "p50 ms", "p99 ms", "baseline", "rate", "p50 ms", "p99 ms", "ratio", "target", "met" },
        };
        foreach (var r in results)
        {
            if (r.Comparisons.Count == 0)
            {
                rows.Add([r.Suite, r.Case, r.Ours?.Name ?? r.Note, Rate(r.Ours), Ms(r.Ours?.P50Ms), Ms(r.Ours?.P99Ms), "", "", "", "", "", r.Target, Met(r.Met)]);
                continue;
            }
            for (var i = 0; i < r.Comparisons.Count; i++)
            {
                var c = r.Comparisons[i];
                var first = i == 0;
                rows.Add([
                    first ? r.Suite : "", first ? r.Case : "",
                    first ? r.Ours?.Name ?? "" : "", first ? Rate(r.Ours) : "", first ? Ms(r.Ours?.P50Ms) : "", first ? Ms(r.Ours?.P99Ms) : "",
                    c.Baseline.Name, Rate(c.Baseline), Ms(c.Baseline.P50Ms), Ms(c.Baseline.P99Ms),
                    c.Ratio.ToString("0.00", CultureInfo.InvariantCulture),
                    first ? r.Target : "", first ? Met(r.Met) : "",
                ]);
            }
        }
        var widths = new int[rows[0].Length];
        foreach (var row in rows)
        {
            for (var i = 0; i < row.Length; i++)
            {
                widths[i] = Math.Max(widths[i], row[i].Length);
            }
        }
        var sb = new StringBuilder();
        foreach (var row in rows)
        {
            sb.Append("| ");
            for (var i = 0; i < row.Length; i++)
            {
                sb.Append(row[i].PadRight(widths[i])).Append(" | ");
            }
            sb.Length--;
            sb.AppendLine();
            if (ReferenceEquals(row, rows[0]))
            {
                sb.Append('|');
                foreach (var w in widths)
                {
                    sb.Append(new string('-', w + 2)).Append('|');
                }
                sb.AppendLine();
            }
        }
        var notes = results.Where(r => r.Counters.Count > 0 || r.Note.Length > 0).ToList();
        if (notes.Count > 0)
        {
            sb.AppendLine();
            foreach (var r in notes)
            {
                var counters = string.Join(", ", r.Counters.Select(kv => $"{kv.Key} = {kv.Value.ToString("0.##", CultureInfo.InvariantCulture)}"));
                sb.AppendLine(CultureInfo.InvariantCulture, $"- {r.Suite} / {r.Case}: {counters}{(r.Note.Length > 0 && counters.Length > 0 ? "; " : "")}{r.Note}");
            }
        }
        return sb.ToString();
    }

    public static void WriteJson(string path, object document)
    {
        var json = JsonSerializer.Serialize(document, new JsonSerializerOptions
        {
            WriteIndented = true,
            NumberHandling = System.Text.Json.Serialization.JsonNumberHandling.AllowNamedFloatingPointLiterals,
        });
        File.WriteAllText(path, json + "\n");
    }

    private static string Rate(Measurement? m) =>
        m is null ? "" : m.Rate.ToString("#,0", CultureInfo.InvariantCulture) + " " + m.Unit;

    private static string Ms(double? ms) => ms?.ToString("0.000", CultureInfo.InvariantCulture) ?? "";

    private static string Met(bool? met) => met switch { true => "yes", false => "NO", null => "-" };
}
