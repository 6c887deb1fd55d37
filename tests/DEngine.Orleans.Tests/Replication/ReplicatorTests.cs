using DEngine.Orleans.Replication;
using DEngine.Orleans.Snapshots;
using DEngine.Protos.Common;
using DEngine.StateMachine;
using DEngine.StateMachine.Replication;
using DEngine.StateMachine.Tests.Support;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;
using static DEngine.StateMachine.Tests.Support.Log;

namespace DEngine.Orleans.Tests.Replication;

/// <summary>
/// The primary's replicator over real copies (log + engine in temp directories), with in-process
/// endpoints that can hold or fail messages. Everything runs on one exclusive scheduler, as it does
/// on a grain's.
/// </summary>
public sealed class ReplicatorTests : IDisposable
{
    private const int Partition = 1;
    private static readonly TimeSpan Wait = TimeSpan.FromSeconds(20);
    private readonly TempDirectory _dir = new();
    private readonly FakeTimeProvider _time = new();
    private readonly TaskScheduler _scheduler = new ConcurrentExclusiveSchedulerPair().ExclusiveScheduler;
    private readonly Dictionary<string, FakeReplica> _replicas = new();
    private readonly List<ApplyResult> _results = [];
    private readonly List<ReplicaCopy> _copies = [];
    private readonly ReplicatorSettings _settings = new(TimeSpan.FromSeconds(1), TimeSpan.FromSeconds(6), TimeSpan.FromSeconds(4));

    public void Dispose()
    {
        foreach (var copy in _copies)
        {
            copy.Dispose();
        }
        _dir.Dispose();
    }

    private ReplicaCopy Copy(string name)
    {
        var engine = new RocksDbStateMachine(_dir.Sub($"{name}-engine"), new RocksDbStateMachineOptions { PartitionId = Partition, Durability = DurabilityMode.Relaxed });
        var copy = new ReplicaCopy(Partition, engine, ReplicatedLog.Open(_dir.Sub($"{name}-log"), Partition));
        _copies.Add(copy);
        return copy;
    }

    private FakeReplica Replica(string name) => _replicas[name] = new FakeReplica(Copy(name));

    private Task<T> OnScheduler<T>(Func<T> action) => Task.Factory.StartNew(action, CancellationToken.None, TaskCreationOptions.None, _scheduler);

    private Task OnScheduler(Action action) => Task.Factory.StartNew(action, CancellationToken.None, TaskCreationOptions.None, _scheduler);

    private async Task<Replicator> StartAsync(ReplicaCopy primary, ulong version, params string[] replicas)
    {
        primary.Promote(version);
        return await OnScheduler(() =>
        {
            var replicator = new Replicator(Partition, "p", version, primary, replicas, name => _replicas[name], _settings, _time, NullLogger.Instance, results =>
            {
                lock (_results)
                {
                    _results.AddRange(results);
                }
            });
            replicator.Start();
            return replicator;
        });
    }

    private int ResultCount
    {
        get
        {
            lock (_results)
            {
                return _results.Count;
            }
        }
    }

    private static async Task Until(Func<bool> condition, string what)
    {
        var deadline = DateTime.UtcNow + Wait;
        while (!condition())
        {
            if (DateTime.UtcNow > deadline)
            {
                throw new TimeoutException($"Timed out waiting for: {what}");
            }
            await Task.Delay(5);
        }
    }

    /// <summary>
    /// Moves the fake clock in small steps until <paramref name="condition"/> holds: a loop may not be
    /// waiting on its timer yet when a single jump would happen.
    /// </summary>
    private async Task TickUntil(Func<bool> condition, string what)
    {
        var deadline = DateTime.UtcNow + Wait;
        while (!condition())
        {
            if (DateTime.UtcNow > deadline)
            {
                throw new TimeoutException($"Timed out waiting for: {what}");
            }
            _time.Advance(TimeSpan.FromMilliseconds(100));
            await Task.Delay(5);
        }
    }

    [Fact]
    public async Task A_chunk_is_applied_and_reported_only_once_every_replica_holds_it()
    {
        var primary = Copy("p");
        var a = Replica("a");
        var b = Replica("b");
        b.Hold();
        var replicator = await StartAsync(primary, 1, "a", "b");
        await OnScheduler(() => replicator.Append([Insert(1, "k", "v"), Insert(2, "k2", "v2")]));
        await Until(() => a.Copy.Position.LastIndex == 2, "replica a has the chunk");
        await Until(() => primary.Position.LastIndex == 2, "the primary's log has the chunk");
        Assert.Equal(0, ResultCount);
        Assert.Equal(0ul, primary.Engine.LastApplied.Index);
        b.Release();
        await Until(() => ResultCount == 2, "both writes reported");
        Assert.Equal(2ul, primary.Engine.LastApplied.Index);
        Assert.Equal(2ul, replicator.CommitIndex);
        // The replicas learn the commit index on the next message (here the heartbeat).
        await TickUntil(() => a.Copy.Engine.LastApplied.Index == 2 && b.Copy.Engine.LastApplied.Index == 2, "replicas apply the committed chunk");
        replicator.Stop(new DEngineException(DEngineErrorCode.NotServing, "test over"));
    }

