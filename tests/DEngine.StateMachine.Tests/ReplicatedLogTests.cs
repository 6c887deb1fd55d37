using System.Diagnostics;
using DEngine.Protos.Common;
using DEngine.StateMachine.Replication;
using DEngine.StateMachine.Tests.Support;
using Xunit.Abstractions;
using static DEngine.StateMachine.Tests.Support.LogEntries;

namespace DEngine.StateMachine.Tests;

/// <summary>The replicated log on the normal disk: its API contract, reopen, torn tails and corruption.</summary>
public sealed class ReplicatedLogTests(ITestOutputHelper output)
{
    [Fact]
    public void A_new_log_is_empty_at_index_zero()
    {
        using var dir = new TempDirectory();
        using var log = ReplicatedLog.Open(dir.Sub("log"), 3);
        Assert.Equal(3, log.PartitionId);
        Assert.Equal(LogPosition.None, log.Base);
        Assert.Equal(LogPosition.None, log.Last);
        Assert.Equal(0UL, log.CommitIndex);
        Assert.True(log.Contains(LogPosition.None));
        Assert.False(log.Contains(new LogPosition(1, 1)));
        Assert.Equal(0UL, log.TermAt(0));
        Assert.Empty(log.Read(1));
        var error = Assert.Throws<DEngineException>(() => log.TermAt(1));
        Assert.Equal(DEngineErrorCode.InvalidArgument, error.Code);
        Assert.Equal(3, error.Partition);
    }

    [Fact]
    public void Appends_read_back_with_their_terms_across_segment_rolls_and_a_reopen_gives_the_same_log()
    {
        using var dir = new TempDirectory();
        var path = dir.Sub("log");
        var all = new List<Entry>();
        ulong expectedCommit = 0;
        using (var log = ReplicatedLog.Open(path, 1, SmallSegments))
        {
            ulong next = 1;
            var random = new Random(7);
            while (next <= 300)
            {
                var count = (ulong)random.Next(1, 8);
                var term = 1 + next / 70; // terms step up now and then
                var batch = Range(next, Math.Min(next + count - 1, 300), term);
                log.Append(batch, commitIndex: next - 1);
                expectedCommit = next - 1;
                all.AddRange(batch);
                next += (ulong)batch.Count;
            }
            Assert.True(Segments(path).Length > 3, $"expected segment rolls, got {Segments(path).Length} files");
            AssertHolds(log, all);
            Assert.Equal(expectedCommit, log.CommitIndex);
            Assert.True(log.Contains(new LogPosition(150, all[149].Term)));
            Assert.False(log.Contains(new LogPosition(150, all[149].Term + 1)));
            Assert.False(log.Contains(new LogPosition(301, all[^1].Term)));
        }
        using (var reopened = ReplicatedLog.Open(path, 1, SmallSegments))
        {
            Assert.Equal(LogPosition.None, reopened.Base);
            AssertHolds(reopened, all);
            Assert.Equal(expectedCommit, reopened.CommitIndex);
        }
    }

    [Fact]
    public void Read_returns_at_most_maxEntries_and_about_maxBytes_but_always_one_entry()
    {
        using var dir = new TempDirectory();
        using var log = ReplicatedLog.Open(dir.Sub("log"), 1);
        log.Append(Range(1, 10, 1, bytes: 100), 0);
        Assert.Equal(new ulong[] { 3, 4, 5 }, log.Read(3, maxEntries: 3).Select(e => e.Index));
        // Each payload encodes to 102 bytes: 250 bytes hold two, and one entry comes even if it alone is larger.
        Assert.Equal(2, log.Read(1, maxBytes: 250).Count);
        Assert.Single(log.Read(1, maxBytes: 1));
        Assert.Empty(log.Read(11));
        Assert.Equal(DEngineErrorCode.InvalidArgument, Assert.Throws<DEngineException>(() => log.Read(12)).Code);
        Assert.Equal(DEngineErrorCode.InvalidArgument, Assert.Throws<DEngineException>(() => log.Read(1, maxEntries: 0)).Code);
    }

