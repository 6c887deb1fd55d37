using DEngine.Orleans.Configuration;
using DEngine.Orleans.Ownership;
using Microsoft.Extensions.Options;
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
/// answers PartitionUnavailable rather than serve data it does not have. A replicated partition
/// (Factor above 1) reads its configuration instead: its primary's silo while active, else an active
/// replica of the configuration (which then takes over as primary).
/// </summary>
public sealed class DataAffinityPlacementDirector(IGrainFactory grains, IClusterMembershipService membership, IOptions<DEngineOptions> options) : IPlacementDirector
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
        var members = membership.CurrentSnapshot.Members;
        if (options.Value.Replication.Factor > 1)
        {
            var configuration = await grains.GetGrain<IPartitionConfigurationGrain>(partition).Get();
            if (configuration.Version > 0)
            {
                // The primary first, then the other replicas from the partition's slot on, so the
                // partitions of a dead silo spread over the survivors.
                var names = configuration.Replicas.Select(r => r.Silo).ToArray();
                var start = (int)((ulong)partition % (ulong)names.Length);
                var preferred = configuration.Primary is { } primary ? new[] { primary.Silo } : [];
                foreach (var name in preferred.Concat(names.Skip(start)).Concat(names.Take(start)))
                {
                    foreach (var silo in compatible)
                    {
                        if (members.TryGetValue(silo, out var member) && member.Status == SiloStatus.Active && member.Name == name)
                        {
                            return silo;
                        }
                    }
                }
            }
            return Spread(compatible, members, partition);
        }
        var record = await grains.GetGrain<IPartitionOwnerGrain>(partition).Get();
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
        return Spread(compatible, members, partition);
    }

    /// <summary>Silo (partition mod N) of the compatible silos in name order.</summary>
    private static SiloAddress Spread(SiloAddress[] compatible, IReadOnlyDictionary<SiloAddress, ClusterMember> members, long partition)
    {
        var ordered = compatible
            .OrderBy(s => members.TryGetValue(s, out var m) ? m.Name : s.ToParsableString(), StringComparer.Ordinal)
            .ToArray();
        return ordered[(int)((ulong)partition % (ulong)ordered.Length)];
    }
}
