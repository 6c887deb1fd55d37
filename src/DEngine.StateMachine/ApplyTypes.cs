using DEngine.Protos.Client;

namespace DEngine.StateMachine;

/// <summary>
/// A decoded log entry. <see cref="Command"/> is null for Noop and membership entries, which only
/// advance the applied index.
/// </summary>
public readonly record struct ApplyEntry(ulong Index, ulong Term, WriteCommand? Command);

/// <summary>Outcome of one entry.</summary>
public enum ApplyStatus
{
    /// <summary>Applied (for a CAS: the comparison matched and the new value was written).</summary>
    Applied,

    /// <summary>A CAS whose comparison did not match; nothing was written.</summary>
    CompareFailed,

    /// <summary>The index was at or below the applied index: skipped (redelivery).</summary>
    AlreadyApplied,

    /// <summary>The write's session is unknown here (expired, or never opened without the first-write flag); nothing was written.</summary>
    SessionExpired,

    /// <summary>The write's sequence is below its session's low-water mark (a late duplicate); nothing was written.</summary>
    LateDuplicate,
}

/// <summary>The result of one entry of a chunk.</summary>
/// <param name="Index">The entry's index.</param>
/// <param name="Status">What happened. For a repeated (session, sequence): the recorded status of the first apply.</param>
/// <param name="KeysExpired">For an ExpireKeys command: how many keys it deleted (for ExpireSessions: sessions ended).</param>
/// <param name="RecordedIndex">For a repeated (session, sequence) (<paramref name="Deduplicated"/>): the index at which the write was first applied; else 0.</param>
/// <param name="Deduplicated">True when the entry repeated an already applied (session, sequence): nothing was written, and <paramref name="Status"/> and <paramref name="RecordedIndex"/> are the first apply's.</param>
public readonly record struct ApplyResult(ulong Index, ApplyStatus Status, int KeysExpired = 0, ulong RecordedIndex = 0, bool Deduplicated = false)
{
    /// <summary>The index a writer is answered with: the first apply's for a repeated write, else this entry's.</summary>
    public ulong ResponseIndex => Deduplicated ? RecordedIndex : Index;

    /// <summary>d-engine's <c>succeeded</c>: false for a CAS that did not match and for a write refused by its session (SessionExpired, LateDuplicate).</summary>
    public bool Succeeded => Status is ApplyStatus.Applied or ApplyStatus.AlreadyApplied;
}

/// <summary>A key and its value.</summary>
public readonly record struct KeyValue(byte[] Key, byte[] Value);

/// <summary>The result of a prefix scan.</summary>
/// <param name="Entries">Matching live entries in key order.</param>
/// <param name="Revision">The applied index the scan read at.</param>
public sealed record ScanResult(IReadOnlyList<KeyValue> Entries, ulong Revision);

/// <summary>A key whose TTL has passed, with the expiry that made it so (input to an ExpireKeys command).</summary>
public readonly record struct ExpiredKey(byte[] Key, ulong ExpiresAtUnixMs);
