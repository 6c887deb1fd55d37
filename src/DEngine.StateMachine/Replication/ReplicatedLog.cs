using System.Buffers;
using System.Buffers.Binary;
using System.Diagnostics.Metrics;
using DEngine.Protos.Common;
using DEngine.StateMachine.Snapshots;

namespace DEngine.StateMachine.Replication;

/*
 * On-disk format of a replicated log (one directory per partition)
 * -----------------------------------------------------------------
 * The directory holds segment files named {generation:D20}-{firstIndex:D20}.log; names sort in log
 * order. Every integer is little-endian; every checksum is CRC-32 (System.IO.Hashing.Crc32).
 *
 * Segment header (44 bytes): u32 magic "DRLG", u32 format version (1), u64 generation,
 * u64 base index, u64 base term, u64 commit index, u32 CRC of the 40 bytes before it. The base is
 * the position just before the segment's first entry (firstIndex = base index + 1); a segment is
 * created with its header fsynced and its name synced into the directory before anything is
 * appended to it.
 *
 * Records follow the header: [u32 payload length][u32 CRC of kind + payload][u8 kind][payload]
 *   1 Entries:  u64 commit index, u32 count, then per entry u64 index, u64 term, u32 length and
 *               that many bytes of the entry's encoded d_engine.common.EntryPayload. One record per
 *               Append, so an append is all or nothing and one fsync covers exactly one record.
 *   2 Commit:   u64 commit index.
 *   3 Truncate: u64 last index kept: the entries after it in the record just before are void. Only
 *               a truncation that falls inside one append's record writes it.
 *
 * Invariants the recovery relies on:
 *   - At most one record is written between two fsyncs (RecordCommit without sync writes nothing;
 *     it rides on the next record). So a bad record followed by a valid one is corruption of synced
 *     data, never a torn write; a bad record with nothing valid after it is the torn tail and is cut.
 *   - Within a generation each segment's base is the last entry of the segment before it. A Reset
 *     creates a segment of a higher generation (durably) before deleting the older ones, so an open
 *     that finds several generations deletes all but the highest.
 *   - Only the last segment is ever written. A segment with records always has a valid header (it
 *     was synced first); a last segment no longer than a header with an invalid header is a torn
 *     creation and is deleted.
 *   - Deleting whole segments (compaction, the leftovers of a Reset) needs no directory sync: a
 *     segment that comes back after a power cut only holds entries at or below the commit index
 *     (compaction) or belongs to an older generation (Reset). TruncateAfter does sync the directory:
 *     a deleted segment coming back would resurrect truncated entries.
 */

/// <summary>
/// The durable log of one partition's replica: the entries since its last snapshot, the commit index
/// and the base position (the last entry a snapshot covers). Appends are durable on return, one
/// fsync per call; every other write says below when it is durable. Thread safe: every member takes
/// one lock, held for the in-memory bookkeeping and the file calls of that member only.
/// </summary>
public sealed partial class ReplicatedLog : IDisposable
{
    private static readonly Meter Meter = new("DEngine.ReplicatedLog");
    private static readonly Histogram<double> SyncDuration = Meter.CreateHistogram<double>("dengine.replog.fsync.duration", unit: "ms", description: "Time of one fsync of a replicated log segment.");
    private static readonly Counter<long> AppendedEntries = Meter.CreateCounter<long>("dengine.replog.appended.entries", description: "Entries appended to replicated logs.");

    private readonly string _directory;
    private readonly ReplicatedLogOptions _options;
    private readonly TimeProvider _time;

    // Guards every field below: the segments and their handles, the entry index and the positions.
    // Taken by every public member; nothing else is locked while it is held.
    private readonly Lock _gate = new();
    private readonly List<LogSegment> _segments = [];
    private readonly List<EntryLocation> _entries = []; // _entries[i] is entry _base.Index + 1 + i
    private LogPosition _base;
    private LogPosition _last;
    private ulong _commit;
    private ulong _durableCommit;
    private string? _broken; // why writes are refused until a reopen (a write or fsync failed half-way)
    private bool _disposed;

    private ReplicatedLog(string directory, int partitionId, ReplicatedLogOptions options, TimeProvider time)
    {
        _directory = directory;
        PartitionId = partitionId;
        _options = options;
        _time = time;
    }

    /// <summary>
    /// Opens or creates the log of partition <paramref name="partitionId"/> in <paramref name="directory"/>
    /// (a new directory is synced into its parent). A torn last record is cut off; a corrupt record
    /// before it throws StorageFailure.
    /// </summary>
    public static ReplicatedLog Open(string directory, int partitionId, TimeProvider? time = null) =>
        Open(directory, partitionId, new ReplicatedLogOptions(), time);

