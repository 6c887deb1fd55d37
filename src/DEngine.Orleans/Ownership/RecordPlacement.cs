using Microsoft.Extensions.Options;
using Orleans;
using Orleans.Configuration;
using Orleans.Placement;
using Orleans.Runtime;
using Orleans.Runtime.Placement;

namespace DEngine.Orleans.Ownership;

/// <summary>
/// Places a configuration-record grain (ownership, holders) on the primary silo when the cluster has
/// one (the local profile: <c>UseLocalhostClustering</c>, whose primary is the membership oracle), so
/// records kept in that silo's <see cref="FileGrainStorage"/> outlive every other silo.
/// </summary>
[GenerateSerializer, Immutable, Alias("dengine.RecordPlacement")]
public sealed class RecordPlacement : PlacementStrategy
{
    internal static readonly RecordPlacement Instance = new();
}

/// <summary>Marks a grain class for <see cref="RecordPlacement"/>.</summary>
[AttributeUsage(AttributeTargets.Class, AllowMultiple = false)]
public sealed class RecordPlacementAttribute() : PlacementAttribute(RecordPlacement.Instance);

/// <summary>
/// The silo whose endpoint is the configured primary (<see cref="DevelopmentClusterMembershipOptions.PrimarySiloEndpoint"/>,
/// which a primary sets to itself). Without a primary (a shared external store such as Redis holds the
/// records) the calling silo, as Orleans' default would.
/// </summary>
public sealed class RecordPlacementDirector(IOptions<DevelopmentClusterMembershipOptions> development) : IPlacementDirector
{
    /// <inheritdoc />
    public Task<SiloAddress> OnAddActivation(PlacementStrategy strategy, PlacementTarget target, IPlacementContext context)
    {
        var compatible = context.GetCompatibleSilos(target);
        var primary = development.Value.PrimarySiloEndpoint;
        if (primary is null)
        {
            return Task.FromResult(compatible.Contains(context.LocalSilo) ? context.LocalSilo : compatible[Random.Shared.Next(compatible.Length)]);
        }
        foreach (var silo in compatible)
        {
            if (silo.Endpoint.Equals(primary))
            {
                return Task.FromResult(silo);
            }
        }
        // Only the primary's disk has the records: answer retryably rather than start an empty copy elsewhere.
        throw new DEngineException(DEngineErrorCode.PartitionUnavailable, $"The primary silo ({primary}), which keeps the configuration records, is not in the cluster. Retry once it is back.");
    }
}
