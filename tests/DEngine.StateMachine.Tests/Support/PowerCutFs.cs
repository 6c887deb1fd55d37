using System.Diagnostics;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text;

namespace DEngine.StateMachine.Tests.Support;

/// <summary>
/// The power-cut test file system (tests/PowerCutFs/powercutfs.c) mounted on a temporary directory:
/// writes pass through to a backing directory, and <see cref="Cut"/> discards everything not yet
/// fsynced (file data and sizes since the file's last fsync, directory entries since the directory's
/// last fsync), as a power cut would. <see cref="FailFsync"/> makes fsync fail with EIO.
/// </summary>
/// <remarks>
/// Needs root, /dev/fuse, fusermount3, gcc, pkg-config and libfuse3-dev (.ci/run installs them). When
/// any is missing the constructor throws with what to install: a power-cut test never skips silently.
/// The binary is built on first use into the temp directory, keyed by the source's hash. Linked into
/// every test project that runs power-cut tests.
/// </remarks>
public sealed class PowerCutFs : IDisposable
{
    private static readonly Lock BuildGate = new();
    private readonly Process _process;
    private readonly string _root;
    private readonly string _control;
    private readonly StringBuilder _log = new();
    private bool _disposed;

    /// <summary>Mounts a fresh, empty power-cut file system.</summary>
    public PowerCutFs()
    {
        var binary = EnsureBuilt();
        _root = Path.Combine("/tmp", "pcfs-" + Guid.NewGuid().ToString("N")[..10]);
        var backing = Path.Combine(_root, "backing");
        var graveyard = Path.Combine(_root, "graveyard");
        MountPoint = Path.Combine(_root, "mnt");
        _control = Path.Combine(_root, "ctl");
        Directory.CreateDirectory(backing);
        Directory.CreateDirectory(graveyard);
        Directory.CreateDirectory(MountPoint);

        var start = new ProcessStartInfo(binary)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var arg in new[] { backing, graveyard, _control, MountPoint })
        {
            start.ArgumentList.Add(arg);
        }
        _process = Process.Start(start) ?? throw new InvalidOperationException("powercutfs did not start");
        _process.ErrorDataReceived += (_, e) => Append(e.Data);
        _process.OutputDataReceived += (_, e) => Append(e.Data);
        _process.BeginErrorReadLine();
        _process.BeginOutputReadLine();

