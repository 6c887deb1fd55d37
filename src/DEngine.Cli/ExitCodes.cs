namespace DEngine.Cli;

/// <summary>The process exit codes of <c>dengine</c>; scripts depend on them.</summary>
internal static class ExitCodes
{
    /// <summary>The command succeeded.</summary>
    public const int Success = 0;

    /// <summary>The key does not exist (get, ttl).</summary>
    public const int NotFound = 1;

    /// <summary>Any error: bad arguments, unreachable gateway, an error from the cluster.</summary>
    public const int Error = 2;
}

/// <summary>An error the CLI reports as one line on stderr and exit code 2.</summary>
internal sealed class CliException(string message, Exception? inner = null) : Exception(message, inner);
