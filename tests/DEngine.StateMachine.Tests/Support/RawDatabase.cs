using System.Security.Cryptography;
using DEngine.StateMachine.Snapshots;
using RocksDbSharp;

namespace DEngine.StateMachine.Tests.Support;

/// <summary>
/// Reads a closed engine's live database directly with RocksDbSharp, bypassing the engine. Paths are
/// partition directories (what the engine was opened on); the live generation is found through its
/// CURRENT-DB pointer file.
/// </summary>
public static class RawDatabase
{
    /// <summary>The engine's column families, in the order they are digested.</summary>
    public static readonly string[] Families = [RocksDbStateMachine.DataFamily, RocksDbStateMachine.MetaFamily, RocksDbStateMachine.TtlFamily, RocksDbStateMachine.SessionsFamily];

    /// <summary>Every key and value of <paramref name="family"/>, in key order.</summary>
    public static List<(byte[] Key, byte[] Value)> ReadFamily(string path, string family)
    {
        using var db = OpenReadOnly(path);
        var entries = new List<(byte[], byte[])>();
        using var iterator = db.NewIterator(db.GetColumnFamily(family));
        for (iterator.SeekToFirst(); iterator.Valid(); iterator.Next())
        {
            entries.Add((iterator.Key(), iterator.Value()));
        }
        return entries;
    }

    /// <summary>SHA-256 over every key and value of every engine column family (length-prefixed, so boundaries count).</summary>
    public static string Digest(string path)
    {
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        foreach (var family in Families)
        {
            AddField(sha, System.Text.Encoding.UTF8.GetBytes(family));
            foreach (var (key, value) in ReadFamily(path, family))
            {
                AddField(sha, key);
                AddField(sha, value);
            }
        }
        return Convert.ToHexString(sha.GetHashAndReset());
    }

    private static void AddField(IncrementalHash sha, byte[] bytes)
    {
        sha.AppendData(BitConverter.GetBytes((long)bytes.Length));
        sha.AppendData(bytes);
    }

    /// <summary>The live database directory of the partition directory <paramref name="partitionPath"/>.</summary>
    public static string LiveDatabasePath(string partitionPath)
    {
        var layout = new PartitionLayout(partitionPath, 0);
        var generation = layout.ReadPointer() ?? throw new InvalidOperationException($"{partitionPath} has no {PartitionLayout.PointerFileName} file");
        return layout.GenerationPath(generation);
    }

    private static RocksDb OpenReadOnly(string partitionPath)
    {
        var path = LiveDatabasePath(partitionPath);
        var families = new ColumnFamilies();
        foreach (var family in Families)
        {
            families.Add(family, new ColumnFamilyOptions());
        }
        return RocksDb.OpenReadOnly(new DbOptions(), path, families, errIfLogFileExists: false);
    }
}