        // Ready once the control socket answers (it opens in the file system's init, after the mount).
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(20);
        while (true)
        {
            if (_process.HasExited)
            {
                throw new InvalidOperationException($"powercutfs exited with {_process.ExitCode} before mounting {MountPoint}: {Log}. It needs root and /dev/fuse.");
            }
            try
            {
                if (Send("ping") == "ok" && IsMounted(MountPoint))
                {
                    break;
                }
            }
            catch (SocketException)
            {
                // not listening yet
            }
            if (DateTime.UtcNow > deadline)
            {
                Kill();
                throw new TimeoutException($"powercutfs did not mount {MountPoint} within 20 s: {Log}");
            }
            Thread.Sleep(20); // polling another process for readiness, with a deadline
        }
    }

    /// <summary>The mounted directory: put the database under it.</summary>
    public string MountPoint { get; }

    /// <summary>What the file system process printed (for failure messages).</summary>
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

    /// <summary>
    /// Cuts the power: every write, size change and directory entry not made durable by an fsync is
    /// undone in the backing directory. Kill the processes using the mount first (a real power cut
    /// takes them too). Returns the file system's reply (bytes and directory operations discarded).
    /// </summary>
    public string Cut() => Expect(Send("cut"));

    /// <summary>From now on fsync and fsyncdir fail with EIO, for every path or those matching <paramref name="pattern"/> (fnmatch, mount-relative with a leading '/').</summary>
    public void FailFsync(string? pattern = null) => Expect(Send("fail-fsync on " + (pattern ?? "")));

    /// <summary>fsync works again (an inode whose fsync failed stays non-durable until a cut, as on Linux).</summary>
    public void StopFailingFsync() => Expect(Send("fail-fsync off"));

    /// <summary>Counters: unsynced files, undo bytes, poisoned files, pending directory operations, fsyncs, failures, cuts.</summary>
    public string Stats() => Expect(Send("stats"));

    /// <summary>Unmounts (with a deadline; lazily if busy) and deletes everything.</summary>
    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }
        _disposed = true;
        if (!RunQuietly("fusermount3", ["-u", MountPoint], TimeSpan.FromSeconds(10)))
        {
            RunQuietly("fusermount3", ["-u", "-z", MountPoint], TimeSpan.FromSeconds(10));
        }
        if (!_process.WaitForExit(TimeSpan.FromSeconds(10)))
        {
            Kill();
        }
        _process.Dispose();
        try
        {
            Directory.Delete(_root, recursive: true);
        }
        catch (IOException)
        {
            // a lazily unmounted tree can still be busy; /tmp is cleaned eventually
        }
        catch (UnauthorizedAccessException)
        {
        }
    }

    private void Append(string? line)
    {
        if (line is null)
        {
            return;
        }
        lock (_log)
        {
            _log.AppendLine(line);
        }
    }

    private void Kill()
    {
        try
        {
            _process.Kill();
            _process.WaitForExit(TimeSpan.FromSeconds(10));
        }
        catch (InvalidOperationException)
        {
        }
    }

    private static string Expect(string reply) =>
        reply.StartsWith("ok", StringComparison.Ordinal) ? reply : throw new InvalidOperationException($"powercutfs refused: {reply}");

    private string Send(string command)
    {
        using var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        socket.ReceiveTimeout = 30_000;
        socket.SendTimeout = 30_000;
        socket.Connect(new UnixDomainSocketEndPoint(_control));
        socket.Send(Encoding.UTF8.GetBytes(command + "\n"));
        var buffer = new byte[4096];
        var reply = new StringBuilder();
        while (true)
        {
            var n = socket.Receive(buffer);
            if (n == 0)
            {
                break;
            }
            reply.Append(Encoding.UTF8.GetString(buffer, 0, n));
            if (reply.ToString().Contains('\n', StringComparison.Ordinal))
            {
                break;
            }
        }
        return reply.ToString().Trim();
    }

    private static bool IsMounted(string path) =>
        File.ReadLines("/proc/self/mountinfo").Any(line => line.Split(' ').ElementAtOrDefault(4) == path);

    /// <summary>Builds powercutfs once per source version (into the temp directory) and returns its path.</summary>
    private static string EnsureBuilt()
    {
        if (!OperatingSystem.IsLinux())
        {
            throw new PlatformNotSupportedException("The power-cut tests need Linux with FUSE (libfuse3).");
        }
        if (!File.Exists("/dev/fuse"))
        {
            throw new InvalidOperationException("The power-cut tests need /dev/fuse (FUSE in the kernel) and root; this machine has no /dev/fuse.");
        }
        var source = FindSource();
        var hash = Convert.ToHexString(SHA256.HashData(File.ReadAllBytes(source)))[..16].ToLowerInvariant();
        var directory = Path.Combine(Path.GetTempPath(), "dengine-powercutfs-" + hash);
        var binary = Path.Combine(directory, "powercutfs");
        lock (BuildGate)
        {
            if (File.Exists(binary))
            {
                return binary;
            }
            foreach (var tool in new[] { "gcc", "pkg-config", "fusermount3" })
            {
                if (!RunQuietly("sh", ["-c", $"command -v {tool}"], TimeSpan.FromSeconds(10)))
                {
                    throw new InvalidOperationException($"The power-cut tests need '{tool}': install gcc, pkg-config, fuse3 and libfuse3-dev (apt-get install -y gcc pkg-config fuse3 libfuse3-dev; .ci/run does this).");
                }
            }
            Directory.CreateDirectory(directory);
            // Built under a unique name and renamed, so test processes building at once never run a half-written binary.
            var temp = Path.Combine(directory, "build-" + Guid.NewGuid().ToString("N"));
            Directory.CreateDirectory(temp);
            var make = new ProcessStartInfo("make", ["-s", "-C", Path.GetDirectoryName(source)!, "OUT=" + temp])
            {
                RedirectStandardOutput = true,
                RedirectStandardError = true,
                UseShellExecute = false,
            };
            using var process = Process.Start(make)!;
            var stderr = process.StandardError.ReadToEndAsync();
            var stdout = process.StandardOutput.ReadToEndAsync();
            if (!process.WaitForExit(TimeSpan.FromSeconds(120)) || process.ExitCode != 0)
            {
                throw new InvalidOperationException($"Building powercutfs failed (is libfuse3-dev installed?): {stdout.Result}{stderr.Result}");
            }
            File.Move(Path.Combine(temp, "powercutfs"), binary, overwrite: true);
            Directory.Delete(temp, recursive: true);
            return binary;
        }
    }

    private static string FindSource()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            var candidate = Path.Combine(dir.FullName, "tests", "PowerCutFs", "powercutfs.c");
            if (File.Exists(candidate))
            {
                return candidate;
            }
        }
        throw new FileNotFoundException($"tests/PowerCutFs/powercutfs.c not found above {AppContext.BaseDirectory}.");
    }

    private static bool RunQuietly(string file, string[] args, TimeSpan timeout)
    {
        var start = new ProcessStartInfo(file, args)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        try
        {
            using var process = Process.Start(start)!;
            _ = process.StandardOutput.ReadToEndAsync();
            _ = process.StandardError.ReadToEndAsync();
            if (!process.WaitForExit(timeout))
            {
                process.Kill();
                return false;
            }
            return process.ExitCode == 0;
        }
        catch (System.ComponentModel.Win32Exception)
        {
            return false;
        }
    }
}
