using System.Diagnostics;

namespace DEngine.Benchmarks.Harness;

/// <summary>Latencies in Stopwatch ticks; one recorder per worker (not thread-safe), merged at the end.</summary>
public sealed class LatencyRecorder
{
    private long[] _ticks = new long[1024];
    private int _count;
    private bool _sorted;

    public int Count => _count;

    public void Record(long ticks)
    {
        if (_count == _ticks.Length)
        {
            Array.Resize(ref _ticks, _ticks.Length * 2);
        }
        _ticks[_count++] = ticks;
        _sorted = false;
    }

    public static LatencyRecorder Merge(IEnumerable<LatencyRecorder> parts)
    {
        var all = new LatencyRecorder();
        foreach (var p in parts)
        {
            for (var i = 0; i < p._count; i++)
            {
                all.Record(p._ticks[i]);
            }
        }
        return all;
    }

    public double? PercentileMs(double p)
    {
        if (_count == 0)
        {
            return null;
        }
        if (!_sorted)
        {
            Array.Sort(_ticks, 0, _count);
            _sorted = true;
        }
        var rank = (int)Math.Ceiling(p / 100.0 * _count) - 1;
        return _ticks[Math.Clamp(rank, 0, _count - 1)] * 1000.0 / Stopwatch.Frequency;
    }
}
