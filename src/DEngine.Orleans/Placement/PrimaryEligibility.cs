using Orleans.Runtime;

namespace DEngine.Orleans.Placement;

/// <summary>
/// Which silos may take a primary role, for the balancer and for the handover at shutdown: the one
/// place that decides it, so a new reason to skip a silo (a drain) is added here only.
/// </summary>
/// <param name="membership">Orleans' membership.</param>
public sealed class PrimaryEligibility(IClusterMembershipService membership)
{
    /// <summary>
    /// The names of the silos that may lead partitions now, in name order: active in Orleans'
    /// membership (a silo shutting down is not). A silo being drained is to be left out here too.
    /// </summary>
    public IReadOnlyList<string> EligibleSilos() =>
        [.. membership.CurrentSnapshot.Members.Values
            .Where(m => m.Status == SiloStatus.Active)
            .Select(m => m.Name)
            .Distinct(StringComparer.Ordinal)
            .Order(StringComparer.Ordinal)];
}
