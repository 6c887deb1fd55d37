using DEngine.Orleans.Replication;
using Orleans;
using Orleans.Runtime;

namespace DEngine.Orleans.Placement;

/// <summary>
/// Which silos may take a primary role, for the balancer and for the handover at shutdown: the one
/// place that decides it, so a new reason to skip a silo is added here only.
/// </summary>
/// <param name="membership">Orleans' membership.</param>
/// <param name="drain">The durable list of silos being drained (<c>dengine silo drain</c>).</param>
public sealed class PrimaryEligibility(IClusterMembershipService membership, DrainState drain)
{
    /// <summary>
    /// The names of the silos that may lead partitions now, in name order: active in Orleans'
    /// membership (a silo shutting down is not) and not being drained (the drain list is read again
    /// when the cached one is older than about a heartbeat interval).
    /// </summary>
    public async Task<IReadOnlyList<string>> EligibleSilosAsync()
    {
        try
        {
            await drain.CurrentAsync();
        }
        catch (Exception ex) when (ex is OrleansException or TimeoutException or DEngineException)
        {
            // The drain list's record is unreachable (e.g. its silo is stopping): go by the last one read.
        }
        return [.. membership.CurrentSnapshot.Members.Values
            .Where(m => m.Status == SiloStatus.Active && !drain.IsDraining(m.Name))
            .Select(m => m.Name)
            .Distinct(StringComparer.Ordinal)
            .Order(StringComparer.Ordinal)];
    }
}
