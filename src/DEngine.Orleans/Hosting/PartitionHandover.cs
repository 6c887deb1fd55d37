using DEngine.Orleans.Configuration;
using DEngine.Orleans.Ownership;
using DEngine.Orleans.Placement;
using DEngine.Orleans.Replication;
using DEngine.Orleans.Snapshots;
using DEngine.Orleans.Storage;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Orleans;
using Orleans.Runtime;

namespace DEngine.Orleans.Hosting;

/// <summary>
/// Silo lifecycle duties of DEngine: when the silo becomes active it activates its snapshot server;
/// when it shuts down gracefully it first hands every partition it hosts to another active silo
/// (each target fetches the data from here), so the partitions keep serving while it is gone. With
/// replication it moves only the primary roles it holds, to other replicas.
/// </summary>
public sealed partial class PartitionHandover(
    IGrainFactory grains,
    ILocalSiloDetails silo,
    IClusterMembershipService membership,
    PartitionStore store,
    ReplicaRegistry replicas,
    PrimaryEligibility eligibility,
    LocalSiloStopping stopping,
    IOptions<DEngineOptions> options,
    TimeProvider time,
    ILogger<PartitionHandover> logger) : ILifecycleParticipant<ISiloLifecycle>
{
    private static readonly TimeSpan HandoverTimeout = TimeSpan.FromSeconds(45);

    /// <inheritdoc />
    public void Participate(ISiloLifecycle lifecycle) =>
        lifecycle.Subscribe(nameof(PartitionHandover), ServiceLifecycleStage.Active, OnStartAsync, OnStopAsync);

    private Task OnStartAsync(CancellationToken cancellationToken) => grains.GetGrain<ISnapshotServerGrain>(silo.Name).Ping();

    private async Task OnStopAsync(CancellationToken cancellationToken)
    {
        if (cancellationToken.IsCancellationRequested)
        {
            return; // an ungraceful stop: no time for a handover
        }
        // From here on the other silos' balancers hand this silo no role (it is still Active in membership).
        stopping.Begin();
        if (options.Value.Replication.Factor > 1)
        {
            await HandOverPrimariesAsync();
            return;
        }
        var partitions = store.OpenPartitions.OrderBy(p => p).ToArray();
        var targets = membership.CurrentSnapshot.Members.Values
            .Where(m => m.Status == SiloStatus.Active && m.Name != silo.Name && !m.SiloAddress.Equals(silo.SiloAddress))
            .Select(m => m.Name)
            .OrderBy(n => n, StringComparer.Ordinal)
            .ToArray();
        if (partitions.Length == 0)
        {
            return;
        }
        if (targets.Length == 0)
        {
            LogNoTarget(partitions.Length);
            return;
        }
        // Our own bound, not the stop token: the host may signal haste, but a partition left behind
        // is unavailable until this silo returns, so the handover gets its full time.
        using var timeout = new CancellationTokenSource(HandoverTimeout, time);
        await Task.WhenAll(partitions.Select((partition, i) => HandOverAsync(partition, targets[i % targets.Length], timeout.Token)));
        // Callers may still send requests here from cached addresses. While messaging is up they are
        // forwarded to the new activations (or rejected retryably); once it stops, a rejection can be
        // lost with the connection and the caller waits for its call timeout. So stay a moment.
        await Task.Delay(options.Value.ShutdownGrace, time, CancellationToken.None);
    }

    /// <summary>
    /// Replicated partitions: the primary role of each partition this silo leads moves to another
    /// eligible replica of its configuration (no data moves: the replica has the log), the least
    /// loaded one first (<see cref="PrimaryBalancePlan.HandOverTargets"/>), so the roles spread over
    /// the silos that stay instead of all landing on one. Each handover is clean (see
    /// <c>ReplicatedPrimary.HandOverAsync</c>): nothing in flight is left OutcomeUnknown and the new
    /// primary need not wait out this one's lease. The copies themselves stay here and are closed with the silo.
    /// </summary>
    private async Task HandOverPrimariesAsync()
    {
        using var timeout = new CancellationTokenSource(HandoverTimeout, time);
        // Twice at most: a role a balancer handed here just before the stop began is handed on too.
        for (var pass = 0; pass < 2 && replicas.Primaries.Count > 0 && !timeout.IsCancellationRequested; pass++)
        {
            await HandOverPrimariesOnceAsync(timeout.Token);
        }
        await ReleaseReplicasAsync(timeout.Token);
        await Task.Delay(options.Value.ShutdownGrace, time, CancellationToken.None);
    }

    /// <summary>
    /// Asks the primary of every partition this silo holds a replica of to drop it from the
    /// configuration now: a stopped replica would hold each commit until ReplicaTimeout removes it.
    /// </summary>
    private async Task ReleaseReplicasAsync(CancellationToken cancellationToken)
    {
        var held = replicas.OpenPartitions.Except(replicas.Primaries).Order().ToArray();
        await Task.WhenAll(held.Select(async partition =>
        {
            try
            {
                await grains.GetGrain<IStateMachineGrain>(partition).ReleaseReplica(silo.Name).WaitAsync(HandoverTimeout / 4, time, cancellationToken);
            }
            catch (Exception ex) when (ex is DEngineException or OrleansException or TimeoutException or OperationCanceledException)
            {
                // Its primary drops this replica after ReplicaTimeout instead.
                LogReleaseFailed(partition, ex.Message);
            }
        }));
    }

    private async Task HandOverPrimariesOnceAsync(CancellationToken cancellationToken)
    {
        var partitions = replicas.Primaries.OrderBy(p => p).ToArray();
        if (partitions.Length == 0)
        {
            return;
        }
        var configurations = await Task.WhenAll(Enumerable.Range(0, options.Value.Partitions).Select(p => grains.GetGrain<IPartitionConfigurationGrain>(p).Get()));
        var roles = configurations
            .Select((configuration, partition) => (configuration, partition))
            .Where(x => x.configuration.Primary is not null)
            .Select(x => new PartitionRoles(x.partition, x.configuration.Primary!.Silo, [.. x.configuration.Replicas.Select(r => r.Silo)]))
            .ToArray();
        var eligible = (await eligibility.EligibleSilosAsync()).Where(s => s != silo.Name).ToArray();
        var targets = PrimaryBalancePlan.HandOverTargets(roles, partitions, eligible);
        await Task.WhenAll(partitions.Select(async partition =>
        {
            if (!targets.TryGetValue(partition, out var target))
            {
                LogNoTarget(1);
                return;
            }
            await HandOverAsync(partition, target, cancellationToken);
        }));
    }

    private async Task HandOverAsync(int partition, string target, CancellationToken cancellationToken)
    {
        try
        {
            await grains.GetGrain<IStateMachineGrain>(partition).MoveTo(target);
            var owner = grains.GetGrain<IPartitionOwnerGrain>(partition);
            var configuration = grains.GetGrain<IPartitionConfigurationGrain>(partition);
            var replicated = options.Value.Replication.Factor > 1;
            while (!cancellationToken.IsCancellationRequested)
            {
                var arrived = replicated
                    ? (await configuration.Get()).Primary?.Silo == target && !replicas.Primaries.Contains(partition)
                    : (await owner.Get()).OwnerSilo == target;
                if (arrived)
                {
                    LogHandedOver(partition, target);
                    return;
                }
                await Task.Delay(TimeSpan.FromMilliseconds(100), time, cancellationToken);
            }
        }
        catch (Exception ex) when (ex is DEngineException or OrleansException or TimeoutException or OperationCanceledException)
        {
            LogHandoverFailed(partition, target, ex);
        }
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "Shutdown: partition {Partition} handed over to silo {Target}.")]
    private partial void LogHandedOver(int partition, string target);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Shutdown: handing partition {Partition} to silo {Target} failed; it waits for this silo to return.")]
    private partial void LogHandoverFailed(int partition, string target, Exception exception);

    [LoggerMessage(Level = LogLevel.Information, Message = "Shutdown: partition {Partition}'s primary did not drop this replica ({Reason}); it does so after ReplicaTimeout.")]
    private partial void LogReleaseFailed(int partition, string reason);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Shutdown: no other active silo to take this silo's {Count} partitions; they wait for it to return.")]
    private partial void LogNoTarget(int count);
}
