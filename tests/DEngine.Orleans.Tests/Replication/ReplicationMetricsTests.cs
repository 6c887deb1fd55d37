using System.Collections.Concurrent;
using System.Diagnostics.Metrics;
using DEngine.Orleans.Configuration;
using DEngine.Orleans.Diagnostics;
using DEngine.Orleans.Replication;
using DEngine.StateMachine;
using DEngine.StateMachine.Replication;
using DEngine.StateMachine.Tests.Support;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;
using static DEngine.StateMachine.Tests.Support.Log;
using FakeReplica = DEngine.Orleans.Tests.Replication.ReplicatorTests.FakeReplica;

namespace DEngine.Orleans.Tests.Replication;

/// <summary>
/// The <c>dengine.replication.*</c> instruments, each recorded when its event happens: a replicator
/// and a replica's snapshot installs over real copies (a fake clock), and the configuration store.
/// A listener counts only this test's meter, so other silos in the process do not disturb it.
/// </summary>
public sealed class ReplicationMetricsTests : IDisposable
{
    private const int Partition = 2;
    private static readonly TimeSpan Wait = TimeSpan.FromSeconds(20);
    private readonly TempDirectory _dir = new();
    private readonly FakeTimeProvider _time = new();
    private readonly TaskScheduler _scheduler = new ConcurrentExclusiveSchedulerPair().ExclusiveScheduler;
    private readonly Dictionary<string, FakeReplica> _replicas = new();
    private readonly List<IDisposable> _open = [];
    private readonly ServiceProvider _services = new ServiceCollection().AddMetrics().BuildServiceProvider();
    private readonly DEngineMetrics _metrics;
    private readonly MeterListener _listener = new();
    private readonly ConcurrentQueue<(string Name, double Value, Dictionary<string, object?> Tags)> _measured = new();
    private int _applied;

    public ReplicationMetricsTests()
    {
        _metrics = new DEngineMetrics(_services.GetRequiredService<IMeterFactory>());
        _listener.InstrumentPublished = (instrument, listener) =>
        {
            if (instrument.Meter == _metrics.Meter)
            {
                listener.EnableMeasurementEvents(instrument);
            }
        };
        _listener.SetMeasurementEventCallback<long>((i, value, tags, _) => Record(i, value, tags));
        _listener.SetMeasurementEventCallback<double>((i, value, tags, _) => Record(i, value, tags));
        _listener.Start();
    }

    public void Dispose()
    {
        _listener.Dispose();
        foreach (var item in _open)
        {
            item.Dispose();
        }
        _services.Dispose();
        _dir.Dispose();
    }

    private void Record(Instrument instrument, double value, ReadOnlySpan<KeyValuePair<string, object?>> tags)
    {
        var copy = new Dictionary<string, object?>();
        foreach (var tag in tags)
        {
            copy[tag.Key] = tag.Value;
        }
        _measured.Enqueue((instrument.Name, value, copy));
    }

    private List<(double Value, Dictionary<string, object?> Tags)> Measured(string name) =>
        [.. _measured.Where(m => m.Name == name).Select(m => (m.Value, m.Tags))];

