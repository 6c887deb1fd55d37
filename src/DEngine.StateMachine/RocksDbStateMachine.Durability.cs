using DEngine.StateMachine.Snapshots;
using RocksDbSharp;

namespace DEngine.StateMachine;

// Durability: WAL syncs and the durable index they advance, the fence a failed fsync raises, and
// the recovery that leaves it.
public sealed partial class RocksDbStateMachine
{
    /// <summary>
    /// True after a WAL sync failed: the database refuses applies and reads (the page cache may hold
    /// writes that never reach the disk, so what it would read is not proof) until
    /// <see cref="RecoverFromFence"/> succeeds.
    /// </summary>
    public bool IsFenced => _fence is not null;

    /// <inheritdoc />
    public ulong SyncWal()
    {
        ThrowIfFenced();
        using var _ = EnterUse();
        return SyncAndPublish();
    }

    /// <summary>
    /// One fsync of the WAL, then (Synced durability) the read view it covers is published. Callers
    /// hold the lifecycle read lock.
    /// </summary>
    /// <remarks>
    /// The view is fixed before the fsync: RocksDB makes a write visible only after appending it to
    /// the WAL, so everything the snapshot shows is in the WAL's OS buffers and the fsync makes
    /// exactly that durable. Its index is read from the snapshot itself, so index and data match
    /// without holding the apply gate (the apply that runs meanwhile is simply not in this view).
    /// </remarks>
    private ulong SyncAndPublish()
    {
        var view = UsesReadViews ? TakeView() : null;
        var covered = view?.Index ?? ReadPosition().Index;
        try
        {
            Native.Instance.rocksdb_flush_wal(_db!.Handle, 1); // mutation: wal-flush-sync
        }
        catch (RocksDbException ex)
        {
            view?.Release();
            throw Fence(ex, DurableIndex + 1);
        }
        if (view is not null)
        {
            Publish(view);
        }
        else
        {
            AdvanceDurable(covered);
        }
        return covered;
    }

    /// <summary>
    /// Enters the fenced state after a failed fsync and returns the OutcomeUnknown error for the
    /// writers of every chunk above the durable index. On Linux a failed fsync may drop the dirty
    /// pages (marked clean, never written) while reads still see them, and a later fsync succeeds
    /// without writing them: so nothing applied since the last good sync may be acknowledged, served
    /// or counted as durable, whatever a later sync reports.
    /// </summary>
    private DEngineException Fence(Exception cause, ulong firstUnsynced)
    {
        var fence = new DEngineException(
            DEngineErrorCode.OutcomeUnknown,
            $"Syncing the write-ahead log failed ({cause.Message}). Writes from index {firstUnsynced} on may or may not be on disk: their outcome is unknown. The partition stopped serving; it reopens after every file of its database has been synced again. Read the keys then to learn the outcome.",
            PartitionId,
            firstUnsynced,
            cause);
        _fence ??= fence;
        return fence;
    }

    private static bool IsSyncFailure(RocksDbException ex) =>
        ex.Message.Contains("sync", StringComparison.OrdinalIgnoreCase)
        && !ex.Message.Contains("No space", StringComparison.OrdinalIgnoreCase);

    private void ThrowIfFenced()
    {
        if (_fence is { } fence)
        {
            throw new DEngineException(DEngineErrorCode.OutcomeUnknown, fence.Detail, PartitionId, fence.Index, fence);
        }
    }

    /// <summary>
    /// Leaves the fenced state: closes the database, makes every file of the live generation durable
    /// by rewriting it (a copy fsynced and renamed over the original, then the directory synced), and
    /// reopens. Rewriting rather than fsyncing: after a failed fsync the kernel may have marked lost
    /// pages clean, so an fsync of the same file now succeeds without writing them, while a read still
    /// returns them; a copy writes what a read returns, so what the reopened database serves is what
    /// the disk holds. Throws StorageFailure (and stays fenced) when any step fails; call again later.
    /// Does nothing when not fenced.
    /// </summary>
    public void RecoverFromFence()
    {
        lock (_applyGate)
        {
            if (_fence is null)
            {
                return;
            }
            _lifecycle.EnterWriteLock();
            try
            {
                if (_disposed)
                {
                    ThrowIfClosed();
                }
                Close();
                try
                {
                    RewriteDurably(DatabasePath);
                    DurableFiles.SyncDirectory(_path);
                    Open();
                }
                catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or DEngineException)
                {
                    Close();
                    throw new DEngineException(DEngineErrorCode.StorageFailure, $"Re-syncing the database files of '{DatabasePath}' after a failed fsync failed ({ex.Message}). The partition stays fenced; retry later.", PartitionId, inner: ex);
                }
                _writeFailed = false;
                _fence = null;
            }
            finally
            {
                _lifecycle.ExitWriteLock();
            }
        }
    }

    /// <summary>Rewrites every file under <paramref name="directory"/> through a synced copy renamed over it, then syncs each directory.</summary>
    private static void RewriteDurably(string directory)
    {
        foreach (var sub in Directory.GetDirectories(directory))
        {
            RewriteDurably(sub);
        }
        foreach (var file in Directory.GetFiles(directory))
        {
            if (file.EndsWith(".rewrite", StringComparison.Ordinal))
            {
                File.Delete(file); // left by an earlier attempt that failed
                continue;
            }
            var copy = file + ".rewrite";
            using (var source = new FileStream(file, FileMode.Open, FileAccess.Read, FileShare.ReadWrite))
            using (var target = new FileStream(copy, FileMode.Create, FileAccess.Write, FileShare.None))
            {
                source.CopyTo(target);
                target.Flush(flushToDisk: true); // mutation: fence-rewrite-sync
            }
            File.Move(copy, file, overwrite: true);
        }
        DurableFiles.SyncDirectory(directory); // mutation: fence-dir-sync
    }

    private void AdvanceDurable(ulong index)
    {
        if (_fence is not null)
        {
            return; // a sync after a failed one proves nothing about the pages the failure dropped
        }
        var seen = Volatile.Read(ref _durableIndex);
        while (index > seen)
        {
            var prior = Interlocked.CompareExchange(ref _durableIndex, index, seen);
            if (prior == seen)
            {
                return;
            }
            seen = prior;
        }
    }

    /// <inheritdoc />
    public void Flush()
    {
        using var _ = EnterUse();
        SyncWalUnlocked();
        var flush = new FlushOptions().SetWaitForFlush(true);
        foreach (var family in new[] { _data, _meta, _ttl, _sessions })
        {
            Native.Instance.rocksdb_flush_cf(_db!.Handle, flush.Handle, family.Handle);
        }
    }

    private void SyncWalUnlocked() => SyncAndPublish();
}
