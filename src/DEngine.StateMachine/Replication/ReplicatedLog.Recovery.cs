using System.Buffers;
using System.Buffers.Binary;
using DEngine.StateMachine.Snapshots;

namespace DEngine.StateMachine.Replication;

/// <summary>Opening a log: reading every segment back, cutting a torn tail, refusing corruption.</summary>
public sealed partial class ReplicatedLog
{
    private void Recover()
    {
        if (File.Exists(_directory))
        {
            throw new DEngineException(DEngineErrorCode.StorageFailure, $"'{_directory}' is a file, not a log directory.", PartitionId);
        }
        if (!Directory.Exists(_directory))
        {
            DurableFiles.CreateDirectoryDurably(_directory);
        }
        var files = new List<(ulong Generation, ulong FirstIndex, string Path)>();
        foreach (var path in Directory.EnumerateFiles(_directory, "*.log"))
        {
            if (LogSegment.TryParseName(Path.GetFileName(path), out var generation, out var firstIndex))
            {
                files.Add((generation, firstIndex, path));
            }
        }
        files.Sort((a, b) => a.Generation != b.Generation ? a.Generation.CompareTo(b.Generation) : a.FirstIndex.CompareTo(b.FirstIndex));

        // A segment whose creation was cut before its header was synced holds nothing: forget it.
        LogSegment? last = null;
        while (files.Count > 0 && last is null)
        {
            var (generation, firstIndex, path) = files[^1];
            last = LogSegment.OpenExisting(path, generation, firstIndex, out var why);
            if (last is null)
            {
                if (new FileInfo(path).Length > LogSegment.HeaderBytes)
                {
                    throw Corrupt(path, 0, why);
                }
                File.Delete(path); // no directory sync: if it comes back, the next open deletes it again
                files.RemoveAt(files.Count - 1);
            }
        }
        if (last is null)
        {
            _segments.Add(LogSegment.Create(_directory, 1, LogPosition.None, 0));
            return;
        }

        // A Reset creates the higher generation durably before it deletes the older ones.
        var current = files[^1].Generation;
        var kept = new List<(ulong Generation, ulong FirstIndex, string Path)>();
        foreach (var file in files)
        {
            if (file.Generation < current)
            {
                File.Delete(file.Path);
            }
            else
            {
                kept.Add(file);
            }
        }

        for (var i = 0; i < kept.Count; i++)
        {
            var isLast = i == kept.Count - 1;
            var segment = isLast ? last : LogSegment.OpenExisting(kept[i].Path, kept[i].Generation, kept[i].FirstIndex, out var why)
                ?? throw Corrupt(kept[i].Path, 0, why);
            _segments.Add(segment);
            if (i == 0)
            {
                _base = segment.Base;
                _last = segment.Base;
                _commit = segment.HeaderCommit;
            }
            else if (segment.Base != _last)
            {
                throw Corrupt(segment.Path, 0, $"the segment starts after {segment.Base}, but the segment before it ends at {_last}");
            }
            _commit = Math.Max(_commit, segment.HeaderCommit);
            Scan(segment, isLast);
        }
        _commit = Math.Clamp(_commit, _base.Index, _last.Index);
        _durableCommit = _commit;
    }

