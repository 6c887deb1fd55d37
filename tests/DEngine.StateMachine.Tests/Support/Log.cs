using DEngine.Protos.Client;
using DEngine.Protos.Common;
using Google.Protobuf;

namespace DEngine.StateMachine.Tests.Support;

/// <summary>Builds d-engine log entries for tests (term 1 unless stated).</summary>
public static class Log
{
    public static ByteString B(string text) => ByteString.CopyFromUtf8(text);

    public static ByteString B(params byte[] bytes) => ByteString.CopyFrom(bytes);

    public static Entry Command(ulong index, WriteCommand command, ulong term = 1) => new()
    {
        Index = index,
        Term = term,
        Payload = new EntryPayload { Command = command.ToByteString() },
    };

    public static WriteCommand InsertCommand(ByteString key, ByteString value, ulong ttlSecs = 0, ulong expiresAtUnixMs = 0) => new()
    {
        Insert = new WriteCommand.Types.Insert { Key = key, Value = value, TtlSecs = ttlSecs, ExpiresAtUnixMs = expiresAtUnixMs },
    };

    public static Entry Insert(ulong index, string key, string value, ulong ttlSecs = 0, ulong expiresAtUnixMs = 0, ulong term = 1) =>
        Command(index, InsertCommand(B(key), B(value), ttlSecs, expiresAtUnixMs), term);

    public static Entry Insert(ulong index, ByteString key, ByteString value, ulong term = 1) =>
        Command(index, InsertCommand(key, value), term);

    public static Entry Delete(ulong index, string key, ulong term = 1) =>
        Command(index, new WriteCommand { Delete = new WriteCommand.Types.Delete { Key = B(key) } }, term);

    /// <summary>CompareAndSwap; <paramref name="expected"/> null means "the key must be absent".</summary>
    public static Entry Cas(ulong index, string key, string? expected, string newValue, ulong asOfUnixMs = 0, ulong term = 1)
    {
        var cas = new WriteCommand.Types.CompareAndSwap { Key = B(key), NewValue = B(newValue), AsOfUnixMs = asOfUnixMs };
        if (expected is not null)
        {
            cas.ExpectedValue = B(expected);
        }
        return Command(index, new WriteCommand { CompareAndSwap = cas }, term);
    }

    public static Entry ExpireKeys(ulong index, ulong asOfUnixMs, IEnumerable<ExpiredKey> keys, ulong term = 1)
    {
        var command = new WriteCommand.Types.ExpireKeys { AsOfUnixMs = asOfUnixMs };
        foreach (var key in keys)
        {
            command.Keys.Add(new WriteCommand.Types.ExpiredKey { Key = ByteString.CopyFrom(key.Key), ExpiresAtUnixMs = key.ExpiresAtUnixMs });
        }
        return Command(index, new WriteCommand { ExpireKeys = command }, term);
    }

    public static Entry Noop(ulong index, ulong term = 1) => new()
    {
        Index = index,
        Term = term,
        Payload = new EntryPayload { Noop = new Noop() },
    };

    public static Entry AddNode(ulong index, uint nodeId, ulong term = 1) => new()
    {
        Index = index,
        Term = term,
        Payload = new EntryPayload
        {
            Config = new MembershipChange { AddNode = new AddNode { NodeId = nodeId, Address = $"127.0.0.1:{9080 + nodeId}", Status = NodeStatus.Active } },
        },
    };
}
