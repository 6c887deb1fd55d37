using DEngine.Orleans.Diagnostics;
using DEngine.Protos.Client;
using DEngine.StateMachine;
using Google.Protobuf;
using Orleans.Runtime;

namespace DEngine.Orleans.Partitions;

/// <summary>
/// Plans the deletion of a partition's expired keys: a one-shot grain timer due at the earliest
/// expiry in the TTL index (no fixed poll), a durable reminder that wakes the partition after a
/// deactivation, and bounded cleanup rounds queued as ExpireKeys commands, so deletion goes through
/// the ordered, logged apply path like any write. Runs on the partition grain's scheduler.
/// </summary>
/// <param name="options">The Lease section: enabled, round bounds.</param>
/// <param name="metrics">Cleanup counters.</param>
/// <param name="engine">The open database, or null; and whether cleanup may be planned now (not while unavailable).</param>
/// <param name="registerTimer">Registers the grain timer (non-interleaving, one-shot) with its first due time.</param>
/// <param name="ensureReminder">Makes sure the partition's durable reminder exists.</param>
/// <param name="enqueue">Queues a command for the next chunk (the sequencer).</param>
public sealed class ExpiryScheduler(
    LeaseOptions options,
    DEngineMetrics metrics,
    Func<(IStateMachine? Engine, bool MayPlan)> engine,
    Func<Func<CancellationToken, Task>, TimeSpan, IGrainTimer> registerTimer,
    Action ensureReminder,
    Func<WriteCommand, Task<ApplyResult>> enqueue)
{
    private IGrainTimer? _timer;
    private ulong _timerDue = ulong.MaxValue;
    private bool _reminderEnsured;

    /// <summary>Keys deleted by cleanup in this activation.</summary>
    public long KeysExpired { get; private set; }

    /// <summary>Keeps the timer due at the earliest expiry after a chunk applied; counts what cleanup removed.</summary>
    public void OnApplied(IReadOnlyList<ApplyEntry> entries, IReadOnlyList<ApplyResult> results)
    {
        var rescan = false;
        for (var i = 0; i < entries.Count; i++)
        {
            var command = entries[i].Command;
            if (command?.OperationCase == WriteCommand.OperationOneofCase.ExpireKeys)
            {
                rescan = true;
                var removed = results[i].KeysExpired;
                KeysExpired += removed;
                if (removed > 0)
                {
                    metrics.KeysExpired.Add(removed);
                }
            }
            else if (command?.OperationCase == WriteCommand.OperationOneofCase.Insert && command.Insert.TtlSecs > 0)
            {
                var expiry = command.Insert.ExpiresAtUnixMs;
                rescan |= expiry == 0 || expiry < _timerDue;
            }
        }
        if (rescan)
        {
            Rearm();
        }
    }

    /// <summary>Arms the one-shot timer for the earliest expiry in the TTL index, or disarms it when there is none.</summary>
    public void Rearm()
    {
        var open = engine().Engine;
        var earliest = open is null || !options.Enabled ? null : open.EarliestExpiry();
        if (earliest is null)
        {
            _timerDue = ulong.MaxValue;
            _timer?.Change(Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
            return;
        }
        _timerDue = earliest.Value;
        EnsureReminder();
        var now = open!.EffectiveNowUnixMs;
        var due = earliest.Value <= now ? TimeSpan.Zero : TimeSpan.FromMilliseconds(Math.Min(earliest.Value - now, (ulong)TimeSpan.FromDays(1).TotalMilliseconds));
        if (_timer is null)
        {
            _timer = registerTimer(OnTimer, due);
        }
        else
        {
            _timer.Change(due, Timeout.InfiniteTimeSpan);
        }
    }

    /// <summary>
    /// Plans one bounded cleanup round and queues it as an ExpireKeys command. Returns how many keys
    /// were planned (0 when none are due, the partition cannot plan now, or the queue is full).
    /// </summary>
    public int ExpireDueKeys()
    {
        var (open, mayPlan) = engine();
        if (open is null || !mayPlan)
        {
            return 0;
        }
        var now = open.EffectiveNowUnixMs;
        var due = open.FindExpired(now, options.MaxKeysPerRound, options.MaxRoundTime);
        if (due.Count == 0)
        {
            Rearm();
            return 0;
        }
        var command = new WriteCommand.Types.ExpireKeys { AsOfUnixMs = now };
        foreach (var key in due)
        {
            command.Keys.Add(new WriteCommand.Types.ExpiredKey { Key = UnsafeByteOperations.UnsafeWrap(key.Key), ExpiresAtUnixMs = key.ExpiresAtUnixMs });
            metrics.CleanupLag.Record(now - Math.Min(now, key.ExpiresAtUnixMs));
        }
        // Not awaited: this runs inside a serial turn, and the drain that applies it needs the next one.
        try
        {
            _ = enqueue(new WriteCommand { ExpireKeys = command });
        }
        catch (DEngineException ex) when (ex.Code == DEngineErrorCode.Overloaded)
        {
            // Client writes fill the queue: cleanup waits for the next round (timer or reminder).
            return 0;
        }
        return due.Count;
    }

    /// <summary>Once per activation with TTL keys: the durable reminder wakes the partition after a deactivation.</summary>
    private void EnsureReminder()
    {
        if (_reminderEnsured)
        {
            return;
        }
        _reminderEnsured = true;
        ensureReminder();
    }

    private Task OnTimer(CancellationToken cancellationToken)
    {
        _timerDue = ulong.MaxValue;
        ExpireDueKeys();
        return Task.CompletedTask;
    }
}
