using Orleans;

namespace DEngine.Orleans.Configuration;

/// <summary>The outcome of <see cref="IPartitionConfigurationGrain.CompareAndSwap"/>.</summary>
/// <param name="Won">Whether the proposal was stored.</param>
/// <param name="Current">
/// The configuration stored after the call: the proposal when it won, otherwise the one that is
/// stored instead (so a loser learns the winner without another round trip).
/// </param>
[GenerateSerializer, Immutable, Alias("dengine.ConfigurationChange")]
public sealed record ConfigurationChange(
    [property: Id(0)] bool Won,
    [property: Id(1)] PartitionConfiguration Current);
