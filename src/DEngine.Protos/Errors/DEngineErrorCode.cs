namespace DEngine;

/// <summary>
/// What went wrong, as a stable code that callers can branch on. The numeric values are part of
/// the public contract (they cross process boundaries); add new codes at the end.
/// </summary>
public enum DEngineErrorCode
{
    /// <summary>No error.</summary>
    None = 0,

    /// <summary>The partition is stopped or installing a snapshot. Retryable: try again shortly.</summary>
    NotServing = 1,

    /// <summary>The partition's current data is on a silo that cannot be reached. Retryable.</summary>
    PartitionUnavailable = 2,

    /// <summary>Entries are missing: the first new index is beyond applied + 1, or a chunk skips an index.</summary>
    ChunkGap = 3,

    /// <summary>Indexes inside a chunk do not strictly increase (a repeated or decreasing index).</summary>
    ChunkOutOfOrder = 4,

    /// <summary>An entry has no payload, or its command cannot be decoded.</summary>
    MalformedEntry = 5,

    /// <summary>A key or value is larger than the configured limit.</summary>
    LimitExceeded = 6,

    /// <summary>The request uses a feature that is switched off in this deployment.</summary>
    FeatureNotEnabled = 7,

    /// <summary>RocksDB reported an I/O or corruption error; nothing of the request was applied.</summary>
    StorageFailure = 8,

    /// <summary>An argument is invalid (empty key, partition out of range, ...).</summary>
    InvalidArgument = 9,

    /// <summary>A newer activation of the partition exists; this one may no longer write.</summary>
    StaleEpoch = 10,

    /// <summary>A snapshot failed verification or is older than the applied state.</summary>
    SnapshotRejected = 11,

    /// <summary>
    /// The write may or may not have been applied: its chunk was written but the fsync that would make
    /// it durable failed, so the partition stopped serving (it reopens only after a full sync of its
    /// files). Not retried automatically; read the key once the partition serves again to learn the
    /// outcome.
    /// </summary>
    OutcomeUnknown = 12,

    /// <summary>
    /// The partition's write queue is full (entries or bytes). Nothing of the request was applied.
    /// Retryable: back off and try again.
    /// </summary>
    Overloaded = 13,

    /// <summary>
    /// The write's client session is unknown to the partition: it expired (no traffic for
    /// DEngine:SessionTimeout) or was never opened there. Nothing was applied. Not retried under the
    /// same session: the client continues on that partition under a new session.
    /// </summary>
    SessionExpired = 14,

    /// <summary>
    /// A write of a session arrived with a sequence below the session's low-water mark: a late copy
    /// of a write the client no longer waits for. Refused, never applied.
    /// </summary>
    LateDuplicate = 15,
}

/// <summary>Helpers on <see cref="DEngineErrorCode"/>.</summary>
public static class DEngineErrorCodeExtensions
{
    /// <summary>True for errors that go away by themselves; clients retry them with backoff.</summary>
    public static bool IsRetryable(this DEngineErrorCode code) =>
        code is DEngineErrorCode.NotServing or DEngineErrorCode.PartitionUnavailable or DEngineErrorCode.StaleEpoch or DEngineErrorCode.Overloaded;
}
