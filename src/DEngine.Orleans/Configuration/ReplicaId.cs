using Orleans;

namespace DEngine.Orleans.Configuration;

/// <summary>
/// One replica of a partition: a silo, named by its configured (stable) name, and the incarnation of
/// that silo's data directory. A silo restarted on an empty data directory has a new incarnation and
/// is therefore a new replica: it holds none of the entries the old one acknowledged.
/// </summary>
/// <param name="Silo">The silo's configured name (<c>Silo:Name</c>), not its Orleans address, whose generation changes on every start.</param>
/// <param name="Incarnation">The <see cref="SiloIncarnation"/> of the silo's data directory.</param>
[GenerateSerializer, Immutable, Alias("dengine.ReplicaId")]
public sealed record ReplicaId(
    [property: Id(0)] string Silo,
    [property: Id(1)] string Incarnation)
{
    /// <inheritdoc />
    public override string ToString() => $"{Silo}/{Incarnation}";
}
