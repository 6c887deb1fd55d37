using System.Net;
using System.Net.Sockets;

namespace DEngine.Silo;

/// <summary>
/// Refuses ports another process listens on. .NET sets SO_REUSEPORT together with SO_REUSEADDR on
/// Linux, so Orleans' listeners bind a port that another silo already listens on, and the kernel
/// then splits connections between two independent clusters. A probe bound without port sharing
/// fails on such a port. It keeps SO_REUSEADDR (.NET sets it on Unix anyway; set here so the intent
/// does not depend on that), so sockets left in TIME_WAIT on the ports do not block a restart.
/// </summary>
internal static class PortGuard
{
    // SOL_SOCKET / SO_REUSEADDR on Linux; .NET's ReuseAddress option would also set SO_REUSEPORT.
    private const int SolSocket = 1;
    private const int SoReuseAddr = 2;

    /// <summary>Returns a one-line problem for the first port in use, or null when all are free.</summary>
    public static string? FindPortInUse(IPAddress address, params (string Key, int Port)[] ports)
    {
        foreach (var (key, port) in ports)
        {
            using var probe = new Socket(address.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
            if (OperatingSystem.IsLinux())
            {
                probe.SetRawSocketOption(SolSocket, SoReuseAddr, BitConverter.GetBytes(1));
            }
            try
            {
                probe.Bind(new IPEndPoint(address, port));
            }
            catch (SocketException ex) when (ex.SocketErrorCode is SocketError.AddressAlreadyInUse or SocketError.AccessDenied)
            {
                return $"port {port} ({key}) on {address} is in use by another process (another silo?). Stop it or choose another port.";
            }
        }
        return null;
    }
}
