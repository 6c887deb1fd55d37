using DEngine.Protos.Client;
using Google.Protobuf;
using RocksDbSharp;

namespace DEngine.StateMachine;

public sealed partial class RocksDbStateMachine
{
    private sealed partial class ChunkWriter
    {
        // Sessions touched by the chunk, loaded on first use: later entries of the chunk see what
        // earlier ones did (the same sequence twice in one chunk is applied once).
        private Dictionary<byte[], SessionSlot>? _slots;
        private long _sessionsDelta;
        private long _responsesDelta;

        /// <summary>
        /// A write with a session: refused (SessionExpired, LateDuplicate) or answered from the table
        /// (a repeated sequence) without touching the data; otherwise applied and its response recorded.
        /// Every decision reads only replicated state (the table, the entry, the constants of
        /// <see cref="SessionLimits"/>), so every replica decides the same.
        /// </summary>
        private ApplyResult ApplyWithSession(in ApplyEntry entry, ClientSession session)
        {
            var stamp = StampOf(entry.Command!);
            Stamp(stamp);
            var slot = Load(session.SessionId, entry.Index);
            if (slot.Tombstone is not null)
            {
                return Refused(entry, ApplyStatus.SessionExpired);
            }
            if (!slot.Live)
            {
                // A write not flagged as the session's first here, finding no session: the session
                // expired (its tombstone already purged) or this is a stray; applying it could repeat
                // a write whose record is gone, so it is refused.
                if (!session.FirstToPartition || machine.SessionTableStats.Sessions + _sessionsDelta >= machine._options.SessionBounds.MaxSessions)
                {
                    return Refused(entry, ApplyStatus.SessionExpired);
                }
            }
            else
            {
                if (session.Sequence < slot.LowWater)
                {
                    return Refused(entry, ApplyStatus.LateDuplicate);
                }
                var recorded = slot.FindResponse(session.Sequence);
                if (recorded >= 0)
                {
                    var first = slot.Responses[recorded];
                    return new ApplyResult(entry.Index, first.Status, RecordedIndex: first.Index, Deduplicated: true);
                }
            }

            var lowWater = Math.Max(slot.LowWater, session.LowWater);
            var kept = slot.Live ? slot.CountFrom(lowWater) : 0;
            var dropped = slot.Responses.Count - kept;
            var bounds = machine._options.SessionBounds;
            if (kept >= bounds.MaxRecordedPerSession
                || machine.SessionTableStats.RecordedResponses + _responsesDelta - dropped + 1 > bounds.MaxRecordedResponses)
            {
                // Refused rather than applied unrecorded: a retry of an unrecorded write would apply twice.
                return Refused(entry, ApplyStatus.SessionExpired);
            }

            var result = ApplyOperation(entry);
            if (!slot.Live)
            {
                slot.Live = true;
                slot.LowWater = 0;
                _sessionsDelta++;
            }
            // The stamp of an unstamped write (external log) is the time floor as of this entry: the
            // highest stamp applied before it, whatever the chunks were, so a replay stamps the same.
            var active = stamp != 0 ? stamp : Math.Max(machine._timeFloor, HighestStamp);
            slot.LastActive = Math.Max(slot.LastActive, active);
            slot.Record(new RecordedResponse(session.Sequence, entry.Index, result.Status), lowWater);
            _responsesDelta += 1 - dropped;
            slot.Dirty = true;
            return result;
        }

        private static ApplyResult Refused(in ApplyEntry entry, ApplyStatus status) => new(entry.Index, status);

        private static ulong StampOf(WriteCommand command) => command.OperationCase switch
        {
            WriteCommand.OperationOneofCase.Insert => command.Insert.AsOfUnixMs,
            WriteCommand.OperationOneofCase.Delete => command.Delete.AsOfUnixMs,
            WriteCommand.OperationOneofCase.CompareAndSwap => command.CompareAndSwap.AsOfUnixMs,
            _ => 0,
        };

