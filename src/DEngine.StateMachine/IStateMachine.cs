using DEngine.Protos.Common;
using DEngine.Protos.Storage;

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
/// entries' stamps). Reads never return an expired value (judged at max(clock, time floor)); with
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
