using DEngine.Orleans.Configuration;
using DEngine.Orleans.Replication;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Orleans;
using Orleans.Runtime;

namespace DEngine.Orleans.Placement;

/// <summary>
/// Spreads the primary roles of replicated partitions evenly over the eligible silos
/// (<see cref="PrimaryEligibility"/>): every <see cref="ReplicationOptions.BalanceInterval"/>, and
/// right after Orleans' membership changes, each silo plans for the whole cluster
/// (<see cref="PrimaryBalancePlan"/>, deterministic) and hands over the roles it leads that the plan
/// moves, at most <see cref="ReplicationOptions.MaxConcurrentHandovers"/> in one round. A handover
/// moves only the role, to a replica that has the log (<see cref="IStateMachineGrain.MoveTo"/>).
/// </summary>
/// <remarks>
/// Only the silo that leads a partition moves it, so two silos never hand the same role over at once,
/// whatever their views of the cluster. Every silo plans the same moves from the same configurations,
/// so the bound holds for the cluster, not only per silo. Off with Factor 1 (no replicas to hand to)
/// and with a BalanceInterval of 00:00:00.
/// </remarks>
public sealed partial class PrimaryBalancer(
    IGrainFactory grains,
    ILocalSiloDetails silo,
    IClusterMembershipService membership,
    PrimaryEligibility eligibility,
    ReplicaRegistry replicas,
    IOptions<DEngineOptions> options,
    TimeProvider time,
    ILogger<PrimaryBalancer> logger) : ILifecycleParticipant<ISiloLifecycle>
{
    private readonly CancellationTokenSource _stop = new();
    private Task _loop = Task.CompletedTask;
    private TaskCompletionSource _membershipChanged = new(TaskCreationOptions.RunContinuationsAsynchronously);

    private ReplicationOptions Replication => options.Value.Replication;

    /// <inheritdoc />
    public void Participate(ISiloLifecycle lifecycle) =>
        lifecycle.Subscribe(nameof(PrimaryBalancer), ServiceLifecycleStage.Active, OnStartAsync, OnStopAsync);

    private Task OnStartAsync(CancellationToken cancellationToken)
    {
        if (Replication.Factor > 1 && Replication.BalanceInterval > TimeSpan.Zero)
        {
            _loop = Task.Run(() => RunAsync(_stop.Token), CancellationToken.None);
        }
        return Task.CompletedTask;
    }

    private async Task OnStopAsync(CancellationToken cancellationToken)
    {
        // Stopped before the shutdown's own handover runs its course: no new balancing moves meanwhile.
        await _stop.CancelAsync();
        try
        {
            await _loop;
        }
        catch (OperationCanceledException)
        {
        }
    }

    private async Task RunAsync(CancellationToken cancellationToken)
    {
        _ = WatchMembershipAsync(cancellationToken);
        while (!cancellationToken.IsCancellationRequested)
        {
            try
            {
                await Task.WhenAny(Task.Delay(Replication.BalanceInterval, time, cancellationToken), _membershipChanged.Task);
                cancellationToken.ThrowIfCancellationRequested();
                _membershipChanged = new(TaskCreationOptions.RunContinuationsAsynchronously);
                await RoundAsync(cancellationToken);
            }
            catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
            {
                return;
            }
#pragma warning disable CA1031 // A failed round must not end the loop: the next one plans again.
            catch (Exception ex)
#pragma warning restore CA1031
            {
                LogRoundFailed(ex);
            }
        }
    }

    private async Task WatchMembershipAsync(CancellationToken cancellationToken)
    {
        try
        {
            await foreach (var _ in membership.MembershipUpdates.WithCancellation(cancellationToken))
            {
                _membershipChanged.TrySetResult();
            }
        }
        catch (OperationCanceledException)
        {
        }
    }

    /// <summary>
    /// One balancing round: reads every partition's configuration, plans, and hands over the roles
    /// this silo leads that the plan moves (waiting for each handover's answer). Returns the moves it
    /// started; none while this silo is stopping.
    /// </summary>
    public async Task<IReadOnlyList<PrimaryMove>> RoundAsync(CancellationToken cancellationToken = default)
    {
        var local = membership.CurrentSnapshot.GetSiloStatus(silo.SiloAddress);
        if (local != SiloStatus.Active || Replication.Factor <= 1)
        {
            return [];
        }
        var configurations = await Task.WhenAll(Enumerable.Range(0, options.Value.Partitions).Select(p => grains.GetGrain<IPartitionConfigurationGrain>(p).Get()));
        cancellationToken.ThrowIfCancellationRequested();
        var roles = configurations
            .Select((configuration, partition) => (configuration, partition))
            .Where(x => x.configuration.Primary is not null)
            .Select(x => new PartitionRoles(x.partition, x.configuration.Primary!.Silo, [.. x.configuration.Replicas.Select(r => r.Silo)]))
            .ToArray();
        var plan = PrimaryBalancePlan.Plan(roles, await eligibility.EligibleSilosAsync(), Replication.MaxConcurrentHandovers);
        // The roles this silo leads now (a configuration may name it while its activation is elsewhere or gone).
        var leading = replicas.Primaries;
        var mine = plan.Where(m => m.From == silo.Name && leading.Contains(m.Partition)).ToArray();
        await Task.WhenAll(mine.Select(MoveAsync));
        return mine;
    }

    private async Task MoveAsync(PrimaryMove move)
    {
        try
        {
            if (!await grains.GetGrain<IPrimaryTargetGrain>(move.To).AcceptsPrimaries())
            {
                LogMoveFailed(move.Partition, move.To, "it is stopping");
                return;
            }
            var partition = grains.GetGrain<IStateMachineGrain>(move.Partition);
            // A requested replica move is recorded by this primary only: a handover now would lose it
            // (the new primary would find the target already holding a copy and refuse the operator's
            // request again). Balance waits until the move is done.
            if ((await partition.GetReplicaSet()).Moves is { Length: > 0 } moves)
            {
                LogMoveFailed(move.Partition, move.To, $"a replica move is in progress ({string.Join(", ", moves)})");
                return;
            }
            await partition.MoveTo(move.To);
            LogMoved(move.Partition, move.From, move.To);
        }
        catch (Exception ex) when (ex is DEngineException or OrleansException or TimeoutException)
        {
            // Planned again next round from what is stored then.
            LogMoveFailed(move.Partition, move.To, ex.Message);
        }
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "Balance: partition {Partition}'s primary role handed over from silo {From} to {To}.")]
    private partial void LogMoved(int partition, string from, string to);

    [LoggerMessage(Level = LogLevel.Information, Message = "Balance: handing partition {Partition}'s primary role to silo {To} failed ({Reason}); planned again next round.")]
    private partial void LogMoveFailed(int partition, string to, string reason);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Balance: a balancing round failed; the next one plans again.")]
    private partial void LogRoundFailed(Exception exception);
}
