using DEngine.Protos.Client;
using DEngine.Protos.Common;
using Orleans;
using Orleans.Concurrency;

namespace DEngine.Orleans;

/// <summary>
/// One partition of the key-value state machine. The grain key is the partition id
/// (0 .. partitions-1). The grain is the partition's sequencer: client writes become log entries
/// with the next index and the activation's epoch as term, applied strictly in order and
/// acknowledged only once durable. Concurrent writes are committed together (group commit).
/// Reads never return a value whose write is not yet durable, nor an expired value.
/// </summary>
/// <remarks>Errors are <see cref="DEngineException"/>s; NotServing and PartitionUnavailable are retryable.</remarks>
public interface IStateMachineGrain : IGrainWithIntegerKey
{
    /// <summary>
    /// Applies ready-made entries from an external log as one atomic chunk (d-engine's apply_chunk).
    /// Returns one outcome per entry, in order. Redelivered entries are skipped and reported; a gap,
    /// a non-increasing index or a malformed entry rejects the whole chunk.
    /// </summary>
    Task<EntryOutcome[]> ApplyChunk([Immutable] Entry[] entries);

    /// <summary>Stores <paramref name="value"/> under <paramref name="key"/>; with <paramref name="ttlSeconds"/> &gt; 0 the key expires that many seconds from now. Returns the log index of the write.</summary>
    [AlwaysInterleave]
    Task<ulong> Put([Immutable] byte[] key, [Immutable] byte[] value, ulong ttlSeconds);

    /// <summary>Deletes <paramref name="key"/> (absent keys are fine). Returns the log index of the write.</summary>
    [AlwaysInterleave]
    Task<ulong> Delete([Immutable] byte[] key);

    /// <summary>
    /// Writes <paramref name="newValue"/> if the current value equals <paramref name="expected"/>
    /// (null = the key must be absent). Returns whether it matched. The new value has no TTL.
    /// </summary>
    [AlwaysInterleave]
    Task<bool> CompareAndSwap([Immutable] byte[] key, [Immutable] byte[]? expected, [Immutable] byte[] newValue);

    /// <summary>
    /// <see cref="Put"/> as part of a client session (exactly-once): the partition applies each
    /// (session, sequence) at most once and answers a repeat with the recorded index. Throws
    /// SessionExpired (nothing applied: the session is unknown here) or LateDuplicate (the sequence
    /// is below the session's low-water mark; nothing applied).
    /// </summary>
    [AlwaysInterleave]
    Task<ulong> PutInSession([Immutable] byte[] key, [Immutable] byte[] value, ulong ttlSeconds, [Immutable] ClientSession session);

    /// <summary><see cref="Delete"/> as part of a client session; see <see cref="PutInSession"/>.</summary>
    [AlwaysInterleave]
    Task<ulong> DeleteInSession([Immutable] byte[] key, [Immutable] ClientSession session);

    /// <summary>
    /// <see cref="CompareAndSwap"/> as part of a client session; see <see cref="PutInSession"/>. A
    /// repeat answers the first apply's outcome (a CAS that matched once stays true).
    /// </summary>
    [AlwaysInterleave]
    Task<bool> CompareAndSwapInSession([Immutable] byte[] key, [Immutable] byte[]? expected, [Immutable] byte[] newValue, [Immutable] ClientSession session);

    /// <summary>
    /// Plans one bounded session-expiry round now (sessions idle longer than DEngine:SessionTimeout
    /// end and leave a tombstone; tombstones older than DEngine:SessionTombstoneRetention are purged)
    /// and queues it through the ordered apply path; returns how many sessions and tombstones it
    /// planned. The primary also does this by itself on a timer.
    /// </summary>
    Task<int> ExpireIdleSessions();

    /// <summary>Whether this partition's state holds a live session <paramref name="sessionId"/> (diagnostics and tests).</summary>
    [ReadOnly]
    Task<bool> HasSession([Immutable] byte[] sessionId);

    /// <summary>The value of <paramref name="key"/>, or null when absent or expired.</summary>
    [ReadOnly]
    Task<byte[]?> Get([Immutable] byte[] key);

    /// <summary>The values of <paramref name="keys"/> in request order (null = absent), from one consistent state.</summary>
    [ReadOnly]
    Task<byte[]?[]> GetMulti([Immutable] byte[][] keys);

    /// <summary>Live entries whose key starts with <paramref name="prefix"/>, in key order, and the revision (applied index) read at.</summary>
    [ReadOnly]
    Task<ScanResponse> ScanPrefix([Immutable] byte[] prefix);

    /// <summary>The TTL state of <paramref name="key"/>.</summary>
    [ReadOnly]
    Task<KeyTtl> GetTtl([Immutable] byte[] key);

    /// <summary>
    /// Plans one bounded cleanup round of expired keys now and queues it through the ordered apply
    /// path; returns how many keys it planned. The partition also does this by itself, on a timer
    /// armed for its earliest expiry.
    /// </summary>
    Task<int> CleanupExpired();

    /// <summary>Takes a snapshot now (a verified RocksDB checkpoint labelled with the last applied entry).</summary>
    Task<SnapshotSummary> CreateSnapshot();

    /// <summary>The snapshots this partition keeps, oldest first.</summary>
    [ReadOnly]
    Task<SnapshotSummary[]> ListSnapshots();

    /// <summary>
    /// Moves the partition to the silo named <paramref name="siloName"/>: this activation closes, and
    /// the new one there fetches the data from this silo before it serves. Returns at once; watch
    /// <see cref="GetStatus"/> for the new silo and the transfer report.
    /// </summary>
    Task MoveTo(string siloName);

    /// <summary>
    /// A replicated partition's primary removes the replica on <paramref name="siloName"/>, a silo that
    /// is stopping gracefully, from the configuration now (never below MinReplicas), so commits do not
    /// wait for it until it times out; it is added back once it returns and catches up. Nothing
    /// happens when it holds no replica, is the primary, or the floor keeps it.
    /// </summary>
    Task ReleaseReplica(string siloName);

    /// <summary>
    /// Moves the replica on silo <paramref name="fromSilo"/> of this replicated partition to silo
    /// <paramref name="toSilo"/>: a copy is built there (snapshot, then the log), joins the
    /// configuration once caught up, and then the one on <paramref name="fromSilo"/> is dropped. Returns
    /// once the move is recorded by the primary; watch <see cref="GetReplicaSet"/> for its progress.
    /// </summary>
    /// <exception cref="DEngineException">
    /// InvalidArgument when <paramref name="fromSilo"/> holds no replica or is the primary (move the
    /// primary role first), <paramref name="toSilo"/> already holds one, is not active or is draining.
    /// FeatureNotEnabled with Factor 1.
    /// </exception>
    Task MoveReplica(string fromSilo, string toSilo);

    /// <summary>The replica set as the primary sees it: configuration, copies being built, moves running. FeatureNotEnabled with Factor 1.</summary>
    [ReadOnly]
    Task<ReplicaSetStatus> GetReplicaSet();

    /// <summary>Applied position, epoch, hosting silo, estimated key count and latest snapshot.</summary>
    [ReadOnly]
    Task<PartitionStatus> GetStatus();
}
