using Orleans;
using Orleans.Placement;
using Orleans.Runtime;
using Orleans.Runtime.Placement;

namespace DEngine.Orleans.Snapshots;

/// <summary>Places a grain keyed by a silo identity (silo name) on that silo.</summary>
[GenerateSerializer, Immutable, Alias("dengine.SiloIdentityPlacement")]
public sealed class SiloIdentityPlacement : PlacementStrategy
{
    internal static readonly SiloIdentityPlacement Instance = new();
}

/// <summary>Marks a grain class for <see cref="SiloIdentityPlacement"/>.</summary>
[AttributeUsage(AttributeTargets.Class, AllowMultiple = false)]
public sealed class SiloIdentityPlacementAttribute() : PlacementAttribute(SiloIdentityPlacement.Instance);

/// <summary>Finds the live silo whose name is the grain's key; fails with PartitionUnavailable when it is gone.</summary>
public sealed class SiloIdentityPlacementDirector(IClusterMembershipService membership) : IPlacementDirector
{
    /// <inheritdoc />
    public Task<SiloAddress> OnAddActivation(PlacementStrategy strategy, PlacementTarget target, IPlacementContext context)
    {
        var name = target.GrainIdentity.Key.ToString();
        foreach (var member in membership.CurrentSnapshot.Members.Values)
        {
            if (member.Name == name && SiloLiveness.IsReachable(member.Status))
            {
                return Task.FromResult(member.SiloAddress);
            }
        }
        throw new DEngineException(DEngineErrorCode.PartitionUnavailable, $"Silo '{name}' is not in the cluster; its snapshots cannot be read until it returns.");
    }
}

/// <summary>Which silo states can still answer calls.</summary>
public static class SiloLiveness
{
    /// <summary>Active, or shutting down gracefully (still serving while it hands partitions over).</summary>
    public static bool IsReachable(SiloStatus status) => status is SiloStatus.Active or SiloStatus.ShuttingDown or SiloStatus.Stopping;
}
