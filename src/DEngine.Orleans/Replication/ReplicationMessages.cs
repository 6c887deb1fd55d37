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
