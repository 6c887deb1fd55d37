using DEngine.StateMachine.Tests.Support;
using static DEngine.StateMachine.Tests.Support.Log;
using static DEngine.StateMachine.Tests.Support.TestEngine;

namespace DEngine.StateMachine.Tests;

/// <summary>
/// The TTL scans (FindExpired, EarliestExpiry) start at an in-memory floor so that they skip the
/// tombstones of earlier cleanup rounds. The floor is a hint only: these tests pin that no expired
/// index entry is ever missed because of it, whatever its expiry and however the cleanup went.
/// </summary>
public sealed class TtlScanFloorTests
{
    private const int KeysPerRound = 50;

    /// <summary>Loads <paramref name="count"/> keys expiring at <paramref name="expiresAt"/> (indexes from <paramref name="firstIndex"/>); returns the next index.</summary>
    private static ulong Load(RocksDbStateMachine machine, ulong firstIndex, string prefix, int count, ulong expiresAt)
    {
        var index = firstIndex;
        machine.ApplyChunk(Enumerable.Range(0, count).Select(i => Insert(index++, $"{prefix}{i:D5}", "v", ttlSecs: 1, expiresAtUnixMs: expiresAt)).ToArray());
        return index;
    }

    /// <summary>Runs cleanup rounds (plan + apply) until nothing is due; returns the next index and the keys removed.</summary>
    private static (ulong NextIndex, int Removed) CleanUp(RocksDbStateMachine machine, ulong index, ulong now)
    {
        var removed = 0;
        while (true)
        {
            var planned = machine.FindExpired(now, KeysPerRound);
            if (planned.Count == 0)
            {
                return (index, removed);
            }
            removed += Assert.Single(machine.ApplyChunk([ExpireKeys(index++, now, planned)])).KeysExpired;
        }
    }

    /// <summary>Loads and cleans up 20 rounds of keys, so the floor sits far above the start of the index.</summary>
    private static ulong CleanManyRounds(TestEngine engine, ulong index = 1)
    {
        var now = engine.NowUnixMs;
        index = Load(engine.Machine, index, "/round/", 20 * KeysPerRound, now - 10_000);
        (index, var removed) = CleanUp(engine.Machine, index, now);
        Assert.Equal(20 * KeysPerRound, removed);
        Assert.NotEmpty(engine.Machine.TtlScanFloor);
        return index;
    }

    [Fact]
    public void After_many_cleanup_rounds_an_entry_stamped_with_an_older_expiry_is_still_found_and_removed()
    {
        using var engine = new TestEngine();
        var machine = engine.Machine;
        var now = engine.NowUnixMs;
        var index = CleanManyRounds(engine);

        // Older than every entry the rounds removed: its index key sorts below the floor.
        machine.ApplyChunk([Insert(index++, "/old/a", "v", ttlSecs: 1, expiresAtUnixMs: now - 60_000)]);

        Assert.Equal(now - 60_000, machine.EarliestExpiry());
        var planned = machine.FindExpired(now, KeysPerRound);
        Assert.Equal([("/old/a", now - 60_000)], planned.Select(p => (Text(p.Key)!, p.ExpiresAtUnixMs)));
        Assert.Equal(1, Assert.Single(machine.ApplyChunk([ExpireKeys(index, now, planned)])).KeysExpired);
        Assert.Null(machine.Get(Utf8("/old/a")));
        Assert.Equal(0, machine.TtlIndexCount());
        Assert.Null(machine.EarliestExpiry());
    }

    [Fact]
    public void An_older_entry_written_in_the_same_chunk_as_newer_ones_is_found()
    {
        using var engine = new TestEngine();
        var machine = engine.Machine;
        var now = engine.NowUnixMs;
        var index = CleanManyRounds(engine);

        machine.ApplyChunk(
        [
            Insert(index++, "/new/b", "v", ttlSecs: 1, expiresAtUnixMs: now - 1),
            Insert(index++, "/old/a", "v", ttlSecs: 1, expiresAtUnixMs: now - 60_000),
        ]);

        Assert.Equal(["/old/a", "/new/b"], machine.FindExpired(now, KeysPerRound).Select(p => Text(p.Key)));
    }

