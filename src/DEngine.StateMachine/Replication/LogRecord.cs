using System.Buffers;
using System.Buffers.Binary;
using System.IO.Hashing;
using DEngine.Protos.Common;
using Google.Protobuf;

namespace DEngine.StateMachine.Replication;

/// <summary>What a record of a segment holds (the byte after its length and checksum).</summary>
internal enum LogRecordKind : byte
{
    /// <summary>The entries of one append and the commit index recorded with them.</summary>
    Entries = 1,

    /// <summary>A higher commit index, without entries.</summary>
    Commit = 2,

    /// <summary>The entries of the record just before it after this index are void (a truncation inside that record).</summary>
    Truncate = 3,
}

/// <summary>Encoding of segment records: <c>[u32 payload length][u32 CRC-32 of kind + payload][u8 kind][payload]</c>.</summary>
internal static class LogRecord
{
    /// <summary>Bytes before the payload: length, checksum, kind.</summary>
    public const int HeaderBytes = 9;

    /// <summary>Largest payload accepted (and believed when read back).</summary>
    public const int MaxPayloadBytes = 1 << 30;

    /// <summary>Bytes of an entries payload before its first entry: commit index (u64), count (u32).</summary>
    public const int EntriesPrefixBytes = 12;

    /// <summary>Bytes before each entry's encoded <see cref="EntryPayload"/>: index (u64), term (u64), length (u32).</summary>
    public const int EntryPrefixBytes = 20;

    /// <summary>Bytes of a commit or truncate record.</summary>
    public const int SmallRecordBytes = HeaderBytes + 8;

    /// <summary>
    /// Encodes an entries record into a buffer rented from <see cref="ArrayPool{T}.Shared"/> (the caller
    /// returns it); <paramref name="length"/> is the record's size. Throws LimitExceeded when the
    /// record would be larger than <see cref="MaxPayloadBytes"/>.
    /// </summary>
    public static byte[] RentEntries(IReadOnlyList<Entry> entries, ulong commit, int partitionId, out int length)
    {
        var sizes = ArrayPool<int>.Shared.Rent(entries.Count);
        try
        {
            long payloadBytes = EntriesPrefixBytes;
            for (var i = 0; i < entries.Count; i++)
            {
                sizes[i] = entries[i].Payload.CalculateSize();
                payloadBytes += EntryPrefixBytes + sizes[i];
            }
            if (payloadBytes > MaxPayloadBytes)
            {
                throw new DEngineException(DEngineErrorCode.LimitExceeded, $"An append of {entries.Count} entries encodes to {payloadBytes} bytes, more than a log record holds ({MaxPayloadBytes}); nothing was appended. Append them in smaller groups.", partitionId, entries[0].Index);
            }
            length = HeaderBytes + (int)payloadBytes;
            var buffer = ArrayPool<byte>.Shared.Rent(length);
            var span = buffer.AsSpan(0, length);
            BinaryPrimitives.WriteUInt64LittleEndian(span[HeaderBytes..], commit);
            BinaryPrimitives.WriteUInt32LittleEndian(span[(HeaderBytes + 8)..], (uint)entries.Count);
            var at = HeaderBytes + EntriesPrefixBytes;
            for (var i = 0; i < entries.Count; i++)
            {
                var entry = entries[i];
                BinaryPrimitives.WriteUInt64LittleEndian(span[at..], entry.Index);
                BinaryPrimitives.WriteUInt64LittleEndian(span[(at + 8)..], entry.Term);
                BinaryPrimitives.WriteUInt32LittleEndian(span[(at + 16)..], (uint)sizes[i]);
                at += EntryPrefixBytes;
                entry.Payload.WriteTo(span.Slice(at, sizes[i]));
                at += sizes[i];
            }
            Seal(span, LogRecordKind.Entries);
            return buffer;
        }
        finally
        {
            ArrayPool<int>.Shared.Return(sizes);
        }
    }

    /// <summary>Encodes a commit or truncate record (one u64) into <paramref name="record"/> (<see cref="SmallRecordBytes"/> long).</summary>
    public static void WriteSmall(Span<byte> record, LogRecordKind kind, ulong value)
    {
        BinaryPrimitives.WriteUInt64LittleEndian(record[HeaderBytes..], value);
        Seal(record[..SmallRecordBytes], kind);
    }

    /// <summary>True when <paramref name="crc"/> is the checksum of <paramref name="kindAndPayload"/>.</summary>
    public static bool ChecksumMatches(ReadOnlySpan<byte> kindAndPayload, uint crc) => Crc32.HashToUInt32(kindAndPayload) == crc;

    private static void Seal(Span<byte> record, LogRecordKind kind)
    {
        record[8] = (byte)kind;
        BinaryPrimitives.WriteUInt32LittleEndian(record, (uint)(record.Length - HeaderBytes));
        BinaryPrimitives.WriteUInt32LittleEndian(record[4..], Crc32.HashToUInt32(record[8..]));
    }
}
