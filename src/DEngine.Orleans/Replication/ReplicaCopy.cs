using DEngine.Protos.Common;
using DEngine.StateMachine;
using DEngine.StateMachine.Replication;
using DEngine.StateMachine.Snapshots;

namespace DEngine.Orleans.Replication;

/// <summary>
/// One silo's copy of a partition in a replica group: its durable <see cref="ReplicatedLog"/> and the
/// state machine that holds exactly the committed prefix of that log. The primary and the replicas
/// use the same class; only who feeds it differs (the primary appends what it sequenced, a replica
/// what the primary shipped).
/// </summary>
/// <remarks>
/// <para><b>The rules it keeps</b> (DESIGN.md "Replication"):</para>
/// <list type="bullet">
/// <item>The log is durable before anything is acknowledged: <see cref="Append"/> and
/// <see cref="AppendOwn"/> return once the entries are fsynced in the log.</item>
/// <item>Only committed entries reach the state machine. The commit index comes from the primary
/// (on every message, or from the primary's own tracker), and an entry at or below it is identical on
/// every replica of the configuration, so applying it is deterministic everywhere. An entry above
/// the commit index may still be replaced (a new primary lacked it): it was never applied, so there
/// is nothing to undo.</item>
/// <item>(index, term) names one entry: a term is a configuration version, and a version has one
/// primary (the configuration store's compare-and-swap), which numbers its entries once. So an
/// entry the replica holds with the same index and term as the primary's is the same entry; one
/// with another term is an uncommitted suffix, cut off before the primary's entries are appended.</item>
/// <item>A message of a lower configuration version than the highest seen is refused
/// (<see cref="AppendStatus.StaleVersion"/>): a deposed primary can never again gather
/// acknowledgements from this copy, so it can neither commit nor hold a read lease. The highest
/// version seen is stored durably (a small file next to the log) before anything of that version is
/// acknowledged, so a restart does not forget it.</item>
/// <item>The state machine is not fsynced by apply (the engine runs with Relaxed durability): after a
/// crash it comes back at some applied index, and the constructor replays the committed log from
/// there. The log forgets entries only up to what a <see cref="IStateMachine.SyncWal"/> made durable
/// in the state machine (<see cref="CompactIfDue"/>).</item>
/// </list>
/// <para>Thread safety: every member takes one lock, so the replica endpoint and a local primary
/// never interleave inside an append or an apply.</para>
/// </remarks>
public sealed class ReplicaCopy : IDisposable
{
    /// <summary>Most entries handed to the state machine in one apply call while catching up.</summary>
    public const int MaxApplyEntries = 4096;

    /// <summary>About the most bytes handed to the state machine in one apply call while catching up.</summary>
    public const long MaxApplyBytes = 16L << 20;

    private readonly object _gate = new();
    private readonly IStateMachine _engine;
    private readonly ReplicatedLog _log;
    private readonly ulong _compactEvery;
    private readonly Action<IStateMachine> _closeEngine;
    private readonly string? _versionFile;
    private readonly TimeProvider _time;
    private ulong _version;
    private ulong _appliedSinceCompaction;
    private Task _snapshotTask = Task.CompletedTask;
    private long _lastAcknowledgedAt;

    /// <summary>
    /// Takes over <paramref name="engine"/> and <paramref name="log"/> (both disposed with this copy)
    /// and replays every committed entry the state machine lacks.
    /// </summary>
    /// <param name="partition">The partition (for errors).</param>
    /// <param name="engine">The state machine; opened with Relaxed durability, its reads live.</param>
    /// <param name="log">The replica's durable log.</param>
    /// <param name="compactEvery">Applied entries between two log compactions (each costs one state-machine fsync).</param>
    /// <param name="versionFile">Where the highest version seen is kept durably; null keeps it in memory only (tests).</param>
    /// <param name="time">The clock of <see cref="LastAcknowledgedAt"/>.</param>
    /// <param name="closeEngine">Closes the engine on <see cref="Dispose"/> (default: dispose it).</param>
    public ReplicaCopy(int partition, IStateMachine engine, ReplicatedLog log, ulong compactEvery = 65_536, string? versionFile = null, TimeProvider? time = null, Action<IStateMachine>? closeEngine = null)
    {
        ArgumentNullException.ThrowIfNull(engine);
        ArgumentNullException.ThrowIfNull(log);
        Partition = partition;
        _engine = engine;
        _log = log;
        _compactEvery = Math.Max(1, compactEvery);
        _versionFile = versionFile;
        _time = time ?? TimeProvider.System;
        _closeEngine = closeEngine ?? (e => e.Dispose());
        // Before this open the copy may have acknowledged a primary an instant ago: count the open as
        // an acknowledgement, so a new primary waits out a lease that may still run.
        _lastAcknowledgedAt = _time.GetTimestamp();
        _version = Math.Max(Math.Max(log.Last.Term, engine.LastApplied.Term), ReadVersion(versionFile, partition));
        var applied = engine.LastApplied;
        if (applied.Index >= log.Base.Index && !log.Contains(applied))
        {
            // The log does not hold the state machine's last entry: data written before this partition
            // was replicated, or a snapshot installed (InstallSnapshot) and a crash before the log was
            // reset. Everything the log held past the divergence was never committed (the snapshot is
            // committed state, and a committed entry is the same in every log), so the log restarts
            // at the state machine: the copy is the installed one, never a mix.
            log.Reset(applied);
        }
        lock (_gate)
        {
            ApplyCommitted();
        }
    }

