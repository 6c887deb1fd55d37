namespace DEngine.Cluster.Tests.Support;

/// <summary>Polling with a deadline, for waiting on other processes (never a sleep that waits for time).</summary>
public static class Poll
{
    /// <summary>
    /// Evaluates <paramref name="condition"/> every 250 ms until it is true; throws a TimeoutException
    /// naming <paramref name="what"/> (evaluated then, so it can describe the last state) after <paramref name="timeout"/>.
    /// A condition that throws a retryable cluster error (a partition taking over) counts as false.
    /// </summary>
    public static async Task UntilAsync(Func<Task<bool>> condition, TimeSpan timeout, Func<string> what)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (true)
        {
            try
            {
                if (await condition())
                {
                    return;
                }
            }
            catch (Exception ex) when (ex is DEngineException { IsRetryable: true } or OrleansException or TimeoutException)
            {
                // Taking over or moving: look again.
            }
            if (DateTime.UtcNow > deadline)
            {
                throw new TimeoutException($"not within {timeout}: {what()}");
            }
            await Task.Delay(250);
        }
    }
}
