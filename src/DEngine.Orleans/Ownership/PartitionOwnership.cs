using Orleans;
using Orleans.Runtime;

namespace DEngine.Orleans.Ownership;

/// <summary>Who holds a partition's current data, and the epoch of its newest activation.</summary>
[GenerateSerializer, Immutable, Alias("dengine.OwnershipRecord")]
public sealed record OwnershipRecord(
    [property: Id(0)] string? OwnerSilo,
    [property: Id(1)] ulong Epoch);

/// <summary>The durable ownership record of one partition (key = partition id).</summary>
public interface IPartitionOwnerGrain : IGrainWithIntegerKey
{
    /// <summary>The current record.</summary>
    [global::Orleans.Concurrency.ReadOnly]
    Task<OwnershipRecord> Get();

    /// <summary>
    /// Records <paramref name="silo"/> as the holder of the data with a new, higher epoch — if the
    /// partition has no owner yet or <paramref name="silo"/> already owns it. The new epoch is at
    /// least <paramref name="minEpoch"/> (the caller's last applied term + 1, so terms never go back
    /// even if the record was lost). Returns the record after the call; its owner differs from
    /// <paramref name="silo"/> when the claim was refused.
    /// </summary>
    Task<OwnershipRecord> Claim(string silo, ulong minEpoch);

    /// <summary>
    /// Moves ownership from <paramref name="from"/> to <paramref name="to"/> with a higher epoch, but
    /// only if the record still names <paramref name="from"/> at <paramref name="expectedEpoch"/>
    /// (compare-and-swap). Returns the record after the call.
    /// </summary>
    Task<OwnershipRecord> Transfer(string from, ulong expectedEpoch, string to, ulong minEpoch);

    /// <summary>
    /// Clears the owner if it is <paramref name="silo"/> (gone for good, an operator says), keeping the
    /// epoch, so the next activation recovers the partition from the remaining copies. Returns whether
    /// the record named it.
    /// </summary>
    Task<bool> ForgetOwner(string silo);
}

/// <summary>Stores the ownership record with Orleans grain persistence (storage <see cref="StorageName"/>).</summary>
[RecordPlacement]
public sealed class PartitionOwnerGrain(
    [PersistentState("ownership", PartitionOwnerGrain.StorageName)] IPersistentState<OwnershipRecord> record)
    : Grain, IPartitionOwnerGrain
{
    /// <summary>Name of the grain storage provider holding ownership records.</summary>
    public const string StorageName = "dengine-ownership";

    private OwnershipRecord Current => record.State ?? new OwnershipRecord(null, 0);

    /// <inheritdoc />
    public Task<OwnershipRecord> Get() => Task.FromResult(Current);

    /// <inheritdoc />
    public async Task<OwnershipRecord> Claim(string silo, ulong minEpoch)
    {
        ArgumentException.ThrowIfNullOrEmpty(silo);
        var current = Current;
        if (current.OwnerSilo is not null && current.OwnerSilo != silo)
        {
            return current;
        }
        record.State = new OwnershipRecord(silo, Math.Max(current.Epoch + 1, minEpoch));
        await record.WriteStateAsync();
        return record.State;
    }

    /// <inheritdoc />
    public async Task<OwnershipRecord> Transfer(string from, ulong expectedEpoch, string to, ulong minEpoch)
    {
        ArgumentException.ThrowIfNullOrEmpty(to);
        var current = Current;
        if (current.OwnerSilo != from || current.Epoch != expectedEpoch)
        {
            return current;
        }
        record.State = new OwnershipRecord(to, Math.Max(current.Epoch + 1, minEpoch));
        await record.WriteStateAsync();
        return record.State;
    }

    /// <inheritdoc />
    public async Task<bool> ForgetOwner(string silo)
    {
        var current = Current;
        if (current.OwnerSilo != silo)
        {
            return false;
        }
        record.State = current with { OwnerSilo = null };
        await record.WriteStateAsync();
        return true;
    }
}
