using Orleans;
using Orleans.Runtime;

namespace DEngine.Orleans.Ownership;

/// <summary>The silos that have held data of one partition (by silo name).</summary>
[GenerateSerializer, Immutable, Alias("dengine.PartitionHolders")]
public sealed record PartitionHolders([property: Id(0)] string[] Silos);

/// <summary>
/// The durable registry of the silos that may hold data of a partition (key = partition id). A silo is
/// added before it first writes the partition's data and stays until an operator forgets it, so "which
/// silos may hold newer data" is defined even when the ownership record is gone.
/// </summary>
public interface IPartitionHoldersGrain : IGrainWithIntegerKey
{
    /// <summary>The registered silos, sorted by name.</summary>
    [global::Orleans.Concurrency.ReadOnly]
    Task<string[]> Get();

    /// <summary>Registers <paramref name="silo"/> (durably, before it returns); nothing is written when it is registered already.</summary>
    Task Add(string silo);

    /// <summary>Removes <paramref name="silo"/>; returns whether it was registered.</summary>
    Task<bool> Remove(string silo);
}

/// <summary>Stores the holders registry with Orleans grain persistence, in the ownership records' store (<see cref="PartitionOwnerGrain.StorageName"/>).</summary>
[RecordPlacement]
public sealed class PartitionHoldersGrain(
    [PersistentState("holders", PartitionOwnerGrain.StorageName)] IPersistentState<PartitionHolders> registry)
    : Grain, IPartitionHoldersGrain
{
    private string[] Current => registry.State?.Silos ?? [];

    /// <inheritdoc />
    public Task<string[]> Get() => Task.FromResult(Current);

    /// <inheritdoc />
    public async Task Add(string silo)
    {
        ArgumentException.ThrowIfNullOrEmpty(silo);
        if (Current.Contains(silo, StringComparer.Ordinal))
        {
            return;
        }
        registry.State = new PartitionHolders([.. Current.Append(silo).Order(StringComparer.Ordinal)]);
        await registry.WriteStateAsync();
    }

    /// <inheritdoc />
    public async Task<bool> Remove(string silo)
    {
        if (!Current.Contains(silo, StringComparer.Ordinal))
        {
            return false;
        }
        registry.State = new PartitionHolders([.. Current.Where(s => s != silo)]);
        await registry.WriteStateAsync();
        return true;
    }
}
