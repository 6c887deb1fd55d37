using DEngine.Protos.Common;
using DEngine.StateMachine.Replication;
using Google.Protobuf;

namespace DEngine.StateMachine.Tests.Support;

/// <summary>Entries and checks for the replicated-log tests.</summary>
public static class LogEntries
{
    /// <summary>Segments this small roll every ~28 one-entry appends of 100-byte payloads.</summary>
    public static ReplicatedLogOptions SmallSegments => new() { SegmentBytes = ReplicatedLogOptions.MIN_SEGMENT_BYTES };

    /// <summary>An entry whose command bytes name its index and term and are padded to <paramref name="bytes"/>.</summary>
    public static Entry E(ulong index, ulong term, int bytes = 100)
    {
        var text = $"i{index}-t{term}-";
        return new Entry
        {
            Index = index,
            Term = term,
            Payload = new EntryPayload { Command = ByteString.CopyFromUtf8(text.PadRight(Math.Max(bytes, text.Length), '.')) },
        };
    }

    /// <summary>Entries <paramref name="from"/> to <paramref name="to"/> (inclusive) in <paramref name="term"/>.</summary>
    public static List<Entry> Range(ulong from, ulong to, ulong term, int bytes = 100)
    {
        var list = new List<Entry>();
        for (var i = from; i <= to; i++)
        {
            list.Add(E(i, term, bytes));
        }
        return list;
    }

    /// <summary>The segment files of a log directory, in name (= log) order.</summary>
    public static string[] Segments(string directory) => [.. Directory.GetFiles(directory, "*.log").Order(StringComparer.Ordinal)];

    /// <summary>Asserts that the log holds exactly <paramref name="expected"/> after its base.</summary>
    public static void AssertHolds(ReplicatedLog log, IReadOnlyList<Entry> expected)
    {
        Assert.Equal(expected.Count == 0 ? log.Base : new LogPosition(expected[^1].Index, expected[^1].Term), log.Last);
        var read = log.Read(log.Base.Index + 1);
        Assert.Equal(expected.Count, read.Count);
        for (var i = 0; i < expected.Count; i++)
        {
            Assert.Equal(expected[i], read[i]);
            Assert.Equal(expected[i].Term, log.TermAt(expected[i].Index));
        }
    }
}
