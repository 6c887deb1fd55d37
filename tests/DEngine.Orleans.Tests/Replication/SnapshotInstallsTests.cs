using DEngine.Orleans.Replication;
using DEngine.Orleans.Snapshots;
using DEngine.StateMachine;
using DEngine.StateMachine.Replication;
using DEngine.StateMachine.Snapshots;
using DEngine.StateMachine.Tests.Support;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;
using static DEngine.StateMachine.Tests.Support.Log;

namespace DEngine.Orleans.Tests.Replication;

/// <summary>
/// A replica's side of a snapshot catch-up (<see cref="SnapshotInstalls"/>) over real copies: the
/// version fence, the fetch from the primary's snapshot files, what a failed or damaged fetch leaves,
/// and how a long install answers.
/// </summary>
public sealed class SnapshotInstallsTests : IDisposable
{
    private const int Partition = 4;
    private static readonly TimeSpan MaxWait = TimeSpan.FromSeconds(3);
    private readonly TempDirectory _dir = new();
    private readonly FakeTimeProvider _time = new();
    private readonly List<IDisposable> _open = [];
    private readonly ReplicaCopy _replica;
    private readonly SnapshotInfo _snapshot;
    private readonly SnapshotInstalls _installs;

    public SnapshotInstallsTests()
    {
        var primary = SnapshotSource.CompactingCopy(Partition, _dir.Sub("primary-engine"), _dir.Sub("primary-log"));
        _open.Add(primary);
        SnapshotSource.Fill(primary, 3, 40);
        _snapshot = primary.SnapshotForReplica();
        _replica = OpenReplica();
        // The replica's own, older state: one committed entry of version 1.
        _replica.Append(new AppendRequest(Partition, 1, "old-primary", 0, 0, [Insert(1, "mine", "1")], 1));
        _installs = new SnapshotInstalls(_time);
    }

    public void Dispose()
    {
        foreach (var item in _open)
        {
            item.Dispose();
        }
        _dir.Dispose();
    }

    private ReplicaCopy OpenReplica()
    {
        var engine = new RocksDbStateMachine(_dir.Sub("replica-engine"), new RocksDbStateMachineOptions { PartitionId = Partition, Durability = DurabilityMode.Relaxed });
        var copy = new ReplicaCopy(Partition, engine, ReplicatedLog.Open(_dir.Sub("replica-log"), Partition));
        _open.Add(copy);
        return copy;
    }

    private InstallSnapshotRequest Request(ulong version = 3) => new(Partition, version, "primary", SnapshotSource.Offer(Partition, _snapshot), MaxWait);

    private string Incoming => _dir.Sub("incoming");

    private Task<SnapshotChunkData> ReadGood(string file, long offset, int length) => Task.FromResult(SnapshotSource.ReadChunk(_snapshot.Directory, file, offset, length));

    private string? Read(string key) => _replica.Engine.Get(System.Text.Encoding.UTF8.GetBytes(key)) is { } value ? System.Text.Encoding.UTF8.GetString(value) : null;

    private void AssertOldCopy(CopyPosition before)
    {
        Assert.Equal(before with { Version = 3 }, _replica.Position with { Version = 3 });
        Assert.Equal("1", Read("mine"));
        Assert.Null(Read("k40"));
    }

    [Fact]
    public async Task An_install_request_from_a_stale_primary_is_refused_and_nothing_is_fetched()
    {
        _replica.Promote(5);
        var before = _replica.Position;
        var reads = 0;

        var answer = await _installs.InstallAsync(_replica, Request(version: 3), (f, o, l) => { Interlocked.Increment(ref reads); return ReadGood(f, o, l); }, Incoming, NullLogger.Instance);

        Assert.Equal(InstallStatus.StaleVersion, answer.Status);
        Assert.Equal(5ul, answer.Position.Version);
        Assert.Equal(0, reads);
        Assert.Equal(before, _replica.Position);
        Assert.False(Directory.Exists(Incoming));
    }