    private ReplicaCopy Copy(string name)
    {
        var engine = new RocksDbStateMachine(_dir.Sub($"{name}-engine"), new RocksDbStateMachineOptions { PartitionId = Partition, Durability = DurabilityMode.Relaxed });
        var copy = new ReplicaCopy(Partition, engine, ReplicatedLog.Open(_dir.Sub($"{name}-log"), Partition));
        _open.Add(copy);
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
            var replicator = new Replicator(Partition, "p", version, primary, replicas, name => _replicas[name], new ReplicatorSettings(TimeSpan.FromSeconds(1), TimeSpan.FromSeconds(6), TimeSpan.FromSeconds(4)), _time, NullLogger.Instance, results => Interlocked.Add(ref _applied, results.Count), _metrics);
            replicator.Start();
            return replicator;
        });
    }

    /// <summary>Polls <paramref name="condition"/> with a deadline, moving the fake clock by <paramref name="tick"/> each round (zero: never).</summary>
    private async Task Until(Func<bool> condition, string what, TimeSpan tick = default)
    {
        var deadline = DateTime.UtcNow + Wait;
        while (!condition())
        {
            if (DateTime.UtcNow > deadline)
            {
                throw new TimeoutException($"Timed out waiting for: {what}");
            }
            if (tick > TimeSpan.Zero)
            {
                _time.Advance(tick);
            }
            await Task.Delay(5);
        }
    }

    [Fact]
    public async Task Commit_latency_is_recorded_for_each_chunk_from_its_append_to_its_commit()
    {
        var primary = Copy("p");
        var a = Replica("a");
        a.Hold();
        var replicator = await StartAsync(primary, 1, "a");
        await OnScheduler(() => replicator.Append([Insert(1, "k", "v"), Insert(2, "k2", "v2")]));
        _time.Advance(TimeSpan.FromMilliseconds(250)); // below the heartbeat: no timer fires
        Assert.Empty(Measured("dengine.replication.commit_latency"));

        a.Release();
        await Until(() => Volatile.Read(ref _applied) == 2, "the chunk commits");

        var latency = Assert.Single(Measured("dengine.replication.commit_latency"));
        Assert.Equal(250, latency.Value, precision: 3);
        Assert.Equal(Partition, latency.Tags["partition"]);
        replicator.Stop(new DEngineException(DEngineErrorCode.NotServing, "test over"));
    }

    [Fact]
    public async Task Each_message_to_a_replica_samples_its_lag_behind_the_primary_log_answered_or_not()
    {
        var primary = Copy("p");
        var a = Replica("a");
        var b = Replica("b");
        b.Fail = true;
        var replicator = await StartAsync(primary, 1, "a", "b");
        await OnScheduler(() => replicator.Append([Insert(1, "k1", "v"), Insert(2, "k2", "v"), Insert(3, "k3", "v")]));

        bool Sampled(string replica, double lag) =>
            Measured("dengine.replication.lag").Any(m => (string?)m.Tags["replica"] == replica && m.Value == lag);
        await Until(() => Sampled("a", 0) && Sampled("b", 3), "a sampled in step, b three entries behind", TimeSpan.FromMilliseconds(50));

        Assert.All(Measured("dengine.replication.lag"), m => Assert.Equal(Partition, m.Tags["partition"]));
        Assert.Equal(3ul, a.Copy.Position.LastIndex);
        replicator.Stop(new DEngineException(DEngineErrorCode.NotServing, "test over"));
    }

    [Fact]
    public async Task A_snapshot_install_to_a_replica_shows_in_its_progress_with_the_snapshot_its_size_and_files_until_done()
    {
        var primary = SnapshotSource.CompactingCopy(Partition, _dir.Sub("p-engine"), _dir.Sub("p-log"));
        _open.Add(primary);
        SnapshotSource.Fill(primary, 1, 200);
        var a = Replica("a");
        a.Incoming = _dir.Sub("a-incoming");
        a.PrimarySnapshots = ((RocksDbStateMachine)primary.Engine).SnapshotsPath;
        a.HoldChunks();
        var replicator = await StartAsync(primary, 2, "a");
        await OnScheduler(() => replicator.Append([Noop(201, term: 2)]));

        await Until(() => OnScheduler(replicator.Progress).Result.Single().Install?.Snapshot is not null, "the progress names the snapshot being installed");
        var install = (await OnScheduler(replicator.Progress)).Single().Install!;
        var snapshot = Assert.Single(primary.Engine.ListSnapshots());
        Assert.Equal(Path.GetFileName(snapshot.Directory), install.Snapshot);
        Assert.Equal(snapshot.TotalBytes, install.TotalBytes);
        Assert.Equal(snapshot.FileCount, install.Files);
        Assert.InRange(install.BytesDone, 0, install.TotalBytes);

        a.ReleaseChunks();
        await Until(() => Volatile.Read(ref _applied) == 1, "the noop of the new term commits");
        await Until(() => OnScheduler(replicator.Progress).Result.Single().Applied == 201, "a reports 201 applied", TimeSpan.FromMilliseconds(100));
        var done = (await OnScheduler(replicator.Progress)).Single();
        Assert.Null(done.Install);
        Assert.Equal(201ul, done.Matched);
        replicator.Stop(new DEngineException(DEngineErrorCode.NotServing, "test over"));
    }

    [Fact]
    public async Task A_snapshot_install_counts_as_a_rebuild_in_progress_until_it_ends_and_counts_the_bytes_it_fetched()
    {
        var primary = SnapshotSource.CompactingCopy(Partition, _dir.Sub("p-engine"), _dir.Sub("p-log"));
        _open.Add(primary);
        SnapshotSource.Fill(primary, 3, 40);
        var snapshot = primary.SnapshotForReplica();
        var replica = Copy("replica");
        var installs = new SnapshotInstalls(_time, _metrics);
        var gate = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        async Task<Orleans.Snapshots.SnapshotChunkData> Read(string file, long offset, int length)
        {
            await gate.Task;
            return SnapshotSource.ReadChunk(snapshot.Directory, file, offset, length);
        }
        double InProgress() => Measured("dengine.replication.rebuilds_in_progress").Sum(m => m.Value);
        double Bytes() => Measured("dengine.replication.snapshot_bytes").Sum(m => m.Value);
        var request = new InstallSnapshotRequest(Partition, 3, "primary", SnapshotSource.Offer(Partition, snapshot), TimeSpan.FromSeconds(3));

        var first = installs.InstallAsync(replica, request, Read, _dir.Sub("incoming"), NullLogger.Instance);
        await Until(() => InProgress() == 1, "the install counts as in progress");
        Assert.Equal(0, Bytes());
        gate.SetResult();
        await Until(() => InProgress() == 0, "the install ended");
        await first.WaitAsync(Wait);
        var answer = await installs.InstallAsync(replica, request, Read, _dir.Sub("incoming"), NullLogger.Instance).WaitAsync(Wait);

        Assert.Equal(InstallStatus.Installed, answer.Status);
        Assert.Equal(snapshot.TotalBytes, Bytes());
        Assert.All(Measured("dengine.replication.snapshot_bytes"), m => Assert.Equal(Partition, m.Tags["partition"]));
    }

    [Fact]
    public async Task Each_stored_configuration_change_counts_once_under_each_of_its_reasons()
    {
        const int partition = 3;
        var a = new ReplicaId("a", "00000000000000000000000000000001");
        var b = new ReplicaId("b", "00000000000000000000000000000002");
        var c = new ReplicaId("c", "00000000000000000000000000000003");
        var d = new ReplicaId("d", "00000000000000000000000000000004");
        // The silo's own meter: listen to every DEngine meter, for this partition only.
        var counted = new ConcurrentQueue<string>();
        using var listener = new MeterListener();
        listener.InstrumentPublished = (instrument, l) =>
        {
            if (instrument.Meter.Name == DEngineMetrics.MeterName && instrument.Name == "dengine.replication.reconfigurations")
            {
                l.EnableMeasurementEvents(instrument);
            }
        };
        listener.SetMeasurementEventCallback<long>((_, value, tags, _) =>
        {
            var reason = "";
            var ours = false;
            foreach (var tag in tags)
            {
                ours |= tag.Key == "partition" && tag.Value is int p && p == partition;
                reason = tag.Key == "reason" ? (string)tag.Value! : reason;
            }
            for (var i = 0; ours && i < value; i++)
            {
                counted.Enqueue(reason);
            }
        });
        listener.Start();
        await using var silo = await ConfigurationSilo.StartAsync(_dir.Sub("silo"));
        var store = silo.Configuration(partition);

        var first = PartitionConfiguration.Empty.Next(a, [a, b, c]);
        Assert.True((await store.CompareAndSwap(0, first)).Won);
        Assert.Empty(counted); // a partition's first configuration changes nothing
        var removed = first.Without("c").Next();
        Assert.True((await store.CompareAndSwap(1, removed)).Won);
        Assert.Equal(["removed"], counted.ToArray());
        Assert.False((await store.CompareAndSwap(1, removed.Next())).Won);
        Assert.Equal(["removed"], counted.ToArray()); // a lost swap stores nothing and counts nothing
        var added = removed.WithReplica(d).Next();
        Assert.True((await store.CompareAndSwap(2, added)).Won);
        var handedOver = added.WithPrimary(b).Next();
        Assert.True((await store.CompareAndSwap(3, handedOver)).Won);
        var takeover = handedOver.Next(d, [d, b]);
        Assert.True((await store.CompareAndSwap(4, takeover)).Won);

        Assert.Equal(["removed", "added", "primary-change", "removed", "primary-change"], counted.ToArray());
    }
}
