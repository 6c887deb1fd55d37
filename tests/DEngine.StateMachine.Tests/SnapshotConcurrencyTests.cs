using DEngine.Protos.Common;
using DEngine.StateMachine.Tests.Support;
using static DEngine.StateMachine.Tests.Support.Log;
using static DEngine.StateMachine.Tests.Support.TestEngine;

namespace DEngine.StateMachine.Tests;

/// <summary>Snapshots taken while another thread applies chunks contain exactly the state their label names.</summary>
public sealed class SnapshotConcurrencyTests
{
    [Fact]
    public async Task A_snapshot_taken_during_applies_holds_exactly_the_state_at_its_label()
    {
        using var engine = new TestEngine(o => o.SnapshotsToKeep = 20);
        using var stop = new CancellationTokenSource();
        var writer = Task.Run(() =>
        {
            ulong next = 1;
            while (!stop.IsCancellationRequested && next < 200_000)
            {
                var chunk = Chunk(next);
                engine.Machine.ApplyChunk(chunk, ApplyDurability.Deferred);
                next += (ulong)chunk.Length;
            }
        });

        var snapshots = new List<Snapshots.SnapshotInfo>();
        ulong seen = 0;
        while (snapshots.Count < 6)
        {
            // Wait for progress so every snapshot lands at a different, mid-stream position.
            if (engine.Machine.LastApplied.Index < seen + 50)
            {
                Thread.Yield();
                Assert.False(writer.IsCompleted, "the writer stopped early");
                continue;
            }
            var snapshot = engine.Machine.CreateSnapshot();
            seen = snapshot.LastIncluded.Index;
            snapshots.Add(snapshot);
        }
        await stop.CancelAsync();
        await writer;
        Assert.True(engine.Machine.LastApplied.Index > snapshots[^1].LastIncluded.Index, "applies continued after the last snapshot");

        foreach (var snapshot in snapshots)
        {
            using var fresh = new TestEngine();
            fresh.Machine.InstallSnapshot(snapshot.Directory, snapshot.Metadata);
            Assert.Equal(snapshot.LastIncluded, fresh.Machine.LastApplied);
            Assert.Equal(TermOf(snapshot.LastIncluded.Index), snapshot.LastIncluded.Term);
            Assert.Equal(
                Model(snapshot.LastIncluded.Index),
                fresh.Machine.ScanPrefix(Utf8("c")).Entries.Select(e => $"{Text(e.Key)}={Text(e.Value)}"));
        }
    }

    private static ulong TermOf(ulong index) => 1 + (index / 400);

    /// <summary>1 to 5 entries; every 7th index deletes, the others overwrite one of 23 keys.</summary>
    private static Entry[] Chunk(ulong first)
    {
        var size = 1 + (int)(first % 5);
        return Enumerable.Range(0, size).Select(i =>
        {
            var index = first + (ulong)i;
            return index % 7 == 0 ? Delete(index, Key(index), TermOf(index)) : Insert(index, Key(index), $"v{index}", term: TermOf(index));
        }).ToArray();
    }

    private static string Key(ulong index) => $"c{index % 23:D2}";

    private static IEnumerable<string> Model(ulong upTo)
    {
        var state = new SortedDictionary<string, string>(StringComparer.Ordinal);
        for (ulong index = 1; index <= upTo; index++)
        {
            if (index % 7 == 0)
            {
                state.Remove(Key(index));
            }
            else
            {
                state[Key(index)] = $"v{index}";
            }
        }
        return state.Select(kv => $"{kv.Key}={kv.Value}");
    }
}
