using DEngine.Protos.Client;
using DEngine.StateMachine;
using Orleans;
using Orleans.Runtime;

namespace DEngine.Orleans.Partitions;

/// <summary>
/// Client sessions (exactly-once writes): the session writes stamp the client's
/// <see cref="ClientSession"/> into the command they sequence, and answer a repeated (session,
/// sequence) with the recorded response; the primary plans session expiry.
/// </summary>
public sealed partial class StateMachineGrain
{
    private SessionExpiryPlanner _sessionExpiry = null!;
    private IGrainTimer? _sessionTimer;

    /// <summary>Creates the planner (on activation, before the partition serves).</summary>
    private void CreateSessionExpiry() =>
        _sessionExpiry = new SessionExpiryPlanner(_options, () => (_state.Open?.Engine, _state is PartitionState.Serving), _sequencer.Enqueue);

    /// <summary>Once serving: the primary's periodic session-expiry round (a grain timer, not interleaving).</summary>
    private void StartSessionExpiry()
    {
        var period = SessionExpiryPlanner.RoundPeriod(_options);
        _sessionTimer ??= this.RegisterGrainTimer(
            _ =>
            {
                _sessionExpiry.PlanRound();
                return Task.CompletedTask;
            },
            new GrainTimerCreationOptions { DueTime = period, Period = period, Interleave = false });
    }

    /// <inheritdoc />
    public async Task<ulong> PutInSession(byte[] key, byte[] value, ulong ttlSeconds, ClientSession session)
    {
        var command = InSession(PutCommand(key, value, ttlSeconds), session);
        return Answered(await SubmitAsync(command), session).ResponseIndex;
    }

    /// <inheritdoc />
    public async Task<ulong> DeleteInSession(byte[] key, ClientSession session)
    {
        var command = InSession(DeleteCommand(key), session);
        return Answered(await SubmitAsync(command), session).ResponseIndex;
    }

    /// <inheritdoc />
    public async Task<bool> CompareAndSwapInSession(byte[] key, byte[]? expected, byte[] newValue, ClientSession session)
    {
        var command = InSession(CompareAndSwapCommand(key, expected, newValue), session);
        // A repeat carries the first apply's status: a CAS that matched once answers true again.
        return Answered(await SubmitAsync(command), session).Status == ApplyStatus.Applied;
    }

    /// <inheritdoc />
    public Task<int> ExpireIdleSessions()
    {
        Serving();
        return Task.FromResult(_sessionExpiry.PlanRound());
    }

    /// <inheritdoc />
    public Task<bool> HasSession(byte[] sessionId)
    {
        ArgumentNullException.ThrowIfNull(sessionId);
        return Task.FromResult(Serving().Engine.HasSession(sessionId));
    }

    /// <summary>Checks the session's fields (the engine's rules, so no entry that apply would refuse is logged) and stamps it into <paramref name="command"/>.</summary>
    private WriteCommand InSession(WriteCommand command, ClientSession session)
    {
        if (session is null)
        {
            throw new DEngineException(DEngineErrorCode.InvalidArgument, "A session write needs its client session; write through Put, Delete or CompareAndSwap without one.", _partition);
        }
        CommandLimits.ValidateSession(session, _partition);
        command.Session = session;
        return command;
    }

    /// <summary>A write refused by its session becomes the caller's typed error; anything else is the answer.</summary>
    private ApplyResult Answered(ApplyResult result, ClientSession session) => result.Status switch
    {
        ApplyStatus.SessionExpired => throw new DEngineException(DEngineErrorCode.SessionExpired, $"Partition {_partition} does not know client session {Convert.ToHexString(session.SessionId.Span)}: it expired after DEngine:{nameof(DEngineOptions.SessionTimeout)} ({_options.SessionTimeout}) without writes here, or never opened here. Nothing of this write was applied; continue under a new session.", _partition, result.Index),
        ApplyStatus.LateDuplicate => throw new DEngineException(DEngineErrorCode.LateDuplicate, $"Partition {_partition}: write {session.Sequence} of client session {Convert.ToHexString(session.SessionId.Span)} is below the session's low-water mark: a late copy of a write its client no longer waits for. Refused, nothing applied.", _partition, result.Index),
        _ => result,
    };
}
