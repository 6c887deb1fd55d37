namespace DEngine.Cluster.Tests;

/// <summary>
/// The real silo processes of a test cluster, by index: started (with a log file when
/// <c>DENGINE_CLUSTER_LOGS</c> is set) and waited for, stopped with SIGTERM, killed with SIGKILL.
/// The fixtures say only how silo <c>i</c> is started.
/// </summary>
public abstract class SiloProcessCluster(int silos)
{
    private static readonly TimeSpan ReadyTimeout = TimeSpan.FromSeconds(90);

    public ManagedProcess?[] Running { get; } = new ManagedProcess?[silos];

    /// <summary>Starts silo <paramref name="index"/> and waits until it is ready.</summary>
    public abstract Task StartSiloAsync(int index);

    /// <summary>Restarts any silo a previous test left stopped.</summary>
    public async Task EnsureAllRunningAsync()
    {
        for (var i = 0; i < Running.Length; i++)
        {
            if (Running[i] is null || Running[i]!.HasExited)
            {
                await StartSiloAsync(i);
            }
        }
    }

    /// <summary>SIGTERM silo <paramref name="index"/> and wait until it has exited (it hands its partitions over first).</summary>
    public async Task StopSiloGracefullyAsync(int index)
    {
        var silo = Running[index] ?? throw new InvalidOperationException($"silo {index} is not running");
        await silo.StopAsync(TimeSpan.FromSeconds(90));
        silo.Dispose();
        Running[index] = null;
    }

    /// <summary>SIGKILL silo <paramref name="index"/>.</summary>
    public void KillSilo(int index)
    {
        Running[index]?.Kill();
        Running[index]?.Dispose();
        Running[index] = null;
    }

    /// <summary>SIGSTOP (<paramref name="pause"/>) or SIGCONT silo <paramref name="index"/>.</summary>
    public void PauseSilo(int index, bool pause) =>
        (Running[index] ?? throw new InvalidOperationException($"silo {index} is not running")).Signal(pause);

    /// <summary>Runs <c>dotnet args…</c> as silo <paramref name="index"/> and waits for its ready line.</summary>
    protected async Task StartProcessAsync(int index, string logName, IEnumerable<string> args)
    {
        var silo = ManagedProcess.Start("dotnet", args, "DEngine silo ready:");
        // DENGINE_CLUSTER_LOGS=<dir> keeps every silo's output for a post-mortem.
        if (Environment.GetEnvironmentVariable("DENGINE_CLUSTER_LOGS") is { Length: > 0 } logs)
        {
            Directory.CreateDirectory(logs);
            silo.LogFile = Path.Combine(logs, $"{logName}-{DateTime.UtcNow:HHmmss.fff}.log");
        }
        Running[index] = silo;
        await silo.WaitReadyAsync(ReadyTimeout);
    }

    /// <summary>SIGKILL every silo still running.</summary>
    protected void KillAll()
    {
        for (var i = 0; i < Running.Length; i++)
        {
            KillSilo(i);
        }
    }
}