    /// <summary>The partition.</summary>
    public int Partition { get; }

    /// <summary>The state machine (committed state only). Reads may use it directly.</summary>
    public IStateMachine Engine => _engine;

    /// <summary>The highest configuration version this copy has seen; messages below it are refused.</summary>
    public ulong Version
    {
        get
        {
            lock (_gate)
            {
                return _version;
            }
        }
    }

    /// <summary>
    /// When this copy last acknowledged a primary's message (a <see cref="TimeProvider.GetTimestamp"/>
    /// value; the open counts as one). A primary's lease depends on this copy's acknowledgements, so
    /// once this copy is promoted past it, that primary's lease ends at most a lease after this instant.
    /// </summary>
    public long LastAcknowledgedAt
    {
        get
        {
            lock (_gate)
            {
                return _lastAcknowledgedAt;
            }
        }
    }

    /// <summary>Where the log and the state machine stand.</summary>
    public CopyPosition Position
    {
        get
        {
            lock (_gate)
            {
                return new CopyPosition(_version, _log.Last.Index, _log.Last.Term, _log.CommitIndex, _engine.LastApplied.Index, _log.Base.Index);
            }
        }
    }

    /// <summary>
    /// Raises the version this copy accepts to <paramref name="version"/> (a new primary does this to
    /// its own copy first: from then on the old primary gets no acknowledgement from it). Returns false,
    /// changing nothing, when a version at least as high was already seen.
    /// </summary>
    public bool Promote(ulong version)
    {
        lock (_gate)
        {
            if (version <= _version)
            {
                return false;
            }
            RaiseVersion(version);
            return true;
        }
    }

    /// <summary>
    /// A replica's side of replication: checks the sender's version and that the entries continue
    /// this log, cuts off an uncommitted suffix the primary does not have, appends the rest durably and
    /// applies up to the commit index. Throws a <see cref="DEngineException"/> for a malformed request
    /// (non-contiguous entries) or a failed append; the log is unchanged then.
    /// </summary>
    public AppendResponse Append(AppendRequest request)
    {
        ArgumentNullException.ThrowIfNull(request);
        lock (_gate)
        {
            if (request.Version < _version)
            {
                return Answer(AppendStatus.StaleVersion);
            }
            var entries = request.Entries ?? [];
            for (var i = 0; i < entries.Length; i++)
            {
                if (entries[i] is null || entries[i].Index != request.PrevIndex + 1 + (ulong)i || entries[i].Term > request.Version)
                {
                    throw new DEngineException(DEngineErrorCode.InvalidArgument, $"A replication message from '{request.Primary}' (version {request.Version}) has entries that do not continue index {request.PrevIndex} one by one, or carry a term above the sender's version; nothing was appended.", Partition, request.PrevIndex + 1 + (ulong)i);
                }
            }
            if (request.Version > _version)
            {
                RaiseVersion(request.Version);
            }
            if (!Holds(request.PrevIndex, request.PrevTerm))
            {
                return Answer(AppendStatus.Mismatch);
            }
            var skip = 0;
            while (skip < entries.Length && entries[skip].Index <= _log.Last.Index)
            {
                var entry = entries[skip];
                if (entry.Index > _log.Base.Index && _log.TermAt(entry.Index) != entry.Term)
                {
                    // From here this log holds entries the primary does not: a suffix that was never
                    // committed (a commit index never passes a point where replicas differ), so never applied.
                    _log.TruncateAfter(entry.Index - 1);
                    break;
                }
                skip++;
            }
            // What this log shares with the primary ends at the last entry the request covered; the
            // primary's commit index says nothing about anything past that.
            var commit = Math.Min(request.CommitIndex, request.PrevIndex + (ulong)entries.Length);
            if (skip < entries.Length)
            {
                _log.Append(new ArraySegment<Entry>(entries, skip, entries.Length - skip), commit);
            }
            else if (commit > _log.CommitIndex)
            {
                // A commit index alone need not be durable: after a crash the next message brings it again.
                _log.RecordCommit(commit, sync: false);
            }
            ApplyCommitted();
            _lastAcknowledgedAt = _time.GetTimestamp();
            return Answer(AppendStatus.Appended);
        }
    }

