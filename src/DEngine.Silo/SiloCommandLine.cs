namespace DEngine.Silo;

/// <summary>Turns the silo's flags into configuration keys, so flags, files and environment variables share one model.</summary>
internal sealed class SiloCommandLine
{
    private static readonly Dictionary<string, string> Flags = new(StringComparer.Ordinal)
    {
        ["--data-dir"] = "DEngine:DataRoot",
        ["--silo-port"] = "Silo:SiloPort",
        ["--gateway-port"] = "Silo:GatewayPort",
        ["--primary"] = "Silo:Primary",
        ["--partitions"] = "DEngine:Partitions",
        ["--name"] = "Silo:Name",
        ["--dashboard-port"] = "Dashboard:Port",
    };

    public const string Help = """
        DEngine silo: hosts the partitions of a DEngine cluster.

        Usage: DEngine.Silo [options]

        Options:
          --data-dir DIR          data directory (default ./data)
          --silo-port PORT        silo-to-silo port (default 11111)
          --gateway-port PORT     client gateway port (default 30000)
          --primary HOST:PORT     silo port of the primary silo, to join its cluster (default: be the primary)
          --partitions N          number of partitions of the cluster (default 16)
          --name NAME             stable silo name; partition ownership follows it (default silo-PORT)
          --environment NAME      configuration profile: loads silo-config/appsettings.NAME.json
          --dashboard / --no-dashboard   Orleans Dashboard on or off (default: on in Development)
          --dashboard-port PORT   dashboard port (default 8080)
          --Section:Key VALUE     any configuration key, e.g. --DEngine:MaxValueBytes 65536
          --Redis:AllowVolatile true   (Redis profile) start although Redis may lose writes
                                  (no appendonly yes / appendfsync always); throw-away clusters only
          -h, --help              show this help
        """;

    public required string[] ConfigurationArgs { get; init; }

    public required string Environment { get; init; }

    public bool ShowHelp { get; init; }

    public static SiloCommandLine Parse(string[] args)
    {
        var config = new List<string>();
        var environment = System.Environment.GetEnvironmentVariable("DOTNET_ENVIRONMENT")
            ?? System.Environment.GetEnvironmentVariable("ASPNETCORE_ENVIRONMENT")
            ?? "Production";
        var help = false;
        for (var i = 0; i < args.Length; i++)
        {
            var arg = args[i];
            string? inlineValue = null;
            var eq = arg.IndexOf('=', StringComparison.Ordinal);
            if (arg.StartsWith("--", StringComparison.Ordinal) && eq > 0)
            {
                inlineValue = arg[(eq + 1)..];
                arg = arg[..eq];
            }
            switch (arg)
            {
                case "-h" or "--help":
                    help = true;
                    continue;
                case "--dashboard":
                    config.Add("--Dashboard:Enabled=true");
                    continue;
                case "--no-dashboard":
                    config.Add("--Dashboard:Enabled=false");
                    continue;
                case "--environment":
                    environment = inlineValue ?? Value(args, ref i, arg);
                    continue;
            }
            if (Flags.TryGetValue(arg, out var key))
            {
                config.Add($"--{key}={inlineValue ?? Value(args, ref i, arg)}");
            }
            else if (arg.StartsWith("--", StringComparison.Ordinal) && arg.Contains(':', StringComparison.Ordinal))
            {
                config.Add($"{arg}={inlineValue ?? Value(args, ref i, arg)}");
            }
            else
            {
                throw new ArgumentException($"unknown option '{args[i]}'.");
            }
        }
        return new SiloCommandLine { ConfigurationArgs = [.. config], Environment = environment, ShowHelp = help };
    }

    private static string Value(string[] args, ref int i, string flag)
    {
        if (i + 1 >= args.Length)
        {
            throw new ArgumentException($"option '{flag}' needs a value.");
        }
        return args[++i];
    }
}
