using DEngine.Orleans.Diagnostics;
using DEngine.Orleans.Snapshots;
using DEngine.Protos.Common;
using DEngine.StateMachine;
using DEngine.StateMachine.Snapshots;
using Microsoft.Extensions.Logging;

namespace DEngine.Orleans.Replication;

/// <summary>Timing and batch bounds of a <see cref="Replicator"/>.</summary>
/// <param name="HeartbeatInterval">Longest pause between two messages to a replica (renews the lease, carries the commit index).</param>
/// <param name="ReplicaTimeout">How long a message may go unanswered before the replica counts as unresponsive.</param>
/// <param name="LeaseDuration">How long an acknowledgement lets the primary serve reads, from the message's send.</param>
/// <param name="MaxShipEntries">Most entries in one message.</param>
/// <param name="MaxShipBytes">About the most entry bytes in one message (well below Orleans' message size limit).</param>
public sealed record ReplicatorSettings(
    TimeSpan HeartbeatInterval,
    TimeSpan ReplicaTimeout,
    TimeSpan LeaseDuration,
    int MaxShipEntries = 4096,
    long MaxShipBytes = 4L << 20);

/// <summary>
/// The primary's half of replication for one configuration version: appends what the sequencer
/// built to the local log, ships it to every other replica, applies what the commit rule
/// (<see cref="CommitTracker"/>) commits, and reports the results in index order.
/// </summary>
/// <remarks>
/// <para><b>Where it runs.</b> Every method and every loop continuation runs on the primary grain's
/// scheduler (the loops are started from a grain turn and await there), so its fields need no lock;
/// the blocking work (log fsync, apply) runs on the thread pool through <see cref="ReplicaCopy"/>.</para>
/// <para><b>Pipelining.</b> The sequencer never waits for replication: each new chunk is added to
/// an in-memory tail and the loops pick it up. The local loop writes everything pending with one
/// fsync; each replica's loop keeps one message in flight and sends everything the replica lacks
/// when it answers (bounded by <see cref="ReplicatorSettings.MaxShipEntries"/> and bytes), so under
/// load a message carries many chunks, and the local fsync and the replicas' run in parallel.</para>
/// <para><b>Replicas that lag or fail.</b> A replica whose message fails keeps being retried with
/// backoff; the primary grain asks <see cref="Unresponsive"/> which ones to remove from the
/// configuration and calls <see cref="Demote"/> once that is stored. A demoted replica (a learner)
/// keeps being shipped to; once it holds the commit index the grain may add it back
/// (<see cref="CaughtUpLearners"/>, <see cref="Promote"/>).</para>
/// <para><b>Replicas behind the log.</b> A replica that needs entries compacted out of the local log
/// is sent a snapshot of the local copy (committed state only) and installs it; shipping then resumes
/// after the snapshot's last entry. Until then it does not count as caught up.</para>
/// <para><b>Deposed.</b> A replica that answers StaleVersion has seen a newer configuration: this
/// primary stops (<see cref="Failed"/> completes) and must never acknowledge anything again.</para>
/// </remarks>
public sealed partial class Replicator
{
    private readonly int _partition;
    private readonly string _self;
    private readonly ulong _version;
    private readonly ReplicaCopy _local;
    private readonly CommitTracker _tracker;
    private readonly Func<string, IReplicaGrain> _endpoint;
    private readonly ReplicatorSettings _settings;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly Action<IReadOnlyList<ApplyResult>> _applied;
    private readonly DEngineMetrics? _metrics;
    // The last index and append instant of each chunk not yet committed, oldest first (for the commit latency).
    private readonly Queue<(ulong Last, long At)> _uncommitted = new();
    private readonly CancellationTokenSource _stop = new();
    private readonly TaskCompletionSource<DEngineException> _failed = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly Dictionary<string, Remote> _remotes = new(StringComparer.Ordinal);
    private readonly List<Entry> _tail = [];
    private readonly List<Entry> _localPending = [];
    private ulong _tailStart;
    private ulong _lastSequenced;
    private ulong _appliedTo;
    private ulong _localDurable;
    private Task _localLoop = Task.CompletedTask;
    private Task _applyLoop = Task.CompletedTask;
    private TaskCompletionSource _wake = new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>Starts replicating configuration version <paramref name="version"/> from <paramref name="local"/>.</summary>
    /// <param name="partition">The partition.</param>
    /// <param name="self">This primary's silo name.</param>
    /// <param name="version">The configuration version (the term of every entry this primary writes).</param>
    /// <param name="local">The primary's own copy; its log is the source of what is shipped.</param>
    /// <param name="replicas">The other replicas of the configuration.</param>
    /// <param name="endpoint">The endpoint of a replica by silo name.</param>
    /// <param name="settings">Timing and batch bounds.</param>
    /// <param name="time">The clock.</param>
    /// <param name="logger">Where problems are reported.</param>
    /// <param name="applied">Called (on the grain's scheduler) with the results of each applied batch, in index order.</param>
    /// <param name="metrics">Where replication lag and commit latency are recorded; null: nowhere.</param>
    public Replicator(int partition, string self, ulong version, ReplicaCopy local, IEnumerable<string> replicas, Func<string, IReplicaGrain> endpoint, ReplicatorSettings settings, TimeProvider time, ILogger logger, Action<IReadOnlyList<ApplyResult>> applied, DEngineMetrics? metrics = null)
    {
        _metrics = metrics;
        _partition = partition;
        _self = self;
        _version = version;
        _local = local;
        _endpoint = endpoint;
        _settings = settings;
        _time = time;
        _logger = logger;
        _applied = applied;
        var position = local.Position;
        _lastSequenced = position.LastIndex;
        _tailStart = position.LastIndex + 1;
        _appliedTo = position.Applied;
        _localDurable = position.LastIndex;
        var others = replicas.Where(r => r != self).Distinct(StringComparer.Ordinal).ToArray();
        _tracker = new CommitTracker(self, [self, .. others], position.CommitIndex, settings.LeaseDuration, time);
        _tracker.LocalDurable(position.LastIndex);
        foreach (var replica in others)
        {
            _remotes[replica] = new Remote(replica, member: true) { Next = position.LastIndex + 1 };
        }
    }

