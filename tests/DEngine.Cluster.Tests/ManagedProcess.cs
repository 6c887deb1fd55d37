using System.Diagnostics;
using System.Text;

namespace DEngine.Cluster.Tests;

/// <summary>A child process whose output is collected; waits for a line with a deadline; killed with SIGKILL.</summary>
public sealed class ManagedProcess : IDisposable
{
    private readonly Process _process;
    private readonly StringBuilder _log = new();
    private readonly TaskCompletionSource<string> _ready = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly string _readyMarker;

    private ManagedProcess(Process process, string readyMarker)
    {
        _process = process;
        _readyMarker = readyMarker;
        _process.OutputDataReceived += (_, e) => OnLine(e.Data);
        _process.ErrorDataReceived += (_, e) => OnLine(e.Data);
        _process.EnableRaisingEvents = true;
        _process.Exited += (_, _) => _ready.TrySetException(new InvalidOperationException($"the process exited with {SafeExitCode()} before it was ready:\n{Log}"));
        _process.BeginOutputReadLine();
        _process.BeginErrorReadLine();
    }

    public string Log
    {
        get
        {
            lock (_log)
            {
                return _log.ToString();
            }
        }
    }

    public bool HasExited => _process.HasExited;

    /// <summary>Where every output line is also appended, time-stamped (for post-mortems); null for none.</summary>
    public string? LogFile { get; set; }

    public static ManagedProcess Start(string fileName, IEnumerable<string> args, string readyMarker)
    {
        var info = new ProcessStartInfo(fileName) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var arg in args)
        {
            info.ArgumentList.Add(arg);
        }
        var process = Process.Start(info) ?? throw new InvalidOperationException($"could not start {fileName}");
        return new ManagedProcess(process, readyMarker);
    }

    /// <summary>Waits for the ready line, failing with the process log after <paramref name="timeout"/>.</summary>
    public async Task WaitReadyAsync(TimeSpan timeout)
    {
        var finished = await Task.WhenAny(_ready.Task, Task.Delay(timeout));
        if (finished != _ready.Task)
        {
            throw new TimeoutException($"not ready within {timeout}:\n{Log}");
        }
        await _ready.Task;
    }

    /// <summary>Waits for the process to exit on its own and returns its exit code; fails with the log after <paramref name="timeout"/>.</summary>
    public async Task<int> WaitForExitAsync(TimeSpan timeout)
    {
        using var cts = new CancellationTokenSource(timeout);
        try
        {
            await _process.WaitForExitAsync(cts.Token);
        }
        catch (OperationCanceledException)
        {
            throw new TimeoutException($"the process did not exit within {timeout}:\n{Log}");
        }
        return _process.ExitCode;
    }

    /// <summary>SIGKILL: no shutdown code runs in the child.</summary>
    public void Kill()
    {
        if (!_process.HasExited)
        {
            _process.Kill(entireProcessTree: true);
        }
        _process.WaitForExit(10_000);
    }

    /// <summary>SIGSTOP (<paramref name="pause"/>) or SIGCONT: the process is frozen as a long GC pause or a stalled VM would freeze it, its clocks running on.</summary>
    public void Signal(bool pause)
    {
        using var signal = Process.Start("kill", [pause ? "-STOP" : "-CONT", _process.Id.ToString()]);
        if (signal is null || !signal.WaitForExit(5_000) || signal.ExitCode != 0)
        {
            throw new InvalidOperationException($"kill {(pause ? "-STOP" : "-CONT")} {_process.Id} failed");
        }
    }

    /// <summary>SIGTERM and wait for a graceful exit.</summary>
    public async Task StopAsync(TimeSpan timeout)
    {
        if (_process.HasExited)
        {
            return;
        }
        using var term = Process.Start("kill", ["-TERM", _process.Id.ToString()]);
        term?.WaitForExit(5_000);
        using var cts = new CancellationTokenSource(timeout);
        try
        {
            await _process.WaitForExitAsync(cts.Token);
        }
        catch (OperationCanceledException)
        {
            throw new TimeoutException($"the process did not stop within {timeout}:\n{Log}");
        }
    }

    public void Dispose()
    {
        Kill();
        _process.Dispose();
    }

    private void OnLine(string? line)
    {
        if (line is null)
        {
            return;
        }
        lock (_log)
        {
            _log.AppendLine(line);
            if (LogFile is not null)
            {
                File.AppendAllText(LogFile, DateTime.UtcNow.ToString("HH:mm:ss.fff ") + line + Environment.NewLine);
            }
        }
        if (line.Contains(_readyMarker, StringComparison.Ordinal))
        {
            _ready.TrySetResult(line);
        }
    }

    private string SafeExitCode()
    {
        try
        {
            return _process.ExitCode.ToString();
        }
        catch (InvalidOperationException)
        {
            return "?";
        }
    }
}