    [Fact]
    public async Task An_installed_snapshot_answers_the_position_after_its_last_entry()
    {
        var answer = await _installs.InstallAsync(_replica, Request(), ReadGood, Incoming, NullLogger.Instance);

        Assert.Equal(InstallStatus.Installed, answer.Status);
        Assert.Equal((40ul, 3ul, 40ul, 40ul), (answer.Position.LastIndex, answer.Position.LastTerm, answer.Position.CommitIndex, answer.Position.BaseIndex));
        Assert.Equal(new string('v', 100), Read("k40"));
        Assert.Null(Read("mine"));
        Assert.Empty(Directory.EnumerateDirectories(Incoming));
        // Asked again (a lost answer): the copy holds the snapshot's last entry, nothing is fetched.
        var again = await _installs.InstallAsync(_replica, Request(), (_, _, _) => throw new InvalidOperationException("fetched again"), Incoming, NullLogger.Instance);
        Assert.Equal(InstallStatus.Installed, again.Status);
    }

    [Fact]
    public async Task A_fetch_that_fails_part_way_leaves_the_old_copy_intact_and_the_next_request_resumes_and_installs()
    {
        var before = _replica.Position;
        var calls = 0;
        Task<SnapshotChunkData> FailSecond(string file, long offset, int length) =>
            Interlocked.Increment(ref calls) == 2
                ? throw new DEngineException(DEngineErrorCode.SnapshotRejected, "the test's primary lost the snapshot")
                : ReadGood(file, offset, length);

        var failed = await Assert.ThrowsAsync<DEngineException>(() => _installs.InstallAsync(_replica, Request(), FailSecond, Incoming, NullLogger.Instance));

        Assert.Equal(DEngineErrorCode.SnapshotRejected, failed.Code);
        AssertOldCopy(before);
        var read = new List<string>();
        var answer = await _installs.InstallAsync(_replica, Request(), (f, o, l) => { lock (read) { read.Add(f); } return ReadGood(f, o, l); }, Incoming, NullLogger.Instance);
        Assert.Equal(InstallStatus.Installed, answer.Status);
        Assert.Equal(40ul, answer.Position.LastIndex);
        Assert.Equal(new string('v', 100), Read("k40"));
        // The file fetched whole before the failure (the first with data: one chunk) was kept, not fetched again.
        var files = SnapshotManifest.Parse(File.ReadAllBytes(Path.Combine(_snapshot.Directory, SnapshotManifest.FileName)), Partition).Files;
        Assert.DoesNotContain(files.First(f => f.Size > 0).Name, read);
        Assert.NotEmpty(read);
    }

    [Fact]
    public async Task A_snapshot_whose_data_does_not_match_its_manifest_is_refused_and_the_old_copy_is_kept()
    {
        var before = _replica.Position;
        Task<SnapshotChunkData> Damaged(string file, long offset, int length)
        {
            // Damaged at the source: each chunk's CRC matches its (wrong) bytes, only the manifest's hashes tell.
            var chunk = SnapshotSource.ReadChunk(_snapshot.Directory, file, offset, length);
            var data = chunk.Data.ToArray();
            data[0] ^= 0xFF;
            return Task.FromResult(new SnapshotChunkData(data, Crc32C.Compute(data)));
        }

        var refused = await Assert.ThrowsAsync<DEngineException>(() => _installs.InstallAsync(_replica, Request(), Damaged, Incoming, NullLogger.Instance));

        Assert.Equal(DEngineErrorCode.SnapshotRejected, refused.Code);
        AssertOldCopy(before);
    }

    [Fact]
    public async Task A_long_install_answers_installing_within_the_wait_and_installed_once_done()
    {
        var gate = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        async Task<SnapshotChunkData> Slow(string file, long offset, int length)
        {
            await gate.Task;
            return await ReadGood(file, offset, length);
        }

        var first = _installs.InstallAsync(_replica, Request(), Slow, Incoming, NullLogger.Instance);
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(20);
        while (!first.IsCompleted && DateTime.UtcNow < deadline)
        {
            _time.Advance(TimeSpan.FromMilliseconds(500));
            await Task.Delay(5);
        }
        var answer = await first.WaitAsync(TimeSpan.FromSeconds(20));

        Assert.Equal(InstallStatus.Installing, answer.Status);
        Assert.Equal(1ul, answer.Position.LastIndex);
        Assert.Null(Read("k40"));
        gate.SetResult();
        var done = await _installs.InstallAsync(_replica, Request(), Slow, Incoming, NullLogger.Instance).WaitAsync(TimeSpan.FromSeconds(20));
        Assert.Equal(InstallStatus.Installed, done.Status);
        Assert.Equal(40ul, done.Position.LastIndex);
    }
}
