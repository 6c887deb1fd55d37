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

    private void Key(ByteString key, ulong index, int partition)
    {
        if (key.Length > MaxKeyBytes)
        {
            throw new DEngineException(DEngineErrorCode.LimitExceeded, $"A key of {key.Length} bytes exceeds the limit of {MaxKeyBytes} bytes (MaxKeyBytes). Nothing of the chunk was applied.", partition, index);
        }
    }

    private void Value(ByteString value, ulong index, int partition)
    {
        if (value.Length > MaxValueBytes)
        {
            throw new DEngineException(DEngineErrorCode.LimitExceeded, $"A value of {value.Length} bytes exceeds the limit of {MaxValueBytes} bytes (MaxValueBytes). Nothing of the chunk was applied.", partition, index);
        }
    }
}
