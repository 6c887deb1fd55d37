using System.Diagnostics;
using System.Text;
using DEngine.Client;

namespace DEngine.Cluster.Tests.Linearizability;

/// <summary>Runs one client operation and records it as a <see cref="KvOperation"/> of a history.</summary>
public static class KvClientHistory
{
    /// <summary>
    /// Runs <paramref name="kind"/> on <paramref name="key"/>. Returns the operation, with an unknown
    /// outcome when the failure does not say whether it took effect (a timeout, a transport error,
    /// OutcomeUnknown), or null when it surely did not take effect and observed nothing (a retryable
    /// DEngine error, or a failed read).
    /// </summary>
    public static async Task<KvOperation?> RunAsync(DEngineClient db, int client, string key, KvOpKind kind, string value, string? expected)
    {
        var k = Encoding.UTF8.GetBytes(key);
        var call = Stopwatch.GetTimestamp();
        try
        {
            switch (kind)
            {
                case KvOpKind.Put:
                    await db.PutAsync(k, Encoding.UTF8.GetBytes(value));
                    return new KvOperation(client, key, kind, call, Stopwatch.GetTimestamp(), Value: value);
                case KvOpKind.Delete:
                    await db.DeleteAsync(k);
                    return new KvOperation(client, key, kind, call, Stopwatch.GetTimestamp());
                case KvOpKind.Get:
                    var read = await db.GetAsync(k);
                    return new KvOperation(client, key, kind, call, Stopwatch.GetTimestamp(), Output: read is null ? null : Encoding.UTF8.GetString(read));
                default:
                    var swapped = await db.CompareAndSwapAsync(k, expected is null ? null : Encoding.UTF8.GetBytes(expected), Encoding.UTF8.GetBytes(value));
                    return new KvOperation(client, key, kind, call, Stopwatch.GetTimestamp(), Value: value, Expected: expected, Swapped: swapped);
            }
        }
        catch (DEngineException ex) when (ex.IsRetryable)
        {
            return null; // retryable errors guarantee the request was not applied
        }
        catch (Exception ex) when (ex is OrleansException or TimeoutException or DEngineException { Code: DEngineErrorCode.OutcomeUnknown })
        {
            // It may take effect at any point after its call, or never.
            return kind switch
            {
                KvOpKind.Get => null,
                KvOpKind.Delete => new KvOperation(client, key, kind, call, long.MaxValue),
                KvOpKind.Put => new KvOperation(client, key, kind, call, long.MaxValue, Value: value),
                _ => new KvOperation(client, key, kind, call, long.MaxValue, Value: value, Expected: expected),
            };
        }
    }
}