    [Fact]
    public void Invalid_appends_are_refused_with_a_typed_error_and_change_nothing_on_disk()
    {
        using var dir = new TempDirectory();
        var path = dir.Sub("log");
        var kept = Range(1, 5, 2);
        using (var log = ReplicatedLog.Open(path, 4))
        {
            log.Append(kept, 3);
            var sizes = Segments(path).Select(f => new FileInfo(f).Length).ToArray();
            void Refused(DEngineErrorCode code, IReadOnlyList<Entry> entries)
            {
                var error = Assert.Throws<DEngineException>(() => log.Append(entries, 5));
                Assert.Equal(code, error.Code);
                Assert.Equal(4, error.Partition);
                output.WriteLine(error.Message);
            }
            Refused(DEngineErrorCode.ChunkGap, [E(7, 2)]);                        // a gap after the last entry
            Refused(DEngineErrorCode.ChunkOutOfOrder, [E(5, 2)]);                 // the index goes back
            Refused(DEngineErrorCode.ChunkGap, [E(6, 2), E(8, 2)]);               // a gap inside the append
            Refused(DEngineErrorCode.ChunkOutOfOrder, [E(6, 2), E(6, 2)]);        // a repeated index inside it
            Refused(DEngineErrorCode.InvalidArgument, [E(6, 1)]);                 // the term goes back from Last.Term
            Refused(DEngineErrorCode.InvalidArgument, [E(6, 3), E(7, 2)]);        // the term goes back inside it
            Refused(DEngineErrorCode.MalformedEntry, [E(6, 2), new Entry { Index = 7, Term = 2 }]); // no payload
            Assert.Equal(sizes, Segments(path).Select(f => new FileInfo(f).Length).ToArray());
            AssertHolds(log, kept);
            Assert.Equal(3UL, log.CommitIndex);
        }
        using var reopened = ReplicatedLog.Open(path, 4);
        AssertHolds(reopened, kept);
        Assert.Equal(3UL, reopened.CommitIndex);
    }

    [Fact]
    public void The_commit_index_is_clamped_to_the_last_entry_never_goes_down_and_is_durable_only_with_an_append_or_sync()
    {
        using var dir = new TempDirectory();
        var path = dir.Sub("log");
        using (var log = ReplicatedLog.Open(path, 1))
        {
            log.Append(Range(1, 5, 1), commitIndex: 10);
            Assert.Equal(5UL, log.CommitIndex);
            log.Append([], commitIndex: 3);
            Assert.Equal(5UL, log.CommitIndex);
            log.Append(Range(6, 10, 1), commitIndex: 0);
            Assert.Equal(5UL, log.CommitIndex);
            log.RecordCommit(7); // not synced: not written at all
            Assert.Equal(7UL, log.CommitIndex);
        }
        using (var log = ReplicatedLog.Open(path, 1))
        {
            Assert.Equal(5UL, log.CommitIndex);
            log.RecordCommit(7);
            log.Append(Range(11, 11, 1), commitIndex: 0); // carries the recorded 7
        }
        using (var log = ReplicatedLog.Open(path, 1))
        {
            Assert.Equal(7UL, log.CommitIndex);
            log.RecordCommit(8, sync: true);
            log.Append([], commitIndex: 50); // clamped to Last.Index 11, durable
            Assert.Equal(11UL, log.CommitIndex);
            log.RecordCommit(60);
            Assert.Equal(11UL, log.CommitIndex);
        }
        using (var log = ReplicatedLog.Open(path, 1))
        {
            Assert.Equal(11UL, log.CommitIndex);
        }
    }

