using DEngine.Protos.Common;
using DEngine.Protos.Storage;
using DEngine.StateMachine.Snapshots;

namespace DEngine.StateMachine;

/// <summary>
/// A durable key-value state machine that applies log entries in order (d-engine's
/// <c>StateMachine</c> trait, in C# idiom).
/// </summary>
/// <remarks>
/// <para><b>What the caller guarantees.</b> One writer: <see cref="ApplyChunk"/> and
/// <see cref="ApplyCommands"/> are not called concurrently with each other (the implementation
/// serialises them anyway). Reads may run concurrently with each other and with apply.</para>
/// <para><b>What the implementation guarantees.</b> A chunk is applied atomically together with the
/// new applied position: after a crash at any instant, <see cref="LastApplied"/> describes exactly
/// the data on disk. Entries at or below the applied index are skipped and reported as
/// <see cref="ApplyStatus.AlreadyApplied"/>, so redelivery is safe. A gap, a non-increasing index,
/// a missing payload, an undecodable command or an empty key rejects the whole chunk with a
/// <see cref="DEngineException"/> naming the index, and nothing of it is applied. Size limits are
/// not checked by apply: the sequencer checks them (<see cref="CommandLimits"/>) before it logs a
/// command, so an accepted entry applies alike on every engine whatever its limits. Apply is
/// deterministic: the same entries on the same state give the same bytes (expiry is judged at the
/// entries' stamps). A write with a client session is applied at most once per (session, sequence):
/// a repeat is answered with the first apply's recorded result (<see cref="ApplyResult.Deduplicated"/>),
/// and a write below the session's low-water mark or of an unknown or ended session is refused with
/// nothing written (see <see cref="SessionLimits"/>). Reads never return an expired value (judged at max(clock, time floor)); with
/// Synced durability they read the durable read view: never a chunk applied with
/// <see cref="ApplyDurability.Deferred"/> until a <see cref="SyncWal"/> covering it returned.</para>
/// </remarks>
public interface IStateMachine : IDisposable
{
    /// <summary>The partition this state machine serves (used in errors and metrics).</summary>
    int PartitionId { get; }

    /// <summary>True while reads and writes are served.</summary>
    bool IsRunning { get; }

    /// <summary>Starts serving (a fresh state machine is already serving).</summary>
    void Start();

    /// <summary>Stops serving; reversible with <see cref="Start"/>. Calls then fail with NotServing.</summary>
    void Stop();

    /// <summary>The value of <paramref name="key"/>, or null when absent or expired.</summary>
    byte[]? Get(ReadOnlySpan<byte> key);

    /// <summary>Values of <paramref name="keys"/> in request order (null = absent), read from one consistent snapshot.</summary>
    IReadOnlyList<byte[]?> GetMulti(IReadOnlyList<byte[]> keys);

    /// <summary>Every live key starting with <paramref name="prefix"/>, in key order, and the applied index it was read at. An empty prefix gives an empty result.</summary>
    ScanResult ScanPrefix(ReadOnlySpan<byte> prefix);

    /// <summary>
    /// The expiry of <paramref name="key"/>: false when the key is absent or expired; otherwise true with
    /// <paramref name="expiresAtUnixMs"/> null for a key without TTL.
    /// </summary>
    bool TryGetExpiry(ReadOnlySpan<byte> key, out ulong? expiresAtUnixMs);

    /// <summary>Decodes d-engine entries and applies them as one atomic chunk; one result per entry, in order.</summary>
    IReadOnlyList<ApplyResult> ApplyChunk(IReadOnlyList<Entry> entries, ApplyDurability durability = ApplyDurability.Default);

    /// <summary>Applies already-decoded entries as one atomic chunk; one result per entry, in order.</summary>
    IReadOnlyList<ApplyResult> ApplyCommands(IReadOnlyList<ApplyEntry> entries, ApplyDurability durability = ApplyDurability.Default);

