using DEngine.Orleans.Snapshots;
using Orleans.Runtime;

namespace DEngine.Orleans.Partitions;

/// <summary>
/// The partition's view of the cluster's silos by their stable identity (configured name), read from
/// Orleans' current membership snapshot each time.
/// </summary>
/// <param name="membership">Orleans' membership.</param>
/// <param name="local">This silo.</param>
public sealed class SiloMembers(IClusterMembershipService membership, ILocalSiloDetails local)
{
    /// <summary>True while this silo is shutting down, stopping or declared dead.</summary>
    public bool IsLocalSiloLeaving =>
        membership.CurrentSnapshot.GetSiloStatus(local.SiloAddress) is SiloStatus.ShuttingDown or SiloStatus.Stopping or SiloStatus.Dead;

    /// <summary>True when a silo named <paramref name="siloIdentity"/> is active.</summary>
    public bool IsActive(string siloIdentity) => FindActive(siloIdentity) is not null;

    /// <summary>True when a silo named <paramref name="siloIdentity"/> can still answer (see <see cref="SiloLiveness.IsReachable"/>).</summary>
    public bool IsReachable(string siloIdentity) => Find(siloIdentity, SiloLiveness.IsReachable) is not null;

    /// <summary>The address of the active silo named <paramref name="siloIdentity"/>, or null.</summary>
    public SiloAddress? FindActive(string siloIdentity) => Find(siloIdentity, s => s == SiloStatus.Active);

    /// <summary>The names of the active silos, in name order.</summary>
    public IReadOnlyList<string> ActiveNames() =>
        [.. membership.CurrentSnapshot.Members.Values.Where(m => m.Status == SiloStatus.Active).Select(m => m.Name).Distinct(StringComparer.Ordinal).Order(StringComparer.Ordinal)];

    /// <summary>The names of the silos that can still answer.</summary>
    public IEnumerable<string> ReachableNames() =>
        membership.CurrentSnapshot.Members.Values.Where(m => SiloLiveness.IsReachable(m.Status)).Select(m => m.Name);

    private SiloAddress? Find(string siloIdentity, Func<SiloStatus, bool> status)
    {
        foreach (var member in membership.CurrentSnapshot.Members.Values)
        {
            if (member.Name == siloIdentity && status(member.Status))
            {
                return member.SiloAddress;
            }
        }
        return null;
    }
}