    /// <summary>
    /// The primary's side: appends entries it just sequenced under <paramref name="version"/>
    /// durably. Throws StaleEpoch, appending nothing, when this copy has seen a higher version (a new
    /// primary exists), and InvalidArgument when the entries do not continue the log.
    /// </summary>
    public void AppendOwn(ulong version, IReadOnlyList<Entry> entries, ulong commitIndex)
    {
        ArgumentNullException.ThrowIfNull(entries);
        lock (_gate)
        {
            if (version != _version)
            {
                throw new DEngineException(DEngineErrorCode.StaleEpoch, $"This copy has seen configuration version {_version}; a primary of version {version} may no longer append. Retry: the current primary answers.", Partition);
            }
            if (entries.Count > 0 && entries[0].Index != _log.Last.Index + 1)
            {
                throw new DEngineException(DEngineErrorCode.InvalidArgument, $"Entries starting at {entries[0].Index} do not continue the log, which ends at {_log.Last.Index}.", Partition, entries[0].Index);
            }
            _log.Append(entries, Math.Min(commitIndex, _log.Last.Index + (ulong)entries.Count));
        }
    }

    /// <summary>
    /// Records that everything up to <paramref name="commitIndex"/> is committed (the primary's commit
    /// rule decided it) and applies it. Returns the results of the entries applied by this call, in
    /// order (none when nothing new was committed).
    /// </summary>
    public IReadOnlyList<ApplyResult> Commit(ulong commitIndex)
    {
        lock (_gate)
        {
            var commit = Math.Min(commitIndex, _log.Last.Index);
            if (commit > _log.CommitIndex)
            {
                _log.RecordCommit(commit, sync: false);
            }
            return ApplyCommitted();
        }
    }

    /// <summary>
    /// Entries of this log from <paramref name="fromIndex"/> (for a replica being caught up, or a new
    /// primary taking the longest log). Throws the log's "compacted" error when they are gone: the
    /// caller needs a snapshot then.
    /// </summary>
    public IReadOnlyList<Entry> Read(ulong fromIndex, int maxEntries, long maxBytes)
    {
        lock (_gate)
        {
            return _log.Read(fromIndex, maxEntries, maxBytes);
        }
    }

    /// <summary>The term of the entry at <paramref name="index"/> in this log (the base's term at the base).</summary>
    public ulong TermAt(ulong index)
    {
        lock (_gate)
        {
            return _log.TermAt(index);
        }
    }

    /// <summary>
    /// A replica's first step of a snapshot install: checks the sender's version exactly like
    /// <see cref="Append"/> (StaleVersion, nothing changed, when a higher one was seen; a higher one is
    /// stored durably) and whether the copy needs the snapshot at all. Returns the answer when it does
    /// not (refused, or this log already holds <paramref name="snapshot"/>'s entry: then everything up
    /// to it is committed and applied here, and the primary ships from after it); null when the
    /// snapshot must be fetched and installed.
    /// </summary>
    public AppendResponse? BeginInstall(ulong version, LogPosition snapshot)
    {
        lock (_gate)
        {
            return CheckInstallLocked(version, snapshot);
        }
    }

