using DEngine.Protos.Client;
using Google.Protobuf;

namespace DEngine.StateMachine;

/// <summary>
/// The rules a chunk must meet before anything of it is written: order, no gaps, no term going back,
/// and structurally valid commands. Pure functions of the chunk and the applied position, so every
/// engine judges a chunk the same; they throw the DEngineException the writer gets.
/// </summary>
internal static class ChunkRules
{
    /// <summary>
    /// Returns the position of the first entry above <paramref name="applied"/>; throws if the chunk
    /// is out of order, leaves a gap, or carries a term below one already applied (the writer is a
    /// stale activation: a newer epoch has written here since).
    /// </summary>
    public static int ValidateOrder(IReadOnlyList<ApplyEntry> entries, LogPosition applied, int partitionId)
    {
        var appliedIndex = applied.Index;
        if (entries.Count == 0)
        {
            throw new DEngineException(DEngineErrorCode.InvalidArgument, "An empty chunk cannot be applied; send at least one entry.", partitionId);
        }
        for (var i = 1; i < entries.Count; i++)
        {
            if (entries[i].Index <= entries[i - 1].Index)
            {
                throw new DEngineException(DEngineErrorCode.ChunkOutOfOrder, $"Index {entries[i].Index} follows {entries[i - 1].Index}: indexes in a chunk must strictly increase. Nothing of the chunk was applied.", partitionId, entries[i].Index);
            }
        }
        var firstNew = 0;
        while (firstNew < entries.Count && entries[firstNew].Index <= appliedIndex)
        {
            firstNew++;
        }
        if (firstNew < entries.Count)
        {
            var expected = appliedIndex + 1;
            if (entries[firstNew].Index != expected)
            {
                throw new DEngineException(DEngineErrorCode.ChunkGap, $"The next index to apply is {expected} but the chunk continues with {entries[firstNew].Index}. Send the missing entries first; nothing of the chunk was applied.", partitionId, entries[firstNew].Index);
            }
            for (var i = firstNew + 1; i < entries.Count; i++)
            {
                if (entries[i].Index != entries[i - 1].Index + 1)
                {
                    throw new DEngineException(DEngineErrorCode.ChunkGap, $"Index {entries[i].Index} follows {entries[i - 1].Index}: entries are missing in between. Nothing of the chunk was applied.", partitionId, entries[i].Index);
                }
            }
            var term = applied.Term;
            for (var i = firstNew; i < entries.Count; i++)
            {
                if (entries[i].Term < term)
                {
                    throw new DEngineException(DEngineErrorCode.StaleEpoch, $"Entry {entries[i].Index} has term {entries[i].Term}, below term {term} already applied: its writer is a stale activation (a newer epoch has written this partition). Nothing of the chunk was applied.", partitionId, entries[i].Index);
                }
                term = entries[i].Term;
            }
        }
        return firstNew;
    }

    /// <summary>
    /// Structural checks only (a key to write, an operation this version knows). Size limits are not
    /// checked here: they belong to sequencing (<see cref="CommandLimits"/>), so an accepted entry
    /// applies the same on every engine whatever its configured limits.
    /// </summary>
    public static void ValidateCommand(in ApplyEntry entry, int partitionId)
    {
        if (entry.Command?.Session is { } session)
        {
            ValidateSession(session, entry.Command.OperationCase, entry.Index, partitionId);
        }
        switch (entry.Command?.OperationCase)
        {
            case null:
                return;
            case WriteCommand.OperationOneofCase.Insert:
                ValidateKey(entry.Command.Insert.Key, entry.Index, partitionId);
                return;
            case WriteCommand.OperationOneofCase.Delete:
                ValidateKey(entry.Command.Delete.Key, entry.Index, partitionId);
                return;
            case WriteCommand.OperationOneofCase.CompareAndSwap:
                ValidateKey(entry.Command.CompareAndSwap.Key, entry.Index, partitionId);
                return;
            case WriteCommand.OperationOneofCase.ExpireKeys:
                foreach (var expired in entry.Command.ExpireKeys.Keys)
                {
                    ValidateKey(expired.Key, entry.Index, partitionId);
                }
                return;
            case WriteCommand.OperationOneofCase.ExpireSessions:
                foreach (var listed in entry.Command.ExpireSessions.Sessions)
                {
                    ValidateSessionId(listed.SessionId, "A session listed by an ExpireSessions command", entry.Index, partitionId);
                }
                foreach (var id in entry.Command.ExpireSessions.PurgeTombstones)
                {
                    ValidateSessionId(id, "A tombstone purged by an ExpireSessions command", entry.Index, partitionId);
                }
                return;
            default:
                throw new DEngineException(DEngineErrorCode.MalformedEntry, "The WriteCommand has no operation this version knows. Nothing of the chunk was applied.", partitionId, entry.Index);
        }
    }