    /// <summary>As <see cref="Open(string, int, TimeProvider?)"/>, with options (validated here).</summary>
    public static ReplicatedLog Open(string directory, int partitionId, ReplicatedLogOptions options, TimeProvider? time = null)
    {
        ArgumentNullException.ThrowIfNull(directory);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        var log = new ReplicatedLog(Path.GetFullPath(directory), partitionId, options, time ?? TimeProvider.System);
        try
        {
            log.Recover();
            return log;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            log.Dispose();
            throw new DEngineException(DEngineErrorCode.StorageFailure, $"Cannot open the replicated log in '{directory}': {e.Message}", partitionId, inner: e);
        }
        catch
        {
            log.Dispose();
            throw;
        }
    }

    /// <summary>The partition whose log this is (named in every error).</summary>
    public int PartitionId { get; }

    /// <summary>The position just before the first entry held (a snapshot's last included); {0, 0} for a new log.</summary>
    public LogPosition Base
    {
        get
        {
            lock (_gate)
            {
                return _base;
            }
        }
    }

    /// <summary>The last entry held; equal to <see cref="Base"/> when the log holds no entry.</summary>
    public LogPosition Last
    {
        get
        {
            lock (_gate)
            {
                return _last;
            }
        }
    }

    /// <summary>The highest commit index recorded (durable or not); Base.Index &lt;= CommitIndex &lt;= Last.Index.</summary>
    public ulong CommitIndex
    {
        get
        {
            lock (_gate)
            {
                return _commit;
            }
        }
    }

    /// <summary>
    /// Appends <paramref name="entries"/>, which must continue the log (first index Last.Index + 1,
    /// contiguous, terms non-decreasing from Last.Term, each with a payload), and records
    /// min(<paramref name="commitIndex"/>, new Last.Index) as the commit index if it is higher. Durable
    /// on return: one record, one fsync. An empty list only records the commit index (durably).
    /// Invalid entries throw (ChunkGap, ChunkOutOfOrder, InvalidArgument, MalformedEntry) and change nothing.
    /// </summary>
    public void Append(IReadOnlyList<Entry> entries, ulong commitIndex)
    {
        ArgumentNullException.ThrowIfNull(entries);
        if (entries.Count == 0)
        {
            RecordCommit(commitIndex, sync: true);
            return;
        }
        lock (_gate)
        {
            ThrowIfCannotWrite();
            Validate(entries);
            var newLast = new LogPosition(entries[^1].Index, entries[^1].Term);
            var commit = Math.Max(_commit, Math.Min(commitIndex, newLast.Index));
            var record = LogRecord.RentEntries(entries, commit, PartitionId, out var length);
            try
            {
                var segment = ActiveForAppend(length);
                var recordStart = segment.Length;
                try
                {
                    segment.Append(record.AsSpan(0, length));
                    Sync(segment); // mutation: replog-append-sync
                }
                catch (Exception e) when (IsIoFailure(e))
                {
                    throw Fail(e, entries[0].Index, "append");
                }
                var at = recordStart + LogRecord.HeaderBytes + LogRecord.EntriesPrefixBytes;
                foreach (var entry in entries)
                {
                    var size = (int)BinaryPrimitives.ReadUInt32LittleEndian(record.AsSpan((int)(at - recordStart) + 16));
                    at += LogRecord.EntryPrefixBytes;
                    _entries.Add(new EntryLocation(segment, recordStart, at, size, entry.Term));
                    at += size;
                }
            }
            finally
            {
                ArrayPool<byte>.Shared.Return(record);
            }
            _last = newLast;
            _commit = commit;
            _durableCommit = commit;
            AppendedEntries.Add(entries.Count);
        }
    }

    /// <summary>
    /// Records a higher commit index (clamped to Last.Index; a lower one is ignored). Durable on return
    /// only when <paramref name="sync"/>; otherwise it is written with the next append.
    /// </summary>
    public void RecordCommit(ulong commitIndex, bool sync = false)
    {
        lock (_gate)
        {
            ThrowIfCannotWrite();
            _commit = Math.Max(_commit, Math.Min(commitIndex, _last.Index));
            if (!sync || _commit <= _durableCommit)
            {
                return;
            }
            Span<byte> record = stackalloc byte[LogRecord.SmallRecordBytes];
            LogRecord.WriteSmall(record, LogRecordKind.Commit, _commit);
            var segment = _segments[^1];
            try
            {
                segment.Append(record);
                Sync(segment); // mutation: replog-commit-sync
            }
            catch (Exception e) when (IsIoFailure(e))
            {
                throw Fail(e, _commit, "commit record");
            }
            _durableCommit = _commit;
        }
    }