    [Fact]
    public void Entries_whose_ExpireKeys_command_was_never_applied_are_planned_again()
    {
        using var engine = new TestEngine();
        var machine = engine.Machine;
        var now = engine.NowUnixMs;
        var index = CleanManyRounds(engine);
        index = Load(machine, index, "/lost/", 3 * KeysPerRound, now - 5_000);

        // Planned twice, applied never (the command was lost): the scans must not move past them.
        var lost = machine.FindExpired(now, KeysPerRound);
        Assert.Equal(lost.Select(p => Text(p.Key)), machine.FindExpired(now, KeysPerRound).Select(p => Text(p.Key)));
        Assert.Equal(now - 5_000, machine.EarliestExpiry());

        var (_, removed) = CleanUp(machine, index, now);
        Assert.Equal(3 * KeysPerRound, removed);
        Assert.All(lost, p => Assert.Null(machine.Get(p.Key)));
        Assert.Equal(0, machine.TtlIndexCount());
    }

    [Fact]
    public void An_entry_not_yet_expired_at_the_commands_as_of_stays_findable()
    {
        using var engine = new TestEngine();
        var machine = engine.Machine;
        var now = engine.NowUnixMs;
        var index = CleanManyRounds(engine);
        machine.ApplyChunk([Insert(index++, "/late/k", "v", ttlSecs: 1, expiresAtUnixMs: now - 100)]);

        // Judged as of a time before its expiry, the command keeps the key and its index entry.
        var planned = machine.FindExpired(now, KeysPerRound);
        Assert.Equal(0, Assert.Single(machine.ApplyChunk([ExpireKeys(index++, now - 200, planned)])).KeysExpired);

        Assert.Equal(["/late/k"], machine.FindExpired(now, KeysPerRound).Select(p => Text(p.Key)));
        Assert.Equal(now - 100, machine.EarliestExpiry());
    }

    [Fact]
    public void A_key_re_put_between_planning_and_applying_survives_and_its_new_entry_is_found_later()
    {
        using var engine = new TestEngine();
        var machine = engine.Machine;
        var now = engine.NowUnixMs;
        var index = CleanManyRounds(engine);
        index = Load(machine, index, "/k/", 3, now - 1_000);
        var planned = machine.FindExpired(now, KeysPerRound);
        Assert.Equal(3, planned.Count);

        // Both are re-put with later expiries; /k/00001 ends up earlier in the index than /k/00000.
        machine.ApplyChunk(
        [
            Insert(index++, "/k/00000", "renewed", ttlSecs: 60, expiresAtUnixMs: now + 60_000),
            Insert(index++, "/k/00001", "older", ttlSecs: 1, expiresAtUnixMs: now + 30_000),
        ]);
        var results = machine.ApplyChunk([ExpireKeys(index++, now, planned)]);

        Assert.Equal(1, Assert.Single(results).KeysExpired);
        Assert.Equal("renewed", engine.GetString("/k/00000"));
        Assert.Equal("older", engine.GetString("/k/00001"));
        Assert.Null(engine.GetString("/k/00002"));
        Assert.Equal(now + 30_000, machine.EarliestExpiry());

        engine.Clock.Advance(TimeSpan.FromSeconds(61));
        var later = engine.NowUnixMs;
        Assert.Equal(["/k/00001", "/k/00000"], machine.FindExpired(later, KeysPerRound).Select(p => Text(p.Key)));
        var (_, removed) = CleanUp(machine, index, later);
        Assert.Equal(2, removed);
        Assert.Equal(0, machine.TtlIndexCount());
    }

    [Fact]
    public void After_a_reopen_every_entry_is_found_including_those_below_the_old_floor()
    {
        using var engine = new TestEngine();
        var now = engine.NowUnixMs;
        var index = CleanManyRounds(engine);
        engine.Machine.ApplyChunk([Insert(index++, "/old/a", "v", ttlSecs: 1, expiresAtUnixMs: now - 60_000)]);
        index = Load(engine.Machine, index, "/lost/", 10, now - 5_000);
        Assert.Equal(11, engine.Machine.FindExpired(now, KeysPerRound).Count); // planned, never applied

        var machine = engine.Reopen();

        Assert.Empty(machine.TtlScanFloor);
        Assert.Equal(now - 60_000, machine.EarliestExpiry());
        var planned = machine.FindExpired(now, KeysPerRound);
        Assert.Equal(11, planned.Count);
        Assert.Equal("/old/a", Text(planned[0].Key));
        var (_, removed) = CleanUp(machine, index, now);
        Assert.Equal(11, removed);
        Assert.Equal(0, machine.TtlIndexCount());
    }