    /// <summary>
    /// Makes everything applied so far durable with one fsync of the write-ahead log (group commit for
    /// chunks applied with <see cref="ApplyDurability.Deferred"/>). Returns the index now durable.
    /// When the fsync fails the machine is fenced: this and every later call throw OutcomeUnknown
    /// (the unsynced chunks may or may not be on disk), reads and applies answer NotServing, and
    /// <see cref="DurableIndex"/> never moves again until the machine is reopened after a full sync.
    /// </summary>
    ulong SyncWal();

    /// <summary>The last applied entry's position; {0, 0} when nothing was applied.</summary>
    LogPosition LastApplied { get; }

    /// <summary>The highest applied index known to be on stable storage.</summary>
    ulong DurableIndex { get; }

    /// <summary>The metadata of the latest snapshot, or null.</summary>
    SnapshotMetadata? SnapshotMetadata { get; }

    /// <summary>Stores <paramref name="metadata"/> durably as the latest snapshot's metadata.</summary>
    void PersistSnapshotMetadata(SnapshotMetadata metadata);

    /// <summary>Syncs the log and flushes memtables, so a reopen replays nothing.</summary>
    void Flush();

    /// <summary>Deletes all data, TTL state, the applied position and snapshot metadata. Serving state is unchanged.</summary>
    void Reset();

    /// <summary>Exact number of live keys (iterates the data; may be expensive).</summary>
    long Count();

    /// <summary>RocksDB's cheap estimate of the number of keys.</summary>
    long EstimatedCount { get; }

    // ---------------------------------------------------------------- fence after a failed fsync

    /// <summary>
    /// True after a WAL sync failed: applies and reads are refused (what the page cache holds may never
    /// reach the disk) until <see cref="RecoverFromFence"/> succeeds.
    /// </summary>
    bool IsFenced { get; }

    /// <summary>
    /// Makes the files on disk hold what a read returns again, then reopens, and lifts the fence.
    /// Throws StorageFailure (and stays fenced) when a step fails; call again later. Does nothing when
    /// not fenced. Blocking I/O: call off the grain's turn.
    /// </summary>
    void RecoverFromFence();

    // ---------------------------------------------------------------- time and expiry

    /// <summary>
    /// The highest clock stamp (Unix ms) of any applied entry, persisted with the applied position,
    /// so it survives restarts and travels with snapshots.
    /// </summary>
    ulong TimeFloor { get; }

    /// <summary>
    /// The instant expiry is judged at here: max(clock, time floor), the floor counted only up to
    /// clock + the configured clock skew. The sequencer stamps commands with it, so time never runs
    /// backwards for the partition.
    /// </summary>
    ulong EffectiveNowUnixMs { get; }

    /// <summary>
    /// As <see cref="TryGetExpiry(ReadOnlySpan{byte}, out ulong?)"/>, and gives the instant the key was
    /// judged at (see <see cref="EffectiveNowUnixMs"/>): a key reported present expires strictly after
    /// <paramref name="asOfUnixMs"/>. One clock read.
    /// </summary>
    bool TryGetExpiry(ReadOnlySpan<byte> key, out ulong? expiresAtUnixMs, out ulong asOfUnixMs);

    /// <summary>The earliest expiry in the TTL index (possibly of an entry an overwrite left behind), or null when there is none.</summary>
    ulong? EarliestExpiry();

    /// <summary>
    /// Up to <paramref name="max"/> keys whose TTL index entry is at or before <paramref name="asOfUnixMs"/>,
    /// oldest expiry first, with the expiry they were indexed under: the input of an ExpireKeys command,
    /// which deletes them through the ordered apply path. Stops early when <paramref name="budget"/> is spent.
    /// </summary>
    IReadOnlyList<ExpiredKey> FindExpired(ulong asOfUnixMs, int max, TimeSpan? budget = null);

    /// <summary>A cheap estimate of the number of keys with a TTL (for metrics).</summary>
    long TtlIndexEstimate { get; }

