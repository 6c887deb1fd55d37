using Orleans;

namespace DEngine.Orleans.Configuration;

/// <summary>
/// The durable configuration store of one partition (key = partition id). Compare-and-swap on the
/// version is the only way to change a configuration, so of two proposals made from the same
/// version exactly one is stored and the other learns it.
/// </summary>
public interface IPartitionConfigurationGrain : IGrainWithIntegerKey
{
    /// <summary>The stored configuration; <see cref="PartitionConfiguration.Empty"/> when there is none yet.</summary>
    [global::Orleans.Concurrency.ReadOnly]
    Task<PartitionConfiguration> Get();

    /// <summary>
    /// Stores <paramref name="proposed"/> if the stored version is <paramref name="expectedVersion"/>,
    /// and returns whether it won and the configuration stored after the call. Acknowledged only once
    /// durable in the record store.
    /// </summary>
    /// <exception cref="DEngineException">
    /// InvalidArgument when <paramref name="proposed"/> breaks a rule of
    /// <see cref="PartitionConfiguration.TryValidate"/> or its version is not above
    /// <paramref name="expectedVersion"/> (nothing is stored; normally it is expected + 1, higher only to
    /// outbid a version replicas have seen beyond a restored record). StorageFailure when the record store
    /// failed: the outcome is unknown, so read it again with <see cref="Get"/> before deciding.
    /// </exception>
    Task<ConfigurationChange> CompareAndSwap(ulong expectedVersion, PartitionConfiguration proposed);
}