    /// <summary>Reads the records of <paramref name="segment"/> into the entry index; cuts a torn tail of the last segment.</summary>
    private void Scan(LogSegment segment, bool isLast)
    {
        var length = segment.Length;
        long position = LogSegment.HeaderBytes;
        using var reader = new FileStream(segment.Path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete, 1 << 20, FileOptions.SequentialScan);
        reader.Position = position;
        Span<byte> header = stackalloc byte[LogRecord.HeaderBytes];
        var buffer = ArrayPool<byte>.Shared.Rent(64 << 10);
        try
        {
            while (position < length)
            {
                string? torn = null;
                var payloadLength = 0;
                if (length - position < LogRecord.HeaderBytes)
                {
                    torn = "the file ends inside a record header";
                }
                else
                {
                    reader.ReadExactly(header);
                    var declared = BinaryPrimitives.ReadUInt32LittleEndian(header);
                    if (declared > LogRecord.MaxPayloadBytes || position + LogRecord.HeaderBytes + declared > length)
                    {
                        torn = $"a record says it has {declared} bytes, more than the file holds after it";
                    }
                    else
                    {
                        payloadLength = (int)declared;
                        if (buffer.Length < payloadLength + 1)
                        {
                            ArrayPool<byte>.Shared.Return(buffer);
                            buffer = ArrayPool<byte>.Shared.Rent(payloadLength + 1);
                        }
                        buffer[0] = header[8];
                        reader.ReadExactly(buffer.AsSpan(1, payloadLength));
                        if (!LogRecord.ChecksumMatches(buffer.AsSpan(0, payloadLength + 1), BinaryPrimitives.ReadUInt32LittleEndian(header[4..])))
                        {
                            if (!isLast || IsValidRecordAt(segment, position + LogRecord.HeaderBytes + payloadLength, length))
                            {
                                throw Corrupt(segment.Path, position, "a record's checksum does not match, and valid records follow it");
                            }
                            torn = "the last record's checksum does not match";
                        }
                    }
                }
                if (torn is not null)
                {
                    if (!isLast)
                    {
                        throw Corrupt(segment.Path, position, torn + " (in a segment that is not the last)");
                    }
                    // The unsynced tail of an append cut by a crash. Not synced: if the bytes come back,
                    // the next open cuts them again, and the next append's fsync makes the length durable.
                    segment.Truncate(position);
                    return;
                }
                Apply(segment, (LogRecordKind)header[8], buffer.AsSpan(1, payloadLength), position);
                position += LogRecord.HeaderBytes + payloadLength;
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    private void Apply(LogSegment segment, LogRecordKind kind, ReadOnlySpan<byte> payload, long recordStart)
    {
        switch (kind)
        {
            case LogRecordKind.Entries when payload.Length >= LogRecord.EntriesPrefixBytes:
            {
                var commit = BinaryPrimitives.ReadUInt64LittleEndian(payload);
                var count = BinaryPrimitives.ReadUInt32LittleEndian(payload[8..]);
                var at = LogRecord.EntriesPrefixBytes;
                for (var n = 0u; n < count; n++)
                {
                    if (payload.Length - at < LogRecord.EntryPrefixBytes)
                    {
                        throw Corrupt(segment.Path, recordStart, $"an entries record ends inside its entry {n}");
                    }
                    var index = BinaryPrimitives.ReadUInt64LittleEndian(payload[at..]);
                    var term = BinaryPrimitives.ReadUInt64LittleEndian(payload[(at + 8)..]);
                    var size = BinaryPrimitives.ReadUInt32LittleEndian(payload[(at + 16)..]);
                    if (size > payload.Length - at - LogRecord.EntryPrefixBytes)
                    {
                        throw Corrupt(segment.Path, recordStart, $"entry {index} is longer than its record");
                    }
                    if (index != _last.Index + 1 || term < _last.Term)
                    {
                        throw Corrupt(segment.Path, recordStart, $"entry {{index {index}, term {term}}} does not continue the log at {_last}");
                    }
                    at += LogRecord.EntryPrefixBytes;
                    _entries.Add(new EntryLocation(segment, recordStart, recordStart + LogRecord.HeaderBytes + at, (int)size, term));
                    _last = new LogPosition(index, term);
                    at += (int)size;
                }
                if (at != payload.Length || count == 0)
                {
                    throw Corrupt(segment.Path, recordStart, "an entries record's length does not match its entries");
                }
                _commit = Math.Max(_commit, commit);
                return;
            }
            case LogRecordKind.Commit when payload.Length == 8:
                _commit = Math.Max(_commit, BinaryPrimitives.ReadUInt64LittleEndian(payload));
                return;
            case LogRecordKind.Truncate when payload.Length == 8:
            {
                var lastKept = BinaryPrimitives.ReadUInt64LittleEndian(payload);
                if (lastKept < _base.Index || lastKept > _last.Index)
                {
                    throw Corrupt(segment.Path, recordStart, $"a truncation after index {lastKept} outside the log ({_base.Index} to {_last.Index})");
                }
                var keep = (int)(lastKept - _base.Index);
                _entries.RemoveRange(keep, _entries.Count - keep);
                _last = new LogPosition(lastKept, TermAtLocked(lastKept));
                return;
            }
            default:
                throw Corrupt(segment.Path, recordStart, $"a record of kind {(byte)kind} with {payload.Length} bytes is not one this version writes");
        }
    }

    /// <summary>True when a whole record with a matching checksum starts at <paramref name="offset"/>.</summary>
    private static bool IsValidRecordAt(LogSegment segment, long offset, long length)
    {
        Span<byte> header = stackalloc byte[LogRecord.HeaderBytes];
        if (length - offset < LogRecord.HeaderBytes || !segment.TryReadExactly(header, offset))
        {
            return false;
        }
        var declared = BinaryPrimitives.ReadUInt32LittleEndian(header);
        if (declared > LogRecord.MaxPayloadBytes || offset + LogRecord.HeaderBytes + declared > length)
        {
            return false;
        }
        var bytes = new byte[declared + 1];
        bytes[0] = header[8];
        return segment.TryReadExactly(bytes.AsSpan(1), offset + LogRecord.HeaderBytes)
            && LogRecord.ChecksumMatches(bytes, BinaryPrimitives.ReadUInt32LittleEndian(header[4..]));
    }

    private DEngineException Corrupt(string path, long offset, string why) =>
        new(DEngineErrorCode.StorageFailure, $"Replicated log segment '{path}' is corrupt at byte {offset}: {why}. Entries up to there may be committed, so the log was not opened and nothing was changed. Rebuild this replica from another one (move the directory aside).", PartitionId);
}
