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
}

/// <summary>The result of one entry of a chunk.</summary>
/// <param name="Index">The entry's index.</param>
/// <param name="Status">What happened.</param>
/// <param name="KeysExpired">For an ExpireKeys command: how many keys it deleted.</param>
public readonly record struct ApplyResult(ulong Index, ApplyStatus Status, int KeysExpired = 0)
{
    /// <summary>d-engine's <c>succeeded</c>: false only for a CAS that did not match.</summary>
    public bool Succeeded => Status != ApplyStatus.CompareFailed;
}

/// <summary>A key and its value.</summary>
public readonly record struct KeyValue(byte[] Key, byte[] Value);

/// <summary>The result of a prefix scan.</summary>
/// <param name="Entries">Matching live entries in key order.</param>
/// <param name="Revision">The applied index the scan read at.</param>
public sealed record ScanResult(IReadOnlyList<KeyValue> Entries, ulong Revision);

/// <summary>A key whose TTL has passed, with the expiry that made it so (input to an ExpireKeys command).</summary>
public readonly record struct ExpiredKey(byte[] Key, ulong ExpiresAtUnixMs);
