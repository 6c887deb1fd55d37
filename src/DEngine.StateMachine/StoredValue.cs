using System.Buffers.Binary;

namespace DEngine.StateMachine;

/// <summary>
/// How a user value is stored in the data column family: one flag byte, then (flag 1) the absolute
/// expiry as 8 big-endian bytes of Unix milliseconds, then the value. Keeping the expiry inside the
/// value makes a read one RocksDB lookup and keeps TTL state exactly as durable as the data.
/// </summary>
internal static class StoredValue
{
    public const byte NoTtl = 0;
    public const byte WithTtl = 1;
    public const int TtlHeaderLength = 9;

    public static byte[] Encode(ReadOnlySpan<byte> value, ulong expiresAtUnixMs)
    {
        if (expiresAtUnixMs == 0)
        {
            var plain = new byte[value.Length + 1];
            plain[0] = NoTtl;
            value.CopyTo(plain.AsSpan(1));
            return plain;
        }
        var stored = new byte[value.Length + TtlHeaderLength];
        stored[0] = WithTtl;
        BinaryPrimitives.WriteUInt64BigEndian(stored.AsSpan(1), expiresAtUnixMs);
        value.CopyTo(stored.AsSpan(TtlHeaderLength));
        return stored;
    }

    /// <summary>Splits a stored value; expiry 0 means no TTL. Throws on a corrupt header.</summary>
    public static ReadOnlySpan<byte> Decode(ReadOnlySpan<byte> stored, out ulong expiresAtUnixMs)
    {
        if (stored.Length >= 1 && stored[0] == NoTtl)
        {
            expiresAtUnixMs = 0;
            return stored[1..];
        }
        if (stored.Length >= TtlHeaderLength && stored[0] == WithTtl)
        {
            expiresAtUnixMs = BinaryPrimitives.ReadUInt64BigEndian(stored[1..]);
            return stored[TtlHeaderLength..];
        }
        throw new DEngineException(DEngineErrorCode.StorageFailure, "A stored value has an unknown format flag; the database was written by another program or is corrupt.");
    }

    public static bool IsExpired(ulong expiresAtUnixMs, ulong nowUnixMs) => expiresAtUnixMs != 0 && expiresAtUnixMs <= nowUnixMs;

    /// <summary>TTL index key: expiry (8 bytes big-endian, so keys sort by expiry) then the user key.</summary>
    public static byte[] TtlIndexKey(ulong expiresAtUnixMs, ReadOnlySpan<byte> key)
    {
        var k = new byte[8 + key.Length];
        BinaryPrimitives.WriteUInt64BigEndian(k, expiresAtUnixMs);
        key.CopyTo(k.AsSpan(8));
        return k;
    }
}
