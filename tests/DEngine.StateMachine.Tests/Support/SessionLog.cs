using DEngine.Protos.Client;
using DEngine.Protos.Common;
using Google.Protobuf;

namespace DEngine.StateMachine.Tests.Support;

/// <summary>Builds log entries of writes with a client session, and ExpireSessions commands (term 1).</summary>
public static class SessionLog
{
    /// <summary>A 16-byte session id derived from <paramref name="n"/> (as a client's random one, but repeatable).</summary>
    public static byte[] Id(int n)
    {
        var id = new byte[16];
        BitConverter.TryWriteBytes(id, n);
        id[15] = 0x5e;
        return id;
    }

    public static ClientSession Session(byte[] id, ulong sequence, ulong lowWater = 0, bool first = false) => new()
    {
        SessionId = ByteString.CopyFrom(id),
        Sequence = sequence,
        LowWater = lowWater,
        FirstToPartition = first,
    };

    public static Entry Put(ulong index, ClientSession session, string key, string value, ulong asOfUnixMs = 0) =>
        Log.Command(index, new WriteCommand
        {
            Insert = new WriteCommand.Types.Insert { Key = Log.B(key), Value = Log.B(value), AsOfUnixMs = asOfUnixMs },
            Session = session,
        });

    public static Entry Cas(ulong index, ClientSession session, string key, string? expected, string newValue, ulong asOfUnixMs = 0)
    {
        var cas = new WriteCommand.Types.CompareAndSwap { Key = Log.B(key), NewValue = Log.B(newValue), AsOfUnixMs = asOfUnixMs };
        if (expected is not null)
        {
            cas.ExpectedValue = Log.B(expected);
        }
        return Log.Command(index, new WriteCommand { CompareAndSwap = cas, Session = session });
    }

    public static Entry Delete(ulong index, ClientSession session, string key, ulong asOfUnixMs = 0) =>
        Log.Command(index, new WriteCommand
        {
            Delete = new WriteCommand.Types.Delete { Key = Log.B(key), AsOfUnixMs = asOfUnixMs },
            Session = session,
        });

    public static Entry ExpireSessions(ulong index, ulong asOfUnixMs, IEnumerable<IdleSession> sessions, IEnumerable<byte[]>? purge = null)
    {
        var command = new WriteCommand.Types.ExpireSessions { AsOfUnixMs = asOfUnixMs };
        foreach (var s in sessions)
        {
            command.Sessions.Add(new WriteCommand.Types.ExpiredSession { SessionId = ByteString.CopyFrom(s.Id), LastActiveUnixMs = s.LastActiveUnixMs });
        }
        foreach (var id in purge ?? [])
        {
            command.PurgeTombstones.Add(ByteString.CopyFrom(id));
        }
        return Log.Command(index, new WriteCommand { ExpireSessions = command });
    }
}
