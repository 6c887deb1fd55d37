using DEngine.Protos.Common;
using Orleans;

namespace DEngine.Orleans.Replication;

/// <summary>
/// What a primary sends a replica: entries that follow <see cref="PrevIndex"/>/<see cref="PrevTerm"/> in
/// the primary's log, and the primary's commit index. An empty <see cref="Entries"/> is a heartbeat: it
/// renews the primary's lease and carries the commit index.
/// </summary>
/// <param name="Partition">The partition.</param>
/// <param name="Version">The sender's configuration version (its term): a replica that has seen a higher one refuses.</param>
/// <param name="Primary">The sender's silo name (for errors and logs).</param>
/// <param name="PrevIndex">Index of the entry just before the first of <see cref="Entries"/> (or the primary's last index, for a heartbeat).</param>
/// <param name="PrevTerm">Term of that entry; the replica must hold (PrevIndex, PrevTerm) or answer Mismatch.</param>
/// <param name="Entries">Entries in index order, contiguous from PrevIndex + 1.</param>
/// <param name="CommitIndex">Every entry up to here is committed: the replica may apply up to it.</param>
[GenerateSerializer, Immutable, Alias("dengine.AppendRequest")]
public sealed record AppendRequest(
    [property: Id(0)] int Partition,
    [property: Id(1)] ulong Version,
    [property: Id(2)] string Primary,
    [property: Id(3)] ulong PrevIndex,
    [property: Id(4)] ulong PrevTerm,
    [property: Id(5)] Entry[] Entries,
    [property: Id(6)] ulong CommitIndex);

/// <summary>How a replica answered an <see cref="AppendRequest"/>.</summary>
public enum AppendStatus
{
    /// <summary>The entries are in the replica's log, durably; <see cref="AppendResponse.LastIndex"/> is its last entry.</summary>
    Appended,

    /// <summary>The replica has seen a higher configuration version: the sender is no longer primary. Nothing was appended.</summary>
    StaleVersion,

    /// <summary>The replica does not hold (PrevIndex, PrevTerm): resend from after its commit index. Nothing was appended.</summary>
    Mismatch,
}

/// <summary>A replica's answer: its status and where its log stands.</summary>
/// <param name="Status">What happened.</param>
/// <param name="Version">The highest configuration version the replica has seen.</param>
/// <param name="LastIndex">The replica's last log index after the call.</param>
/// <param name="LastTerm">Its term.</param>
/// <param name="CommitIndex">The highest commit index the replica knows.</param>
/// <param name="BaseIndex">The replica log's base (entries at or below it are only in its snapshot / state machine).</param>
[GenerateSerializer, Immutable, Alias("dengine.AppendResponse")]
public sealed record AppendResponse(
    [property: Id(0)] AppendStatus Status,
    [property: Id(1)] ulong Version,
    [property: Id(2)] ulong LastIndex,
    [property: Id(3)] ulong LastTerm,
    [property: Id(4)] ulong CommitIndex,
    [property: Id(5)] ulong BaseIndex);

/// <summary>
/// What a primary sends a replica whose next entry its log no longer holds: install a checkpoint of
/// the primary's copy (committed state only), fetched in verified chunks from the primary's snapshot
/// server. The call answers within <see cref="MaxWait"/>; a longer install goes on in the background
/// and the primary asks again with the same request until it is done.
/// </summary>
/// <param name="Partition">The partition.</param>
/// <param name="Version">The sender's configuration version: a replica that has seen a higher one refuses, as for an append.</param>
/// <param name="Primary">The sender's silo name: the snapshot is fetched from its snapshot server.</param>
/// <param name="Offer">The checkpoint: name, last included index and term, manifest and its checksum.</param>
/// <param name="MaxWait">How long the call waits for the install before answering <see cref="InstallStatus.Installing"/> (below the sender's timeout).</param>
[GenerateSerializer, Immutable, Alias("dengine.InstallSnapshotRequest")]
public sealed record InstallSnapshotRequest(
    [property: Id(0)] int Partition,
    [property: Id(1)] ulong Version,
    [property: Id(2)] string Primary,
    [property: Id(3)] Snapshots.SnapshotOffer Offer,
    [property: Id(4)] TimeSpan MaxWait);

/// <summary>How a replica answered an <see cref="InstallSnapshotRequest"/>.</summary>
public enum InstallStatus
{
    /// <summary>The copy holds the snapshot's last included entry (installed now, or already in its log): the primary ships from the entry after it.</summary>
    Installed,

    /// <summary>The fetch or install is still running; ask again with the same request.</summary>
    Installing,

    /// <summary>The replica has seen a higher configuration version: the sender is no longer primary. Nothing was fetched or installed.</summary>
    StaleVersion,
}

/// <summary>A replica's answer to an <see cref="InstallSnapshotRequest"/>.</summary>
/// <param name="Status">What happened.</param>
/// <param name="Position">Where the copy stands (its log after the install when <see cref="InstallStatus.Installed"/>).</param>
/// <param name="FetchedBytes">Bytes of the snapshot fetched so far (while installing).</param>
[GenerateSerializer, Immutable, Alias("dengine.InstallSnapshotResponse")]
public sealed record InstallSnapshotResponse(
    [property: Id(0)] InstallStatus Status,
    [property: Id(1)] AppendResponse Position,
    [property: Id(2)] long FetchedBytes);
