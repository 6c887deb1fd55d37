using DEngine.Client.Sessions;
using DEngine.Orleans;
using DEngine.Protos.Client;

namespace DEngine.Client;

/// <summary>Writes: exactly-once through the client's sessions, retried under the per-call deadline.</summary>
public sealed partial class DEngineClient
{
    private PartitionSessions? _sessions;

    /// <summary>What a failed write attempt says about the write.</summary>
    private enum AttemptFailure
    {
        /// <summary>Not retried: the caller gets the error (invalid input, a refused session, a bug).</summary>
        Final,

        /// <summary>Refused before it was sequenced (NotServing, PartitionUnavailable, StaleEpoch, Overloaded): not applied.</summary>
        NotApplied,

        /// <summary>No answer (timeout, lost connection, dead silo, OutcomeUnknown): it may have been applied.</summary>
        MayHaveApplied,
    }

    private static AttemptFailure Classify(Exception ex) => ex switch
    {
        DEngineException { Code: DEngineErrorCode.OutcomeUnknown } => AttemptFailure.MayHaveApplied,
        DEngineException { IsRetryable: true } => AttemptFailure.NotApplied,
        DEngineException => AttemptFailure.Final,
        // A response timeout, a gateway that died, a message rejected because its silo was declared
        // dead after the request reached it: the write may have run. Retrying is safe only because
        // it carries the same (session, sequence).
        // Orleans also cancels a message that expired before it was placed (a partition being placed
        // during a kill): the caller's own cancellation is excluded where this is called.
        TimeoutException or OrleansException or OperationCanceledException => AttemptFailure.MayHaveApplied,
        _ => AttemptFailure.Final,
    };

    /// <summary>
    /// The id of the session this client's writes to <paramref name="partition"/> belong to now
    /// (diagnostics: it is the same for every partition until one of them expired the session).
    /// </summary>
    public async Task<byte[]> GetSessionIdAsync(int partition)
    {
        await PartitionGrainAsync(partition);
        var sessions = SessionsFor(await GetPartitionCountAsync());
        return (byte[])sessions.For(partition).Id.Clone();
    }

    private PartitionSessions SessionsFor(int partitions)
    {
        var known = Volatile.Read(ref _sessions);
        if (known is not null && known.Partitions == partitions)
        {
            return known;
        }
        Interlocked.CompareExchange(ref _sessions, new PartitionSessions(partitions), known);
        return Volatile.Read(ref _sessions)!;
    }

    /// <summary>
    /// One write under the client's session: numbered once, sent (and re-sent) with the same
    /// (session, sequence) until it is answered, fails finally, or the call's deadline passes.
    /// </summary>
    private async Task<T> WriteAsync<TArgs, T>(byte[] key, TArgs args, Func<IStateMachineGrain, byte[], TArgs, ClientSession, Task<T>> call, CancellationToken cancellationToken)
    {
        if (InvalidKey(key) is { } invalid)
        {
            throw invalid;
        }
        var time = _options.TimeProvider;
        var started = time.GetTimestamp();
        var partitions = await GetPartitionCountAsync();
        var partition = KeyRouting.PartitionOf(key, partitions);
        var grain = PartitionGrains(partitions)[partition];
        var sessions = SessionsFor(partitions);
        var session = sessions.For(partition);
        var sequence = session.Begin();
        var mayHaveApplied = false;
        var renewed = false;
        var delay = _options.InitialBackoff;
        var attemptTimeout = _options.AttemptTimeout;
        try
        {
            for (var attempt = 0; ; attempt++)
            {
                var stamp = new ClientSession
                {
                    SessionId = session.IdBytes,
                    Sequence = sequence,
                    LowWater = session.LowWater,
                    // Until the partition answered one write of this session, every write may be the
                    // one that opens it there (writes race); once open, a write that finds no session
                    // must be refused, never open it afresh.
                    FirstToPartition = !session.IsOpenAt(partition),
                };
                try
                {
                    var pending = Invoke((grain, key, args, stamp, call), static c => c.call(c.grain, c.key, c.args, c.stamp));
                    // Each attempt waits at most its attempt timeout; the first one always that long
                    // (a deadline shorter than it bounds only the retries), a retry never past the
                    // deadline. An attempt left unanswered is abandoned, not cancelled: its answer, if
                    // one comes, is the same as the retry's (the session table), so it is dropped.
                    var left = Remaining(started);
                    var wait = attempt == 0 || attemptTimeout < left ? attemptTimeout : left;
                    T result;
                    try
                    {
                        result = await pending.WaitAsync(wait, time, cancellationToken);
                    }
                    catch (TimeoutException) when (!pending.IsCompleted)
                    {
                        _ = pending.ContinueWith(static t => _ = t.Exception, CancellationToken.None, TaskContinuationOptions.OnlyOnFaulted | TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
                        attemptTimeout += attemptTimeout;
                        throw;
                    }
                    session.OpenedAt(partition);
                    return result;
                }
                catch (DEngineException ex) when (ex.Code == DEngineErrorCode.SessionExpired && !renewed)
                {
                    if (mayHaveApplied)
                    {
                        // An earlier attempt may have been applied before the session expired; under a
                        // new session it could be applied a second time.
                        throw new DEngineException(DEngineErrorCode.OutcomeUnknown, $"Partition {partition} ended this client's session while a write was being retried after an attempt that may have been applied; it is not sent under a new session (it could apply twice). Read the key to learn whether it was applied; later writes continue under a new session.", partition, inner: ex);
                    }
                    // Nothing of this write was applied in any attempt: it is safe to send it as a new write.
                    sessions.Renew(partition, session);
                    session.End(sequence);
                    session = sessions.For(partition);
                    sequence = session.Begin();
                    renewed = true;
                    continue;
                }
                catch (Exception ex) when (Classify(ex) is var failure && failure != AttemptFailure.Final && !cancellationToken.IsCancellationRequested)
                {
                    mayHaveApplied |= failure == AttemptFailure.MayHaveApplied;
                    var remaining = Remaining(started);
                    if (remaining <= delay)
                    {
                        if (!mayHaveApplied)
                        {
                            // Every attempt was refused before it was sequenced: the caller learns it was not applied.
                            throw;
                        }
                        throw new TimeoutException($"The write to partition {partition} was not answered within the client's deadline of {_options.CallDeadline.TotalSeconds:0.#} s (DEngineClientOptions.CallDeadline); it may have been applied. Read the key to learn what happened.", ex);
                    }
                }
                await Task.Delay(delay, time, cancellationToken);
                delay = TimeSpan.FromTicks(Math.Min(delay.Ticks * 2, _options.MaxBackoff.Ticks));
            }
        }
        finally
        {
            session.End(sequence);
        }
    }

    private TimeSpan Remaining(long started)
    {
        var left = _options.CallDeadline - _options.TimeProvider.GetElapsedTime(started);
        return left > TimeSpan.Zero ? left : TimeSpan.Zero;
    }
}
