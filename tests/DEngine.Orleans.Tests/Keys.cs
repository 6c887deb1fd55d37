using System.Text;

namespace DEngine.Orleans.Tests;

internal static class Keys
{
    public static byte[] B(string s) => Encoding.UTF8.GetBytes(s);

    public static string S(byte[]? b) => b is null ? "<null>" : Encoding.UTF8.GetString(b);

    /// <summary>A fresh key (unique per call) that routes to <paramref name="partition"/>.</summary>
    public static byte[] InPartition(int partition, string prefix = "k")
    {
        while (true)
        {
            var key = B($"{prefix}-{Guid.NewGuid():N}");
            if (KeyRouting.PartitionOf(key, ClusterFixture.Partitions) == partition)
            {
                return key;
            }
        }
    }
}
