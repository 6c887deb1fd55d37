using System.Globalization;
using DEngine.Orleans.Snapshots;
using DEngine.Protos.Common;
using Orleans;
using Orleans.Placement;
using Orleans.Runtime;
using Orleans.Runtime.Placement;

namespace DEngine.Orleans.Replication;

/// <summary>
/// The replication endpoint of one silo's copy of one partition (key <c>"{partition}/{silo}"</c>, see
/// <see cref="ReplicaKey"/>), placed on that silo. The primary ships its log here; a new primary
/// fences and reads the copies of its configuration through it.
/// </summary>
public interface IReplicaGrain : IGrainWithStringKey
{
    /// <summary>Appends what a primary shipped (see <see cref="ReplicaCopy.Append"/>).</summary>
    Task<AppendResponse> Append(AppendRequest request);

    /// <summary>Where this copy stands (opens it when it is not open yet).</summary>
    Task<CopyPosition> Describe();

    /// <summary>
    /// Raises the version this copy accepts to <paramref name="version"/>, so the primary of every
    /// lower version gets no more acknowledgements from it; returns where the copy stands after.
    /// </summary>
    Task<CopyPosition> Promote(ulong version);

    /// <summary>Entries of this copy's log from <paramref name="fromIndex"/> (bounded by count and bytes).</summary>
    Task<Entry[]> ReadLog(ulong fromIndex, int maxEntries, long maxBytes);

    /// <summary>
    /// Catches this copy up from a checkpoint of the primary's copy when the primary's log no longer
    /// reaches back to what it lacks: the version fence as for <see cref="Append"/>, a verified chunked
    /// fetch from the primary's snapshot server, an atomic install, and the log restarted after the
    /// snapshot (see <see cref="SnapshotInstalls"/>). Answers within the request's MaxWait; ask again
    /// while it answers Installing.
    /// </summary>
    Task<InstallSnapshotResponse> InstallSnapshot(InstallSnapshotRequest request);
}

/// <summary>Keys of <see cref="IReplicaGrain"/>: partition and silo name.</summary>
public static class ReplicaKey
{
    /// <summary>The key of <paramref name="silo"/>'s copy of <paramref name="partition"/>.</summary>
    public static string Of(int partition, string silo) => string.Create(CultureInfo.InvariantCulture, $"{partition}/{silo}");

    /// <summary>Splits a key made by <see cref="Of"/>; false for anything else.</summary>
    public static bool TryParse(string key, out int partition, out string silo)
    {
        var slash = key.IndexOf('/', StringComparison.Ordinal);
        silo = slash < 0 ? "" : key[(slash + 1)..];
        partition = -1;
        return slash > 0 && silo.Length > 0 && int.TryParse(key.AsSpan(0, slash), NumberStyles.None, CultureInfo.InvariantCulture, out partition);
    }
}

/// <summary>Serves one silo's copy of a partition from the silo's <see cref="ReplicaRegistry"/>.</summary>
/// <remarks>
/// Not reentrant: messages are handled one at a time, in the order they arrive. The copy's blocking
/// work (log fsync, apply) runs off the grain's scheduler. The copy itself belongs to the registry, so
/// it outlives this activation (and is shared with a primary on the same silo).
/// </remarks>
[ReplicaPlacement]
public sealed class ReplicaGrain(ReplicaRegistry registry, ILocalSiloDetails silo, Configuration.SiloIncarnation incarnation, Microsoft.Extensions.Logging.ILogger<ReplicaGrain> logger) : Grain, IReplicaGrain
{
    private int _partition = -1;

    /// <inheritdoc />
    public override Task OnActivateAsync(CancellationToken cancellationToken)
    {
        var key = this.GetPrimaryKeyString();
        if (!ReplicaKey.TryParse(key, out _partition, out var name) || name != silo.Name)
        {
            // Placement puts a copy only on its own silo; anything else is a bad key or a silo that
            // has been renamed under the caller: refuse instead of serving another silo's copy.
            throw new DEngineException(DEngineErrorCode.InvalidArgument, $"Replica key '{key}' does not name a partition of this silo ('{silo.Name}').");
        }
        return Task.CompletedTask;
    }