    /// <summary>The configuration version this primary replicates.</summary>
    public ulong Version => _version;

    /// <summary>Everything up to here is committed.</summary>
    public ulong CommitIndex => _tracker.CommitIndex;

    /// <summary>The last index sequenced (appended to the tail; maybe not yet durable anywhere).</summary>
    public ulong LastSequenced => _lastSequenced;

    /// <summary>The replicas of the configuration, this primary included.</summary>
    public IReadOnlyCollection<string> Members => _tracker.Replicas;

    /// <summary>Completes with the reason when this primary must stop: deposed by a newer configuration, or its own log failed.</summary>
    public Task<DEngineException> Failed => _failed.Task;

    /// <summary>True while every other replica acknowledged a message sent within the lease.</summary>
    public bool HoldsLease() => _tracker.HoldsLease();

    /// <summary>The last index applied to the primary's own state machine.</summary>
    public ulong AppliedIndex => _appliedTo;

    /// <summary>The last index the primary's own log holds durably.</summary>
    public ulong LocalDurable => _localDurable;

    /// <summary>Where each replica (members and learners) stands, for status.</summary>
    public IReadOnlyList<ReplicaProgress> Progress() =>
        [.. _remotes.Values.Select(r => new ReplicaProgress(r.Name, r.Member, r.Matched, r.LastError) { Installing = r.Installing, Applied = r.Applied, Install = r.Install })];

    /// <summary>Starts the loops (from a grain turn).</summary>
    public void Start()
    {
        foreach (var remote in _remotes.Values)
        {
            remote.Loop = ShipLoopAsync(remote);
        }
    }

    /// <summary>
    /// Takes the next entries of the log (they continue <see cref="LastSequenced"/>): they go to the
    /// local log and to every replica; their results arrive through the applied callback once committed.
    /// </summary>
    public void Append(IReadOnlyList<Entry> entries)
    {
        if (entries.Count == 0)
        {
            return;
        }
        if (entries[0].Index != _lastSequenced + 1)
        {
            throw new DEngineException(DEngineErrorCode.InvalidArgument, $"Entries starting at {entries[0].Index} do not continue the sequenced log at {_lastSequenced}.", _partition, entries[0].Index);
        }
        if (_failed.Task.IsCompleted)
        {
            throw _failed.Task.Result;
        }
        _tail.AddRange(entries);
        _localPending.AddRange(entries);
        _lastSequenced = entries[^1].Index;
        if (_metrics is not null)
        {
            _uncommitted.Enqueue((_lastSequenced, _time.GetTimestamp()));
        }
        if (_localLoop.IsCompleted)
        {
            _localLoop = LocalLoopAsync();
        }
        Wake();
    }