    /// <summary>The term of the entry at <paramref name="index"/> (Base.Term for Base.Index); InvalidArgument outside [Base.Index, Last.Index].</summary>
    public ulong TermAt(ulong index)
    {
        lock (_gate)
        {
            ThrowIfDisposed();
            if (index < _base.Index || index > _last.Index)
            {
                throw new DEngineException(DEngineErrorCode.InvalidArgument, $"The log holds indexes {_base.Index} to {_last.Index}; {index} is outside them.", PartitionId, index);
            }
            return TermAtLocked(index);
        }
    }

    /// <summary>True when the log holds <paramref name="position"/>: its index within [Base.Index, Last.Index] with that term.</summary>
    public bool Contains(LogPosition position)
    {
        lock (_gate)
        {
            ThrowIfDisposed();
            return position.Index >= _base.Index && position.Index <= _last.Index && TermAtLocked(position.Index) == position.Term;
        }
    }

    /// <summary>
    /// Entries from <paramref name="fromIndex"/> on, at most <paramref name="maxEntries"/> and about
    /// <paramref name="maxBytes"/> of payload (at least one entry when one exists there); empty at
    /// Last.Index + 1. Throws InvalidArgument when fromIndex &lt;= Base.Index (compacted: send a
    /// snapshot instead; <see cref="TryRead"/> says so without an exception) or beyond Last.Index + 1.
    /// </summary>
    public IReadOnlyList<Entry> Read(ulong fromIndex, int maxEntries = int.MaxValue, long maxBytes = long.MaxValue)
    {
        if (TryRead(fromIndex, out var entries, maxEntries, maxBytes))
        {
            return entries;
        }
        throw new DEngineException(DEngineErrorCode.InvalidArgument, $"Entries up to index {Base.Index} are compacted out of the log (in a snapshot); entry {fromIndex} cannot be read: send the snapshot instead.", PartitionId, fromIndex);
    }

    /// <summary>
    /// As <see cref="Read"/>, but returns false (and no entries) when <paramref name="fromIndex"/> is
    /// compacted (at or below Base.Index), so a replicator can decide on a snapshot without an exception.
    /// </summary>
    public bool TryRead(ulong fromIndex, out IReadOnlyList<Entry> entries, int maxEntries = int.MaxValue, long maxBytes = long.MaxValue)
    {
        if (maxEntries < 1)
        {
            throw new DEngineException(DEngineErrorCode.InvalidArgument, $"maxEntries must be at least 1 (was {maxEntries}).", PartitionId);
        }
        byte[][] payloads;
        ulong[] terms;
        lock (_gate)
        {
            ThrowIfDisposed();
            if (fromIndex <= _base.Index)
            {
                entries = [];
                return false;
            }
            if (fromIndex > _last.Index + 1)
            {
                throw new DEngineException(DEngineErrorCode.InvalidArgument, $"The log ends at index {_last.Index}; entry {fromIndex} does not exist yet.", PartitionId, fromIndex);
            }
            var first = (int)(fromIndex - _base.Index - 1);
            var count = 0;
            long bytes = 0;
            while (first + count < _entries.Count && count < maxEntries)
            {
                var next = _entries[first + count].DataLength;
                if (count > 0 && bytes + next > maxBytes)
                {
                    break;
                }
                bytes += next;
                count++;
            }
            payloads = new byte[count][];
            terms = new ulong[count];
            for (var i = 0; i < count; i++)
            {
                var location = _entries[first + i];
                payloads[i] = new byte[location.DataLength];
                terms[i] = location.Term;
                if (!location.Segment.TryReadExactly(payloads[i], location.DataOffset))
                {
                    throw new DEngineException(DEngineErrorCode.StorageFailure, $"Segment '{location.Segment.Path}' ends before entry {fromIndex + (ulong)i} that it held when opened: the file was changed behind the log. Reopen it.", PartitionId, fromIndex + (ulong)i);
                }
            }
        }
        // Decoding needs no lock: the bytes are copies.
        var result = new Entry[payloads.Length];
        for (var i = 0; i < payloads.Length; i++)
        {
            result[i] = new Entry { Index = fromIndex + (ulong)i, Term = terms[i], Payload = EntryPayload.Parser.ParseFrom(payloads[i]) };
        }
        entries = result;
        return true;
    }