    /// <inheritdoc />
    public Task<AppendResponse> Append(AppendRequest request)
    {
        ArgumentNullException.ThrowIfNull(request);
        if (request.Partition != _partition)
        {
            throw new DEngineException(DEngineErrorCode.InvalidArgument, $"A message for partition {request.Partition} reached the copy of partition {_partition}.", _partition);
        }
        return Task.Run(() => registry.Open(_partition).Append(request));
    }

    /// <inheritdoc />
    public Task<CopyPosition> Describe() => Task.Run(() => registry.Open(_partition).Position with { Incarnation = incarnation.Value });

    /// <inheritdoc />
    public Task<CopyPosition> Promote(ulong version) => Task.Run(() =>
    {
        var copy = registry.Open(_partition);
        copy.Promote(version);
        return copy.Position with { Incarnation = incarnation.Value };
    });

    /// <inheritdoc />
    public Task<InstallSnapshotResponse> InstallSnapshot(InstallSnapshotRequest request)
    {
        ArgumentNullException.ThrowIfNull(request);
        if (request.Partition != _partition)
        {
            throw new DEngineException(DEngineErrorCode.InvalidArgument, $"An install request for partition {request.Partition} reached the copy of partition {_partition}.", _partition);
        }
        var partition = _partition;
        var server = GrainFactory.GetGrain<ISnapshotServerGrain>(request.Primary);
        var offer = request.Offer;
        ChunkReader read = (file, offset, length) => server.ReadChunk(partition, offer.Snapshot, file, offset, length);
        return Task.Run(() => registry.Installs.InstallAsync(registry.Open(partition), request, read, registry.IncomingPath(partition), logger));
    }

    /// <inheritdoc />
    public Task<Entry[]> ReadLog(ulong fromIndex, int maxEntries, long maxBytes) =>
        Task.Run(() => registry.Open(_partition).Read(fromIndex, maxEntries, maxBytes).ToArray());
}

/// <summary>Places a <see cref="ReplicaGrain"/> on the silo its key names.</summary>
[GenerateSerializer, Immutable, Alias("dengine.ReplicaPlacement")]
public sealed class ReplicaPlacement : PlacementStrategy
{
    internal static readonly ReplicaPlacement Instance = new();
}

/// <summary>Marks a grain class for <see cref="ReplicaPlacement"/>.</summary>
[AttributeUsage(AttributeTargets.Class, AllowMultiple = false)]
public sealed class ReplicaPlacementAttribute() : PlacementAttribute(ReplicaPlacement.Instance);

/// <summary>Finds the live silo named in the replica key; fails with PartitionUnavailable while it is gone (never places the copy elsewhere).</summary>
public sealed class ReplicaPlacementDirector(IClusterMembershipService membership) : IPlacementDirector
{
    /// <inheritdoc />
    public Task<SiloAddress> OnAddActivation(PlacementStrategy strategy, PlacementTarget target, IPlacementContext context)
    {
        var key = target.GrainIdentity.Key.ToString()!;
        if (!ReplicaKey.TryParse(key, out var partition, out var name))
        {
            throw new DEngineException(DEngineErrorCode.InvalidArgument, $"'{key}' is not a replica key (partition/silo).");
        }
        foreach (var member in membership.CurrentSnapshot.Members.Values)
        {
            if (member.Name == name && SiloLiveness.IsReachable(member.Status))
            {
                return Task.FromResult(member.SiloAddress);
            }
        }
        throw new DEngineException(DEngineErrorCode.PartitionUnavailable, $"Silo '{name}' is not in the cluster; its copy of partition {partition} cannot be reached until it returns.", partition);
    }
}
