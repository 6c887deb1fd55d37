using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Orleans;
using Orleans.Runtime;

namespace DEngine.Orleans.Grains;

/// <summary>
/// Holds a durable Orleans reminder for one partition (same key) that wakes the partition grain
/// and has it clean up expired keys — even when the partition was deactivated with TTLs pending.
/// While the partition is active its own timer, armed at the earliest expiry, does the prompt work;
/// the reminder is the safety net that survives deactivation and silo restarts.
/// </summary>
public interface ILeaseReminderGrain : IGrainWithIntegerKey
{
    /// <summary>Registers the reminder if it is not registered yet.</summary>
    Task Ensure();
}

/// <inheritdoc cref="ILeaseReminderGrain" />
public sealed partial class LeaseReminderGrain(IOptions<DEngineOptions> options, ILogger<LeaseReminderGrain> logger)
    : Grain, ILeaseReminderGrain, IRemindable
{
    private const string ReminderName = "dengine-expire-keys";
    private bool _registered;

    /// <inheritdoc />
    public async Task Ensure()
    {
        if (_registered)
        {
            return;
        }
        var period = options.Value.Lease.ReminderPeriod;
        await this.RegisterOrUpdateReminder(ReminderName, period, period);
        _registered = true;
    }

    /// <inheritdoc />
    public async Task ReceiveReminder(string reminderName, TickStatus status)
    {
        var partition = this.GetPrimaryKeyLong();
        try
        {
            var planned = await GrainFactory.GetGrain<IStateMachineGrain>(partition).CleanupExpired();
            if (planned > 0)
            {
                LogWoke(partition, planned);
            }
        }
        catch (DEngineException ex) when (ex.IsRetryable)
        {
            // The partition is moving or its silo is down; the next tick tries again.
            LogNotNow(partition, ex.Code);
        }
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "Lease reminder woke partition {Partition}: {Planned} expired keys queued for deletion.")]
    private partial void LogWoke(long partition, int planned);

    [LoggerMessage(Level = LogLevel.Debug, Message = "Lease reminder could not reach partition {Partition} ({Code}); next tick retries.")]
    private partial void LogNotNow(long partition, DEngineErrorCode code);
}