    /// <summary>
    /// Installs the fetched snapshot in <paramref name="directory"/> (its metadata: last included entry
    /// and manifest checksum) as this copy's state, after checking the version again (a newer primary
    /// may have arrived during the fetch): the engine's install verifies the files and switches to them
    /// atomically, then the log restarts durably after the snapshot's last entry. A crash between the
    /// two leaves the new engine and the old log, which the next open resolves to the new copy (see the
    /// constructor). Throws (the copy unchanged) when the snapshot fails verification or is older than
    /// the local state.
    /// </summary>
    public AppendResponse InstallSnapshot(ulong version, string directory, Protos.Storage.SnapshotMetadata metadata)
    {
        ArgumentNullException.ThrowIfNull(metadata);
        if (metadata.LastIncluded is null)
        {
            throw new DEngineException(DEngineErrorCode.SnapshotRejected, "The snapshot metadata has no last_included position; nothing was installed.", Partition);
        }
        var label = new LogPosition(metadata.LastIncluded.Index, metadata.LastIncluded.Term);
        lock (_gate)
        {
            if (CheckInstallLocked(version, label) is { } answer)
            {
                return answer;
            }
            WaitForSnapshot();
            _engine.InstallSnapshot(directory, metadata);
            _log.Reset(label);
            _appliedSinceCompaction = 0;
            return Answer(AppendStatus.Appended);
        }
    }

    /// <summary>
    /// A snapshot of this copy's state machine for a replica that needs entries the log no longer
    /// holds: the newest existing snapshot whose last entry the log still holds (so the replica can go
    /// on from the log after it; several replicas and retries share it, and an interrupted fetch
    /// resumes), else a fresh one. The state machine holds committed entries only, so does the snapshot.
    /// </summary>
    public SnapshotInfo SnapshotForReplica()
    {
        var existing = _engine.ListSnapshots();
        for (var i = existing.Count - 1; i >= 0; i--)
        {
            lock (_gate)
            {
                if (existing[i].LastIncluded.Index >= _log.Base.Index && _log.Contains(existing[i].LastIncluded))
                {
                    return existing[i];
                }
            }
        }
        return _engine.CreateSnapshot();
    }

    private AppendResponse? CheckInstallLocked(ulong version, LogPosition snapshot)
    {
        if (version < _version)
        {
            return Answer(AppendStatus.StaleVersion);
        }
        if (version > _version)
        {
            RaiseVersion(version);
        }
        if (!Holds(snapshot.Index, snapshot.Term))
        {
            return null;
        }
        // The same entry as the primary's committed one: this log's prefix up to it is committed too.
        var commit = Math.Min(snapshot.Index, _log.Last.Index);
        if (commit > _log.CommitIndex)
        {
            _log.RecordCommit(commit, sync: false);
        }
        ApplyCommitted();
        return Answer(AppendStatus.Appended);
    }

    /// <summary>
    /// Lets the log forget what the state machine holds durably: one state-machine fsync, then the log
    /// is compacted up to the index it covered. Runs after every <c>compactEvery</c> applied entries (also from every apply).
    /// </summary>
    public void CompactIfDue()
    {
        lock (_gate)
        {
            CompactIfDueLocked();
        }
    }

    private void CompactIfDueLocked()
    {
        if (_appliedSinceCompaction < _compactEvery)
        {
            return;
        }
        _appliedSinceCompaction = 0;
        var durable = _engine.SyncWal();
        _log.CompactThrough(Math.Min(durable, _log.CommitIndex));
    }

    /// <inheritdoc />
    public void Dispose()
    {
        lock (_gate)
        {
            WaitForSnapshot();
            _log.Dispose();
            _closeEngine(_engine);
        }
    }

    /// <summary>True when this log holds (index, term), or the index is at or below its base (compacted: committed, so the same everywhere).</summary>
    private bool Holds(ulong index, ulong term)
    {
        if (index > _log.Last.Index)
        {
            return false;
        }
        return index < _log.Base.Index || _log.TermAt(index) == term;
    }

    /// <summary>Stores a higher version durably, then takes it (so no restart forgets a version this copy acted on).</summary>
    private void RaiseVersion(ulong version)
    {
        if (_versionFile is not null)
        {
            DurableFiles.ReplaceAtomically(_versionFile, System.Text.Encoding.ASCII.GetBytes(version.ToString(System.Globalization.CultureInfo.InvariantCulture) + "\n"));
        }
        _version = version;
    }

    private static ulong ReadVersion(string? path, int partition)
    {
        if (path is null || !File.Exists(path))
        {
            return 0;
        }
        var text = File.ReadAllText(path).Trim();
        if (!ulong.TryParse(text, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var version))
        {
            // Written atomically (temp, fsync, rename): damage is a disk problem, not a torn write.
            throw new DEngineException(DEngineErrorCode.StorageFailure, $"The copy's version file {path} is damaged (\"{text}\"); it must name the highest configuration version this copy has seen. Restore it or remove the copy's log directory to rebuild the copy.", partition);
        }
        return version;
    }