    /// <summary>Replicas of the configuration that answered nothing for the replica timeout.</summary>
    public IReadOnlyList<string> Unresponsive() => _tracker.Unresponsive(_settings.ReplicaTimeout);

    /// <summary>Learners (replicas outside the configuration) that now hold everything committed.</summary>
    public IReadOnlyList<string> CaughtUpLearners() =>
        [.. _remotes.Values.Where(r => !r.Member && r.Answered && r.LastError is null && r.Installing is null && r.Matched >= _tracker.CommitIndex).Select(r => r.Name)];

    /// <summary>
    /// Call AFTER the configuration without <paramref name="replica"/> is stored (compare-and-swap): it stops
    /// counting for commits and the lease, but is still shipped to, so it can catch up and come back.
    /// </summary>
    public void Demote(string replica)
    {
        if (_remotes.TryGetValue(replica, out var remote) && remote.Member)
        {
            remote.Member = false;
            _tracker.Remove(replica);
            RunCommitted();
        }
    }

    /// <summary>Starts shipping to <paramref name="replica"/> as a learner (not counted for commits).</summary>
    public void AddLearner(string replica)
    {
        if (replica == _self || _remotes.ContainsKey(replica))
        {
            return;
        }
        var remote = new Remote(replica, member: false) { Next = _lastSequenced + 1 };
        _remotes[replica] = remote;
        remote.Loop = ShipLoopAsync(remote);
    }

    /// <summary>
    /// Stops shipping to learner <paramref name="replica"/> and forgets what it acknowledged (a member
    /// is left alone: <see cref="Demote"/> it first). For a learner whose silo is gone for good, or one
    /// retired from the configuration: its copy is then in no configuration and its silo drops it.
    /// </summary>
    public void Forget(string replica)
    {
        if (_remotes.TryGetValue(replica, out var remote) && !remote.Member)
        {
            remote.Forgotten = true;
            _remotes.Remove(replica);
            Wake();
            TrimTail();
        }
    }

    /// <summary>
    /// Starts learner <paramref name="replica"/> over from nothing: what it acknowledged before is
    /// forgotten. For a silo that came back on a new data directory, whose copy lacks what the old
    /// one acknowledged (the primary must not count those acknowledgements as caught up).
    /// </summary>
    public void Reset(string replica)
    {
        Forget(replica);
        AddLearner(replica);
    }

    /// <summary>
    /// Learner <paramref name="replica"/> counts for commits and the lease from now on. Call it BEFORE
    /// storing the configuration that adds it: an index committed between a caught-up check and the
    /// store would otherwise be missing on a member of the new configuration. Counting an extra
    /// replica is always safe; if the store fails, <see cref="Demote"/> it again.
    /// </summary>
    public void Promote(string replica)
    {
        if (_remotes.TryGetValue(replica, out var remote) && !remote.Member)
        {
            _tracker.Add(replica, Math.Max(remote.Matched, _tracker.CommitIndex), remote.LeaseFrom);
            remote.Member = true;
        }
    }

    /// <summary>Stops every loop; nothing is acknowledged after this.</summary>
    public void Stop(DEngineException reason)
    {
        _failed.TrySetResult(reason);
        _stop.Cancel();
        Wake();
    }

    private void Wake()
    {
        var wake = _wake;
        _wake = new(TaskCreationOptions.RunContinuationsAsynchronously);
        wake.TrySetResult();
    }

    private async Task LocalLoopAsync()
    {
        while (_localPending.Count > 0 && !_stop.IsCancellationRequested)
        {
            var batch = _localPending.ToArray();
            _localPending.Clear();
            var commit = _tracker.CommitIndex;
            try
            {
                await Task.Run(() => _local.AppendOwn(_version, batch, commit));
            }
            catch (DEngineException ex)
            {
                // A failed fsync or a newer version on our own copy: nothing after this may be acknowledged.
                Stop(ex.Code == DEngineErrorCode.StaleEpoch ? ex : new DEngineException(DEngineErrorCode.OutcomeUnknown, $"Partition {_partition}: appending to the local log failed ({ex.Detail}); writes in flight may or may not be committed.", _partition, batch[0].Index, ex));
                return;
            }
            _localDurable = batch[^1].Index;
            if (_tracker.LocalDurable(_localDurable))
            {
                RunCommitted();
            }
            TrimTail();
        }
    }

