using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Orleans;
using Orleans.Runtime;

namespace DEngine.Orleans.Replication;

/// <summary>
/// Says in the silo log, once when it starts and once at each change, that the cluster has fewer
/// active silos than the write floor (<see cref="Configuration.ReplicationOptions.EffectiveMinReplicas"/>),
/// so every write is refused: the typical case is one silo started without
/// <c>--DEngine:Replication:Factor 1</c>. Each partition logs the same at its activation; this is the
/// one line an operator reads first. Nothing with Factor 1.
/// </summary>
public sealed partial class ReplicationFloorWatch(
    IClusterMembershipService membership,
    IOptions<DEngineOptions> options,
    ILogger<ReplicationFloorWatch> logger) : ILifecycleParticipant<ISiloLifecycle>
{
    private readonly CancellationTokenSource _stop = new();
    private readonly Lock _gate = new();
    private bool? _below; // guarded by _gate: whether the last observation was below the floor (null before the first)
    private Task? _watching;

    /// <inheritdoc />
    public void Participate(ISiloLifecycle lifecycle) =>
        lifecycle.Subscribe(nameof(ReplicationFloorWatch), ServiceLifecycleStage.Active, OnStartAsync, OnStopAsync);

    private Task OnStartAsync(CancellationToken cancellationToken)
    {
        if (options.Value.Replication.Factor == 1)
        {
            return Task.CompletedTask;
        }
        Observe(ActiveNames(membership.CurrentSnapshot));
        _watching = Task.Run(WatchAsync, CancellationToken.None);
        return Task.CompletedTask;
    }

    private async Task OnStopAsync(CancellationToken cancellationToken)
    {
        await _stop.CancelAsync();
        if (_watching is { } watching)
        {
            await watching.ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        }
    }

    private async Task WatchAsync()
    {
        try
        {
            await foreach (var snapshot in membership.MembershipUpdates.WithCancellation(_stop.Token))
            {
                Observe(ActiveNames(snapshot));
            }
        }
        catch (OperationCanceledException) when (_stop.IsCancellationRequested)
        {
            // The silo stops.
        }
    }

    private static string[] ActiveNames(ClusterMembershipSnapshot snapshot) =>
        [.. snapshot.Members.Values.Where(m => m.Status == SiloStatus.Active).Select(m => m.Name).Distinct(StringComparer.Ordinal).Order(StringComparer.Ordinal)];

    /// <summary>Logs when <paramref name="activeSilos"/> crosses the floor (either way); the first observation logs only when below.</summary>
    internal void Observe(IReadOnlyCollection<string> activeSilos)
    {
        var replication = options.Value.Replication;
        if (replication.Factor == 1)
        {
            return;
        }
        var floor = replication.EffectiveMinReplicas;
        var below = activeSilos.Count < floor;
        lock (_gate)
        {
            var was = _below;
            _below = below;
            if (was == below)
            {
                return;
            }
            if (below)
            {
                LogBelowFloor(activeSilos.Count, string.Join(", ", activeSilos), floor, replication.Factor);
            }
            else if (was is true)
            {
                LogAtFloor(activeSilos.Count, string.Join(", ", activeSilos), floor);
            }
        }
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "The cluster has {Count} active silo(s) ({Silos}), fewer than DEngine:Replication:MinReplicas = {MinReplicas} (DEngine:Replication:Factor {Factor}): every write is refused (retryably, nothing applied) until more silos join. A deployment of fewer silos than that runs with --DEngine:Replication:Factor 1 (one copy per partition).")]
    private partial void LogBelowFloor(int count, string silos, int minReplicas, int factor);

    [LoggerMessage(Level = LogLevel.Information, Message = "The cluster has {Count} active silos ({Silos}), at least DEngine:Replication:MinReplicas = {MinReplicas}: partitions take writes once their replicas are caught up.")]
    private partial void LogAtFloor(int count, string silos, int minReplicas);
}
