using System.Buffers.Binary;
using RocksDbSharp;

namespace DEngine.StateMachine;

// Exactly-once writes: the session table in the state_machine_sessions family. Apply keeps it in the
// chunk's WriteBatch (ChunkWriter.Sessions.cs); the planning reads here feed ExpireSessions commands.
//
// Layout (one family, the first byte says what a key is):
//   00                          table stats: sessions, tombstones, responses, bytes (4 x u64)
//   01 id                       live session: low-water u64, last-active u64, n u32, then n x
//                               (sequence u64, index u64, status u8) sorted by sequence
//   02 bucket(u64 BE) id        activity index (empty value), for IdleSessions: the last activity
//                               rounded down to ActivityBucketMs, so a busy session moves its index
//                               entry once a bucket, not on every write (the record has the exact stamp)
//   03 id                       tombstone: the ExpireSessions as_of (u64)
//   04 as_of(u64 BE) id         tombstone index (empty value), for TombstonesBefore
// A session has either a live record or a tombstone, never both.
public sealed partial class RocksDbStateMachine
{
    private const byte StatsTag = 0x00;
    private const byte SessionTag = 0x01;
    private const byte ActivityTag = 0x02;
    private const byte TombstoneTag = 0x03;
    private const byte TombstoneIndexTag = 0x04;

    private static readonly byte[] SessionStatsKey = [StatsTag];

    /// <summary>The activity index's granularity (ms): a session's index entry moves when its last activity enters a new bucket.</summary>
    private const ulong ActivityBucketMs = 1000;

    private static ulong ActivityBucket(ulong lastActive) => lastActive - (lastActive % ActivityBucketMs);

    private SessionTableStats _sessionStats = SessionTableStats.Empty;

    /// <summary>The size of the session table as of the last applied chunk (cheap: kept in memory, persisted with each chunk that changes it).</summary>
    public SessionTableStats SessionTableStats => Volatile.Read(ref _sessionStats);

    /// <summary>True when the session <paramref name="id"/> is live on this partition (it has a record, not a tombstone).</summary>
    public bool HasSession(ReadOnlySpan<byte> id)
    {
        using var _ = EnterServing();
        return _db!.Get(SessionKey(id), _sessions) is not null;
    }

    /// <summary>True when the session <paramref name="id"/> has ended here and its tombstone is still kept.</summary>
    public bool HasSessionTombstone(ReadOnlySpan<byte> id)
    {
        using var _ = EnterServing();
        return _db!.Get(TagKey(TombstoneTag, id), _sessions) is not null;
    }

    /// <summary>
    /// Up to <paramref name="max"/> live sessions whose last activity is before <paramref name="lastActiveBeforeUnixMs"/>,
    /// least recently active first (to the second: the index keeps one-second buckets): the sessions an
    /// ExpireSessions command may end.
    /// </summary>
    public IReadOnlyList<IdleSession> IdleSessions(ulong lastActiveBeforeUnixMs, int max)
    {
        var found = new List<IdleSession>();
        // Buckets that start before the instant; the last of them may hold sessions active since, so
        // each candidate's exact stamp comes from its record (the stamp ExpireSessions compares).
        ScanStamped(ActivityTag, lastActiveBeforeUnixMs, max, (_, id) =>
        {
            if (_db!.Get(SessionKey(id), _sessions) is { Length: >= SessionHeaderBytes } record
                && BinaryPrimitives.ReadUInt64BigEndian(record.AsSpan(8)) is var lastActive
                && lastActive < lastActiveBeforeUnixMs)
            {
                found.Add(new IdleSession(id, lastActive));
                return true;
            }
            return false;
        });
        return found;
    }

    /// <summary>Up to <paramref name="max"/> ids of ended sessions whose tombstone was written before <paramref name="beforeUnixMs"/>, oldest first (to purge).</summary>
    public IReadOnlyList<byte[]> TombstonesBefore(ulong beforeUnixMs, int max)
    {
        var found = new List<byte[]>();
        ScanStamped(TombstoneIndexTag, beforeUnixMs, max, (_, id) =>
        {
            found.Add(id);
            return true;
        });
        return found;
    }