    private async Task ShipLoopAsync(Remote remote)
    {
        var backoff = TimeSpan.FromMilliseconds(50);
        while (!_stop.IsCancellationRequested && !remote.Forgotten)
        {
            if (remote.Answered && remote.Next > _lastSequenced)
            {
                // Nothing new for it: wait for new entries or the heartbeat (an empty message that
                // renews the lease and carries the commit index).
                var wake = _wake.Task;
                using var heartbeat = CancellationTokenSource.CreateLinkedTokenSource(_stop.Token);
                await Task.WhenAny(wake, Task.Delay(_settings.HeartbeatInterval, _time, heartbeat.Token));
                heartbeat.Cancel();
                if (_stop.IsCancellationRequested || remote.Forgotten)
                {
                    return;
                }
                if (wake.IsCompleted && remote.Next > _lastSequenced)
                {
                    continue; // woken for nothing it lacks (e.g. a stop check)
                }
            }
            AppendRequest request;
            try
            {
                request = await BuildRequestAsync(remote);
            }
            catch (DEngineException ex)
            {
                if (await NeedsSnapshotAsync(remote))
                {
                    // What it lacks is compacted out of the local log: it is caught up from a snapshot.
                    if (!await CatchUpFromSnapshotAsync(remote))
                    {
                        return;
                    }
                    continue;
                }
                remote.LastError = ex.Detail;
                LogShipFailed(_partition, remote.Name, ex.Detail);
                await DelayAsync(_settings.ReplicaTimeout);
                continue;
            }
            if (remote.Forgotten)
            {
                return; // forgotten while the message was built
            }
            var sentAt = _time.GetTimestamp();
            AppendResponse response;
            try
            {
                response = await _endpoint(remote.Name).Append(request).WaitAsync(_settings.ReplicaTimeout, _time, _stop.Token);
            }
            catch (OperationCanceledException) when (_stop.IsCancellationRequested)
            {
                return;
            }
            catch (Exception ex)
            {
                remote.LastError = ex.Message;
                LogShipFailed(_partition, remote.Name, ex.Message);
                SampleLag(remote);
                await DelayAsync(backoff);
                backoff = TimeSpan.FromTicks(Math.Min(backoff.Ticks * 2, _settings.HeartbeatInterval.Ticks));
                continue;
            }
            if (remote.Forgotten)
            {
                return;
            }
            backoff = TimeSpan.FromMilliseconds(50);
            remote.Answered = true;
            remote.LastError = null;
            switch (response.Status)
            {
                case AppendStatus.Appended:
                    var matched = request.PrevIndex + (ulong)request.Entries.Length;
                    remote.Matched = Math.Max(remote.Matched, matched);
                    remote.Next = matched + 1;
                    // A replica applies what it knows committed before it answers.
                    remote.Applied = Math.Max(remote.Applied, response.CommitIndex);
                    SampleLag(remote);
                    remote.LeaseFrom = Math.Max(remote.LeaseFrom, sentAt);
                    if (remote.Member && _tracker.Acknowledged(remote.Name, matched, sentAt))
                    {
                        RunCommitted();
                    }
                    TrimTail();
                    break;
                case AppendStatus.Mismatch:
                    // Its committed prefix is ours (committed entries are the same everywhere): go on
                    // from there; what it has beyond is compared entry by entry on the next message.
                    var resume = Math.Min(response.CommitIndex, _lastSequenced) + 1;
                    if (resume >= remote.Next)
                    {
                        // Already sent from after its commit index and still no match: its log and
                        // ours disagree below that (must not happen); report and retry slowly.
                        remote.LastError = $"its log does not hold {request.PrevIndex}/{request.PrevTerm} at or below its commit index {response.CommitIndex}";
                        LogShipFailed(_partition, remote.Name, remote.LastError);
                        await DelayAsync(_settings.HeartbeatInterval);
                    }
                    remote.Next = Math.Min(resume, remote.Next);
                    break;
                case AppendStatus.StaleVersion:
                    Stop(new DEngineException(DEngineErrorCode.StaleEpoch, $"Partition {_partition}: silo '{remote.Name}' has seen configuration version {response.Version}, newer than this primary's {_version}: a newer primary exists. Retry: it answers.", _partition));
                    return;
            }
        }
    }

