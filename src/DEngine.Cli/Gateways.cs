using System.Net;
using System.Net.Sockets;

namespace DEngine.Cli;

/// <summary>Parses gateway addresses given as HOST:PORT (several may be separated by commas).</summary>
internal static class Gateways
{
    /// <summary>The gateway used when neither <c>--gateway</c> nor <c>DENGINE_GATEWAY</c> is given.</summary>
    public const string Default = "127.0.0.1:30000";

    /// <summary>The environment variable that supplies gateways when <c>--gateway</c> is absent.</summary>
    public const string EnvironmentVariable = "DENGINE_GATEWAY";

    /// <summary>The gateway texts to use: the flags, else the environment variable, else the default.</summary>
    public static IReadOnlyList<string> Select(IReadOnlyList<string>? flags, string? environment)
    {
        IEnumerable<string> source = flags is { Count: > 0 } ? flags : string.IsNullOrWhiteSpace(environment) ? [Default] : [environment];
        var list = source
            .SelectMany(s => s.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
            .ToList();
        if (list.Count == 0)
        {
            throw new CliException("no gateway given: use --gateway HOST:PORT.");
        }
        return list;
    }

    /// <summary>Resolves HOST:PORT texts into endpoints (host names through DNS).</summary>
    public static async Task<IPEndPoint[]> ResolveAsync(IReadOnlyList<string> gateways, CancellationToken cancellationToken)
    {
        var endpoints = new List<IPEndPoint>();
        foreach (var text in gateways)
        {
            endpoints.Add(await ResolveOneAsync(text, cancellationToken));
        }
        return [.. endpoints];
    }

    private static async Task<IPEndPoint> ResolveOneAsync(string text, CancellationToken cancellationToken)
    {
        if (IPEndPoint.TryParse(text, out var endpoint) && endpoint.Port != 0 && text.Contains(':', StringComparison.Ordinal))
        {
            return endpoint;
        }
        var colon = text.LastIndexOf(':');
        if (colon <= 0 || !int.TryParse(text.AsSpan(colon + 1), out var port) || port is < 1 or > 65535)
        {
            throw new CliException($"gateway '{text}' is not HOST:PORT (e.g. 127.0.0.1:30000).");
        }
        var host = text[..colon];
        IPAddress[] addresses;
        try
        {
            addresses = await Dns.GetHostAddressesAsync(host, cancellationToken);
        }
        catch (SocketException ex)
        {
            throw new CliException($"gateway '{text}': cannot resolve host '{host}': {ex.Message}", ex);
        }
        var address = addresses.FirstOrDefault(a => a.AddressFamily == AddressFamily.InterNetwork) ?? addresses.FirstOrDefault()
            ?? throw new CliException($"gateway '{text}': host '{host}' has no address.");
        return new IPEndPoint(address, port);
    }
}
