using StackExchange.Redis;

namespace DEngine.Silo;

/// <summary>
/// The Redis profile keeps the configuration records in Redis, so Redis itself must not forget an
/// acknowledged write: every server the silo connects to must log every write to its append-only
/// file and fsync it before answering (<c>appendonly yes</c>, <c>appendfsync always</c>).
/// </summary>
internal static class RedisDurability
{
    /// <summary>Returns why the Redis at <paramref name="connectionString"/> may lose acknowledged writes, or null when it persists every write.</summary>
    public static async Task<string?> FindProblemAsync(string connectionString, TimeSpan timeout)
    {
        var options = ConfigurationOptions.Parse(connectionString);
        options.AbortOnConnectFail = true;
        options.ConnectTimeout = (int)timeout.TotalMilliseconds;
        options.AllowAdmin = true; // CONFIG GET is an admin command
        ConnectionMultiplexer redis;
        try
        {
            redis = await ConnectionMultiplexer.ConnectAsync(options);
        }
        catch (RedisConnectionException ex)
        {
            return $"cannot reach Redis at {connectionString} to check that it persists every write ({ex.Message.Split('\n')[0].Trim()})";
        }
        await using (redis)
        {
            foreach (var endpoint in redis.GetEndPoints())
            {
                var server = redis.GetServer(endpoint);
                string appendOnly, appendFsync;
                try
                {
                    appendOnly = await ConfigValueAsync(server, "appendonly");
                    appendFsync = await ConfigValueAsync(server, "appendfsync");
                }
                catch (RedisException ex)
                {
                    return $"cannot read the persistence settings of Redis at {endpoint} (CONFIG GET: {ex.Message})";
                }
                if (!string.Equals(appendOnly, "yes", StringComparison.OrdinalIgnoreCase) || !string.Equals(appendFsync, "always", StringComparison.OrdinalIgnoreCase))
                {
                    return $"Redis at {endpoint} does not persist every write (appendonly {appendOnly}, appendfsync {appendFsync}); the ownership records could be lost with it. Run it with appendonly yes and appendfsync always";
                }
            }
        }
        return null;
    }

    private static async Task<string> ConfigValueAsync(IServer server, string name)
    {
        foreach (var pair in await server.ConfigGetAsync(name))
        {
            if (string.Equals(pair.Key, name, StringComparison.OrdinalIgnoreCase))
            {
                return pair.Value;
            }
        }
        return "(not set)";
    }
}
