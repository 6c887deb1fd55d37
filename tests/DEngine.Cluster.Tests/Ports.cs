using System.Net;
using System.Net.Sockets;

namespace DEngine.Cluster.Tests;

internal static class Ports
{
    private static readonly HashSet<int> Handed = [];

    /// <summary>A loopback port nobody listens on now (and not handed out before by this process).</summary>
    public static int Free()
    {
        while (true)
        {
            using var listener = new TcpListener(IPAddress.Loopback, 0);
            listener.Start();
            var port = ((IPEndPoint)listener.LocalEndpoint).Port;
            lock (Handed)
            {
                if (Handed.Add(port))
                {
                    return port;
                }
            }
        }
    }
}