    [Fact]
    public async Task A_replica_that_has_seen_a_newer_version_deposes_the_primary()
    {
        var primary = Copy("p");
        var a = Replica("a");
        a.Copy.Promote(5);
        var replicator = await StartAsync(primary, 2, "a");
        // The first message (sent at once) meets the newer version.
        var reason = await replicator.Failed.WaitAsync(Wait);
        Assert.Equal(DEngineErrorCode.StaleEpoch, reason.Code);
        Assert.Equal(0, ResultCount);
        Assert.Equal(0ul, primary.Engine.LastApplied.Index);
        var refused = await Assert.ThrowsAsync<DEngineException>(() => OnScheduler(() => replicator.Append([Insert(1, "k", "v", term: 2)])));
        Assert.Equal(DEngineErrorCode.StaleEpoch, refused.Code);
        Assert.Equal(0ul, primary.Position.LastIndex); // nothing reached even the primary's own log
    }

    [Fact]
    public async Task A_replica_that_lacks_entries_is_brought_up_from_the_primary_log()
    {
        var primary = Copy("p");
        primary.Promote(1);
        primary.AppendOwn(1, [Insert(1, "a", "1"), Insert(2, "b", "2"), Insert(3, "c", "3")], 3);
        primary.Commit(3);
        var a = Replica("a"); // empty: it missed all three
        var replicator = await StartAsync(primary, 2, "a");
        await OnScheduler(() => replicator.Append([Noop(4, term: 2)]));
        await Until(() => ResultCount == 1, "the noop of the new term commits");
        await TickUntil(() => a.Copy.Engine.LastApplied.Index == 4, "the replica applied everything");
        Assert.Equal("3", System.Text.Encoding.UTF8.GetString(a.Copy.Engine.Get("c"u8)!));
        replicator.Stop(new DEngineException(DEngineErrorCode.NotServing, "test over"));
    }

    [Fact]
    public async Task A_demoted_replica_stops_blocking_commits_and_counts_again_once_promoted()
    {
        var primary = Copy("p");
        Replica("a");
        var b = Replica("b");
        b.Fail = true;
        var replicator = await StartAsync(primary, 1, "a", "b");
        await OnScheduler(() => replicator.Append([Insert(1, "k", "v")]));
        await Until(() => primary.Position.LastIndex == 1, "local append");
        Assert.Equal(0, ResultCount);
        // The timeout goes by in steps; a keeps answering heartbeats, b fails every message.
        var until = _time.GetUtcNow() + _settings.ReplicaTimeout;
        await TickUntil(() => _time.GetUtcNow() >= until, "the replica timeout passes");
        Assert.Equal(["b"], await OnScheduler(replicator.Unresponsive));
        await OnScheduler(() => replicator.Demote("b"));
        await Until(() => ResultCount == 1, "committed without b");
        b.Fail = false;
        await TickUntil(() => b.Copy.Position.LastIndex == 1, "b catches up as a learner");
        await Until(() => OnScheduler(replicator.CaughtUpLearners).Result.Contains("b"), "b counts as caught up");
        await OnScheduler(() => replicator.Promote("b"));
        b.Hold();
        await OnScheduler(() => replicator.Append([Insert(2, "k", "v2")]));
        await Until(() => primary.Position.LastIndex == 2, "local append");
        Assert.Equal(1, ResultCount); // b counts again: nothing commits without it
        b.Release();
        await Until(() => ResultCount == 2, "committed with b");
        replicator.Stop(new DEngineException(DEngineErrorCode.NotServing, "test over"));
    }

    [Fact]
    public async Task A_reset_learner_counts_as_caught_up_only_once_its_new_copy_acknowledged_the_log_again()
    {
        var primary = Copy("p");
        Replica("a");
        Replica("b");
        var replicator = await StartAsync(primary, 1, "a");
        await OnScheduler(() => replicator.AddLearner("b"));
        await OnScheduler(() => replicator.Append([Insert(1, "k", "v")]));
        await Until(() => ResultCount == 1, "committed");
        await TickUntil(() => OnScheduler(replicator.CaughtUpLearners).Result.Contains("b"), "b caught up");

        // b's silo comes back on a new, empty data directory under the same name.
        var fresh = _replicas["b"] = new FakeReplica(Copy("b-new"));
        var caughtUp = await OnScheduler(() =>
        {
            replicator.Reset("b");
            return replicator.CaughtUpLearners();
        });

        Assert.DoesNotContain("b", caughtUp);
        await TickUntil(() => fresh.Copy.Position.LastIndex == 1 && OnScheduler(replicator.CaughtUpLearners).Result.Contains("b"), "the new copy is caught up from nothing");
        replicator.Stop(new DEngineException(DEngineErrorCode.NotServing, "test over"));
    }