    private static void ValidateSession(ClientSession session, WriteCommand.OperationOneofCase operation, ulong index, int partitionId)
    {
        if (operation is not (WriteCommand.OperationOneofCase.Insert or WriteCommand.OperationOneofCase.Delete or WriteCommand.OperationOneofCase.CompareAndSwap))
        {
            throw new DEngineException(DEngineErrorCode.MalformedEntry, $"A {operation} command carries a client session; only Insert, Delete and CompareAndSwap may. Nothing of the chunk was applied.", partitionId, index);
        }
        if (SessionProblem(session) is { } problem)
        {
            throw new DEngineException(DEngineErrorCode.MalformedEntry, $"{problem} Nothing of the chunk was applied.", partitionId, index);
        }
    }

    /// <summary>
    /// What is wrong with a write's session fields, or null: the id must have 1 to
    /// <see cref="SessionLimits.MaxSessionIdBytes"/> bytes, the sequence start at 1, and the low-water
    /// mark not be above the write's own sequence (the client still waits for the write it sends).
    /// Shared by apply and by the sequencer's check (<see cref="CommandLimits.ValidateSession"/>).
    /// </summary>
    internal static string? SessionProblem(ClientSession session)
    {
        if (IdProblem(session.SessionId, "The write's session") is { } problem)
        {
            return problem;
        }
        if (session.Sequence == 0)
        {
            return "The write's session sequence is 0; sequences start at 1.";
        }
        if (session.LowWater > session.Sequence)
        {
            return $"The write's session low-water mark {session.LowWater} is above its own sequence {session.Sequence}: a client still waits for the write it sends.";
        }
        return null;
    }

    private static void ValidateSessionId(ByteString id, string what, ulong index, int partitionId)
    {
        if (IdProblem(id, what) is { } problem)
        {
            throw new DEngineException(DEngineErrorCode.MalformedEntry, $"{problem} Nothing of the chunk was applied.", partitionId, index);
        }
    }

    private static string? IdProblem(ByteString id, string what) =>
        id.IsEmpty || id.Length > SessionLimits.MaxSessionIdBytes
            ? $"{what} has an id of {id.Length} bytes; session ids have 1 to {SessionLimits.MaxSessionIdBytes} bytes."
            : null;

    private static void ValidateKey(ByteString key, ulong index, int partitionId)
    {
        if (key.IsEmpty)
        {
            throw new DEngineException(DEngineErrorCode.InvalidArgument, "Keys must not be empty. Nothing of the chunk was applied.", partitionId, index);
        }
    }

    /// <summary>True when an entry from <paramref name="from"/> on reads state the chunk itself may write (CAS, ExpireKeys): the chunk then needs an overlay.</summary>
    public static bool NeedsOverlay(IReadOnlyList<ApplyEntry> entries, int from)
    {
        for (var i = from; i < entries.Count; i++)
        {
            var op = entries[i].Command?.OperationCase;
            if (op is WriteCommand.OperationOneofCase.CompareAndSwap or WriteCommand.OperationOneofCase.ExpireKeys)
            {
                return true;
            }
        }
        return false;
    }
}
