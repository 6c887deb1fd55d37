using DEngine.Protos.Common;
using DEngine.StateMachine.Replication;
using DEngine.StateMachine.Tests.Support;
using Xunit.Abstractions;
using static DEngine.StateMachine.Tests.Support.LogEntries;

namespace DEngine.StateMachine.Tests;

/// <summary>
/// The replicated log's durability claims on the power-cut file system: the log is closed (which
/// syncs nothing) and the power cut, so whatever it did not fsync is gone. Each fsync of the log
/// (the "// mutation: replog-*" markers) makes one of these fail when removed (tests/durability-mutations.sh).
/// </summary>
[Trait("Category", "PowerCut")]
public sealed class PowerCutReplicatedLogTests(ITestOutputHelper output)
{
    [Fact]
    public void PowerCut_keeps_every_append_that_returned_and_the_commit_index_recorded_with_it_across_segment_rolls()
    {
        using var fs = new PowerCutFs();
        var path = Path.Combine(fs.MountPoint, "log");
        var seed = Environment.TickCount;
        var random = new Random(seed);
        output.WriteLine($"seed {seed}");
        var model = new List<Entry>();
        ulong commit = 0;
        ulong term = 1;
        for (var cycle = 0; cycle < 5; cycle++)
        {
            using (var log = ReplicatedLog.Open(path, 1, SmallSegments))
            {
                AssertHolds(log, model);
                Assert.Equal(commit, log.CommitIndex);
                for (var n = random.Next(5, 30); n > 0; n--)
                {
                    var first = log.Last.Index + 1;
                    term += random.Next(4) == 0 ? 1UL : 0UL;
                    var batch = Range(first, first + (ulong)random.Next(0, 12), term);
                    var commitArgument = (ulong)random.Next(0, (int)first + batch.Count);
                    log.Append(batch, commitArgument);
                    model.AddRange(batch);
                    commit = Math.Max(commit, Math.Min(commitArgument, batch[^1].Index));
                }
                log.RecordCommit(log.Last.Index); // not synced: the cut may take it
            }
            output.WriteLine($"cycle {cycle}: {model.Count} entries in {Segments(path).Length} segments; {fs.Cut()}");
        }
        using var reopened = ReplicatedLog.Open(path, 1, SmallSegments);
        AssertHolds(reopened, model);
        Assert.Equal(commit, reopened.CommitIndex);
    }

    [Fact]
    public void PowerCut_keeps_a_commit_index_recorded_with_sync()
    {
        using var fs = new PowerCutFs();
        var path = Path.Combine(fs.MountPoint, "log");
        using (var log = ReplicatedLog.Open(path, 1))
        {
            log.Append(Range(1, 10, 1), 0);
            log.RecordCommit(8, sync: true);
        }
        fs.Cut();
        using (var log = ReplicatedLog.Open(path, 1))
        {
            Assert.Equal(8UL, log.CommitIndex);
            log.Append([], 10);
        }
        fs.Cut();
        using var reopened = ReplicatedLog.Open(path, 1);
        Assert.Equal(10UL, reopened.CommitIndex);
    }

    [Fact]
    public void PowerCut_keeps_a_TruncateAfter_that_returned_truncated_at_an_append_boundary_inside_an_append_and_across_segments()
    {
        using var fs = new PowerCutFs();
        var path = Path.Combine(fs.MountPoint, "log");
        using (var log = ReplicatedLog.Open(path, 1, SmallSegments))
        {
            for (ulong i = 1; i <= 100; i += 10)
            {
                log.Append(Range(i, i + 9, 1), 0); // three appends per segment: four segments
            }
        }
        fs.Cut();

        // 81 starts an append: the segment is cut there and the last segment deleted.
        // 75 is inside the last append left: a truncate record voids its tail.
        // 23 is inside an append of the first segment: every later segment goes.
        foreach (var index in new ulong[] { 80, 75, 23 })
        {
            using (var log = ReplicatedLog.Open(path, 1, SmallSegments))
            {
                log.TruncateAfter(index);
            }
            output.WriteLine($"truncated after {index}; {fs.Cut()}");
            using var reopened = ReplicatedLog.Open(path, 1, SmallSegments);
            AssertHolds(reopened, Range(1, index, 1));
        }

        using (var log = ReplicatedLog.Open(path, 1, SmallSegments))
        {
            log.Append(Range(24, 60, 2), 50);
        }
        fs.Cut();
        using var final = ReplicatedLog.Open(path, 1, SmallSegments);
        AssertHolds(final, [.. Range(1, 23, 1), .. Range(24, 60, 2)]);
        Assert.Equal(50UL, final.CommitIndex);
    }

