using System.Collections.Immutable;
using System.Diagnostics.CodeAnalysis;
using Orleans;

namespace DEngine.Orleans.Configuration;

/// <summary>
/// The replica group of one partition (PacificA's configuration): which replicas hold it and which of
/// them is the primary, at a version. The version is the epoch: every entry the primary writes carries
/// it as its term, and every replication message carries it, so a replica can refuse an older
/// configuration's primary. Stored by <see cref="IPartitionConfigurationGrain"/> and changed only by
/// its compare-and-swap, which takes only a higher version (normally version + 1).
/// </summary>
/// <param name="Version">The epoch; 0 for a partition that never had a configuration (<see cref="Empty"/>).</param>
/// <param name="Primary">The replica that sequences and ships entries; null only in a configuration without replicas.</param>
/// <param name="Replicas">Every replica, the primary included, at most one per silo. Order carries no meaning but is kept by the helpers.</param>
/// <remarks>
/// The editing helpers (<see cref="WithReplica"/>, <see cref="Without"/>, <see cref="WithPrimary"/>) keep
/// the version, so they compose; <see cref="Next()"/> turns the result into a proposal. A proposal
/// whose version was not raised is refused by the store, loudly, rather than silently overwriting.
/// Equality compares the replicas as ordered sequences (a record's default would compare the arrays by reference).
/// </remarks>
[GenerateSerializer, Immutable, Alias("dengine.PartitionConfiguration")]
public sealed record PartitionConfiguration(
    [property: Id(0)] ulong Version,
    [property: Id(1)] ReplicaId? Primary,
    [property: Id(2)] ImmutableArray<ReplicaId> Replicas)
{
    /// <summary>
    /// Set only on a configuration written by a clean handover: the primary of the version before it,
    /// which wrote this one itself after it had stopped serving reads, refused new writes and seen
    /// every chunk in flight committed. The primary it names may then serve reads without waiting out
    /// that primary's lease (see <c>ReplicatedActivation</c>). Null on every other configuration
    /// (<see cref="Next()"/> clears it, so an edit of a handed-over configuration never carries it on).
    /// </summary>
    [Id(3)]
    public ReplicaId? HandedOverBy { get; init; }

    /// <summary>The configuration of a partition that never had one: version 0, no replicas.</summary>
    public static PartitionConfiguration Empty { get; } = new(0, null, []);

    /// <summary>Whether <paramref name="silo"/> holds a replica (of any incarnation).</summary>
    public bool Contains(string silo) => Find(silo) is not null;

    /// <summary>The replica on <paramref name="silo"/>, or null.</summary>
    public ReplicaId? Find(string silo)
    {
        foreach (var replica in ReplicasOrEmpty)
        {
            if (string.Equals(replica.Silo, silo, StringComparison.Ordinal))
            {
                return replica;
            }
        }
        return null;
    }

    /// <summary>This configuration with <paramref name="replica"/> added, or replacing the replica of the same silo (a silo that came back with a new incarnation). Same version.</summary>
    public PartitionConfiguration WithReplica(ReplicaId replica)
    {
        ArgumentNullException.ThrowIfNull(replica);
        var replaced = Find(replica.Silo);
        var replicas = replaced is null ? ReplicasOrEmpty.Add(replica) : ReplicasOrEmpty.Replace(replaced, replica);
        var primary = replaced is not null && replaced == Primary ? replica : Primary;
        return this with { Primary = primary, Replicas = replicas };
    }

    /// <summary>
    /// This configuration without the replica on <paramref name="silo"/> (unchanged when it has none).
    /// Same version. Removing the primary leaves the configuration without one, which is valid only
    /// when no replica remains: set another primary with <see cref="WithPrimary"/>.
    /// </summary>
    public PartitionConfiguration Without(string silo)
    {
        var removed = Find(silo);
        if (removed is null)
        {
            return this;
        }
        return this with { Primary = removed == Primary ? null : Primary, Replicas = ReplicasOrEmpty.Remove(removed) };
    }

    /// <summary>This configuration with <paramref name="primary"/> as primary, added as a replica (or replacing its silo's) if needed. Same version.</summary>
    public PartitionConfiguration WithPrimary(ReplicaId primary) => WithReplica(primary) with { Primary = primary };

    /// <summary>This configuration as a proposal: version + 1.</summary>
    public PartitionConfiguration Next() => this with { Version = checked(Version + 1), HandedOverBy = null };

    /// <summary>A proposal at version + 1 with the given primary and replicas (the primary is added to the replicas if missing).</summary>
    public PartitionConfiguration Next(ReplicaId primary, IEnumerable<ReplicaId> replicas) =>
        new PartitionConfiguration(checked(Version + 1), null, [.. replicas]).WithPrimary(primary);

    /// <summary>
    /// Checks the rules every stored configuration keeps: non-empty silo names and incarnations, one
    /// replica per silo, and a primary that is one of the replicas (no primary only when there are no
    /// replicas). Returns false with the first problem.
    /// </summary>
    public bool TryValidate([NotNullWhen(false)] out string? problem)
    {
        if (Replicas.IsDefault)
        {
            problem = "the configuration has no replica list.";
            return false;
        }
        var silos = new HashSet<string>(StringComparer.Ordinal);
        foreach (var replica in Replicas)
        {
            if (replica is null || string.IsNullOrWhiteSpace(replica.Silo))
            {
                problem = "a replica has an empty silo name.";
                return false;
            }
            if (string.IsNullOrWhiteSpace(replica.Incarnation))
            {
                problem = $"the replica on silo '{replica.Silo}' has an empty incarnation.";
                return false;
            }
            if (!silos.Add(replica.Silo))
            {
                problem = $"silo '{replica.Silo}' holds more than one replica.";
                return false;
            }
        }
        if (Primary is null)
        {
            if (Replicas.Length > 0)
            {
                problem = $"the configuration has {Replicas.Length} replicas but no primary.";
                return false;
            }
            problem = null;
            return true;
        }
        if (!Replicas.Contains(Primary))
        {
            problem = $"the primary {Primary} is not one of the replicas ({string.Join(", ", Replicas)}).";
            return false;
        }
        problem = null;
        return true;
    }

    /// <summary>Throws InvalidArgument naming the first broken rule of <see cref="TryValidate"/>.</summary>
    public void Validate()
    {
        if (!TryValidate(out var problem))
        {
            throw new DEngineException(DEngineErrorCode.InvalidArgument, $"Invalid partition configuration at version {Version}: {problem}");
        }
    }

    /// <inheritdoc />
    public bool Equals(PartitionConfiguration? other) =>
        other is not null && Version == other.Version && Primary == other.Primary && HandedOverBy == other.HandedOverBy && ReplicasOrEmpty.SequenceEqual(other.ReplicasOrEmpty);

    /// <inheritdoc />
    public override int GetHashCode()
    {
        var hash = new HashCode();
        hash.Add(Version);
        hash.Add(Primary);
        hash.Add(HandedOverBy);
        foreach (var replica in ReplicasOrEmpty)
        {
            hash.Add(replica);
        }
        return hash.ToHashCode();
    }

    /// <inheritdoc />
    public override string ToString() => $"v{Version} primary={Primary?.ToString() ?? "none"} replicas=[{string.Join(", ", ReplicasOrEmpty)}]{(HandedOverBy is null ? "" : $" handed over by {HandedOverBy}")}";

    private ImmutableArray<ReplicaId> ReplicasOrEmpty => Replicas.IsDefault ? [] : Replicas;
}