    /// <summary>The next message for <paramref name="remote"/>: what it lacks from the tail or, if older, from the local log.</summary>
    private async Task<AppendRequest> BuildRequestAsync(Remote remote)
    {
        var next = remote.Next;
        var prev = next - 1;
        Entry[] entries;
        ulong prevTerm;
        if (next >= _tailStart)
        {
            var from = (int)(next - _tailStart);
            var count = 0;
            long bytes = 0;
            while (from + count < _tail.Count && count < _settings.MaxShipEntries && (count == 0 || bytes < _settings.MaxShipBytes))
            {
                bytes += _tail[from + count].CalculateSize();
                count++;
            }
            entries = count == 0 ? [] : [.. _tail.GetRange(from, count)];
            prevTerm = prev >= _tailStart ? _tail[(int)(prev - _tailStart)].Term : await Task.Run(() => _local.TermAt(prev));
        }
        else
        {
            // Older than the tail: the local log has it (the tail is trimmed only below what the
            // local log holds durably) unless it was compacted, which throws.
            var settings = _settings;
            var local = _local;
            (entries, prevTerm) = await Task.Run(() => (local.Read(next, settings.MaxShipEntries, settings.MaxShipBytes).ToArray(), local.TermAt(prev)));
        }
        return new AppendRequest(_partition, _version, _self, prev, prevTerm, entries, Math.Min(_tracker.CommitIndex, prev + (ulong)entries.Length));
    }

    /// <summary>True when the next entry <paramref name="remote"/> needs (or the one before it) is compacted out of the local log.</summary>
    private async Task<bool> NeedsSnapshotAsync(Remote remote)
    {
        var local = _local;
        var baseIndex = await Task.Run(() => local.Position.BaseIndex);
        return remote.Next <= baseIndex;
    }

    /// <summary>
    /// Brings <paramref name="remote"/> past the local log's base with a snapshot of the local copy
    /// (committed state only): asks it to install one and asks again while it answers Installing; then
    /// shipping resumes after the snapshot's last entry. Returns false when this primary must stop
    /// (the replica has seen a newer version) or is stopping.
    /// </summary>
    private async Task<bool> CatchUpFromSnapshotAsync(Remote remote)
    {
        try
        {
            // A checkpoint costs a flush and disk space: take none for a replica that cannot be reached
            // (a removed silo that is still away keeps falling behind the log).
            await _endpoint(remote.Name).Describe().WaitAsync(_settings.ReplicaTimeout, _time, _stop.Token);
        }
        catch (OperationCanceledException) when (_stop.IsCancellationRequested)
        {
            return false;
        }
        catch (Exception ex)
        {
            remote.LastError = ex.Message;
            LogShipFailed(_partition, remote.Name, ex.Message);
            await DelayAsync(_settings.HeartbeatInterval);
            return !_stop.IsCancellationRequested;
        }
        var local = _local;
        SnapshotOffer offer;
        int files;
        remote.Installing = "preparing a snapshot";
        remote.Install = new SnapshotInstallProgress(null, 0, 0, 0);
        try
        {
            (offer, files) = await Task.Run(() =>
            {
                var info = local.SnapshotForReplica();
                var manifest = File.ReadAllBytes(Path.Combine(info.Directory, SnapshotManifest.FileName));
                return (new SnapshotOffer(_partition, Path.GetFileName(info.Directory), info.LastIncluded.Index, info.LastIncluded.Term, info.Metadata.Checksum.ToByteArray(), manifest, info.TotalBytes), SnapshotManifest.Parse(manifest, _partition).Files.Count);
            });
        }
        catch (Exception ex) when (ex is DEngineException or IOException)
        {
            remote.Installing = null;
            remote.Install = null;
            remote.LastError = $"preparing a snapshot failed: {ex.Message}";
            LogShipFailed(_partition, remote.Name, remote.LastError);
            await DelayAsync(_settings.ReplicaTimeout);
            return !_stop.IsCancellationRequested;
        }
        LogSnapshotSending(_partition, remote.Name, offer.Snapshot, offer.Index, offer.Term, offer.TotalBytes, remote.Next);
        var request = new InstallSnapshotRequest(_partition, _version, _self, offer, _settings.ReplicaTimeout / 2);
        var started = _time.GetTimestamp();
        while (!_stop.IsCancellationRequested && !remote.Forgotten)
        {
            remote.Installing = $"installing snapshot {offer.Snapshot}";
            remote.Install = new SnapshotInstallProgress(offer.Snapshot, remote.Install?.BytesDone ?? 0, offer.TotalBytes, files);
            InstallSnapshotResponse response;
            try
            {
                response = await _endpoint(remote.Name).InstallSnapshot(request).WaitAsync(_settings.ReplicaTimeout, _time, _stop.Token);
            }
            catch (OperationCanceledException) when (_stop.IsCancellationRequested)
            {
                return false;
            }
            catch (Exception ex)
            {
                // Failed or timed out: the ship loop decides again (the replica keeps what it fetched).
                remote.Installing = null;
                remote.Install = null;
                remote.LastError = $"installing snapshot {offer.Snapshot} failed: {ex.Message}";
                LogShipFailed(_partition, remote.Name, remote.LastError);
                await DelayAsync(_settings.HeartbeatInterval);
                return !_stop.IsCancellationRequested;
            }
            switch (response.Status)
            {
                case InstallStatus.Installing:
                    remote.Installing = $"installing snapshot {offer.Snapshot}: {response.FetchedBytes}/{offer.TotalBytes} bytes";
                    remote.Install = new SnapshotInstallProgress(offer.Snapshot, response.FetchedBytes, offer.TotalBytes, files);
                    LogSnapshotProgress(_partition, remote.Name, offer.Snapshot, response.FetchedBytes, offer.TotalBytes);
                    break;
                case InstallStatus.StaleVersion:
                    Stop(new DEngineException(DEngineErrorCode.StaleEpoch, $"Partition {_partition}: silo '{remote.Name}' has seen configuration version {response.Position.Version}, newer than this primary's {_version}: a newer primary exists. Retry: it answers.", _partition));
                    return false;
                case InstallStatus.Installed:
                    // It holds the snapshot's last entry, the same as ours (committed): go on from there.
                    remote.Installing = null;
                    remote.Install = null;
                    remote.LastError = null;
                    remote.Answered = true;
                    remote.Matched = Math.Max(remote.Matched, offer.Index);
                    remote.Applied = Math.Max(remote.Applied, response.Position.CommitIndex);
                    remote.Next = offer.Index + 1;
                    LogSnapshotInstalled(_partition, remote.Name, offer.Snapshot, offer.Index, _time.GetElapsedTime(started).TotalSeconds);
                    TrimTail();
                    return true;
            }
        }
        return false;
    }

