namespace DEngine.Orleans.Tests;

/// <summary>Waiting for another part of the cluster: poll a condition with a deadline, never sleep for a fixed time.</summary>
internal static class Poll
{
    /// <summary>Polls <paramref name="condition"/> every 50 ms until it holds; throws a TimeoutException naming <paramref name="what"/> after <paramref name="timeout"/>.</summary>
    public static async Task UntilAsync(Func<Task<bool>> condition, TimeSpan timeout, string what)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (!await condition())
        {
            if (DateTime.UtcNow > deadline)
            {
                throw new TimeoutException($"not within {timeout}: {what}");
            }
            await Task.Delay(50);
        }
    }
}
