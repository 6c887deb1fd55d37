using DEngine.Protos.Client;
using Google.Protobuf;

namespace DEngine.StateMachine;

/// <summary>
/// The size limits of client commands, checked where a command is sequenced (the partition grain's
/// write methods and its entry point for external chunks), never when an entry is applied: a log
/// entry, once accepted, must apply the same way on every engine and replica, whatever limits each
/// was configured with. The keys listed by an ExpireKeys command name keys that already exist (a
/// key written under a higher limit must still be cleaned up after the limit was lowered), so they
/// are not size-checked.
/// </summary>
/// <param name="maxKeyBytes">Largest key, bytes.</param>
/// <param name="maxValueBytes">Largest value, bytes.</param>
public sealed class CommandLimits(int maxKeyBytes, int maxValueBytes)
{
    /// <summary>Largest key, bytes.</summary>
    public int MaxKeyBytes { get; } = maxKeyBytes;

    /// <summary>Largest value, bytes.</summary>
    public int MaxValueBytes { get; } = maxValueBytes;

    /// <summary>Throws LimitExceeded naming the first entry of <paramref name="entries"/> over a limit; nothing is applied then.</summary>
    public void Validate(IReadOnlyList<ApplyEntry> entries, int partition)
    {
        ArgumentNullException.ThrowIfNull(entries);
        for (var i = 0; i < entries.Count; i++)
        {
            Validate(entries[i], partition);
        }
    }

    /// <summary>Throws LimitExceeded when <paramref name="entry"/>'s command has a key or value over a limit.</summary>
    public void Validate(in ApplyEntry entry, int partition)
    {
        switch (entry.Command?.OperationCase)
        {
            case WriteCommand.OperationOneofCase.Insert:
                Key(entry.Command.Insert.Key, entry.Index, partition);
                Value(entry.Command.Insert.Value, entry.Index, partition);
                return;
            case WriteCommand.OperationOneofCase.Delete:
                Key(entry.Command.Delete.Key, entry.Index, partition);
                return;
            case WriteCommand.OperationOneofCase.CompareAndSwap:
                var cas = entry.Command.CompareAndSwap;
                Key(cas.Key, entry.Index, partition);
                Value(cas.NewValue, entry.Index, partition);
                if (cas.HasExpectedValue)
                {
                    Value(cas.ExpectedValue, entry.Index, partition);
                }
                return;
            default:
                // Noop, membership and ExpireKeys entries carry nothing a limit applies to.
                return;
        }
    }

    /// <summary>
    /// The check of a client's key before its write is queued or its read served: InvalidArgument when
    /// empty, LimitExceeded when over <see cref="MaxKeyBytes"/>. <paramref name="setting"/> is the
    /// configuration key the caller's users set the limit with (e.g. <c>DEngine:MaxKeyBytes</c>).
    /// </summary>
    public void ValidateKey(byte[]? key, int partition, string setting = nameof(MaxKeyBytes))
    {
        if (key is null || key.Length == 0)
        {
            throw new DEngineException(DEngineErrorCode.InvalidArgument, "Keys must not be empty.", partition);
        }
        CheckKey(key.Length, setting, partition, index: null);
    }

    /// <summary>The check of a client's value before its write is queued: LimitExceeded when over <see cref="MaxValueBytes"/>.</summary>
    public void ValidateValue(byte[] value, int partition, string setting = nameof(MaxValueBytes))
    {
        ArgumentNullException.ThrowIfNull(value);
        CheckValue(value.Length, setting, partition, index: null);
    }

    /// <summary>
    /// The check of a client write's session before the write is queued: InvalidArgument when the id is
    /// empty or longer than <see cref="SessionLimits.MaxSessionIdBytes"/>, the sequence is 0, or the
    /// low-water mark is above the sequence. Apply refuses such an entry with MalformedEntry, so a
    /// sequencer must not log it. A null session (a write without one) passes.
    /// </summary>
    public static void ValidateSession(ClientSession? session, int partition)
    {
        if (session is not null && ChunkRules.SessionProblem(session) is { } problem)
        {
            throw new DEngineException(DEngineErrorCode.InvalidArgument, problem, partition);
        }
    }

    private void Key(ByteString key, ulong index, int partition) => CheckKey(key.Length, nameof(MaxKeyBytes), partition, index);

    private void Value(ByteString value, ulong index, int partition) => CheckValue(value.Length, nameof(MaxValueBytes), partition, index);

    // One comparison and one message for both callers; an entry of a chunk also says that nothing of
    // its chunk was applied.
    private void CheckKey(int length, string setting, int partition, ulong? index)
    {
        if (length > MaxKeyBytes)
        {
            throw new DEngineException(DEngineErrorCode.LimitExceeded, $"A key of {length} bytes exceeds the limit of {MaxKeyBytes} bytes ({setting}).{Consequence(index)}", partition, index);
        }
    }

    private void CheckValue(int length, string setting, int partition, ulong? index)
    {
        if (length > MaxValueBytes)
        {
            throw new DEngineException(DEngineErrorCode.LimitExceeded, $"A value of {length} bytes exceeds the limit of {MaxValueBytes} bytes ({setting}).{Consequence(index)}", partition, index);
        }
    }

    private static string Consequence(ulong? index) => index is null ? "" : " Nothing of the chunk was applied.";
}
