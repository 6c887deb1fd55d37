namespace DEngine.Cluster.Tests;

/// <summary>
/// The Redis profile keeps ownership records in Redis, so a silo refuses a Redis that can lose an
/// acknowledged write, unless told the cluster is throw-away (Redis:AllowVolatile).
/// </summary>
[Collection(LocalClusterCollection.Name)]
public sealed class RedisDurabilityCheckTests : IDisposable
{
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(60);

    private readonly string _root = Path.Combine(Path.GetTempPath(), "dengine-redis-check-" + Guid.NewGuid().ToString("N"));
    private readonly int _redisPort = Ports.Free();
    private readonly ManagedProcess _redis;

    public RedisDurabilityCheckTests()
    {
        Directory.CreateDirectory(_root);
        // What a default redis-server does: no append-only file, snapshots at most now and then.
        _redis = ManagedProcess.Start(RedisClusterFixture.FindRedisServer(), ["--port", _redisPort.ToString(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", _root], "Ready to accept connections");
        _redis.WaitReadyAsync(TimeSpan.FromSeconds(30)).GetAwaiter().GetResult();
    }

    [Fact]
    public async Task A_silo_refuses_to_start_on_a_Redis_that_does_not_persist_every_write()
    {
        using var silo = StartSilo();

        var exitCode = await silo.WaitForExitAsync(Deadline);

        Assert.Equal(2, exitCode);
        Assert.Contains("does not persist every write (appendonly no", silo.Log, StringComparison.Ordinal);
        Assert.Contains("--Redis:AllowVolatile true", silo.Log, StringComparison.Ordinal);
        Assert.DoesNotContain("DEngine silo ready", silo.Log, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_silo_starts_on_a_volatile_Redis_with_AllowVolatile_and_warns()
    {
        using var silo = StartSilo("--Redis:AllowVolatile", "true");

        await silo.WaitReadyAsync(Deadline);

        Assert.Contains("warning: Redis:AllowVolatile is true", silo.Log, StringComparison.Ordinal);
    }

    private ManagedProcess StartSilo(params string[] extra) => ManagedProcess.Start("dotnet",
    [
        RedisClusterFixture.SiloDll, "--environment", "Redis", "--Redis:ConnectionString", $"127.0.0.1:{_redisPort}",
        "--name", "check", "--data-dir", Path.Combine(_root, "silo"),
        "--silo-port", Ports.Free().ToString(), "--gateway-port", Ports.Free().ToString(), "--no-dashboard",
        .. extra,
    ], "DEngine silo ready:");

    public void Dispose()
    {
        _redis.Dispose();
        try
        {
            Directory.Delete(_root, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}
