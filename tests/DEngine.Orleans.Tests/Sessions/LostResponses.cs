using Orleans;

namespace DEngine.Orleans.Tests.Sessions;

/// <summary>
/// Loses the response of one armed call: the call runs (a write is applied), then the filter waits
/// until the test releases it and answers with a <see cref="TimeoutException"/>, as if the response
/// never arrived. Later calls of the same method and key pass untouched; arrivals are counted.
/// </summary>
public sealed class LostResponses : IIncomingGrainCallFilter
{
    private static readonly TimeSpan HoldBound = TimeSpan.FromSeconds(60);
    private readonly Lock _gate = new();
    private Armed? _armed;

    /// <summary>Loses the response of the next call of <paramref name="method"/> for <paramref name="key"/>.</summary>
    public Armed Arm(string method, byte[] key)
    {
        lock (_gate)
        {
            return _armed = new Armed(method, key);
        }
    }

    /// <inheritdoc />
    public async Task Invoke(IIncomingGrainCallContext context)
    {
        Armed? armed = null;
        var first = false;
        if (context.Request.GetArgumentCount() > 0 && context.Request.GetArgument(0) is byte[] key)
        {
            lock (_gate)
            {
                if (_armed is { } a && context.MethodName == a.Method && key.AsSpan().SequenceEqual(a.Key))
                {
                    armed = a;
                    first = ++a.ArrivedCount == 1;
                }
            }
        }
        await context.Invoke();
        if (armed is null || !first)
        {
            return;
        }
        armed.AppliedSource.TrySetResult(context.Result);
        // Bounded: a failing test cannot hold the call for ever.
        await armed.ReleaseSource.Task.WaitAsync(HoldBound).ContinueWith(static _ => { }, TaskScheduler.Default);
        throw new TimeoutException("Test: the response of this call was lost.");
    }

    /// <summary>One armed call.</summary>
    public sealed class Armed(string method, byte[] key)
    {
        internal string Method { get; } = method;

        internal byte[] Key { get; } = key;

        internal int ArrivedCount;

        internal TaskCompletionSource<object?> AppliedSource { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        internal TaskCompletionSource ReleaseSource { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        /// <summary>Completes with the first call's result once it ran (its response is then held, and lost on release).</summary>
        public Task<object?> Applied => AppliedSource.Task;

        /// <summary>Calls that arrived (the first, whose response is lost, and the retries).</summary>
        public int Arrived => Volatile.Read(ref ArrivedCount);

        /// <summary>Lets the first call answer (with the lost-response timeout).</summary>
        public void Release() => ReleaseSource.TrySetResult();
    }
}