    // ---------------------------------------------------------------- client sessions (exactly-once writes)

    /// <summary>
    /// Up to <paramref name="max"/> live sessions whose last activity (the stamp of their latest write
    /// here) is before <paramref name="lastActiveBeforeUnixMs"/>, least recently active first: the
    /// input of an ExpireSessions command, which ends each only if its activity is still the listed one.
    /// </summary>
    IReadOnlyList<IdleSession> IdleSessions(ulong lastActiveBeforeUnixMs, int max);

    /// <summary>Up to <paramref name="max"/> ids of ended sessions whose tombstone was stamped before <paramref name="beforeUnixMs"/>, oldest first: the tombstones an ExpireSessions command may purge.</summary>
    IReadOnlyList<byte[]> TombstonesBefore(ulong beforeUnixMs, int max);

    /// <summary>The size of the session table as of the last applied chunk (cheap; for metrics and tests).</summary>
    SessionTableStats SessionTableStats { get; }

    /// <summary>True when the session <paramref name="id"/> is live on this partition (recorded, not ended).</summary>
    bool HasSession(ReadOnlySpan<byte> id);

    /// <summary>True when the session <paramref name="id"/> was ended here and its tombstone is still kept (its writes get SessionExpired).</summary>
    bool HasSessionTombstone(ReadOnlySpan<byte> id);

    // ---------------------------------------------------------------- snapshots and handover

    /// <summary>True when the snapshot policy's number of entries has been applied since the last snapshot (taken or installed).</summary>
    bool ShouldSnapshot();

    /// <summary>
    /// Takes a snapshot of exactly the applied state, labelled with the last applied entry, with its
    /// manifest and metadata; older snapshots beyond the retention are deleted. Also the checkpoint a
    /// handover ships to another silo. Works while stopped (not while closed). Blocking I/O.
    /// </summary>
    SnapshotInfo CreateSnapshot();

    /// <summary>The complete snapshots on disk, oldest first (by index, then term).</summary>
    IReadOnlyList<SnapshotInfo> ListSnapshots();

    /// <summary>
    /// Verifies the snapshot in <paramref name="snapshotDirectory"/> against <paramref name="metadata"/>
    /// and replaces the state with it atomically: after a crash at any instant either the old or the new
    /// state is complete. A snapshot below the applied index is refused unless <paramref name="force"/>;
    /// one older than the local data by (term, index) is refused even then, unless an operator sets
    /// <paramref name="replaceNewerData"/>.
    /// </summary>
    /// <exception cref="DEngineException">SnapshotRejected when verification fails or the snapshot is older; StorageFailure on I/O errors (the old state is kept).</exception>
    void InstallSnapshot(string snapshotDirectory, SnapshotMetadata metadata, bool force = false, bool replaceNewerData = false);
}

/// <summary>Whether an apply call waits for its fsync.</summary>
public enum ApplyDurability
{
    /// <summary>Follow <see cref="RocksDbStateMachineOptions.Durability"/> (by default: fsync before returning).</summary>
    Default,

    /// <summary>Write without fsync; the caller makes it durable later with <see cref="IStateMachine.SyncWal"/> before acknowledging.</summary>
    Deferred,
}

/// <summary>A log position: index and term.</summary>
public readonly record struct LogPosition(ulong Index, ulong Term)
{
    /// <summary>The position before the first entry.</summary>
    public static LogPosition None => default;

    /// <summary>As d-engine's <see cref="LogId"/>.</summary>
    public LogId ToLogId() => new() { Index = Index, Term = Term };

    /// <summary>
    /// True when data ending here is older than data ending at <paramref name="other"/>: a lower term,
    /// or the same term and a lower index (a later epoch's log wins over a longer one of an earlier epoch).
    /// </summary>
    public bool IsOlderThan(LogPosition other) => Term < other.Term || (Term == other.Term && Index < other.Index);

    /// <inheritdoc />
    public override string ToString() => $"{{index {Index}, term {Term}}}";
}
