using DEngine.Protos.Storage;
using DEngine.StateMachine.Snapshots;
using Google.Protobuf;
using RocksDbSharp;

namespace DEngine.StateMachine;

/// <summary>Snapshots: create (checkpoint + manifest), list, retention, policy and crash-safe install.</summary>
public sealed partial class RocksDbStateMachine
{
    /// <summary>The install steps at which <see cref="FaultInjector"/> is called, in order.</summary>
    internal static readonly string[] InstallSteps =
    [
        "after-copy",           // files are in db-{g+1}.tmp; nothing else changed
        "after-prepare",        // db-{g+1} is complete (label checked, metadata written); the old database still serves
        "after-close",          // serving stopped, old database closed
        "after-pointer-write",  // CURRENT-DB.tmp names db-{g+1} and is synced; CURRENT-DB still names db-{g}
        "after-pointer-rename", // CURRENT-DB names db-{g+1}
        "after-reopen",         // db-{g+1} is open as the live database; db-{g} not yet deleted
    ];

    /// <summary>
    /// Test hook: called with each step name of <see cref="InstallSteps"/> during an install. An exception
    /// it throws is handled like a real failure at that step.
    /// </summary>
    internal Action<string>? FaultInjector { get; set; }

    /// <summary>The directory holding this partition's snapshots.</summary>
    public string SnapshotsPath => _layout.SnapshotsPath;

    /// <summary>
    /// True when <see cref="RocksDbStateMachineOptions.SnapshotEveryEntries"/> entries have been applied
    /// since the last snapshot (taken or installed).
    /// </summary>
    public bool ShouldSnapshot()
    {
        var applied = LastApplied.Index;
        var last = SnapshotMetadata?.LastIncluded?.Index ?? 0;
        return SnapshotPolicy.IsDue(applied > last ? applied - last : 0, _options.SnapshotEveryEntries);
    }

    /// <summary>
    /// Takes a snapshot: a RocksDB checkpoint (hard links where possible) of exactly the applied state,
    /// labelled <c>snapshot-{index}-{term}</c> with the last applied entry, plus its
    /// <see cref="SnapshotManifest"/>. The memtables are flushed first while writes continue; writes
    /// then wait only for the checkpoint call itself (links plus a copy of the WAL written since the
    /// flush); hashing runs after. The snapshot becomes visible complete (temp directory renamed), its metadata is persisted,
    /// and all but the newest <see cref="RocksDbStateMachineOptions.SnapshotsToKeep"/> snapshots are deleted.
    /// Works while the machine is stopped (not while it is closed).
    /// </summary>
    public SnapshotInfo CreateSnapshot()
    {
        lock (_snapshotGate)
        {
            var snapshots = _layout.SnapshotsPath;
            DurableFiles.CreateDirectoryDurably(snapshots);
            // Write the memtables out while writes continue; the checkpoint below (which holds
            // writes) then only copies the little WAL written since, or flushes that little.
            Flush();
            LogPosition label;
            string temp;
            lock (_applyGate)
            {
                using var _ = EnterUse();
                label = ReadPosition();
                temp = Path.Combine(snapshots, SnapshotName.Format(label) + ".tmp");
                DurableFiles.DeleteIfExists(temp);
                try
                {
                    using var checkpoint = _db!.Checkpoint();
                    // Below the limit the checkpoint copies the WAL written since the flush above
                    // (replayed when the snapshot is opened) instead of flushing again while writes wait.
                    checkpoint.Save(temp, _options.SnapshotWalBytesWithoutFlush);
                }
                catch (RocksDbException ex)
                {
                    DurableFiles.DeleteIfExists(temp);
                    throw new DEngineException(DEngineErrorCode.StorageFailure, $"RocksDB could not create a checkpoint in '{temp}' ({ex.Message}). Check disk space and the data directory.", PartitionId, label.Index, ex);
                }
            }

            var final = Path.Combine(snapshots, SnapshotName.Format(label));
            if (Directory.Exists(final))
            {
                // Nothing was applied since the snapshot at this position: it is the same state.
                DurableFiles.DeleteIfExists(temp);
                var existing = Describe(final) ?? throw new DEngineException(DEngineErrorCode.StorageFailure, $"'{final}' exists but has no readable {SnapshotManifest.FileName}; delete it and retry.", PartitionId);
                PersistSnapshotMetadata(existing.Metadata);
                return existing;
            }

            var manifest = SnapshotManifest.Build(temp, label);
            var bytes = manifest.ToBytes();
            foreach (var file in manifest.Files)
            {
                DurableFiles.SyncFile(Path.Combine(temp, file.Name)); // mutation: snapshot-file-sync
            }
            DurableFiles.WriteAndSync(Path.Combine(temp, SnapshotManifest.FileName), bytes); // mutation: manifest-sync
            DurableFiles.SyncDirectory(temp); // mutation: snapshot-dir-sync
            Directory.Move(temp, final);
            DurableFiles.SyncDirectory(snapshots); // mutation: snapshot-rename-sync

            var metadata = new SnapshotMetadata
            {
                LastIncluded = label.ToLogId(),
                Checksum = ByteString.CopyFrom(SnapshotManifest.Checksum(bytes)),
            };
            PersistSnapshotMetadata(metadata);
            DeleteOldSnapshots();
            return new SnapshotInfo(final, metadata, manifest.Files.Count, manifest.TotalBytes);
        }
    }