    [Fact]
    public void PowerCut_keeps_a_new_log_directory_and_its_entries()
    {
        using var fs = new PowerCutFs();
        var path = Path.Combine(fs.MountPoint, "data", "partitions", "7", "log");
        using (var log = ReplicatedLog.Open(path, 7))
        {
            log.Append(Range(1, 3, 1), 2);
        }
        output.WriteLine(fs.Cut());
        Assert.True(Directory.Exists(path), "the new log directory vanished in the power cut");
        using var reopened = ReplicatedLog.Open(path, 7);
        AssertHolds(reopened, Range(1, 3, 1));
        Assert.Equal(2UL, reopened.CommitIndex);
    }

    [Fact]
    public void PowerCut_keeps_a_Reset_that_returned_and_the_entries_appended_after_it()
    {
        using var fs = new PowerCutFs();
        var path = Path.Combine(fs.MountPoint, "log");
        using (var log = ReplicatedLog.Open(path, 1, SmallSegments))
        {
            log.Append(Range(1, 60, 1), 60);
            log.Append(Range(61, 90, 1), 90);
        }
        fs.Cut();
        using (var log = ReplicatedLog.Open(path, 1, SmallSegments))
        {
            log.Reset(new LogPosition(500, 7));
        }
        output.WriteLine(fs.Cut());
        using (var log = ReplicatedLog.Open(path, 1, SmallSegments))
        {
            Assert.Equal(new LogPosition(500, 7), log.Base);
            Assert.Equal(new LogPosition(500, 7), log.Last);
            Assert.Equal(500UL, log.CommitIndex);
            for (ulong i = 501; i <= 560; i += 4)
            {
                log.Append(Range(i, i + 3, 7), i);
            }
        }
        fs.Cut();
        using var reopened = ReplicatedLog.Open(path, 1, SmallSegments);
        Assert.Equal(new LogPosition(500, 7), reopened.Base);
        AssertHolds(reopened, Range(501, 560, 7));
    }

    [Fact]
    public void PowerCut_a_failed_fsync_gives_OutcomeUnknown_and_the_log_refuses_writes_until_it_is_reopened()
    {
        using var fs = new PowerCutFs();
        var path = Path.Combine(fs.MountPoint, "log");
        using (var log = ReplicatedLog.Open(path, 9))
        {
            log.Append(Range(1, 5, 1), 5);
            fs.FailFsync("*.log");
            var failure = Assert.Throws<DEngineException>(() => log.Append(Range(6, 8, 1), 8));
            output.WriteLine(failure.Message);
            Assert.Equal(DEngineErrorCode.OutcomeUnknown, failure.Code);
            Assert.Equal(9, failure.Partition);
            fs.StopFailingFsync();
            Assert.Equal(DEngineErrorCode.StorageFailure, Assert.Throws<DEngineException>(() => log.Append(Range(6, 8, 1), 8)).Code);
            Assert.Equal(DEngineErrorCode.StorageFailure, Assert.Throws<DEngineException>(() => log.TruncateAfter(5)).Code);
            Assert.Equal(DEngineErrorCode.StorageFailure, Assert.Throws<DEngineException>(() => log.RecordCommit(5, sync: true)).Code);
            Assert.Equal(new LogPosition(5, 1), log.Last);
            Assert.Equal(Range(1, 5, 1), log.Read(1));
        }
        fs.Cut();
        using var reopened = ReplicatedLog.Open(path, 9);
        AssertHolds(reopened, Range(1, 5, 1));
        reopened.Append(Range(6, 8, 2), 8);
        AssertHolds(reopened, [.. Range(1, 5, 1), .. Range(6, 8, 2)]);
    }
}