    /// <summary>Most tail entries kept for a member that does not answer; older ones are read from the local log.</summary>
    private const int MaxTailEntries = 65_536;

    /// <summary>
    /// Drops tail entries that are durable in the local log and that every member has (learners, and
    /// members far behind, read older ones from the log).
    /// </summary>
    private void TrimTail()
    {
        var keepFrom = _localDurable + 1;
        if (_tail.Count <= MaxTailEntries)
        {
            foreach (var remote in _remotes.Values)
            {
                if (remote.Member)
                {
                    keepFrom = Math.Min(keepFrom, remote.Next);
                }
            }
        }
        var drop = (int)Math.Min((ulong)_tail.Count, keepFrom > _tailStart ? keepFrom - _tailStart : 0);
        if (drop > 0)
        {
            _tail.RemoveRange(0, drop);
            _tailStart += (ulong)drop;
        }
    }

    /// <summary>Applies everything committed, one batch at a time, and reports each batch's results in order.</summary>
    private void RunCommitted()
    {
        if (_metrics is not null)
        {
            var commit = _tracker.CommitIndex;
            while (_uncommitted.TryPeek(out var chunk) && chunk.Last <= commit)
            {
                _uncommitted.Dequeue();
                _metrics.Committed(_partition, _time.GetElapsedTime(chunk.At));
            }
        }
        if (_applyLoop.IsCompleted)
        {
            _applyLoop = ApplyLoopAsync();
        }
    }

    private async Task ApplyLoopAsync()
    {
        while (_appliedTo < _tracker.CommitIndex && !_failed.Task.IsCompleted)
        {
            var commit = _tracker.CommitIndex;
            IReadOnlyList<ApplyResult> results;
            try
            {
                results = await Task.Run(() => _local.Commit(commit));
            }
            catch (DEngineException ex)
            {
                Stop(new DEngineException(DEngineErrorCode.StorageFailure, $"Partition {_partition}: applying committed entries failed ({ex.Detail}).", _partition, _appliedTo + 1, ex));
                return;
            }
            _appliedTo = commit;
            if (results.Count > 0)
            {
                _applied(results);
            }
            TrimTail();
        }
    }