        /// <summary>
        /// Ends each listed session whose last activity is still the listed one (a session written to
        /// after the command was planned survives), leaving a tombstone stamped with the command's
        /// as_of; then drops the listed tombstones. Returns the number of sessions ended.
        /// </summary>
        private int ExpireSessions(WriteCommand.Types.ExpireSessions command, ulong index)
        {
            var asOf = command.AsOfUnixMs != 0 ? command.AsOfUnixMs : Math.Max(machine._timeFloor, HighestStamp);
            var ended = 0;
            foreach (var listed in command.Sessions)
            {
                var slot = Load(listed.SessionId, index);
                if (!slot.Live || slot.LastActive != listed.LastActiveUnixMs)
                {
                    continue;
                }
                _sessionsDelta--;
                _responsesDelta -= slot.Responses.Count;
                slot.Live = false;
                slot.Responses.Clear();
                slot.LowWater = 0;
                slot.Tombstone = asOf;
                slot.Dirty = true;
                ended++;
            }
            foreach (var id in command.PurgeTombstones)
            {
                var slot = Load(id, index);
                if (slot.Tombstone is not null)
                {
                    slot.Tombstone = null;
                    slot.Dirty = true;
                }
            }
            return ended;
        }

        private SessionSlot Load(ByteString id, ulong index)
        {
            _slots ??= new Dictionary<byte[], SessionSlot>(ByteArrayComparer.Instance);
            var key = id.ToByteArray();
            if (_slots.TryGetValue(key, out var slot))
            {
                return slot;
            }
            slot = new SessionSlot(key);
            var record = machine._db!.Get(SessionKey(key), machine._sessions);
            if (record is not null)
            {
                slot.Decode(record, index, machine.PartitionId);
                slot.Live = slot.WasLive = true;
                slot.WasLastActive = slot.LastActive;
                slot.WasResponses = slot.Responses.Count;
            }
            else if (machine._db.Get(TagKey(TombstoneTag, key), machine._sessions) is { } tombstone)
            {
                // A session has a record or a tombstone, never both: the second read only for unknown ones.
                slot.Tombstone = slot.WasTombstone = ReadU64(tombstone);
            }
            _slots[key] = slot;
            return slot;
        }

        /// <summary>
        /// Puts what the chunk did to the session table into the batch. Returns the table's new stats,
        /// or null when the chunk changed nothing there (then nothing is written).
        /// </summary>
        public SessionTableStats? WriteSessions()
        {
            if (_slots is null)
            {
                return null;
            }
            var sessions = machine._sessions;
            long tombstonesDelta = 0, bytesDelta = 0;
            var changed = false;
            foreach (var slot in _slots.Values)
            {
                if (!slot.Dirty)
                {
                    continue;
                }
                changed = true;
                var id = slot.Id;
                if (slot.Live)
                {
                    batch.Put(SessionKey(id), slot.Encode(), sessions);
                    bytesDelta += LiveBytes(id.Length, slot.Responses.Count);
                }
                else if (slot.WasLive)
                {
                    batch.Delete(SessionKey(id), sessions);
                }
                if (slot.WasLive)
                {
                    bytesDelta -= LiveBytes(id.Length, slot.WasResponses);
                }
                var moved = slot.Live != slot.WasLive || ActivityBucket(slot.LastActive) != ActivityBucket(slot.WasLastActive);
                if (slot.WasLive && moved)
                {
                    batch.Delete(StampedKey(ActivityTag, ActivityBucket(slot.WasLastActive), id), sessions);
                }
                if (slot.Live && moved)
                {
                    batch.Put(StampedKey(ActivityTag, ActivityBucket(slot.LastActive), id), Empty, sessions);
                }
                if (slot.Tombstone != slot.WasTombstone)
                {
                    if (slot.WasTombstone is { } was)
                    {
                        batch.Delete(TagKey(TombstoneTag, id), sessions);
                        batch.Delete(StampedKey(TombstoneIndexTag, was, id), sessions);
                        tombstonesDelta--;
                        bytesDelta -= TombstoneBytes(id.Length);
                    }
                    if (slot.Tombstone is { } now)
                    {
                        batch.Put(TagKey(TombstoneTag, id), U64(now), sessions);
                        batch.Put(StampedKey(TombstoneIndexTag, now, id), Empty, sessions);
                        tombstonesDelta++;
                        bytesDelta += TombstoneBytes(id.Length);
                    }
                }
            }
            if (!changed)
            {
                return null;
            }
            var old = machine.SessionTableStats;
            var stats = new SessionTableStats(
                old.Sessions + _sessionsDelta,
                old.Tombstones + tombstonesDelta,
                old.RecordedResponses + _responsesDelta,
                old.ApproxBytes + bytesDelta);
            batch.Put(SessionStatsKey, EncodeSessionStats(stats), sessions);
            return stats;
        }
    }
}