    [Fact]
    public void The_floor_never_passes_an_index_entry_under_random_puts_deletes_and_partial_cleanups()
    {
        using var engine = new TestEngine();
        var machine = engine.Machine;
        var now = engine.NowUnixMs;
        var random = new Random(1234);
        ulong index = 1;
        // The model: the index entries (key, expiry) that must exist, and each key's current expiry.
        var entries = new HashSet<(string Key, ulong Expiry)>();
        var current = new Dictionary<string, ulong>();

        for (var step = 0; step < 400; step++)
        {
            switch (random.Next(4))
            {
                case 0 or 1:
                    var key = $"k{random.Next(60):D2}";
                    var expiry = (ulong)random.Next(1, 100_000) + now - 100_000;
                    machine.ApplyChunk([Insert(index++, key, "v", ttlSecs: 1, expiresAtUnixMs: expiry)]);
                    entries.Add((key, expiry));
                    current[key] = expiry;
                    break;
                case 2:
                    var deleted = $"k{random.Next(60):D2}";
                    machine.ApplyChunk([Delete(index++, deleted)]);
                    current.Remove(deleted);
                    break;
                default:
                    var planned = machine.FindExpired(now, random.Next(1, 8));
                    if (random.Next(3) == 0)
                    {
                        break; // the command is lost
                    }
                    machine.ApplyChunk([ExpireKeys(index++, now, planned)]);
                    foreach (var p in planned)
                    {
                        // Every entry here is expired at now; live or stale, the command drops it.
                        entries.Remove((Text(p.Key)!, p.ExpiresAtUnixMs));
                        if (current.TryGetValue(Text(p.Key)!, out var e) && e == p.ExpiresAtUnixMs)
                        {
                            current.Remove(Text(p.Key)!);
                        }
                    }
                    break;
            }

            var expected = entries.OrderBy(e => e.Expiry).ThenBy(e => e.Key, StringComparer.Ordinal).ToList();
            Assert.Equal(expected, machine.FindExpired(now, int.MaxValue).Select(p => (Text(p.Key)!, p.ExpiresAtUnixMs)));
            Assert.Equal(expected.Count == 0 ? null : expected[0].Expiry, machine.EarliestExpiry());
        }
    }

    [Fact]
    public void An_entry_written_while_a_scan_runs_below_what_that_scan_finds_is_not_skipped()
    {
        using var engine = new TestEngine();
        var machine = engine.Machine;
        var now = engine.NowUnixMs;
        var index = Load(machine, 1, "/a/", 10, now - 5_000);
        var first = machine.FindExpired(now, 5);
        machine.ApplyChunk([ExpireKeys(index++, now, first)]);

        // The next scan's view starts at /a/00005; /a/00002b (between the removed keys and it) is
        // written after the view was fixed but before the scan ends.
        machine.TtlScanStarted = () =>
        {
            machine.TtlScanStarted = null;
            // Another thread, not a Task: Task.Wait may run a not-yet-started task inline on this
            // thread, which holds the engine's read lock (a recursion RocksDbStateMachine refuses).
            Exception? failed = null;
            var writer = new Thread(() =>
            {
                try
                {
                    machine.ApplyChunk([Insert(index, "/a/00002b", "v", ttlSecs: 1, expiresAtUnixMs: now - 5_000)]);
                }
                catch (Exception ex)
                {
                    failed = ex;
                }
            });
            writer.Start();
            writer.Join();
            Assert.Null(failed);
        };
        Assert.Equal("/a/00005", Text(machine.FindExpired(now, 5)[0].Key));

        Assert.Equal("/a/00002b", Text(machine.FindExpired(now, 5)[0].Key));
    }

    [Fact]
    public async Task Scans_running_while_older_entries_are_applied_never_skip_them()
    {
        using var engine = new TestEngine();
        var machine = engine.Machine;
        var now = engine.NowUnixMs;
        var index = CleanManyRounds(engine);
        const int writes = 300;

        using var stop = new CancellationTokenSource();
        var scanner = Task.Run(() =>
        {
            while (!stop.IsCancellationRequested)
            {
                machine.FindExpired(now, 3);
                machine.EarliestExpiry();
            }
        });
        // Each write is older than the one before, so each lands below whatever a scan just proved.
        for (var i = 0; i < writes; i++)
        {
            machine.ApplyChunk([Insert(index++, $"/w/{i:D4}", "v", ttlSecs: 1, expiresAtUnixMs: now - 20_000 - (ulong)i)], ApplyDurability.Deferred);
        }
        stop.Cancel();
        await scanner;

        Assert.Equal(now - 20_000 - (writes - 1), machine.EarliestExpiry());
        Assert.Equal(writes, machine.FindExpired(now, int.MaxValue).Count);
    }
}