    [Fact]
    public async Task A_forgotten_learner_is_no_longer_shipped_to()
    {
        var primary = Copy("p");
        Replica("a");
        var b = Replica("b");
        var replicator = await StartAsync(primary, 1, "a");
        await OnScheduler(() => replicator.AddLearner("b"));
        await OnScheduler(() => replicator.Append([Insert(1, "k", "v")]));
        await TickUntil(() => b.Copy.Position.LastIndex == 1, "b holds the first entry");

        await OnScheduler(() => replicator.Forget("b"));
        await OnScheduler(() => replicator.Append([Insert(2, "k", "v2")]));
        await Until(() => ResultCount == 2, "committed");
        var until = _time.GetUtcNow() + _settings.HeartbeatInterval * 5;
        await TickUntil(() => _time.GetUtcNow() >= until, "five heartbeats pass");

        Assert.Equal(1ul, b.Copy.Position.LastIndex);
        Assert.DoesNotContain(await OnScheduler(replicator.Progress), p => p.Silo == "b");
        replicator.Stop(new DEngineException(DEngineErrorCode.NotServing, "test over"));
    }

    [Fact]
    public async Task The_lease_is_renewed_by_heartbeats_and_lost_when_a_replica_stops_answering()
    {
        var primary = Copy("p");
        var a = Replica("a");
        var replicator = await StartAsync(primary, 1, "a");
        await Until(() => OnScheduler(replicator.HoldsLease).Result, "the first heartbeat gives the lease");
        // Six times the lease goes by; heartbeats keep renewing it.
        var renewedUntil = _time.GetUtcNow() + 6 * _settings.LeaseDuration;
        while (_time.GetUtcNow() < renewedUntil)
        {
            var answered = a.Answered;
            await TickUntil(() => a.Answered > answered, "a heartbeat answered");
            Assert.True(await OnScheduler(replicator.HoldsLease));
        }
        a.Hold();
        _time.Advance(_settings.HeartbeatInterval);
        _time.Advance(_settings.LeaseDuration);
        Assert.False(await OnScheduler(replicator.HoldsLease));
        a.Release();
        replicator.Stop(new DEngineException(DEngineErrorCode.NotServing, "test over"));
    }

    [Fact]
    public async Task A_replica_behind_the_primary_log_is_caught_up_from_a_snapshot_and_shipping_resumes_after_it()
    {
        var primary = SnapshotSource.CompactingCopy(Partition, _dir.Sub("p-engine"), _dir.Sub("p-log"));
        _copies.Add(primary);
        SnapshotSource.Fill(primary, 1, 200);
        Assert.True(primary.Position.BaseIndex > 1, $"the primary's log was not compacted (base {primary.Position.BaseIndex})");
        var a = Replica("a"); // empty: it lacks entries the primary's log no longer holds
        a.Incoming = _dir.Sub("a-incoming");
        a.PrimarySnapshots = ((RocksDbStateMachine)primary.Engine).SnapshotsPath;
        a.HoldChunks();
        var replicator = await StartAsync(primary, 2, "a");
        await OnScheduler(() => replicator.Append([Noop(201, term: 2)]));

        await Until(() => OnScheduler(replicator.Progress).Result.Single().Installing is not null, "the status says a is installing a snapshot");
        Assert.StartsWith("; installing a snapshot: a (", DEngine.Orleans.Partitions.ReplicatedPrimary.DescribeInstalls(await OnScheduler(replicator.Progress)));
        Assert.Equal(0, ResultCount); // a counts for commits: nothing commits before it holds the entries
        a.ReleaseChunks();
        await Until(() => ResultCount == 1, "the noop of the new term commits");
        await TickUntil(() => a.Copy.Engine.LastApplied.Index == 201, "the replica applied everything");

        Assert.Equal(200ul, a.Copy.Position.BaseIndex); // its log restarted after the snapshot's last entry
        Assert.Equal(new string('v', 100), System.Text.Encoding.UTF8.GetString(a.Copy.Engine.Get("k1"u8)!));
        Assert.Equal(new string('v', 100), System.Text.Encoding.UTF8.GetString(a.Copy.Engine.Get("k200"u8)!));
        Assert.Null((await OnScheduler(replicator.Progress)).Single().Installing);
        Assert.Equal("", DEngine.Orleans.Partitions.ReplicatedPrimary.DescribeInstalls(await OnScheduler(replicator.Progress)));
        replicator.Stop(new DEngineException(DEngineErrorCode.NotServing, "test over"));
    }

