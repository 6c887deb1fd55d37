using DEngine.Orleans.Configuration;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Orleans;
using Orleans.Runtime;

namespace DEngine.Orleans.Replication;

/// <summary>
/// Drops this silo's surplus copies: a copy that the latest stored configuration of its partition
/// does not count (as this silo with this data directory's incarnation) and that no primary has used
/// for <see cref="ReplicationOptions.ReplaceAfter"/> — typically a silo that returned after it was
/// replaced. Its files are deleted and the space reclaimed. Nothing with Factor 1.
/// </summary>
/// <remarks>
/// Safe against a primary that counts the copy: a configuration naming this silo and incarnation
/// keeps it, and a learner joins a configuration only after acknowledging messages, each of which
/// marks the copy used (<see cref="ReplicaRegistry.TryDropIdle"/> checks that under the copy's gate).
/// A partition without a stored configuration is never touched (nothing is known about it).
/// </remarks>
public sealed partial class SurplusCopySweeper(
    ReplicaRegistry registry,
    IGrainFactory grains,
    ILocalSiloDetails silo,
    SiloIncarnation incarnation,
    IOptions<DEngineOptions> options,
    TimeProvider time,
    ILogger<SurplusCopySweeper> logger) : ILifecycleParticipant<ISiloLifecycle>
{
    private readonly CancellationTokenSource _stop = new();
    private Task? _sweeping;

    /// <inheritdoc />
    public void Participate(ISiloLifecycle lifecycle) =>
        lifecycle.Subscribe(nameof(SurplusCopySweeper), ServiceLifecycleStage.Active, OnStartAsync, OnStopAsync);

    private Task OnStartAsync(CancellationToken cancellationToken)
    {
        if (options.Value.Replication.Factor > 1)
        {
            _sweeping = Task.Run(LoopAsync, CancellationToken.None);
        }
        return Task.CompletedTask;
    }

    private async Task OnStopAsync(CancellationToken cancellationToken)
    {
        await _stop.CancelAsync();
        if (_sweeping is { } sweeping)
        {
            await sweeping.ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        }
    }

    private async Task LoopAsync()
    {
        var replaceAfter = options.Value.Replication.ReplaceAfter;
        var every = TimeSpan.FromTicks(Math.Clamp(replaceAfter.Ticks / 4, TimeSpan.TicksPerSecond, TimeSpan.TicksPerSecond * 30));
        while (!_stop.IsCancellationRequested)
        {
            try
            {
                await Task.Delay(every, time, _stop.Token);
                await SweepAsync();
            }
            catch (OperationCanceledException) when (_stop.IsCancellationRequested)
            {
                return;
            }
#pragma warning disable CA1031 // A failed round must not end the loop: the next one tries again.
            catch (Exception ex)
#pragma warning restore CA1031
            {
                LogSweepFailed(ex);
            }
        }
    }

    /// <summary>One round: checks every copy on disk and drops the surplus ones. Returns the partitions dropped.</summary>
    public async Task<IReadOnlyList<int>> SweepAsync()
    {
        var replaceAfter = options.Value.Replication.ReplaceAfter;
        var dropped = new List<int>();
        foreach (var partition in registry.CopiesOnDisk())
        {
            if (registry.Primaries.Contains(partition) || registry.IdleFor(partition) < replaceAfter)
            {
                continue;
            }
            var configuration = await grains.GetGrain<IPartitionConfigurationGrain>(partition).Get();
            if (!IsSurplus(configuration, silo.Name, incarnation.Value))
            {
                continue;
            }
            var bytes = await Task.Run(() => SizeOf(registry, partition));
            if (await Task.Run(() => registry.TryDropIdle(partition, replaceAfter)))
            {
                dropped.Add(partition);
                LogDropped(partition, configuration.ToString(), bytes);
            }
        }
        return dropped;
    }

    /// <summary>
    /// True when <paramref name="configuration"/> (the latest stored one) does not count the copy of
    /// <paramref name="siloName"/> with data directory <paramref name="incarnationValue"/>; false for
    /// a partition that has no configuration yet.
    /// </summary>
    public static bool IsSurplus(PartitionConfiguration configuration, string siloName, string incarnationValue)
    {
        ArgumentNullException.ThrowIfNull(configuration);
        return configuration.Version > 0 && configuration.Find(siloName)?.Incarnation != incarnationValue;
    }

    private static long SizeOf(ReplicaRegistry registry, int partition)
    {
        long total = 0;
        foreach (var root in new[] { registry.PartitionPathOf(partition), registry.LogPath(partition) })
        {
            if (Directory.Exists(root))
            {
                total += new DirectoryInfo(root).EnumerateFiles("*", SearchOption.AllDirectories).Sum(f => f.Length);
            }
        }
        return total;
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "Dropped this silo's surplus copy of partition {Partition} ({Bytes} bytes reclaimed): the configuration {Configuration} does not count it and no primary used it for DEngine:Replication:ReplaceAfter.")]
    private partial void LogDropped(int partition, string configuration, long bytes);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Checking for surplus copies failed; retried on the next round.")]
    private partial void LogSweepFailed(Exception exception);
}
