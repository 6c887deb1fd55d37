namespace DEngine;

/// <summary>
/// The one exception type of DEngine: an <see cref="DEngineErrorCode"/>, the partition and log
/// index it concerns (when known) and a message that says what to do.
/// </summary>
public sealed class DEngineException : Exception
{
    /// <summary>Creates an error.</summary>
    public DEngineException(DEngineErrorCode code, string message, int? partition = null, ulong? index = null, Exception? inner = null)
        : base(Format(code, message, partition, index), inner)
    {
        Code = code;
        Partition = partition;
        Index = index;
        Detail = message;
    }

    /// <summary>What went wrong.</summary>
    public DEngineErrorCode Code { get; }

    /// <summary>The partition, when the error concerns one.</summary>
    public int? Partition { get; }

    /// <summary>The log index, when the error concerns one entry.</summary>
    public ulong? Index { get; }

    /// <summary>The message without the code/partition/index prefix.</summary>
    public string Detail { get; }

    /// <summary>True when retrying later can succeed.</summary>
    public bool IsRetryable => Code.IsRetryable();

    private static string Format(DEngineErrorCode code, string message, int? partition, ulong? index)
    {
        var where = (partition, index) switch
        {
            (int p, ulong i) => $" (partition {p}, index {i})",
            (int p, null) => $" (partition {p})",
            (null, ulong i) => $" (index {i})",
            _ => "",
        };
        return $"{code}{where}: {message}";
    }
}