    [Fact]
    public async Task No_snapshot_is_taken_for_a_replica_behind_the_log_while_it_cannot_be_reached()
    {
        var primary = SnapshotSource.CompactingCopy(Partition, _dir.Sub("p-engine"), _dir.Sub("p-log"));
        _copies.Add(primary);
        SnapshotSource.Fill(primary, 1, 200);
        var a = Replica("a");
        a.Incoming = _dir.Sub("a-incoming");
        a.PrimarySnapshots = ((RocksDbStateMachine)primary.Engine).SnapshotsPath;
        // It answers the first message (Mismatch: it has nothing), then goes away.
        a.FailFromCall = 2;
        var replicator = await StartAsync(primary, 2, "a");

        await TickUntil(() => a.Calls >= 6, "the primary keeps trying the replica");

        Assert.Empty(primary.Engine.ListSnapshots());
        Assert.Null((await OnScheduler(replicator.Progress)).Single().Installing);
        a.FailFromCall = int.MaxValue;
        await TickUntil(() => a.Copy.Position.BaseIndex == 200, "once it answers, it installs a snapshot");
        Assert.Single(primary.Engine.ListSnapshots());
        replicator.Stop(new DEngineException(DEngineErrorCode.NotServing, "test over"));
    }

    /// <summary>An in-process replica endpoint over a real copy; messages can be held or failed.</summary>
    internal sealed class FakeReplica(ReplicaCopy copy) : IReplicaGrain
    {
        private readonly object _gate = new();
        private TaskCompletionSource _open = Opened();

        public ReplicaCopy Copy { get; } = copy;

        public volatile bool Fail;

        /// <summary>Every call from this one on (counting from 1) fails, until set back to int.MaxValue.</summary>
        public volatile int FailFromCall = int.MaxValue;

        private int _calls;

        public int Calls => Volatile.Read(ref _calls);

        private void CountCall()
        {
            if (Interlocked.Increment(ref _calls) >= FailFromCall)
            {
                throw new TimeoutException("the test fails this replica's calls");
            }
        }

        private int _answered;

        public int Answered => Volatile.Read(ref _answered);

        private static TaskCompletionSource Opened()
        {
            var open = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            open.SetResult();
            return open;
        }

        public void Hold()
        {
            lock (_gate)
            {
                _open = new(TaskCreationOptions.RunContinuationsAsynchronously);
            }
        }

        public void Release()
        {
            lock (_gate)
            {
                _open.TrySetResult();
            }
        }

        public async Task<AppendResponse> Append(AppendRequest request)
        {
            Task open;
            lock (_gate)
            {
                open = _open.Task;
            }
            await open;
            CountCall();
            if (Fail)
            {
                throw new TimeoutException("the test fails this replica's messages");
            }
            var response = await Task.Run(() => Copy.Append(request));
            Interlocked.Increment(ref _answered);
            return response;
        }

        public Task<CopyPosition> Describe()
        {
            CountCall();
            return Task.FromResult(Copy.Position);
        }

        public Task<CopyPosition> Promote(ulong version)
        {
            Copy.Promote(version);
            return Task.FromResult(Copy.Position);
        }

        public Task<Entry[]> ReadLog(ulong fromIndex, int maxEntries, long maxBytes) => Task.FromResult(Copy.Read(fromIndex, maxEntries, maxBytes).ToArray());

        /// <summary>Where this replica's snapshot installs are fetched to.</summary>
        public string? Incoming { get; set; }

        /// <summary>The primary's snapshots directory (chunks are read from its files, as its snapshot server would).</summary>
        public string? PrimarySnapshots { get; set; }

        public SnapshotInstalls Installs { get; } = new(TimeProvider.System);

        private TaskCompletionSource _chunks = Opened();

        /// <summary>Chunk reads of an install wait from now on (until <see cref="ReleaseChunks"/>).</summary>
        public void HoldChunks() => _chunks = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public void ReleaseChunks() => _chunks.TrySetResult();

        public async Task<InstallSnapshotResponse> InstallSnapshot(InstallSnapshotRequest request)
        {
            Task open;
            lock (_gate)
            {
                open = _open.Task;
            }
            await open;
            CountCall();
            var directory = Path.Combine(PrimarySnapshots!, request.Offer.Snapshot);
            async Task<SnapshotChunkData> Read(string file, long offset, int length)
            {
                await _chunks.Task;
                return SnapshotSource.ReadChunk(directory, file, offset, length);
            }
            return await Installs.InstallAsync(Copy, request, Read, Incoming!, NullLogger.Instance);
        }
    }
}
