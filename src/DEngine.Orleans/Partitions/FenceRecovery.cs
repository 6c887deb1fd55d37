using DEngine.StateMachine;
using Microsoft.Extensions.Logging;

namespace DEngine.Orleans.Partitions;

/// <summary>
/// Brings a partition back after a failed WAL sync fenced its engine (the writers of unsynced chunks
/// got OutcomeUnknown): reopens the engine after a full sync of its files, retrying with backoff
/// while that fails. Until then the partition answers NotServing. Runs on the partition grain's
/// scheduler; the blocking recovery itself runs on the thread pool.
/// </summary>
/// <param name="partition">The partition (for the log).</param>
/// <param name="fenced">The engine when it is fenced and the partition is not closing; otherwise null.</param>
/// <param name="time">The clock the backoff waits on.</param>
/// <param name="logger">Where fencing and recovery are reported.</param>
public sealed partial class FenceRecovery(int partition, Func<IStateMachine?> fenced, TimeProvider time, ILogger logger)
{
    /// <summary>First and largest pause between attempts to reopen a fenced database.</summary>
    private static readonly TimeSpan RetryFirst = TimeSpan.FromMilliseconds(100);
    private static readonly TimeSpan RetryMax = TimeSpan.FromSeconds(5);
    private Task _recovery = Task.CompletedTask;

    /// <summary>When <paramref name="durable"/> fails because the engine fenced itself, starts the recovery (once).</summary>
    public async Task WatchAsync(Task durable)
    {
        try
        {
            await durable;
            return;
        }
        catch (Exception)
        {
            // The writers get the error; here only whether the engine is now fenced matters.
        }
        if (fenced() is not null && _recovery.IsCompleted)
        {
            _recovery = RecoverAsync();
        }
    }

    private async Task RecoverAsync()
    {
        var delay = RetryFirst;
        LogFenced(logger, partition);
        while (fenced() is { } engine)
        {
            try
            {
                await Task.Run(engine.RecoverFromFence);
                LogFenceLifted(logger, partition, engine.LastApplied.Index);
                return;
            }
            catch (DEngineException ex)
            {
                LogFenceRecoveryFailed(logger, partition, delay, ex);
            }
            await Task.Delay(delay, time);
            delay = TimeSpan.FromTicks(Math.Min(delay.Ticks * 2, RetryMax.Ticks));
        }
    }

    [LoggerMessage(Level = LogLevel.Error, Message = "Partition {Partition}: a WAL sync failed; the partition is fenced (writers of unsynced chunks got OutcomeUnknown) until its files are synced again and it is reopened.")]
    private static partial void LogFenced(ILogger logger, int partition);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Partition {Partition}: reopening after the failed sync did not work; retrying in {Delay}.")]
    private static partial void LogFenceRecoveryFailed(ILogger logger, int partition, TimeSpan delay, Exception exception);

    [LoggerMessage(Level = LogLevel.Information, Message = "Partition {Partition}: every file re-synced and the database reopened at index {Index}; serving again.")]
    private static partial void LogFenceLifted(ILogger logger, int partition, ulong index);
}
