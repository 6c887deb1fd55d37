namespace DEngine.Client;

/// <summary>Options of <see cref="DEngineClient"/>.</summary>
public sealed class DEngineClientOptions
{
    /// <summary>Retries of a read (and of snapshot and move requests) on a retryable error (NotServing, PartitionUnavailable, Overloaded, a response timeout) before it is thrown. Default 8. Writes are bounded by <see cref="CallDeadline"/> instead.</summary>
    public int MaxRetries { get; set; } = 8;

    /// <summary>First backoff delay; doubles per retry. Default 50 ms.</summary>
    public TimeSpan InitialBackoff { get; set; } = TimeSpan.FromMilliseconds(50);

    /// <summary>Largest backoff delay. Default 2 s.</summary>
    public TimeSpan MaxBackoff { get; set; } = TimeSpan.FromSeconds(2);

    /// <summary>
    /// How long one write (Put, Delete, CompareAndSwap) is retried under its session before the caller
    /// gets a <see cref="TimeoutException"/> (outcome unknown) or, when every attempt was refused
    /// before it was sequenced, the last refusal. The silo keeps session tombstones longer than the
    /// default (DEngine:SessionTombstoneRetention); a longer deadline needs a longer retention.
    /// Default 30 s.
    /// </summary>
    public TimeSpan CallDeadline { get; set; } = DEngine.Orleans.ClientRetryDeadline.Default;

    /// <summary>
    /// How long one attempt of a write waits for its answer before it is sent again under the same
    /// (session, sequence); doubled after every attempt that was not answered in time, and never more
    /// than what is left of <see cref="CallDeadline"/> (the first attempt always waits this long). A
    /// lost answer (a gateway that stops while the write is in flight drops the response, a paused
    /// silo) then costs this long instead of the
    /// Orleans response timeout, and the doubling keeps a slow partition from getting many copies of
    /// one write (a copy sent again is answered from the session table, never applied twice).
    /// Default 1 s.
    /// </summary>
    public TimeSpan AttemptTimeout { get; set; } = TimeSpan.FromSeconds(1);

    /// <summary>Clock for backoff delays and the call deadline.</summary>
    public TimeProvider TimeProvider { get; set; } = TimeProvider.System;
}
