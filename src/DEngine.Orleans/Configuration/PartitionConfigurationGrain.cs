using DEngine.Orleans.Diagnostics;
using DEngine.Orleans.Ownership;
using Microsoft.Extensions.Logging;
using Orleans;
using Orleans.Runtime;

namespace DEngine.Orleans.Configuration;

/// <summary>
/// Keeps a partition's configuration with Orleans grain persistence, in the same store as the
/// ownership records (<see cref="PartitionOwnerGrain.StorageName"/>: files on the primary silo in the
/// local profile, Redis in the cluster profile). Not reentrant: compare-and-swaps run one at a time.
/// </summary>
[RecordPlacement]
public sealed partial class PartitionConfigurationGrain(
    [PersistentState("configuration", PartitionOwnerGrain.StorageName)] IPersistentState<PartitionConfiguration> record,
    ILogger<PartitionConfigurationGrain> logger,
    DEngineMetrics metrics)
    : Grain, IPartitionConfigurationGrain
{
    private PartitionConfiguration Current => record.RecordExists && record.State is { } state ? state : PartitionConfiguration.Empty;

    private int Partition => (int)this.GetPrimaryKeyLong();

    /// <inheritdoc />
    public Task<PartitionConfiguration> Get() => Task.FromResult(Current);

    /// <inheritdoc />
    public async Task<ConfigurationChange> CompareAndSwap(ulong expectedVersion, PartitionConfiguration proposed)
    {
        if (proposed is null)
        {
            throw new DEngineException(DEngineErrorCode.InvalidArgument, "No configuration was proposed.", Partition);
        }
        if (expectedVersion == ulong.MaxValue)
        {
            throw new DEngineException(DEngineErrorCode.InvalidArgument, $"No configuration can follow version {expectedVersion} (the last one); nothing was stored.", Partition);
        }
        // Usually expected + 1. Higher is allowed: a new primary whose replicas have seen a version above
        // the stored one (a record store restored from an older backup) must outbid what they saw.
        if (proposed.Version <= expectedVersion)
        {
            throw new DEngineException(DEngineErrorCode.InvalidArgument, $"A configuration proposed over version {expectedVersion} must have a higher version (was {proposed.Version}); nothing was stored.", Partition);
        }
        if (!proposed.TryValidate(out var problem))
        {
            throw new DEngineException(DEngineErrorCode.InvalidArgument, $"Invalid partition configuration at version {proposed.Version}: {problem} Nothing was stored.", Partition);
        }
        var current = Current;
        if (current.Version != expectedVersion)
        {
            return new ConfigurationChange(false, current);
        }

        record.State = proposed;
        try
        {
            await record.WriteStateAsync();
        }
        catch (Exception ex) when (ex is not DEngineException)
        {
            // The store may or may not have taken the write (a Redis timeout, a failed fsync after the
            // rename): this activation's state and ETag are no longer known to match it. Discard the
            // activation; calls queued behind this one go to a new activation, which reads the store.
            DeactivateOnIdle();
            LogWriteFailed(Partition, proposed.Version, ex);
            throw new DEngineException(DEngineErrorCode.StorageFailure, $"Storing configuration version {proposed.Version} failed ({ex.Message}); it may or may not be stored. Read the configuration again before proposing.", Partition, inner: ex);
        }
        LogChanged(Partition, current.ToString(), proposed.ToString());
        // Counted here, where every change is stored whoever proposed it (maintenance, a takeover, a
        // handover), so each stored change counts exactly once in the cluster.
        metrics.Reconfigured(Partition, current, proposed);
        return new ConfigurationChange(true, proposed);
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "Partition {Partition} configuration changed from {Previous} to {Next}.")]
    private partial void LogChanged(int partition, string previous, string next);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Partition {Partition}: storing configuration version {Version} failed; the activation deactivates and the next one reads the store again.")]
    private partial void LogWriteFailed(int partition, ulong version, Exception exception);
}