    [Fact]
    public void TruncateAfter_drops_the_suffix_inside_an_append_at_an_append_boundary_and_across_segments_and_a_reopen_agrees()
    {
        using var dir = new TempDirectory();
        var path = dir.Sub("log");
        var expected = new List<Entry>();
        using (var log = ReplicatedLog.Open(path, 1, SmallSegments))
        {
            for (ulong i = 1; i <= 100; i += 10)
            {
                log.Append(Range(i, i + 9, 1), 0);
            }
            var before = Segments(path).Length;
            Assert.True(before > 3);

            log.TruncateAfter(95); // inside the last append
            expected.AddRange(Range(1, 95, 1));
            AssertHolds(log, expected);

            log.TruncateAfter(80); // at an append boundary (81 starts an append)
            expected.RemoveRange(80, expected.Count - 80);
            AssertHolds(log, expected);

            log.TruncateAfter(23); // inside an append in an early segment: every later segment goes
            expected.RemoveRange(23, expected.Count - 23);
            AssertHolds(log, expected);
            Assert.True(Segments(path).Length < before, "later segments are deleted");

            log.Append(Range(24, 40, 2), commitIndex: 30); // a new primary's entries replace the old ones
            expected.AddRange(Range(24, 40, 2));
            AssertHolds(log, expected);
            log.TruncateAfter(40); // nothing after 40: nothing changes
            AssertHolds(log, expected);
        }
        using var reopened = ReplicatedLog.Open(path, 1, SmallSegments);
        AssertHolds(reopened, expected);
        Assert.Equal(30UL, reopened.CommitIndex);
    }

    [Fact]
    public void TruncateAfter_below_the_commit_index_or_the_base_is_refused_and_changes_nothing()
    {
        using var dir = new TempDirectory();
        var path = dir.Sub("log");
        using (var log = ReplicatedLog.Open(path, 2))
        {
            log.Reset(new LogPosition(10, 1));
            log.Append(Range(11, 20, 1), commitIndex: 15);
            var error = Assert.Throws<DEngineException>(() => log.TruncateAfter(14));
            Assert.Equal(DEngineErrorCode.InvalidArgument, error.Code);
            Assert.Equal(2, error.Partition);
            Assert.Equal(DEngineErrorCode.InvalidArgument, Assert.Throws<DEngineException>(() => log.TruncateAfter(9)).Code);
            Assert.Equal(new LogPosition(20, 1), log.Last);
            log.TruncateAfter(15); // at the commit index is allowed
            Assert.Equal(new LogPosition(15, 1), log.Last);
        }
        using var reopened = ReplicatedLog.Open(path, 2);
        Assert.Equal(new LogPosition(15, 1), reopened.Last);
        Assert.Equal(15UL, reopened.CommitIndex);
    }

    [Fact]
    public void CompactThrough_deletes_whole_segments_up_to_the_commit_index_and_reading_below_the_base_says_compacted()
    {
        using var dir = new TempDirectory();
        var path = dir.Sub("log");
        LogPosition compactedBase;
        using (var log = ReplicatedLog.Open(path, 5, SmallSegments))
        {
            log.Append(Range(1, 200, 1).Take(100).ToList(), 0);
            for (ulong i = 101; i <= 200; i++)
            {
                log.Append([E(i, 1)], commitIndex: 120);
            }
            var files = Segments(path).Length;
            log.CompactThrough(170); // only up to the commit index 120
            compactedBase = log.Base;
            Assert.True(compactedBase.Index > 0 && compactedBase.Index <= 120, $"base {compactedBase}");
            Assert.True(Segments(path).Length < files);
            Assert.Equal(1UL, log.TermAt(compactedBase.Index));
            Assert.Equal(new LogPosition(200, 1), log.Last);
            Assert.Equal(compactedBase.Index + 1, log.Read(compactedBase.Index + 1, maxEntries: 1)[0].Index);

            var error = Assert.Throws<DEngineException>(() => log.Read(compactedBase.Index));
            Assert.Equal(DEngineErrorCode.InvalidArgument, error.Code);
            Assert.Contains("compacted", error.Message, StringComparison.Ordinal);
            Assert.False(log.TryRead(1, out var none));
            Assert.Empty(none);
            Assert.Equal(DEngineErrorCode.InvalidArgument, Assert.Throws<DEngineException>(() => log.TermAt(compactedBase.Index - 1)).Code);
            Assert.False(log.Contains(new LogPosition(1, 1)));

            log.RecordCommit(200);
            log.CompactThrough(1000); // the last segment always stays
            Assert.Single(Segments(path));
            compactedBase = log.Base;
        }
        using var reopened = ReplicatedLog.Open(path, 5, SmallSegments);
        Assert.Equal(compactedBase, reopened.Base);
        Assert.Equal(new LogPosition(200, 1), reopened.Last);
        Assert.Equal(Range(compactedBase.Index + 1, 200, 1), reopened.Read(compactedBase.Index + 1));
    }

