using System.Collections.Concurrent;
using System.Text;
using DEngine.Client;

namespace DEngine.Cluster.Tests;

/// <summary>
/// Closed-loop writers (unique keys) and readers (re-reading acknowledged keys) against the cluster.
/// It keeps every acknowledged write, counts retryable and transport errors, and records anything
/// that is a wrong answer (an acknowledged key read as absent or with another value) or an
/// unexpected error.
/// </summary>
public sealed class WriteLoad(DEngineClient client, int writers, int readers, string prefix)
{
    private readonly CancellationTokenSource _stop = new();
    private readonly List<Task> _tasks = [];

    public ConcurrentDictionary<string, string> Acknowledged { get; } = new();

    public ConcurrentQueue<string> WrongAnswers { get; } = new();

    public ConcurrentQueue<string> UnexpectedErrors { get; } = new();

    public long RetryableErrors;

    public long TransportErrors;

    public long Attempts;

    public void Start()
    {
        for (var w = 0; w < writers; w++)
        {
            var writer = w;
            _tasks.Add(Task.Run(() => WriteAsync(writer)));
        }
        for (var r = 0; r < readers; r++)
        {
            _tasks.Add(Task.Run(ReadAsync));
        }
    }

    /// <summary>Waits (polling, with a deadline) until at least <paramref name="count"/> more writes are acknowledged.</summary>
    public async Task WaitForMoreAcksAsync(int count, TimeSpan timeout)
    {
        var target = Acknowledged.Count + count;
        var deadline = DateTime.UtcNow + timeout;
        while (Acknowledged.Count < target)
        {
            if (DateTime.UtcNow > deadline)
            {
                throw new TimeoutException($"only {Acknowledged.Count} of {target} writes acknowledged within {timeout} (retryable {RetryableErrors}, transport {TransportErrors}, unexpected: {string.Join(" | ", UnexpectedErrors.Take(3))})");
            }
            await Task.Delay(20);
        }
    }

    public async Task StopAsync()
    {
        _stop.Cancel();
        await Task.WhenAll(_tasks);
    }

    private async Task WriteAsync(int writer)
    {
        for (var n = 0; !_stop.IsCancellationRequested; n++)
        {
            var key = $"{prefix}/w{writer}/{n}";
            var value = $"value-{writer}-{n}";
            Interlocked.Increment(ref Attempts);
            try
            {
                await client.PutAsync(Encoding.UTF8.GetBytes(key), Encoding.UTF8.GetBytes(value));
                Acknowledged[key] = value;
            }
            catch (Exception ex)
            {
                Classify(ex);
            }
        }
    }

    private async Task ReadAsync()
    {
        var random = new Random(7);
        while (!_stop.IsCancellationRequested)
        {
            var snapshot = Acknowledged.ToArray();
            if (snapshot.Length == 0)
            {
                await Task.Delay(5);
                continue;
            }
            var (key, expected) = snapshot[random.Next(snapshot.Length)];
            try
            {
                var value = await client.GetAsync(Encoding.UTF8.GetBytes(key));
                var text = value is null ? null : Encoding.UTF8.GetString(value);
                if (text != expected)
                {
                    WrongAnswers.Enqueue($"{key}: expected {expected}, read {text ?? "<absent>"}");
                }
            }
            catch (Exception ex)
            {
                Classify(ex);
            }
        }
    }

    private void Classify(Exception ex)
    {
        switch (ex)
        {
            case DEngineException { IsRetryable: true }:
                Interlocked.Increment(ref RetryableErrors);
                break;
            case DEngineException { Code: DEngineErrorCode.OutcomeUnknown }:
                // A primary stopped (killed, deposed) with the write in flight: like a lost reply, it may
                // or may not be committed; it was not acknowledged.
                Interlocked.Increment(ref TransportErrors);
                break;
            case DEngineException:
                UnexpectedErrors.Enqueue(ex.Message);
                break;
            case OrleansException or TimeoutException or OperationCanceledException:
                // A silo or connection went away mid-call: the outcome is unknown, nothing was acknowledged.
                Interlocked.Increment(ref TransportErrors);
                break;
            default:
                UnexpectedErrors.Enqueue(ex.GetType().Name + ": " + ex.Message);
                break;
        }
    }
}