    /// <summary>Walks the index <paramref name="tag"/> below stamp <paramref name="before"/> until <paramref name="add"/> has accepted <paramref name="max"/> entries.</summary>
    private void ScanStamped(byte tag, ulong before, int max, Func<ulong, byte[], bool> add)
    {
        using var _ = EnterServing();
        if (max <= 0 || before == 0)
        {
            return;
        }
        var upper = new byte[9];
        upper[0] = tag;
        BinaryPrimitives.WriteUInt64BigEndian(upper.AsSpan(1), before);
        var readOptions = new ReadOptions().SetIterateUpperBound(upper);
        using (var iterator = _db!.NewIterator(_sessions, readOptions))
        {
            var n = 0;
            for (iterator.Seek([tag]); iterator.Valid() && n < max; iterator.Next())
            {
                var key = iterator.GetKeySpan();
                if (add(BinaryPrimitives.ReadUInt64BigEndian(key[1..]), key[9..].ToArray()))
                {
                    n++;
                }
            }
        }
        // The native upper bound belongs to the options: keep them alive until the scan is done.
        GC.KeepAlive(readOptions);
    }

    private void LoadSessionStats()
    {
        var bytes = _db!.Get(SessionStatsKey, _sessions);
        Volatile.Write(ref _sessionStats, bytes is { Length: 32 }
            ? new SessionTableStats(
                (long)BinaryPrimitives.ReadUInt64BigEndian(bytes),
                (long)BinaryPrimitives.ReadUInt64BigEndian(bytes.AsSpan(8)),
                (long)BinaryPrimitives.ReadUInt64BigEndian(bytes.AsSpan(16)),
                (long)BinaryPrimitives.ReadUInt64BigEndian(bytes.AsSpan(24)))
            : SessionTableStats.Empty);
    }

    private static byte[] EncodeSessionStats(SessionTableStats stats)
    {
        var bytes = new byte[32];
        BinaryPrimitives.WriteUInt64BigEndian(bytes, (ulong)stats.Sessions);
        BinaryPrimitives.WriteUInt64BigEndian(bytes.AsSpan(8), (ulong)stats.Tombstones);
        BinaryPrimitives.WriteUInt64BigEndian(bytes.AsSpan(16), (ulong)stats.RecordedResponses);
        BinaryPrimitives.WriteUInt64BigEndian(bytes.AsSpan(24), (ulong)stats.ApproxBytes);
        return bytes;
    }

    private static byte[] SessionKey(ReadOnlySpan<byte> id) => TagKey(SessionTag, id);

    private static byte[] TagKey(byte tag, ReadOnlySpan<byte> id)
    {
        var key = new byte[1 + id.Length];
        key[0] = tag;
        id.CopyTo(key.AsSpan(1));
        return key;
    }

    private static byte[] StampedKey(byte tag, ulong stamp, ReadOnlySpan<byte> id)
    {
        var key = new byte[9 + id.Length];
        key[0] = tag;
        BinaryPrimitives.WriteUInt64BigEndian(key.AsSpan(1), stamp);
        id.CopyTo(key.AsSpan(9));
        return key;
    }

    /// <summary>One recorded response: the sequence, the index it was applied at and its status.</summary>
    private readonly record struct RecordedResponse(ulong Sequence, ulong Index, ApplyStatus Status);

    /// <summary>Bytes of one recorded response in a session record.</summary>
    private const int RecordedResponseBytes = 17;

    /// <summary>Bytes of a session record before its responses.</summary>
    private const int SessionHeaderBytes = 20;

    /// <summary>A session's state while a chunk is built: what the database held, and what the chunk makes of it.</summary>
    private sealed class SessionSlot(byte[] id)
    {
        public byte[] Id { get; } = id;

        // As loaded.
        public bool WasLive { get; set; }
        public ulong WasLastActive { get; set; }
        public int WasResponses { get; set; }
        public ulong? WasTombstone { get; set; }

