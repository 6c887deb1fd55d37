using Orleans;

namespace DEngine.Orleans;

/// <summary>What forgetting a silo changed in the configuration records.</summary>
[GenerateSerializer, Immutable, Alias("dengine.ForgetReport")]
public sealed record ForgetReport(
    [property: Id(0)] string Silo,
    [property: Id(1)] int[] HolderOf,
    [property: Id(2)] int[] OwnerOf);

/// <summary>Operator changes to the configuration records. Any silo can answer (key 0).</summary>
public interface IRecordsAdminGrain : IGrainWithIntegerKey
{
    /// <summary>
    /// Removes <paramref name="silo"/>, which is gone for good, from every partition's holders registry
    /// and clears it as owner where the ownership record names it, so those partitions are served from
    /// the newest remaining copy. Refused (InvalidArgument) while a silo of that name is in the cluster.
    /// </summary>
    Task<ForgetReport> ForgetSilo(string silo);
}
