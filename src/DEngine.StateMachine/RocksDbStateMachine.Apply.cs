using DEngine.Protos.Common;
using RocksDbSharp;

namespace DEngine.StateMachine;

// Apply: a chunk is checked (ChunkRules), turned into one WriteBatch (ChunkWriter) that carries its
// data, TTL-index and session-table changes, the new applied position and time floor, and written under the apply gate.
public sealed partial class RocksDbStateMachine
{
    /// <inheritdoc />
    public IReadOnlyList<ApplyResult> ApplyChunk(IReadOnlyList<Entry> entries, ApplyDurability durability = ApplyDurability.Default) =>
        ApplyCommands(EntryDecoder.Decode(entries, PartitionId), durability);

    /// <inheritdoc />
    public IReadOnlyList<ApplyResult> ApplyCommands(IReadOnlyList<ApplyEntry> entries, ApplyDurability durability = ApplyDurability.Default)
    {
        ArgumentNullException.ThrowIfNull(entries);
        lock (_applyGate)
        {
            if (_writeFailed)
            {
                RecoverAfterWriteFailure();
            }
            using var _ = EnterServing();
            var applied = _lastApplied;
            var firstNew = ChunkRules.ValidateOrder(entries, applied, PartitionId);
            var results = new ApplyResult[entries.Count];
            for (var i = 0; i < firstNew; i++)
            {
                results[i] = new ApplyResult(entries[i].Index, ApplyStatus.AlreadyApplied);
            }
            if (firstNew == entries.Count)
            {
                return results; // pure redelivery: nothing to write
            }
            for (var i = firstNew; i < entries.Count; i++)
            {
                ChunkRules.ValidateCommand(entries[i], PartitionId);
            }

            using var batch = new WriteBatch();
            var chunk = new ChunkWriter(this, batch, ChunkRules.NeedsOverlay(entries, firstNew));
            for (var i = firstNew; i < entries.Count; i++)
            {
                results[i] = chunk.Apply(entries[i]);
            }
            var sessionStats = chunk.WriteSessions();
            var last = entries[^1];
            batch.Put(LastAppliedIndexKey, U64(last.Index), _meta);
            batch.Put(LastAppliedTermKey, U64(last.Term), _meta);
            var floor = Math.Max(_timeFloor, chunk.HighestStamp);
            if (floor != _timeFloor)
            {
                batch.Put(TimeFloorKey, U64(floor), _meta);
            }

            var sync = durability == ApplyDurability.Default && _options.Durability == DurabilityMode.Synced;
            try
            {
                _db!.Write(batch, sync ? _syncWrite : _bufferedWrite);
            }
            catch (RocksDbException ex) when (sync && IsSyncFailure(ex))
            {
                // The WAL bytes were written but their fsync failed: they may or may not reach the
                // disk, so the chunk's outcome is unknown, never "not applied".
                throw Fence(ex, entries[firstNew].Index);
            }
            catch (RocksDbException ex)
            {
                // RocksDB now refuses writes (a background error) until the database is reopened;
                // reads keep working. The next apply reopens once there is room again.
                _writeFailed = true;
                throw new DEngineException(DEngineErrorCode.StorageFailure, $"RocksDB rejected the chunk's write ({ex.Message}). Nothing of the chunk was applied; check disk space and the data directory, then retry.", PartitionId, entries[firstNew].Index, ex);
            }
            WritePosition(new LogPosition(last.Index, last.Term));
            Volatile.Write(ref _timeFloor, floor);
            if (sessionStats is not null)
            {
                Volatile.Write(ref _sessionStats, sessionStats);
            }
            if (chunk.LowestTtlKeyWritten is { } lowest)
            {
                // After the write (see NoteTtlInserted): a scan that could not see this entry either
                // learns of it through its ticket or has its floor lowered again here.
                NoteTtlInserted(lowest);
            }
            if (sync)
            {
                // Still under the apply gate: the view taken now is exactly this chunk.
                Publish(TakeView());
            }
            return results;
        }
    }

    /// <summary>Free space needed before a failed database is reopened for writing.</summary>
    private const long ReopenFreeBytes = 8L << 20;

    /// <summary>
    /// After a failed write (for example a full disk) RocksDB keeps refusing writes until it is
    /// reopened. Reopen once the file system has room again; until then refuse the write with a clear
    /// error and leave the database as it is, so reads keep being served.
    /// </summary>
    private void RecoverAfterWriteFailure()
    {
        long free;
        try
        {
            free = new DriveInfo(DatabasePath).AvailableFreeSpace;
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or ArgumentException)
        {
            free = long.MaxValue; // cannot tell: try to reopen
        }
        if (free < ReopenFreeBytes)
        {
            throw new DEngineException(DEngineErrorCode.StorageFailure, $"The disk holding '{DatabasePath}' is (nearly) full: {free} bytes free. Writes are refused until at least {ReopenFreeBytes} bytes are free; reads are still served.", PartitionId);
        }
        _lifecycle.EnterWriteLock();
        try
        {
            if (_disposed)
            {
                ThrowIfClosed();
            }
            // A reopen that failed last time left no database open: try again.
            Close();
            Open();
            _writeFailed = false;
        }
        finally
        {
            _lifecycle.ExitWriteLock();
        }
    }
}
