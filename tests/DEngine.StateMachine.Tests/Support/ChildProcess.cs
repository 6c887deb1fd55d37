using System.Diagnostics;
using System.Text;

namespace DEngine.StateMachine.Tests.Support;

/// <summary>
/// The crash child (tests/DEngine.CrashChild) running as a separate process. Lines of its stdout are
/// read with a deadline; <see cref="KillAsync"/> sends SIGKILL (what <see cref="Process.Kill()"/> does on
/// Unix), so nothing in the child gets to run on the way down.
/// </summary>
public sealed class ChildProcess : IAsyncDisposable
{
    private readonly Process _process;
    private readonly StringBuilder _stderr = new();

    private ChildProcess(Process process)
    {
        _process = process;
    }

    /// <summary>The child's standard error so far (for failure messages).</summary>
    public string StandardError
    {
        get
        {
            lock (_stderr)
            {
                return _stderr.ToString();
            }
        }
    }

    public static ChildProcess Start(params string[] args)
    {
        var start = new ProcessStartInfo(DotnetHost())
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        start.ArgumentList.Add(ChildDll());
        foreach (var arg in args)
        {
            start.ArgumentList.Add(arg);
        }
        var process = Process.Start(start) ?? throw new InvalidOperationException("the crash child did not start");
        var child = new ChildProcess(process);
        process.ErrorDataReceived += (_, e) =>
        {
            if (e.Data is not null)
            {
                lock (child._stderr)
                {
                    child._stderr.AppendLine(e.Data);
                }
            }
        };
        process.BeginErrorReadLine();
        return child;
    }

    /// <summary>The next stdout line; fails the test if none arrives before <paramref name="deadline"/> or the child exits.</summary>
    public async Task<string> ReadLineAsync(DateTime deadline)
    {
        using var timeout = new CancellationTokenSource(Remaining(deadline));
        string? line;
        try
        {
            line = await _process.StandardOutput.ReadLineAsync(timeout.Token);
        }
        catch (OperationCanceledException)
        {
            throw new Xunit.Sdk.XunitException($"the crash child wrote nothing before the deadline. stderr:\n{StandardError}");
        }
        return line ?? throw new Xunit.Sdk.XunitException($"the crash child exited early. stderr:\n{StandardError}");
    }

    /// <summary>SIGKILL, then wait (with a deadline) until the process is gone.</summary>
    public async Task KillAsync(DateTime deadline)
    {
        _process.Kill(entireProcessTree: false);
        using var timeout = new CancellationTokenSource(Remaining(deadline));
        await _process.WaitForExitAsync(timeout.Token);
    }

    public async ValueTask DisposeAsync()
    {
        if (!_process.HasExited)
        {
            await KillAsync(DateTime.UtcNow + TimeSpan.FromSeconds(10));
        }
        _process.Dispose();
    }

    private static TimeSpan Remaining(DateTime deadline)
    {
        var left = deadline - DateTime.UtcNow;
        return left > TimeSpan.Zero ? left : TimeSpan.FromMilliseconds(1);
    }

    /// <summary>The dotnet host that runs this test (the SDK sets DOTNET_HOST_PATH), else "dotnet" from PATH.</summary>
    private static string DotnetHost() =>
        Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") is { Length: > 0 } host && File.Exists(host) ? host : "dotnet";

    /// <summary>tests/DEngine.CrashChild/bin/{Configuration}/{tfm}/DEngine.CrashChild.dll, found from this test's own output directory.</summary>
    private static string ChildDll()
    {
        var output = new DirectoryInfo(AppContext.BaseDirectory.TrimEnd(Path.DirectorySeparatorChar));
        var tfm = output.Name;
        var configuration = output.Parent!.Name;
        var testsDirectory = output.Parent.Parent!.Parent!.Parent!.FullName;
        var dll = Path.Combine(testsDirectory, "DEngine.CrashChild", "bin", configuration, tfm, "DEngine.CrashChild.dll");
        if (!File.Exists(dll))
        {
            throw new FileNotFoundException($"The crash child is not built at {dll}; build tests/DEngine.StateMachine.Tests (it builds the child).", dll);
        }
        return dll;
    }
}
