using System.Runtime.InteropServices;

namespace DEngine.Benchmarks.Harness;

/// <summary>What the numbers were measured on.</summary>
public static class Machine
{
    public static Dictionary<string, string> Describe()
    {
        var cpu = "unknown";
        var memory = "unknown";
        try
        {
            cpu = File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name", StringComparison.Ordinal))?.Split(':', 2)[1].Trim() ?? cpu;
            var kb = File.ReadLines("/proc/meminfo").First(l => l.StartsWith("MemTotal", StringComparison.Ordinal)).Split(' ', StringSplitOptions.RemoveEmptyEntries)[1];
            memory = $"{long.Parse(kb, System.Globalization.CultureInfo.InvariantCulture) / 1024 / 1024} GiB";
        }
        catch (IOException)
        {
            // Not Linux: leave unknown.
        }
        return new()
        {
            ["cpu"] = cpu,
            ["cores"] = Environment.ProcessorCount.ToString(System.Globalization.CultureInfo.InvariantCulture),
            ["memory"] = memory,
            ["os"] = RuntimeInformation.OSDescription,
            ["runtime"] = RuntimeInformation.FrameworkDescription,
        };
    }
}