    [Fact]
    public void Reset_restarts_the_log_empty_at_the_new_base_and_a_reopen_agrees()
    {
        using var dir = new TempDirectory();
        var path = dir.Sub("log");
        using (var log = ReplicatedLog.Open(path, 1, SmallSegments))
        {
            log.Append(Range(1, 100, 1), 50);
            log.Reset(new LogPosition(500, 7));
            Assert.Equal(new LogPosition(500, 7), log.Base);
            Assert.Equal(new LogPosition(500, 7), log.Last);
            Assert.Equal(500UL, log.CommitIndex);
            Assert.Single(Segments(path));
            Assert.Equal(DEngineErrorCode.ChunkOutOfOrder, Assert.Throws<DEngineException>(() => log.Append([E(2, 7)], 0)).Code);
            log.Append([E(501, 7)], 0);
            log.Reset(new LogPosition(20, 3)); // a forced install of an older snapshot may go back
            log.Append([E(21, 3)], 21);
        }
        using var reopened = ReplicatedLog.Open(path, 1, SmallSegments);
        Assert.Equal(new LogPosition(20, 3), reopened.Base);
        AssertHolds(reopened, [E(21, 3)]);
        Assert.Equal(21UL, reopened.CommitIndex);
    }

    [Fact]
    public void A_torn_tail_is_cut_at_open_and_the_log_continues_after_it()
    {
        using var dir = new TempDirectory();
        var path = dir.Sub("log");
        using (var log = ReplicatedLog.Open(path, 1))
        {
            log.Append(Range(1, 3, 1), 1);
            log.Append(Range(4, 6, 1), 2);
        }
        var segment = Segments(path)[^1];
        var intact = File.ReadAllBytes(segment);

        // A partial record header; a header whose length runs past the end; the last record's bytes damaged.
        byte[][] tails = [[1, 2, 3, 4, 5], [200, 0, 0, 0, 1, 2, 3, 4, 1, 9, 9], [.. intact[..^1], (byte)(intact[^1] ^ 0xFF)]];
        foreach (var tail in tails)
        {
            File.WriteAllBytes(segment, tail.Length == intact.Length ? tail : [.. intact, .. tail]);
            using var log = ReplicatedLog.Open(path, 1);
            var damagedLast = tail.Length == intact.Length;
            AssertHolds(log, Range(1, damagedLast ? 3UL : 6UL, 1));
            Assert.Equal(damagedLast ? 1UL : 2UL, log.CommitIndex);
        }

        using (var log = ReplicatedLog.Open(path, 1))
        {
            log.Append(Range(4, 8, 2), 8);
        }
        using var reopened = ReplicatedLog.Open(path, 1);
        AssertHolds(reopened, [.. Range(1, 3, 1), .. Range(4, 8, 2)]);
    }

