using DEngine.Orleans.Snapshots;
using Orleans;

namespace DEngine.Orleans.Placement;

/// <summary>
/// Asks a silo (key = its name; the grain lives there) whether it takes primary roles now. A silo
/// that began a graceful stop is still Active in Orleans' membership while it hands its own roles
/// over, so the others' balancers must ask it before handing it one.
/// </summary>
public interface IPrimaryTargetGrain : IGrainWithStringKey
{
    /// <summary>False once the silo's graceful stop has begun.</summary>
    [global::Orleans.Concurrency.ReadOnly]
    Task<bool> AcceptsPrimaries();
}

/// <summary>Answers for the silo it is placed on, from <see cref="LocalSiloStopping"/>.</summary>
[SiloIdentityPlacement]
public sealed class PrimaryTargetGrain(LocalSiloStopping stopping) : Grain, IPrimaryTargetGrain
{
    /// <inheritdoc />
    public Task<bool> AcceptsPrimaries() => Task.FromResult(!stopping.IsStopping);
}

/// <summary>Set when this silo's graceful stop begins (before it hands its roles over); never cleared (a stopped silo's process ends).</summary>
public sealed class LocalSiloStopping
{
    private volatile bool _stopping;

    /// <summary>True once the graceful stop began.</summary>
    public bool IsStopping => _stopping;

    /// <summary>Marks the stop as begun.</summary>
    public void Begin() => _stopping = true;
}
