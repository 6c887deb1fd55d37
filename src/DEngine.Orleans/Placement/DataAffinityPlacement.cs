using DEngine.Orleans.Ownership;
using Orleans;
using Orleans.Placement;
using Orleans.Runtime;
using Orleans.Runtime.Placement;

namespace DEngine.Orleans.Placement;

/// <summary>Places a partition grain on the silo that holds the partition's data.</summary>
[GenerateSerializer, Immutable, Alias("dengine.DataAffinityPlacement")]
public sealed class DataAffinityPlacement : PlacementStrategy
{
    internal static readonly DataAffinityPlacement Instance = new();
}

/// <summary>Marks a grain class for <see cref="DataAffinityPlacement"/>.</summary>
[AttributeUsage(AttributeTargets.Class, AllowMultiple = false)]
public sealed class DataAffinityPlacementAttribute() : PlacementAttribute(DataAffinityPlacement.Instance);

/// <summary>
/// Reads the partition's ownership record and places the activation on the owner silo while it is
/// active. A partition without an owner goes to silo (partition mod N) of the active silos sorted by
/// name, which spreads partitions evenly. When the owner is down the activation lands elsewhere and
/// answers PartitionUnavailable rather than serve data it does not have.
/// </summary>
public sealed class DataAffinityPlacementDirector(IGrainFactory grains, IClusterMembershipService membership) : IPlacementDirector
{
    /// <inheritdoc />
    public async Task<SiloAddress> OnAddActivation(PlacementStrategy strategy, PlacementTarget target, IPlacementContext context)
    {
        var compatible = context.GetCompatibleSilos(target);
        // An explicit move (MoveTo) names its target silo with the placement hint.
        if (target.RequestContextData is { } data && data.TryGetValue(IPlacementDirector.PlacementHintKey, out var hint) && hint is SiloAddress hinted && compatible.Contains(hinted))
        {
            return hinted;
        }
        var partition = target.GrainIdentity.GetIntegerKey();
        var record = await grains.GetGrain<IPartitionOwnerGrain>(partition).Get();
        var members = membership.CurrentSnapshot.Members;
        if (record.OwnerSilo is not null)
        {
            foreach (var silo in compatible)
            {
                if (members.TryGetValue(silo, out var member) && member.Status == SiloStatus.Active && member.Name == record.OwnerSilo)
                {
                    return silo;
                }
            }
        }
        var ordered = compatible
            .OrderBy(s => members.TryGetValue(s, out var m) ? m.Name : s.ToParsableString(), StringComparer.Ordinal)
            .ToArray();
        return ordered[(int)((ulong)partition % (ulong)ordered.Length)];
    }
}
