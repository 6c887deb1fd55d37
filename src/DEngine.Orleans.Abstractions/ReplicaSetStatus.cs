using Orleans;

namespace DEngine.Orleans;

/// <summary>
/// A replicated partition's replica set as its primary sees it: the stored configuration, the copies
/// being built (learners) and the replica moves it is carrying out.
/// </summary>
/// <param name="Partition">The partition.</param>
/// <param name="Version">The configuration version.</param>
/// <param name="Primary">The primary's silo.</param>
/// <param name="Replicas">The silos of the configuration's replicas, the primary included.</param>
/// <param name="Learners">Silos a copy is being built on (not yet counted), each with what it is doing ("installing snapshot …: 10/20 bytes", "at 120 of 300").</param>
/// <param name="Moves">Requested replica moves still running, as "FROM->TO".</param>
[GenerateSerializer, Immutable, Alias("dengine.ReplicaSetStatus")]
public sealed record ReplicaSetStatus(
    [property: Id(0)] int Partition,
    [property: Id(1)] ulong Version,
    [property: Id(2)] string Primary,
    [property: Id(3)] string[] Replicas,
    [property: Id(4)] string[] Learners,
    [property: Id(5)] string[] Moves)
{
    /// <summary>Whether <paramref name="silo"/> holds a replica or is the primary.</summary>
    public bool Holds(string silo) => Primary == silo || Array.IndexOf(Replicas, silo) >= 0;
}
