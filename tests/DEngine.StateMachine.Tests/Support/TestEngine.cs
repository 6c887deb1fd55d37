using System.Text;
using Microsoft.Extensions.Time.Testing;

namespace DEngine.StateMachine.Tests.Support;

/// <summary>
/// A <see cref="RocksDbStateMachine"/> in its own temp directory with a fake clock. Reopen closes and
/// opens the same directory; dispose closes the engine and deletes the directory.
/// </summary>
public sealed class TestEngine : IDisposable
{
    /// <summary>2030-01-01T00:00:00Z, the default start of the fake clock.</summary>
    public static readonly DateTimeOffset DefaultStart = new(2030, 1, 1, 0, 0, 0, TimeSpan.Zero);

    private readonly TempDirectory _directory = new();

    public TestEngine(Action<RocksDbStateMachineOptions>? configure = null, DateTimeOffset? start = null)
    {
        Clock = new FakeTimeProvider(start ?? DefaultStart);
        Options = SmallOptions(Clock);
        configure?.Invoke(Options);
        Machine = new RocksDbStateMachine(Path, Options);
    }

    public FakeTimeProvider Clock { get; }

    public RocksDbStateMachineOptions Options { get; }

    /// <summary>The open engine (replaced by <see cref="Reopen"/>).</summary>
    public RocksDbStateMachine Machine { get; private set; }

    /// <summary>The database directory.</summary>
    public string Path => _directory.Sub("db");

    public ulong NowUnixMs => (ulong)Clock.GetUtcNow().ToUnixTimeMilliseconds();

    /// <summary>Options with small buffers and caches, so many test databases can be open at once.</summary>
    public static RocksDbStateMachineOptions SmallOptions(TimeProvider clock) => new()
    {
        TimeProvider = clock,
        WriteBufferSize = 1UL << 20,
        BlockCacheBytes = 8UL << 20,
        AuxWriteBufferSize = 1UL << 20,
        MaxBackgroundJobs = 2,
    };

    /// <summary>Disposes the current engine (without Stop) and opens the directory again.</summary>
    public RocksDbStateMachine Reopen()
    {
        Machine.Dispose();
        Machine = new RocksDbStateMachine(Path, Options);
        return Machine;
    }

    /// <summary>Closes the engine, leaving the directory for inspection until dispose.</summary>
    public void Close() => Machine.Dispose();

    public string? GetString(string key)
    {
        var value = Machine.Get(Encoding.UTF8.GetBytes(key));
        return value is null ? null : Encoding.UTF8.GetString(value);
    }

    public void Dispose()
    {
        Machine.Dispose();
        _directory.Dispose();
    }

    public static byte[] Utf8(string text) => Encoding.UTF8.GetBytes(text);

    public static string? Text(byte[]? bytes) => bytes is null ? null : Encoding.UTF8.GetString(bytes);
}
