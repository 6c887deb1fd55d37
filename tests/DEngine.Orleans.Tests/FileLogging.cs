using Microsoft.Extensions.Logging;

namespace DEngine.Orleans.Tests;

/// <summary>
/// With DENGINE_TEST_LOGS=&lt;dir&gt;, every in-process silo's log (Information and up) goes to
/// &lt;dir&gt;/&lt;silo&gt;.log, time-stamped, for post-mortems of a failed run. Off otherwise.
/// </summary>
internal sealed class FileLoggerProvider(string path) : ILoggerProvider
{
    private readonly object _gate = new();

    public static string? Directory => Environment.GetEnvironmentVariable("DENGINE_TEST_LOGS") is { Length: > 0 } dir ? dir : null;

    public ILogger CreateLogger(string categoryName) => new FileLogger(this, categoryName);

    public void Dispose()
    {
    }

    private void Write(string line)
    {
        lock (_gate)
        {
            File.AppendAllText(path, line + Environment.NewLine);
        }
    }

    private sealed class FileLogger(FileLoggerProvider owner, string category) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state)
            where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => logLevel >= LogLevel.Information;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            if (!IsEnabled(logLevel))
            {
                return;
            }
            owner.Write($"{DateTime.UtcNow:HH:mm:ss.fff} {logLevel} {category}: {formatter(state, exception)}{(exception is null ? "" : " | " + exception.GetType().Name + ": " + exception.Message)}");
        }
    }
}
