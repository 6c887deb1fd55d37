using DEngine.Protos.Storage;
using DEngine.StateMachine.Tests.Support;
using static DEngine.StateMachine.Tests.Support.Log;
using static DEngine.StateMachine.Tests.Support.TestEngine;

namespace DEngine.StateMachine.Tests;

/// <summary>
/// Install never leaves a mix. A failure at any step rolls back to the complete old state, which keeps
/// being served; and the files on disk at any step (the image a crash would leave there) open as either
/// the complete old state or the complete new one.
/// </summary>
public sealed class SnapshotInstallFaultTests : IDisposable
{
    private static readonly LogPosition OldPosition = new(30, 1);
    private static readonly LogPosition NewPosition = new(60, 2);

    private readonly TestEngine _source = new();
    private readonly TestEngine _target = new();
    private readonly TempDirectory _scratch = new();
    private readonly string _snapshotDirectory;
    private readonly SnapshotMetadata _metadata;

    public SnapshotInstallFaultTests()
    {
        // Old state: keys k00..k29 = old-i at term 1. New state: keys k00..k59 = new-i at term 2, and a TTL key.
        _target.Machine.ApplyChunk(Enumerable.Range(1, 30).Select(i => Insert((ulong)i, $"k{i - 1:D2}", $"old-{i}")).ToArray());
        _source.Machine.ApplyChunk(Enumerable.Range(1, 59).Select(i => Insert((ulong)i, $"k{i - 1:D2}", $"new-{i}", term: 2)).ToArray());
        _source.Machine.ApplyChunk([Insert(60, "ttl", "t", ttlSecs: 60, expiresAtUnixMs: _source.NowUnixMs + 60_000, term: 2)]);
        var snapshot = _source.Machine.CreateSnapshot();
        (_snapshotDirectory, _metadata) = SnapshotFiles.CopySnapshot(snapshot, _scratch.Sub("fetched"));
    }

    public static TheoryData<string> Steps => new(RocksDbStateMachine.InstallSteps);

    public void Dispose()
    {
        _source.Dispose();
        _target.Dispose();
        _scratch.Dispose();
    }

    [Theory]
    [MemberData(nameof(Steps))]
    public void A_failure_at_each_step_rolls_back_to_the_complete_old_state_which_keeps_being_served(string failingStep)
    {
        var seen = new List<string>();
        _target.Machine.FaultInjector = step =>
        {
            seen.Add(step);
            if (step == failingStep)
            {
                throw new IOException($"injected fault at {step}");
            }
        };

        var error = Assert.Throws<DEngineException>(() => _target.Machine.InstallSnapshot(_snapshotDirectory, _metadata));
        Assert.Equal(DEngineErrorCode.StorageFailure, error.Code);
        Assert.Contains(failingStep, error.Message, StringComparison.Ordinal);
        Assert.Equal(failingStep, seen[^1]);

        Assert.True(_target.Machine.IsRunning);
        AssertOldState(_target.Machine);
        Assert.Equal(["db-1"], SnapshotFiles.GenerationEntries(_target.Machine.PartitionPath));
        _target.Machine.FaultInjector = null;

        _target.Reopen();
        AssertOldState(_target.Machine);

        // Nothing is stuck: the same snapshot installs afterwards.
        _target.Machine.InstallSnapshot(_snapshotDirectory, _metadata);
        AssertNewState(_target.Machine);
    }

    [Theory]
    [MemberData(nameof(Steps))]
    public void The_files_at_each_step_open_as_the_complete_old_or_the_complete_new_state(string imageStep)
    {
        var image = _scratch.Sub("crash-image");
        _target.Machine.FaultInjector = step =>
        {
            if (step == imageStep)
            {
                SnapshotFiles.CopyDirectory(_target.Machine.PartitionPath, image); // what a crash at this instant leaves on disk
            }
        };
        _target.Machine.InstallSnapshot(_snapshotDirectory, _metadata);
        AssertNewState(_target.Machine);

        using var reopened = new RocksDbStateMachine(image, SmallOptions(_target.Clock));
        var switched = Array.IndexOf(RocksDbStateMachine.InstallSteps, imageStep) >= Array.IndexOf(RocksDbStateMachine.InstallSteps, "after-pointer-rename");
        if (switched)
        {
            AssertNewState(reopened);
            Assert.Equal(["db-2"], SnapshotFiles.GenerationEntries(image));
        }
        else
        {
            AssertOldState(reopened);
            Assert.Equal(["db-1"], SnapshotFiles.GenerationEntries(image));
        }
    }

    private static void AssertOldState(RocksDbStateMachine machine)
    {
        Assert.Equal(OldPosition, machine.LastApplied);
        Assert.Equal(
            Enumerable.Range(1, 30).Select(i => $"k{i - 1:D2}=old-{i}"),
            machine.ScanPrefix(Utf8("k")).Entries.Select(e => $"{Text(e.Key)}={Text(e.Value)}"));
        Assert.Null(machine.Get(Utf8("ttl")));
        Assert.Null(machine.SnapshotMetadata);
    }

    private void AssertNewState(RocksDbStateMachine machine)
    {
        Assert.Equal(NewPosition, machine.LastApplied);
        Assert.Equal(
            Enumerable.Range(1, 59).Select(i => $"k{i - 1:D2}=new-{i}"),
            machine.ScanPrefix(Utf8("k")).Entries.Select(e => $"{Text(e.Key)}={Text(e.Value)}"));
        Assert.True(machine.TryGetExpiry(Utf8("ttl"), out var expiry));
        Assert.Equal(_source.NowUnixMs + 60_000, expiry);
        Assert.Equal(_metadata, machine.SnapshotMetadata);
    }
}