    /// <summary>
    /// Drops every entry after <paramref name="index"/> (an uncommitted suffix a new primary lacks).
    /// Refuses with InvalidArgument, changing nothing, when index &lt; CommitIndex or index &lt; Base.Index;
    /// an index at or beyond Last.Index changes nothing. Durable on return.
    /// </summary>
    public void TruncateAfter(ulong index)
    {
        lock (_gate)
        {
            ThrowIfCannotWrite();
            if (index < _commit || index < _base.Index)
            {
                throw new DEngineException(DEngineErrorCode.InvalidArgument, $"Cannot truncate after index {index}: entries up to {_commit} are committed and the log starts after {_base.Index}. Nothing was truncated.", PartitionId, index);
            }
            if (index >= _last.Index)
            {
                return;
            }
            var firstDropped = _entries[(int)(index - _base.Index)];
            var segment = firstDropped.Segment;
            // A truncation inside one append's record keeps that record and voids its tail with a Truncate record.
            var insideRecord = index > _base.Index && _entries[(int)(index - _base.Index - 1)] is var kept
                && kept.Segment == segment && kept.RecordStart == firstDropped.RecordStart;
            var cutAt = firstDropped.RecordStart;
            if (insideRecord)
            {
                Span<byte> length = stackalloc byte[4];
                if (!segment.TryReadExactly(length, cutAt))
                {
                    throw new DEngineException(DEngineErrorCode.StorageFailure, $"Segment '{segment.Path}' ends inside the record it held when opened.", PartitionId, index);
                }
                cutAt += LogRecord.HeaderBytes + BinaryPrimitives.ReadUInt32LittleEndian(length);
            }
            var later = _segments.IndexOf(segment) + 1;
            try
            {
                // Later segments go first, newest first: a crash part-way leaves a prefix of the log, never a gap.
                if (later < _segments.Count)
                {
                    for (var i = _segments.Count - 1; i >= later; i--)
                    {
                        _segments[i].Delete();
                    }
                    _segments.RemoveRange(later, _segments.Count - later);
                    DurableFiles.SyncDirectory(_directory); // mutation: replog-truncate-dir-sync
                }
                if (segment.Length > cutAt)
                {
                    segment.Truncate(cutAt);
                    Sync(segment); // mutation: replog-truncate-sync
                }
                if (insideRecord)
                {
                    var record = new byte[LogRecord.SmallRecordBytes];
                    LogRecord.WriteSmall(record, LogRecordKind.Truncate, index);
                    segment.Append(record);
                    Sync(segment); // mutation: replog-truncate-record-sync
                }
            }
            catch (Exception e) when (IsIoFailure(e))
            {
                throw Fail(e, index, "truncation");
            }
            _entries.RemoveRange((int)(index - _base.Index), _entries.Count - (int)(index - _base.Index));
            _last = new LogPosition(index, TermAtLocked(index));
        }
    }

    /// <summary>
    /// Lets the log forget entries up to <paramref name="index"/> (they are in a durable snapshot or
    /// state machine): deletes the whole segments that hold nothing later, never beyond CommitIndex.
    /// Base moves to the base of the first segment kept, at most <paramref name="index"/>.
    /// </summary>
    public void CompactThrough(ulong index)
    {
        lock (_gate)
        {
            ThrowIfCannotWrite();
            var target = Math.Min(index, _commit);
            var drop = 0;
            while (drop + 1 < _segments.Count && _segments[drop + 1].Base.Index <= target)
            {
                drop++;
            }
            if (drop == 0)
            {
                return;
            }
            try
            {
                for (var i = 0; i < drop; i++)
                {
                    _segments[i].Delete(); // no directory sync: a segment back after a crash only holds committed entries
                }
            }
            catch (Exception e) when (IsIoFailure(e))
            {
                throw Fail(e, target, "compaction");
            }
            _segments.RemoveRange(0, drop);
            var newBase = _segments[0].Base;
            _entries.RemoveRange(0, (int)(newBase.Index - _base.Index));
            _base = newBase;
        }
    }

    /// <summary>
    /// Drops everything and restarts empty at <paramref name="newBase"/> (after a snapshot install):
    /// Base = Last = newBase, CommitIndex = newBase.Index. Durable on return.
    /// </summary>
    public void Reset(LogPosition newBase)
    {
        lock (_gate)
        {
            ThrowIfCannotWrite();
            if (newBase.Index == ulong.MaxValue)
            {
                throw new DEngineException(DEngineErrorCode.InvalidArgument, $"A log cannot start after index {newBase.Index}.", PartitionId, newBase.Index);
            }
            LogSegment created;
            try
            {
                created = LogSegment.Create(_directory, _segments[^1].Generation + 1, newBase, newBase.Index);
                foreach (var old in _segments)
                {
                    old.Delete(); // no directory sync: an open deletes every older generation
                }
            }
            catch (Exception e) when (IsIoFailure(e))
            {
                throw Fail(e, newBase.Index, "reset");
            }
            _segments.Clear();
            _segments.Add(created);
            _entries.Clear();
            _base = newBase;
            _last = newBase;
            _commit = newBase.Index;
            _durableCommit = newBase.Index;
        }
    }