    [Fact]
    public void A_corrupt_record_before_the_last_is_refused_with_StorageFailure_and_nothing_is_changed()
    {
        using var dir = new TempDirectory();
        var path = dir.Sub("log");
        using (var log = ReplicatedLog.Open(path, 6, SmallSegments))
        {
            for (ulong i = 1; i <= 90; i += 3)
            {
                log.Append(Range(i, i + 2, 1), 0);
            }
        }
        var segments = Segments(path);
        Assert.True(segments.Length >= 3);
        // A byte inside the first record (header 44 bytes, record header 9) of the last and of an earlier segment.
        foreach (var segment in new[] { segments[^1], segments[0] })
        {
            var original = File.ReadAllBytes(segment);
            var damaged = original.ToArray();
            damaged[44 + 9 + 30] ^= 0x40;
            File.WriteAllBytes(segment, damaged);
            var error = Assert.Throws<DEngineException>(() => ReplicatedLog.Open(path, 6, SmallSegments));
            output.WriteLine(error.Message);
            Assert.Equal(DEngineErrorCode.StorageFailure, error.Code);
            Assert.Equal(6, error.Partition);
            Assert.Contains("corrupt", error.Message, StringComparison.Ordinal);
            Assert.Equal(damaged, File.ReadAllBytes(segment));
            File.WriteAllBytes(segment, original);
        }
        using var reopened = ReplicatedLog.Open(path, 6, SmallSegments);
        Assert.Equal(new LogPosition(90, 1), reopened.Last);
    }

    [Fact]
    public void A_segment_created_without_its_header_reaching_the_disk_is_dropped_at_open()
    {
        using var dir = new TempDirectory();
        var path = dir.Sub("log");
        using (var log = ReplicatedLog.Open(path, 1))
        {
            log.Append(Range(1, 4, 1), 4);
        }
        // What a power cut leaves of a roll or a Reset cut before its header was synced: an empty file.
        File.WriteAllBytes(Path.Combine(path, $"{1:D20}-{5:D20}.log"), []);
        File.WriteAllBytes(Path.Combine(path, $"{2:D20}-{1:D20}.log"), new byte[20]);
        using var reopened = ReplicatedLog.Open(path, 1);
        AssertHolds(reopened, Range(1, 4, 1));
        Assert.Equal(4UL, reopened.CommitIndex);
        Assert.Single(Segments(path));
    }

    [Fact]
    public void Bad_options_are_refused_naming_the_option()
    {
        using var dir = new TempDirectory();
        var error = Assert.Throws<ArgumentException>(() => ReplicatedLog.Open(dir.Sub("log"), 1, new ReplicatedLogOptions { SegmentBytes = 100 }));
        Assert.Contains(nameof(ReplicatedLogOptions.SegmentBytes), error.Message, StringComparison.Ordinal);
    }

    /// <summary>Not a timed assertion: prints appends/s and MB/s of synced appends on this disk for the report.</summary>
    [Fact]
    [Trait("Category", "Measurement")]
    public void Measure_synced_appends_of_1_and_256_entries_of_100_bytes()
    {
        using var dir = new TempDirectory();
        foreach (var perAppend in new[] { 1, 256 })
        {
            using var log = ReplicatedLog.Open(dir.Sub($"log-{perAppend}"), 1);
            var clock = Stopwatch.StartNew();
            var appends = 0;
            long bytes = 0;
            ulong next = 1;
            while (clock.Elapsed < TimeSpan.FromSeconds(2))
            {
                var batch = Range(next, next + (ulong)perAppend - 1, 1);
                log.Append(batch, next - 1);
                next += (ulong)perAppend;
                bytes += batch.Sum(e => e.Payload.CalculateSize());
                appends++;
            }
            var seconds = clock.Elapsed.TotalSeconds;
            output.WriteLine($"{perAppend}-entry appends: {appends / seconds:F0} appends/s, {appends * perAppend / seconds:F0} entries/s, {bytes / seconds / 1e6:F2} MB/s of payload");
        }
    }
}
