using System.Buffers.Binary;
using DEngine.Protos.Client;
using DEngine.Protos.Common;
using Google.Protobuf;

namespace DEngine.Benchmarks.Harness;

/// <summary>The benchmark's data: 16-byte keys, 100-byte values, d-engine entries.</summary>
public static class Data
{
    public const int KeyBytes = 16;
    public const int ValueBytes = 100;

    private static readonly byte[] SharedValue = MakeValue(42);

    /// <summary>Key number <paramref name="n"/> of key space <paramref name="space"/>: distinct, spread (hashed) so inserts are not sequential.</summary>
    public static byte[] Key(long n, int space = 0)
    {
        var key = new byte[KeyBytes];
        // A 64-bit mix keeps keys unordered like real ones; the low half keeps them unique.
        var x = (ulong)n * 0x9E3779B97F4A7C15UL;
        x ^= x >> 29;
        BinaryPrimitives.WriteUInt64BigEndian(key, x ^ ((ulong)space << 56));
        BinaryPrimitives.WriteUInt64BigEndian(key.AsSpan(8), (ulong)n);
        return key;
    }

    public static byte[] Value => SharedValue;

    public static byte[] MakeValue(int seed)
    {
        var value = new byte[ValueBytes];
        new Random(seed).NextBytes(value);
        return value;
    }

    public static Entry InsertEntry(ulong index, byte[] key, byte[] value, ulong expiresAtUnixMs = 0)
    {
        var insert = new WriteCommand.Types.Insert { Key = ByteString.CopyFrom(key), Value = ByteString.CopyFrom(value) };
        if (expiresAtUnixMs != 0)
        {
            insert.TtlSecs = 1;
            insert.ExpiresAtUnixMs = expiresAtUnixMs;
        }
        return new Entry
        {
            Index = index,
            Term = 1,
            Payload = new EntryPayload { Command = new WriteCommand { Insert = insert }.ToByteString() },
        };
    }

    public static string TempDir(BenchOptions options, string name)
    {
        var dir = Path.Combine(options.WorkDir, $"dengine-bench-{name}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(dir);
        return dir;
    }

    public static void DeleteDir(string dir)
    {
        try
        {
            Directory.Delete(dir, recursive: true);
        }
        catch (IOException)
        {
            // Best effort.
        }
    }
}