    /// <summary>Closes the segment files. Writes nothing: what is not durable yet is not made durable here.</summary>
    public void Dispose()
    {
        lock (_gate)
        {
            if (_disposed)
            {
                return;
            }
            _disposed = true;
            foreach (var segment in _segments)
            {
                segment.Dispose();
            }
        }
    }

    private ulong TermAtLocked(ulong index) => index == _base.Index ? _base.Term : _entries[(int)(index - _base.Index - 1)].Term;

    private void Validate(IReadOnlyList<Entry> entries)
    {
        var previous = _last;
        foreach (var entry in entries)
        {
            if (entry is null || entry.Payload is null)
            {
                throw new DEngineException(DEngineErrorCode.MalformedEntry, $"Entry {entry?.Index.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "(null)"} has no payload; nothing was appended.", PartitionId, entry?.Index);
            }
            if (entry.Index > previous.Index + 1)
            {
                throw new DEngineException(DEngineErrorCode.ChunkGap, $"Entry {entry.Index} does not follow index {previous.Index}: entries are missing; nothing was appended. Fetch the entries from {previous.Index + 1} first.", PartitionId, entry.Index);
            }
            if (entry.Index <= previous.Index)
            {
                throw new DEngineException(DEngineErrorCode.ChunkOutOfOrder, $"Entry {entry.Index} is not after index {previous.Index}, the end of the log; nothing was appended. Truncate the log first to replace entries.", PartitionId, entry.Index);
            }
            if (entry.Term < previous.Term)
            {
                throw new DEngineException(DEngineErrorCode.InvalidArgument, $"Entry {entry.Index} has term {entry.Term}, below the term {previous.Term} of the entry before it; nothing was appended.", PartitionId, entry.Index);
            }
            previous = new LogPosition(entry.Index, entry.Term);
        }
    }

    /// <summary>The segment the next record of <paramref name="recordBytes"/> goes to, rolling to a new one when the last is full.</summary>
    private LogSegment ActiveForAppend(int recordBytes)
    {
        var active = _segments[^1];
        if (active.Length <= LogSegment.HeaderBytes || active.Length + recordBytes <= _options.SegmentBytes)
        {
            return active;
        }
        LogSegment created;
        try
        {
            created = LogSegment.Create(_directory, active.Generation, _last, _commit);
        }
        catch (Exception e) when (IsIoFailure(e))
        {
            throw Fail(e, _last.Index + 1, "new segment");
        }
        _segments.Add(created);
        // The new header carries the commit index: it is now as durable as an appended one.
        _durableCommit = _commit;
        return created;
    }

    private void Sync(LogSegment segment)
    {
        var start = _time.GetTimestamp();
        segment.Sync();
        SyncDuration.Record(_time.GetElapsedTime(start).TotalMilliseconds, new KeyValuePair<string, object?>("partition", PartitionId));
    }

    private static bool IsIoFailure(Exception e) => e is IOException or UnauthorizedAccessException;

    /// <summary>
    /// After a failed file operation: stops all later writes (the files may hold bytes whose
    /// durability is unknown) and gives OutcomeUnknown, since the caller cannot know whether it took effect.
    /// </summary>
    private DEngineException Fail(Exception e, ulong index, string what)
    {
        _broken = $"the {what} at index {index} failed: {e.Message}";
        return new DEngineException(DEngineErrorCode.OutcomeUnknown, $"The replicated log's {what} failed ({e.Message}); it may or may not be on disk. The log refuses writes until it is reopened, which reads back what the disk holds.", PartitionId, index, e);
    }

    private void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(_disposed, this);

    private void ThrowIfCannotWrite()
    {
        ThrowIfDisposed();
        if (_broken is not null)
        {
            throw new DEngineException(DEngineErrorCode.StorageFailure, $"The replicated log refuses writes since {_broken}. Reopen it.", PartitionId);
        }
    }

    /// <summary>Where one entry's encoded payload is: its segment, the start of its record, its bytes, and its term.</summary>
    private readonly record struct EntryLocation(LogSegment Segment, long RecordStart, long DataOffset, int DataLength, ulong Term);
}