    /// <inheritdoc />
    public void PersistSnapshotMetadata(SnapshotMetadata metadata)
    {
        ArgumentNullException.ThrowIfNull(metadata);
        lock (_applyGate)
        {
            using var _ = EnterUse();
            _db!.Put(SnapshotMetadataKey, metadata.ToByteArray(), _meta, _syncWrite);
            Volatile.Write(ref _snapshotMetadata, metadata.Clone());
        }
    }

    /// <summary>The complete snapshots on disk, oldest first (by index, then term).</summary>
    public IReadOnlyList<SnapshotInfo> ListSnapshots()
    {
        var snapshots = _layout.SnapshotsPath;
        if (!Directory.Exists(snapshots))
        {
            return [];
        }
        var found = new List<SnapshotInfo>();
        foreach (var directory in Directory.EnumerateDirectories(snapshots))
        {
            if (SnapshotName.TryParse(Path.GetFileName(directory), out _) && Describe(directory) is { } info)
            {
                found.Add(info);
            }
        }
        return found.OrderBy(s => s.LastIncluded.Index).ThenBy(s => s.LastIncluded.Term).ToList();
    }

    /// <summary>Reads a snapshot's manifest into a <see cref="SnapshotInfo"/>; null when it has none or it is unreadable.</summary>
    private SnapshotInfo? Describe(string directory)
    {
        byte[] bytes;
        try
        {
            bytes = File.ReadAllBytes(Path.Combine(directory, SnapshotManifest.FileName));
        }
        catch (IOException)
        {
            return null;
        }
        SnapshotManifest manifest;
        try
        {
            manifest = SnapshotManifest.Parse(bytes, PartitionId);
        }
        catch (DEngineException)
        {
            return null;
        }
        var metadata = new SnapshotMetadata
        {
            LastIncluded = manifest.LastIncluded.ToLogId(),
            Checksum = ByteString.CopyFrom(SnapshotManifest.Checksum(bytes)),
        };
        return new SnapshotInfo(directory, metadata, manifest.Files.Count, manifest.TotalBytes);
    }

