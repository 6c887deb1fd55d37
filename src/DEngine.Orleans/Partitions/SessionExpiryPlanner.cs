using DEngine.Protos.Client;
using DEngine.StateMachine;
using Google.Protobuf;

namespace DEngine.Orleans.Partitions;

/// <summary>
/// Plans the end of a partition's idle client sessions and the purge of old tombstones, as
/// ExpireSessions commands through the ordered, logged apply path (like TTL cleanup: only the
/// primary plans, every replica applies the same command). A session idle longer than
/// <see cref="DEngineOptions.SessionTimeout"/> ends and leaves a tombstone, so a late retry of it is
/// refused with SessionExpired; a tombstone older than
/// <see cref="DEngineOptions.SessionTombstoneRetention"/> is dropped. Runs on the partition grain's
/// scheduler; time is the engine's (the clock that stamped the sessions' last activity).
/// </summary>
/// <param name="options">Timeout, retention and round bound.</param>
/// <param name="engine">The open database, or null; and whether expiry may be planned now (serving as primary).</param>
/// <param name="enqueue">Queues a command for the next chunk (the sequencer).</param>
public sealed class SessionExpiryPlanner(
    DEngineOptions options,
    Func<(IStateMachine? Engine, bool MayPlan)> engine,
    Func<WriteCommand, Task<ApplyResult>> enqueue)
{
    /// <summary>
    /// How often the primary plans a round: half the shorter of the timeout and the retention, so a
    /// session ends at most that much after its timeout and a tombstone lives at most that much longer.
    /// </summary>
    public static TimeSpan RoundPeriod(DEngineOptions options) =>
        (options.SessionTimeout < options.SessionTombstoneRetention ? options.SessionTimeout : options.SessionTombstoneRetention) / 2;

    /// <summary>
    /// Plans one bounded round and queues it. Returns how many sessions and tombstones it lists (0 when
    /// there is nothing to do, the partition cannot plan now, or the queue is full: the next round retries).
    /// </summary>
    public int PlanRound()
    {
        var (open, mayPlan) = engine();
        if (open is null || !mayPlan)
        {
            return 0;
        }
        var now = open.EffectiveNowUnixMs;
        var idle = open.IdleSessions(Before(now, options.SessionTimeout), options.MaxSessionsPerRound);
        var purge = open.TombstonesBefore(Before(now, options.SessionTombstoneRetention), options.MaxSessionsPerRound);
        if (idle.Count == 0 && purge.Count == 0)
        {
            return 0;
        }
        var command = new WriteCommand.Types.ExpireSessions { AsOfUnixMs = now };
        foreach (var session in idle)
        {
            // The last activity travels with the plan: a write that reaches the session after this
            // plan (but before it applies) moves it, and the apply then keeps the session.
            command.Sessions.Add(new WriteCommand.Types.ExpiredSession { SessionId = ByteString.CopyFrom(session.Id), LastActiveUnixMs = session.LastActiveUnixMs });
        }
        foreach (var tombstone in purge)
        {
            command.PurgeTombstones.Add(ByteString.CopyFrom(tombstone));
        }
        try
        {
            // Not awaited: this runs inside a serial turn, and the drain that applies it needs the next one.
            _ = enqueue(new WriteCommand { ExpireSessions = command });
        }
        catch (DEngineException ex) when (ex.Code == DEngineErrorCode.Overloaded)
        {
            // Client writes fill the queue: expiry waits for the next round.
            return 0;
        }
        return idle.Count + purge.Count;
    }

    private static ulong Before(ulong nowUnixMs, TimeSpan age)
    {
        var ms = (ulong)age.TotalMilliseconds;
        return nowUnixMs > ms ? nowUnixMs - ms : 0;
    }
}