        // As the chunk leaves it.
        public bool Live { get; set; }
        public ulong LowWater { get; set; }
        public ulong LastActive { get; set; }
        public List<RecordedResponse> Responses { get; } = [];
        public ulong? Tombstone { get; set; }
        public bool Dirty { get; set; }

        public int FindResponse(ulong sequence)
        {
            // Sorted by sequence; most writes land at the end, so search from there.
            for (var i = Responses.Count - 1; i >= 0; i--)
            {
                var s = Responses[i].Sequence;
                if (s == sequence)
                {
                    return i;
                }
                if (s < sequence)
                {
                    break;
                }
            }
            return -1;
        }

        /// <summary>How many recorded responses are at or above <paramref name="lowWater"/>.</summary>
        public int CountFrom(ulong lowWater)
        {
            var n = 0;
            for (var i = Responses.Count - 1; i >= 0 && Responses[i].Sequence >= lowWater; i--)
            {
                n++;
            }
            return n;
        }

        public void Record(RecordedResponse response, ulong lowWater)
        {
            if (lowWater > LowWater)
            {
                LowWater = lowWater;
                var drop = 0;
                while (drop < Responses.Count && Responses[drop].Sequence < lowWater)
                {
                    drop++;
                }
                Responses.RemoveRange(0, drop);
            }
            var at = Responses.Count;
            while (at > 0 && Responses[at - 1].Sequence > response.Sequence)
            {
                at--;
            }
            Responses.Insert(at, response);
        }

        public byte[] Encode()
        {
            var bytes = new byte[SessionHeaderBytes + (Responses.Count * RecordedResponseBytes)];
            var span = bytes.AsSpan();
            BinaryPrimitives.WriteUInt64BigEndian(span, LowWater);
            BinaryPrimitives.WriteUInt64BigEndian(span[8..], LastActive);
            BinaryPrimitives.WriteUInt32BigEndian(span[16..], (uint)Responses.Count);
            var offset = SessionHeaderBytes;
            foreach (var r in Responses)
            {
                BinaryPrimitives.WriteUInt64BigEndian(span[offset..], r.Sequence);
                BinaryPrimitives.WriteUInt64BigEndian(span[(offset + 8)..], r.Index);
                span[offset + 16] = (byte)r.Status;
                offset += RecordedResponseBytes;
            }
            return bytes;
        }

        public void Decode(ReadOnlySpan<byte> bytes, ulong index, int partitionId)
        {
            if (bytes.Length < SessionHeaderBytes)
            {
                throw Corrupt(index, partitionId);
            }
            LowWater = BinaryPrimitives.ReadUInt64BigEndian(bytes);
            LastActive = BinaryPrimitives.ReadUInt64BigEndian(bytes[8..]);
            var n = (int)BinaryPrimitives.ReadUInt32BigEndian(bytes[16..]);
            if (n < 0 || bytes.Length != SessionHeaderBytes + ((long)n * RecordedResponseBytes))
            {
                throw Corrupt(index, partitionId);
            }
            var offset = SessionHeaderBytes;
            for (var i = 0; i < n; i++)
            {
                Responses.Add(new RecordedResponse(
                    BinaryPrimitives.ReadUInt64BigEndian(bytes[offset..]),
                    BinaryPrimitives.ReadUInt64BigEndian(bytes[(offset + 8)..]),
                    (ApplyStatus)bytes[offset + 16]));
                offset += RecordedResponseBytes;
            }
        }

        private static DEngineException Corrupt(ulong index, int partitionId) =>
            new(DEngineErrorCode.StorageFailure, "A session record in the database is corrupt (its length does not match its response count). Nothing of the chunk was applied; restore the partition from a replica or snapshot.", partitionId, index);
    }

    /// <summary>Approximate bytes of a live session's keys and values (record and activity index).</summary>
    private static long LiveBytes(int idLength, int responses) =>
        (1 + idLength) + SessionHeaderBytes + ((long)responses * RecordedResponseBytes) + (9 + idLength);

    /// <summary>Approximate bytes of a tombstone's keys and values (tombstone and its index).</summary>
    private static long TombstoneBytes(int idLength) => (1 + idLength) + 8 + (9 + idLength);
}
