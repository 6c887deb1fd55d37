using DEngine.Orleans.Ownership;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Orleans;
using Orleans.Runtime;

namespace DEngine.Orleans.Replication;

/// <summary>The durable record of <see cref="SiloDrainGrain"/>: the draining silos' names.</summary>
[GenerateSerializer, Alias("dengine.DrainRecord")]
public sealed class DrainRecord
{
    /// <summary>The draining silos, in name order.</summary>
    [Id(0)]
    public string[] Silos { get; set; } = [];
}

/// <summary>
/// Keeps the draining silos with Orleans grain persistence in the store of the configuration records
/// (<see cref="PartitionOwnerGrain.StorageName"/>). Not reentrant: changes run one at a time.
/// </summary>
[RecordPlacement]
public sealed partial class SiloDrainGrain(
    [PersistentState("drain", PartitionOwnerGrain.StorageName)] IPersistentState<DrainRecord> record,
    IClusterMembershipService membership,
    IOptions<DEngineOptions> options,
    DrainState local,
    TimeProvider time,
    ILogger<SiloDrainGrain> logger)
    : Grain, ISiloDrainGrain
{
    private string[] Current => record.RecordExists && record.State is { } state ? state.Silos : [];

    /// <inheritdoc />
    public Task<string[]> GetDraining() => Task.FromResult(Current);

    /// <inheritdoc />
    public async Task<string[]> SetDraining(string silo, bool draining)
    {
        var replication = options.Value.Replication;
        if (replication.Factor == 1)
        {
            throw new DEngineException(DEngineErrorCode.FeatureNotEnabled, "Draining moves replicas, and partitions have one copy (DEngine:Replication:Factor 1): move each partition with `dengine partition move P --to SILO` instead.");
        }
        if (string.IsNullOrWhiteSpace(silo))
        {
            throw new DEngineException(DEngineErrorCode.InvalidArgument, "A silo name is required.");
        }
        var current = Current;
        var members = membership.CurrentSnapshot.Members.Values;
        if (draining && !current.Contains(silo, StringComparer.Ordinal))
        {
            if (!members.Any(m => m.Name == silo && m.Status == SiloStatus.Active))
            {
                throw new DEngineException(DEngineErrorCode.InvalidArgument, $"No active silo is named '{silo}' (active: {string.Join(", ", ActiveNames())}); nothing was changed. `dengine status` lists the silos.");
            }
            var remaining = ActiveNames().Where(s => s != silo && !current.Contains(s, StringComparer.Ordinal)).ToArray();
            if (!replication.CanWrite(remaining.Length))
            {
                throw new DEngineException(DEngineErrorCode.InvalidArgument, $"Draining '{silo}' would leave {remaining.Length} active silo(s) that are not draining ({string.Join(", ", remaining)}), fewer than DEngine:Replication:MinReplicas = {replication.EffectiveMinReplicas}: writes would stop. Nothing was changed; start another silo first.");
            }
        }
        var next = draining
            ? current.Append(silo).Distinct(StringComparer.Ordinal).Order(StringComparer.Ordinal).ToArray()
            : current.Where(s => s != silo).ToArray();
        if (!next.SequenceEqual(current, StringComparer.Ordinal))
        {
            record.State = new DrainRecord { Silos = next };
            try
            {
                await record.WriteStateAsync();
            }
            catch (Exception ex) when (ex is not DEngineException)
            {
                // The store may or may not have taken it: the next activation reads it again.
                DeactivateOnIdle();
                throw new DEngineException(DEngineErrorCode.StorageFailure, $"Storing the draining silos failed ({ex.Message}); it may or may not be stored. Run the command again.", inner: ex);
            }
            LogChanged(silo, draining, string.Join(", ", next));
        }
        local.Set(next, time.GetTimestamp());
        return next;

        IEnumerable<string> ActiveNames() => members.Where(m => m.Status == SiloStatus.Active).Select(m => m.Name).Distinct(StringComparer.Ordinal).Order(StringComparer.Ordinal);
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "Silo {Silo} draining: {Draining}; draining silos now: [{Silos}].")]
    private partial void LogChanged(string silo, bool draining, string silos);
}
