using System.Net;
using System.Net.Sockets;

namespace DEngine.Cli.Tests;

/// <summary>A silo never shares its ports with another process, and a kill -9 does not keep them from it.</summary>
public sealed class SiloPortTests(SiloFixture silo) : IClassFixture<SiloFixture>
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(60);

    [Theory]
    [InlineData(true, false)]
    [InlineData(false, true)]
    public async Task A_second_silo_on_a_port_in_use_stops_with_one_line_and_exit_2_and_the_first_keeps_serving(bool sameSiloPort, bool sameGatewayPort)
    {
        var key = "port-" + Guid.NewGuid().ToString("N");
        Assert.Equal(0, (await silo.CliAsync("put", key, "before")).ExitCode);
        var data = Path.Combine(Path.GetTempPath(), "dengine-port-" + Guid.NewGuid().ToString("N"));
        var siloPort = sameSiloPort ? silo.SiloPort : SiloFixture.FreePort();
        var gatewayPort = sameGatewayPort ? silo.GatewayPort : SiloFixture.FreePort();
        try
        {
            var second = await ProcessRunner.RunAsync(ProcessRunner.SiloDll,
                ["--data-dir", data, "--silo-port", siloPort.ToString(), "--gateway-port", gatewayPort.ToString(), "--no-dashboard"], Timeout);

            Assert.Equal(2, second.ExitCode);
            var error = Assert.Single(second.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries));
            Assert.Contains($"port {(sameSiloPort ? siloPort : gatewayPort)} ({(sameSiloPort ? "Silo:SiloPort" : "Silo:GatewayPort")})", error);
            Assert.Contains("in use by another process", error);
            Assert.DoesNotContain("DEngine silo ready", second.Stdout);
            var get = await silo.CliAsync("get", key);
            Assert.Equal(0, get.ExitCode);
            Assert.Equal("before", get.Stdout.Trim());
        }
        finally
        {
            if (Directory.Exists(data))
            {
                Directory.Delete(data, recursive: true);
            }
        }
    }

    [Fact]
    public async Task A_silo_starts_on_ports_with_TIME_WAIT_leftovers_and_restarts_on_them_after_a_kill_9()
    {
        var restarted = new SiloFixture();
        restarted.ChoosePorts();
        try
        {
            // What a stopped or killed process leaves: connections it closed first linger in TIME_WAIT
            // on its ports for a minute.
            await LeaveTimeWaitAsync(restarted.SiloPort);
            await LeaveTimeWaitAsync(restarted.GatewayPort);
            Assert.True(LeftoverSockets(restarted.SiloPort) > 0 && LeftoverSockets(restarted.GatewayPort) > 0, "the ports should have TIME_WAIT sockets");

            await restarted.InitializeAsync();
            Assert.Equal(0, (await restarted.CliAsync("put", "survivor", "v1")).ExitCode);
            await restarted.KillAsync();
            await restarted.InitializeAsync();

            var get = await restarted.CliAsync("get", "survivor");
            Assert.Equal(0, get.ExitCode);
            Assert.Equal("v1", get.Stdout.Trim());
        }
        finally
        {
            await restarted.DisposeAsync();
        }
    }

    /// <summary>Accepts one connection on <paramref name="port"/> and closes it from the listening side first (active close: TIME_WAIT there).</summary>
    private static async Task LeaveTimeWaitAsync(int port)
    {
        var listener = new TcpListener(IPAddress.Loopback, port);
        listener.Start();
        try
        {
            using var client = new TcpClient();
            await client.ConnectAsync(IPAddress.Loopback, port);
            using (var accepted = await listener.AcceptTcpClientAsync())
            {
                accepted.Client.Shutdown(SocketShutdown.Both);
            }
            // Let the FIN arrive before the client closes, so the accepted side ends in TIME_WAIT.
            var buffer = new byte[1];
            Assert.Equal(0, await client.GetStream().ReadAsync(buffer));
        }
        finally
        {
            listener.Stop();
        }
    }

    /// <summary>Sockets on <paramref name="port"/> in FIN_WAIT1, FIN_WAIT2 or TIME_WAIT (states 04, 05, 06 of /proc/net/tcp and tcp6).</summary>
    private static int LeftoverSockets(int port)
    {
        var local = $":{port:X4}";
        return new[] { "/proc/net/tcp", "/proc/net/tcp6" }
            .Where(File.Exists)
            .SelectMany(table => File.ReadLines(table).Skip(1))
            .Select(line => line.Split(' ', StringSplitOptions.RemoveEmptyEntries))
            .Count(f => f[1].EndsWith(local, StringComparison.Ordinal) && f[3] is "04" or "05" or "06");
    }
}