    private void DeleteOldSnapshots()
    {
        var all = ListSnapshots();
        foreach (var old in all.Take(Math.Max(0, all.Count - _options.SnapshotsToKeep)))
        {
            try
            {
                DurableFiles.DeleteIfExists(old.Directory);
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
            {
                // Retention is best effort; the next snapshot tries again.
            }
        }
    }

    /// <summary>
    /// Replaces the whole state with the snapshot in <paramref name="snapshotDirectory"/>.
    /// </summary>
    /// <remarks>
    /// <para>Verifies first (<see cref="SnapshotManifest.Verify"/> against <paramref name="metadata"/>'s
    /// checksum and label): on failure nothing is touched. A snapshot whose last included index is below
    /// the applied index is refused unless <paramref name="force"/>. A snapshot older than the local data
    /// by (last applied term, applied index) — the local copy has entries of a newer epoch, or more of the
    /// same epoch — is refused even with <paramref name="force"/>: it would replace newer data with older
    /// (e.g. an empty copy claimed after a configuration record was lost). Only
    /// <paramref name="replaceNewerData"/>, an operator's explicit decision that no automatic path sets,
    /// installs it anyway.</para>
    /// <para>The files go into a new generation directory (hard links for immutable SST/blob files when on
    /// the same file system, synced copies otherwise), which is opened once to check that the data's
    /// applied position equals the label and to store <paramref name="metadata"/>. Only then do reads stop
    /// (NotServing), the old database close and the pointer file switch atomically to the new generation,
    /// which is opened and served; the old generation is deleted. A crash at any instant leaves the pointer
    /// naming either the complete old or the complete new generation; a failure in this process before
    /// the old generation is deleted rolls back to it and keeps serving it.</para>
    /// <para>Applies wait for the whole install; reads wait or get NotServing only during the switch.</para>
    /// </remarks>
    /// <exception cref="DEngineException">SnapshotRejected when verification fails or the snapshot is older; StorageFailure on I/O errors (the old state is kept).</exception>
    public void InstallSnapshot(string snapshotDirectory, SnapshotMetadata metadata, bool force = false, bool replaceNewerData = false)
    {
        ArgumentException.ThrowIfNullOrEmpty(snapshotDirectory);
        ArgumentNullException.ThrowIfNull(metadata);
        if (metadata.LastIncluded is null)
        {
            throw new DEngineException(DEngineErrorCode.SnapshotRejected, "The snapshot metadata has no last_included position; nothing was installed.", PartitionId);
        }
        var label = new LogPosition(metadata.LastIncluded.Index, metadata.LastIncluded.Term);
        lock (_snapshotGate)
        {
            SnapshotManifest manifest;
            try
            {
                manifest = SnapshotManifest.Verify(snapshotDirectory, metadata.Checksum.Span, PartitionId);
            }
            catch (DEngineException ex) when (ex.Code == DEngineErrorCode.SnapshotRejected)
            {
                throw new DEngineException(DEngineErrorCode.SnapshotRejected, ex.Detail + " Nothing was installed; the live data is unchanged.", PartitionId, label.Index, ex);
            }
            catch (IOException ex)
            {
                throw new DEngineException(DEngineErrorCode.SnapshotRejected, $"The snapshot in '{snapshotDirectory}' cannot be read ({ex.Message}). Nothing was installed; the live data is unchanged.", PartitionId, label.Index, ex);
            }
            if (manifest.LastIncluded != label)
            {
                throw new DEngineException(DEngineErrorCode.SnapshotRejected, $"The manifest says the snapshot ends at {manifest.LastIncluded} but the metadata says {label}. Nothing was installed; the live data is unchanged.", PartitionId, label.Index);
            }

            lock (_applyGate)
            {
                long old;
                using (EnterUse())
                {
                    var applied = ReadPosition();
                    if (!replaceNewerData && label.IsOlderThan(applied))
                    {
                        throw new DEngineException(DEngineErrorCode.SnapshotRejected, $"The snapshot ends at {label}, older than the local data at {applied} (by term, then index): installing it would replace newer data with older. Nothing was installed; the live data is unchanged. Only an operator's explicit request (replaceNewerData) installs it.", PartitionId, label.Index);
                    }
                    if (label.Index < applied.Index && !force && !replaceNewerData)
                    {
                        throw new DEngineException(DEngineErrorCode.SnapshotRejected, $"The snapshot ends at {label}, before the applied position {applied}; installing it would go back in time. Pass force to install it anyway. Nothing was installed.", PartitionId, label.Index);
                    }
                    old = _generation;
                }
                var next = old + 1;
                PrepareGeneration(snapshotDirectory, manifest, metadata, next);
                SwitchGeneration(old, next, label, metadata);
            }
        }
    }

    /// <summary>Builds <c>db-{next}</c> from the snapshot: files, then a check of the label and the metadata, all before anything live changes.</summary>
    private void PrepareGeneration(string snapshotDirectory, SnapshotManifest manifest, SnapshotMetadata metadata, long next)
    {
        var preparing = _layout.PreparingPath(next);
        var final = _layout.GenerationPath(next);
        try
        {
            DurableFiles.DeleteIfExists(preparing);
            DurableFiles.DeleteIfExists(final);
            Directory.CreateDirectory(preparing);
            foreach (var file in manifest.Files)
            {
                var relative = file.Name.Replace('/', Path.DirectorySeparatorChar);
                var source = Path.Combine(snapshotDirectory, relative);
                var target = Path.Combine(preparing, relative);
                Directory.CreateDirectory(Path.GetDirectoryName(target)!);
                if (IsImmutable(file.Name))
                {
                    // A link shares the source's inode, whose data may never have been fsynced (a
                    // fetch only writes): sync it, or a power cut after the switch loses it.
                    if (DurableFiles.LinkOrCopy(source, target))
                    {
                        DurableFiles.SyncFile(target); // mutation: installed-file-sync
                    }
                }
                else
                {
                    // RocksDB may rewrite or append to the others, which must not reach the snapshot's copy.
                    File.Copy(source, target);
                    DurableFiles.SyncFile(target); // mutation: installed-copy-sync
                }
            }
            // No directory sync here: the check-open below writes a new MANIFEST and CURRENT into
            // this directory, and RocksDB fsyncs the directory when it sets CURRENT, which makes the
            // links and copies above durable too (with an explicit sync here, removing it failed no power-cut test).
            Fault("after-copy");

            var label = metadata.LastIncluded;
            using (var db = OpenRocks(preparing))
            {
                var meta = db.GetColumnFamily(MetaFamily);
                var contained = new LogPosition(ReadU64(db.Get(LastAppliedIndexKey, meta)), ReadU64(db.Get(LastAppliedTermKey, meta)));
                if (contained != new LogPosition(label.Index, label.Term))
                {
                    throw new DEngineException(DEngineErrorCode.SnapshotRejected, $"The snapshot's data ends at {contained} but it is labelled {{index {label.Index}, term {label.Term}}}. Nothing was installed; the live data is unchanged.", PartitionId, label.Index);
                }
                db.Put(SnapshotMetadataKey, metadata.ToByteArray(), meta, _syncWrite);
            }
            Directory.Move(preparing, final);
            // Not synced on its own: the generation is used only once CURRENT-DB names it, and the
            // sync of this same directory after the CURRENT-DB rename makes both renames durable.
            Fault("after-prepare");
        }
        catch (Exception ex)
        {
            DeleteQuietly(preparing);
            DeleteQuietly(final);
            if (ex is DEngineException)
            {
                throw;
            }
            throw new DEngineException(DEngineErrorCode.StorageFailure, $"Preparing the snapshot's database in '{final}' failed ({ex.Message}). Nothing was installed; the live data is unchanged.", PartitionId, metadata.LastIncluded.Index, ex);
        }
    }

    /// <summary>Stops serving, switches the pointer from <paramref name="old"/> to <paramref name="next"/>, opens it, and resumes; rolls back to <paramref name="old"/> on any failure.</summary>
    private void SwitchGeneration(long old, long next, LogPosition label, SnapshotMetadata metadata)
    {
        var wasServing = _serving;
        _serving = false; // new reads answer NotServing
        _lifecycle.EnterWriteLock(); // waits for reads in flight
        try
        {
            try
            {
                Close();
                Fault("after-close");
                _layout.WritePointer(next, Fault);
                Volatile.Write(ref _generation, next);
                Open();
                Fault("after-reopen");
                if (ReadPosition() != label || !Equals(SnapshotMetadata, metadata))
                {
                    throw new DEngineException(DEngineErrorCode.SnapshotRejected, $"After the switch the database is at {ReadPosition()}, not at the snapshot's {label}. Rolled back to the previous state.", PartitionId, label.Index);
                }
            }
            catch (Exception ex)
            {
                RollBack(old, next);
                if (ex is DEngineException)
                {
                    throw;
                }
                throw new DEngineException(DEngineErrorCode.StorageFailure, $"Switching to the snapshot's database failed ({ex.Message}). Rolled back: the previous state is served unchanged.", PartitionId, label.Index, ex);
            }
            // Not synced: if a power cut brings the old generation back, the next open deletes every
            // generation CURRENT-DB does not name. (The switch itself was made durable by the sync
            // after the CURRENT-DB rename.)
            DeleteGenerationQuietly(old);
        }
        finally
        {
            _serving = wasServing;
            _lifecycle.ExitWriteLock();
        }
    }

    private void RollBack(long old, long next)
    {
        Close();
        _layout.WritePointer(old);
        Volatile.Write(ref _generation, old);
        Open();
        DeleteGenerationQuietly(next);
    }

    private void Fault(string step) => FaultInjector?.Invoke(step);

    private static bool IsImmutable(string name) =>
        name.EndsWith(".sst", StringComparison.Ordinal) || name.EndsWith(".blob", StringComparison.Ordinal);

    private static void DeleteQuietly(string path)
    {
        try
        {
            DurableFiles.DeleteIfExists(path);
        }
        catch (IOException)
        {
        }
        catch (UnauthorizedAccessException)
        {
        }
    }
}
