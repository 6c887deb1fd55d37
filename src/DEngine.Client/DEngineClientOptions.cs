namespace DEngine.Client;

/// <summary>Options of <see cref="DEngineClient"/>.</summary>
public sealed class DEngineClientOptions
{
    /// <summary>Retries of a retryable error (NotServing, PartitionUnavailable, Overloaded; for a read also a response timeout) before it is thrown. Default 8.</summary>
    public int MaxRetries { get; set; } = 8;

    /// <summary>First backoff delay; doubles per retry. Default 50 ms.</summary>
    public TimeSpan InitialBackoff { get; set; } = TimeSpan.FromMilliseconds(50);

    /// <summary>Largest backoff delay. Default 2 s.</summary>
    public TimeSpan MaxBackoff { get; set; } = TimeSpan.FromSeconds(2);

    /// <summary>Clock for backoff delays.</summary>
    public TimeProvider TimeProvider { get; set; } = TimeProvider.System;
}