    private AppendResponse Answer(AppendStatus status) =>
        new(status, _version, _log.Last.Index, _log.Last.Term, _log.CommitIndex, _log.Base.Index);

    /// <summary>Applies every committed entry the state machine lacks, in bounded chunks; returns their results.</summary>
    private List<ApplyResult> ApplyCommitted()
    {
        var results = new List<ApplyResult>();
        var target = _log.CommitIndex;
        var next = _engine.LastApplied.Index + 1;
        if (next <= target && next <= _log.Base.Index)
        {
            throw new DEngineException(DEngineErrorCode.StorageFailure, $"The state machine is at index {next - 1} but the log starts after {_log.Base.Index}: entries in between are in neither. The copy must be rebuilt from a snapshot.", Partition, next);
        }
        while (next <= target)
        {
            var read = _log.Read(next, MaxApplyEntries, MaxApplyBytes);
            var count = 0;
            while (count < read.Count && read[count].Index <= target)
            {
                count++;
            }
            var chunk = count == read.Count ? read : read.Take(count).ToArray();
            results.AddRange(_engine.ApplyChunk(chunk, ApplyDurability.Deferred));
            next = chunk[^1].Index + 1;
            _appliedSinceCompaction += (ulong)chunk.Count;
        }
        CompactIfDueLocked();
        SnapshotIfDueLocked();
        return results;
    }

    /// <summary>The last failure of this copy's own snapshot policy, or null (the next due apply tries again).</summary>
    public Exception? LastSnapshotFailure { get; private set; }

    /// <summary>The snapshot the copy's own policy is taking, or a completed task (tests wait for it).</summary>
    internal Task SnapshotTask
    {
        get
        {
            lock (_gate)
            {
                return _snapshotTask;
            }
        }
    }

    /// <summary>
    /// Every copy, primary or replica, follows the engine's snapshot policy
    /// (<c>SnapshotEveryEntries</c> applied entries) on its own: a replica that becomes primary has a
    /// recent snapshot to catch others up from, and a replica's restart replays from it. Taken off the
    /// caller's thread (the engine holds writes only for the checkpoint call); at most one at a time.
    /// </summary>
    private void SnapshotIfDueLocked()
    {
        if (!_snapshotTask.IsCompleted || !_engine.ShouldSnapshot())
        {
            return;
        }
        var engine = _engine;
        _snapshotTask = Task.Run(() =>
        {
            try
            {
                engine.CreateSnapshot();
                LastSnapshotFailure = null;
            }
            catch (Exception ex) when (ex is DEngineException or IOException)
            {
                LastSnapshotFailure = ex;
            }
        });
    }

    /// <summary>Waits for the policy's snapshot in progress (before the engine is replaced or closed).</summary>
    private void WaitForSnapshot()
    {
        try
        {
            _snapshotTask.GetAwaiter().GetResult();
        }
        catch (Exception ex) when (ex is DEngineException or IOException or ObjectDisposedException)
        {
            LastSnapshotFailure = ex;
        }
    }
}

/// <summary>Where a copy stands.</summary>
/// <param name="Version">The highest configuration version it has seen.</param>
/// <param name="LastIndex">Its last log entry's index.</param>
/// <param name="LastTerm">That entry's term.</param>
/// <param name="CommitIndex">The highest commit index it knows.</param>
/// <param name="Applied">Its state machine's applied index.</param>
/// <param name="BaseIndex">Its log's base: entries at or below are no longer in the log.</param>
[global::Orleans.GenerateSerializer, global::Orleans.Immutable, global::Orleans.Alias("dengine.CopyPosition")]
public sealed record CopyPosition(
    [property: global::Orleans.Id(0)] ulong Version,
    [property: global::Orleans.Id(1)] ulong LastIndex,
    [property: global::Orleans.Id(2)] ulong LastTerm,
    [property: global::Orleans.Id(3)] ulong CommitIndex,
    [property: global::Orleans.Id(4)] ulong Applied,
    [property: global::Orleans.Id(5)] ulong BaseIndex)
{
    /// <summary>The incarnation of the data directory the copy is in (set by its endpoint), or null.</summary>
    [global::Orleans.Id(6)]
    public string? Incarnation { get; init; }

    /// <summary>The last entry as a position (to compare logs: higher term first, then index).</summary>
    public LogPosition Last => new(LastIndex, LastTerm);
}
