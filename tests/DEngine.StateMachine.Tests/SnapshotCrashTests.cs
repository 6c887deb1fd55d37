using DEngine.StateMachine.Tests.Support;
using Xunit.Abstractions;
using static DEngine.StateMachine.Tests.Support.Log;
using static DEngine.StateMachine.Tests.Support.TestEngine;

namespace DEngine.StateMachine.Tests;

/// <summary>
/// Install under a real SIGKILL: the child installs two snapshots alternately and reports each step; the
/// test kills it just after a randomly chosen step (the kill lands while the child goes on) and checks
/// that the reopened partition holds the complete old or the complete new state, nothing in between.
/// </summary>
public sealed class SnapshotCrashTests(ITestOutputHelper output)
{
    private const int KeysA = 3000;
    private const int KeysB = 4000;

    [Fact]
    public async Task SIGKILL_at_any_moment_of_an_install_leaves_the_complete_old_or_the_complete_new_state()
    {
        using var directory = new TempDirectory();
        var snapshotA = MakeSnapshot(directory.Sub("source-a"), KeysA, "a", term: 1);
        var snapshotB = MakeSnapshot(directory.Sub("source-b"), KeysB, "b", term: 2);
        var partition = directory.Sub("partition");
        using (var machine = new RocksDbStateMachine(partition, SmallOptions(TimeProvider.System)))
        {
            machine.InstallSnapshot(snapshotA.Directory, snapshotA.Metadata);
        }

        var seed = Environment.TickCount;
        var random = new Random(seed);
        output.WriteLine($"kill schedule seed {seed}");
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(90);
        var targets = RocksDbStateMachine.InstallSteps.Select(s => $"step {s}").Append("installed").ToArray();
        var outcomes = new Dictionary<string, int>();

        for (var cycle = 0; cycle < 10; cycle++)
        {
            // Each step once in order, then random ones; after 1 or 2 occurrences, so both directions are hit.
            var target = cycle < targets.Length ? targets[cycle] : targets[random.Next(targets.Length)];
            var occurrences = random.Next(1, 3);
            await using (var child = ChildProcess.Start("install", partition, snapshotA.Directory, snapshotB.Directory))
            {
                Assert.StartsWith("start ", await child.ReadLineAsync(deadline));
                var seen = 0;
                while (seen < occurrences)
                {
                    if ((await child.ReadLineAsync(deadline)).StartsWith(target, StringComparison.Ordinal))
                    {
                        seen++;
                    }
                }
                await child.KillAsync(deadline);
            }

            using var reopened = new RocksDbStateMachine(partition, SmallOptions(TimeProvider.System));
            var applied = reopened.LastApplied;
            output.WriteLine($"cycle {cycle}: killed after '{target}' x{occurrences}, reopened at {applied}");
            var (keys, prefix) = applied == new LogPosition(KeysA, 1) ? (KeysA, "a")
                : applied == new LogPosition(KeysB, 2) ? (KeysB, "b")
                : throw new Xunit.Sdk.XunitException($"cycle {cycle}: reopened at {applied}, which is neither snapshot");
            outcomes[prefix] = outcomes.GetValueOrDefault(prefix) + 1;
            var entries = reopened.ScanPrefix(Utf8("k")).Entries;
            Assert.Equal(keys, entries.Count);
            for (var i = 0; i < keys; i++)
            {
                Assert.Equal(Key(i), Text(entries[i].Key));
                Assert.Equal(Value(prefix, i), Text(entries[i].Value));
            }
            Assert.Single(SnapshotFiles.GenerationEntries(partition));
        }
        output.WriteLine(string.Join(", ", outcomes.Select(kv => $"{kv.Key}: {kv.Value}")));
    }

    private static Snapshots.SnapshotInfo MakeSnapshot(string path, int keys, string prefix, ulong term)
    {
        using var machine = new RocksDbStateMachine(path, SmallOptions(TimeProvider.System));
        for (var first = 0; first < keys; first += 500)
        {
            machine.ApplyChunk(Enumerable.Range(first, Math.Min(500, keys - first)).Select(i => Insert((ulong)i + 1, Key(i), Value(prefix, i), term: term)).ToArray());
        }
        return machine.CreateSnapshot();
    }

    private static string Key(int i) => $"k{i:D5}";

    private static string Value(string prefix, int i) => $"{prefix}-{i}-{new string('v', 80)}";
}
