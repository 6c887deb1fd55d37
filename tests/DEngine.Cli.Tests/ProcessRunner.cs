using System.Diagnostics;
using System.Reflection;

namespace DEngine.Cli.Tests;

/// <summary>The outcome of one process run.</summary>
public sealed record ProcessResult(int ExitCode, string Stdout, string Stderr, TimeSpan Elapsed)
{
    public override string ToString() => $"exit {ExitCode} after {Elapsed.TotalSeconds:0.0} s\n--- stdout ---\n{Stdout}\n--- stderr ---\n{Stderr}";
}

/// <summary>Locates the built executables and runs them with a deadline.</summary>
public static class ProcessRunner
{
    /// <summary>The build configuration these tests were built in (Debug/Release); the executables are taken from the same one.</summary>
    public static string Configuration { get; } =
        typeof(ProcessRunner).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>().Single(a => a.Key == "Configuration").Value!;

    public static string RepoRoot { get; } = FindRepoRoot();

    public static string SiloDll => Built("DEngine.Silo", "DEngine.Silo.dll");

    public static string CliDll => Built("DEngine.Cli", "dengine.dll");

    /// <summary>Runs `dotnet dll args...` and waits for it to exit, killing it at the deadline.</summary>
    public static async Task<ProcessResult> RunAsync(string dll, IEnumerable<string> args, TimeSpan timeout, IDictionary<string, string?>? environment = null)
    {
        var start = new ProcessStartInfo("dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
        };
        start.ArgumentList.Add(dll);
        foreach (var arg in args)
        {
            start.ArgumentList.Add(arg);
        }
        start.Environment.Remove("DENGINE_GATEWAY");
        if (environment is not null)
        {
            foreach (var (key, value) in environment)
            {
                start.Environment[key] = value;
            }
        }
        var clock = Stopwatch.StartNew();
        using var process = Process.Start(start) ?? throw new InvalidOperationException("dotnet did not start");
        process.StandardInput.Close();
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var deadline = new CancellationTokenSource(timeout);
        try
        {
            await process.WaitForExitAsync(deadline.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            await process.WaitForExitAsync();
            throw new TimeoutException($"'{string.Join(' ', start.ArgumentList)}' did not finish within {timeout}; stdout so far: {await stdout}; stderr: {await stderr}");
        }
        return new ProcessResult(process.ExitCode, await stdout, await stderr, clock.Elapsed);
    }

    private static string Built(string project, string dll)
    {
        var path = Path.Combine(RepoRoot, "src", project, "bin", Configuration, "net10.0", dll);
        return File.Exists(path) ? path : throw new FileNotFoundException($"{dll} is not built at {path}; build the solution in {Configuration} first.", path);
    }

    private static string FindRepoRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "DEngine.Orleans.sln")))
            {
                return dir.FullName;
            }
        }
        throw new InvalidOperationException($"No DEngine.Orleans.sln above {AppContext.BaseDirectory}.");
    }
}