    /// <summary>Records how far <paramref name="remote"/> is behind this log, once per message to it.</summary>
    private void SampleLag(Remote remote) =>
        _metrics?.ReplicaLag(_partition, remote.Name, _lastSequenced - Math.Min(remote.Matched, _lastSequenced));

    private async Task DelayAsync(TimeSpan delay)
    {
        try
        {
            await Task.Delay(delay, _time, _stop.Token);
        }
        catch (OperationCanceledException)
        {
            // Stopping.
        }
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "Partition {Partition}: replica {Replica} needs entries from {Next}, compacted out of this log: sending snapshot {Snapshot} (up to {Index}/{Term}, {Bytes} bytes).")]
    private partial void LogSnapshotSending(int partition, string replica, string snapshot, ulong index, ulong term, long bytes, ulong next);

    [LoggerMessage(Level = LogLevel.Information, Message = "Partition {Partition}: replica {Replica} is installing snapshot {Snapshot}: {Bytes}/{Total} bytes fetched.")]
    private partial void LogSnapshotProgress(int partition, string replica, string snapshot, long bytes, long total);

    [LoggerMessage(Level = LogLevel.Information, Message = "Partition {Partition}: replica {Replica} installed snapshot {Snapshot} in {Seconds:0.00} s; shipping resumes after index {Index}.")]
    private partial void LogSnapshotInstalled(int partition, string replica, string snapshot, ulong index, double seconds);

    [LoggerMessage(Level = LogLevel.Debug, Message = "Partition {Partition}: shipping to replica {Replica} failed ({Reason}); retrying.")]
    private partial void LogShipFailed(int partition, string replica, string reason);

    private sealed class Remote(string name, bool member)
    {
        public string Name { get; } = name;

        /// <summary>True while the replica is in the configuration (counts for commits and the lease).</summary>
        public bool Member { get; set; } = member;

        /// <summary>The next index to send.</summary>
        public ulong Next { get; set; }

        /// <summary>The highest index it acknowledged holding durably.</summary>
        public ulong Matched { get; set; }

        /// <summary>Whether it answered at least once (the first message goes out at once).</summary>
        public bool Answered { get; set; }

        /// <summary>Send instant of the newest message it acknowledged.</summary>
        public long LeaseFrom { get; set; }

        public string? LastError { get; set; }

        /// <summary>Set by <see cref="Forget"/>: its loop ends and nothing it answers counts.</summary>
        public bool Forgotten { get; set; }

        /// <summary>What a snapshot install to it is doing now (for status), or null when none runs.</summary>
        public string? Installing { get; set; }

        /// <summary>The same install's progress as fields, or null when none runs.</summary>
        public SnapshotInstallProgress? Install { get; set; }

        /// <summary>The highest commit index it acknowledged (it applies up to there before answering).</summary>
        public ulong Applied { get; set; }

        public Task Loop { get; set; } = Task.CompletedTask;
    }
}

/// <summary>Where one replica stands, as the primary sees it.</summary>
/// <param name="Silo">The replica's silo.</param>
/// <param name="Member">True when it is in the configuration; false for a learner catching up.</param>
/// <param name="Matched">The highest index it acknowledged.</param>
/// <param name="LastError">Why the last message to it failed, or null.</param>
[global::Orleans.GenerateSerializer, global::Orleans.Immutable, global::Orleans.Alias("dengine.ReplicaProgress")]
public sealed record ReplicaProgress(
    [property: global::Orleans.Id(0)] string Silo,
    [property: global::Orleans.Id(1)] bool Member,
    [property: global::Orleans.Id(2)] ulong Matched,
    [property: global::Orleans.Id(3)] string? LastError)
{
    /// <summary>What a snapshot install to it is doing now ("installing snapshot …: bytes"), or null when none runs.</summary>
    [global::Orleans.Id(4)]
    public string? Installing { get; init; }

    /// <summary>The last index it reported applied (the commit index it acknowledged).</summary>
    [global::Orleans.Id(5)]
    public ulong Applied { get; init; }

    /// <summary>The snapshot install rebuilding it, as fields (bytes fetched of total, files), or null when none runs.</summary>
    [global::Orleans.Id(6)]
    public SnapshotInstallProgress? Install { get; init; }
}
