using System.CommandLine;
using System.CommandLine.Invocation;
using System.Globalization;
using DEngine.Client;

namespace DEngine.Cli;

/// <summary>
/// The <c>dengine</c> command line: parsing, help and the commands. The interface (commands,
/// options, output formats and exit codes) is a contract that scripts depend on.
/// </summary>
internal static class DEngineCommandLine
{
    private const string Description = """
        Command-line client of a DEngine cluster (a partitioned, durable key-value state machine on Orleans).

        Keys and values are UTF-8 text; with --hex both are hex, on input and on output, for binary data.
        Gateways: --gateway HOST:PORT (repeatable, or comma-separated), else the DENGINE_GATEWAY
        environment variable (comma-separated allowed), else 127.0.0.1:30000.
        Exit codes: 0 success, 1 not found (get, ttl), 2 any error (message on stderr).
        """;

    private static readonly Option<string[]> GatewayOption = new("--gateway", "-g")
    {
        Description = "Gateway of a silo as HOST:PORT; repeat it (or separate with commas) to give several. Default: $DENGINE_GATEWAY, else 127.0.0.1:30000.",
        HelpName = "HOST:PORT",
        Recursive = true,
        Arity = ArgumentArity.OneOrMore,
    };

    private static readonly Option<bool> HexOption = new("--hex")
    {
        Description = "Keys, values and prefixes are hex on input and output (for binary data), e.g. 00ff10.",
        Recursive = true,
    };

    private static readonly Option<bool> VerboseOption = new("--verbose", "-v")
    {
        Description = "Log the Orleans client to stderr and show stack traces of errors.",
        Recursive = true,
    };

    /// <summary>Parses <paramref name="args"/>, runs the command and returns the process exit code.</summary>
    public static async Task<int> RunAsync(string[] args)
    {
        var result = BuildRoot().Parse(args);
        var configuration = new InvocationConfiguration { EnableDefaultExceptionHandler = false };
        if (result.Action is ParseErrorAction parseError)
        {
            // The errors go to stderr; usage stays out of stdout so scripts never mistake it for data.
            parseError.ShowHelp = false;
            await result.InvokeAsync(new InvocationConfiguration { EnableDefaultExceptionHandler = false, Output = TextWriter.Null });
            await Console.Error.WriteLineAsync("Run 'dengine --help' or 'dengine COMMAND --help' for usage.");
            return ExitCodes.Error;
        }
        return await result.InvokeAsync(configuration);
    }

    /// <summary>The command tree.</summary>
    internal static RootCommand BuildRoot()
    {
        var root = new RootCommand(Description) { GatewayOption, HexOption, VerboseOption };
        root.Subcommands.Add(PutCommand());
        root.Subcommands.Add(GetCommand());
        root.Subcommands.Add(DelCommand());
        root.Subcommands.Add(CasCommand());
        root.Subcommands.Add(ScanCommand());
        root.Subcommands.Add(PartitionCommand());
        root.Subcommands.Add(TtlCommand());
        root.Subcommands.Add(StatusCommand());
        root.Subcommands.Add(SnapshotCommand());
        root.Subcommands.Add(SiloCommand());
        return root;
    }

    private static Argument<string> KeyArgument(string description = "The key (UTF-8 text, or hex with --hex).") =>
        new("KEY") { Description = description };

    private static Command PutCommand()
    {
        var key = KeyArgument();
        var value = new Argument<string>("VALUE") { Description = "The value (UTF-8 text, or hex with --hex)." };
        var ttl = new Option<ulong>("--ttl")
        {
            Description = "Expire the key this many seconds from now (0 or absent: no expiry; overwriting replaces the TTL).",
            HelpName = "SECONDS",
        };
        var command = new Command("put", "Store VALUE under KEY once it is durable; prints OK.") { key, value, ttl };
        command.SetAction((parse, ct) => ExecuteAsync(parse, ct, codec =>
        {
            var k = codec.Decode(parse.GetRequiredValue(key), "KEY");
            var v = codec.Decode(parse.GetRequiredValue(value), "VALUE");
            var seconds = parse.GetValue(ttl);
            return async (client, token) =>
            {
                await client.PutAsync(k, v, seconds, token);
                await Console.Out.WriteLineAsync("OK");
                return ExitCodes.Success;
            };
        }));
        return command;
    }

    private static Command GetCommand()
    {
        var key = KeyArgument();
        var command = new Command("get", "Print the value of KEY; prints nothing and exits 1 when the key is absent or expired.") { key };
        command.SetAction((parse, ct) => ExecuteAsync(parse, ct, codec =>
        {
            var k = codec.Decode(parse.GetRequiredValue(key), "KEY");
            return async (client, token) =>
            {
                var value = await client.GetAsync(k, token);
                if (value is null)
                {
                    return ExitCodes.NotFound;
                }
                await Console.Out.WriteLineAsync(codec.Encode(value));
                return ExitCodes.Success;
            };
        }));
        return command;
    }

    private static Command DelCommand()
    {
        var key = KeyArgument();
        var command = new Command("del", "Delete KEY (an absent key is fine); prints OK.") { key };
        command.SetAction((parse, ct) => ExecuteAsync(parse, ct, codec =>
        {
            var k = codec.Decode(parse.GetRequiredValue(key), "KEY");
            return async (client, token) =>
            {
                await client.DeleteAsync(k, token);
                await Console.Out.WriteLineAsync("OK");
                return ExitCodes.Success;
            };
        }));
        return command;
    }

    private static Command CasCommand()
    {
        var key = KeyArgument();
        var newValue = new Argument<string>("NEW") { Description = "The value to write when the comparison holds (it has no TTL)." };
        var expect = new Option<string>("--expect")
        {
            Description = "Write only if the current value equals OLD.",
            HelpName = "OLD",
        };
        var absent = new Option<bool>("--absent") { Description = "Write only if KEY is absent." };
        var command = new Command(
            "cas",
            "Compare and swap: write NEW under KEY if its value equals --expect OLD, or if it is absent (--absent). Exactly one of the two is required. Prints true if it wrote, false if not (both exit 0).")
        {
            key, newValue, expect, absent,
        };
        command.Validators.Add(result =>
        {
            var hasExpect = result.GetResult(expect) is { Implicit: false };
            var hasAbsent = result.GetValue(absent);
            if (hasExpect == hasAbsent)
            {
                result.AddError("cas needs exactly one of --expect OLD or --absent.");
            }
        });
        command.SetAction((parse, ct) => ExecuteAsync(parse, ct, codec =>
        {
            var k = codec.Decode(parse.GetRequiredValue(key), "KEY");
            var n = codec.Decode(parse.GetRequiredValue(newValue), "NEW");
            var expected = parse.GetValue(absent) ? null : codec.Decode(parse.GetRequiredValue(expect), "OLD");
            return async (client, token) =>
            {
                var swapped = await client.CompareAndSwapAsync(k, expected, n, token);
                await Console.Out.WriteLineAsync(swapped ? "true" : "false");
                return ExitCodes.Success;
            };
        }));
        return command;
    }

    private static Command ScanCommand()
    {
        var prefix = new Argument<string>("PREFIX") { Description = "The key prefix (UTF-8 text, or hex with --hex); must not be empty." };
        var command = new Command("scan", "Print every live key starting with PREFIX as KEY<TAB>VALUE, one per line, in key (byte) order across all partitions.") { prefix };
        command.SetAction((parse, ct) => ExecuteAsync(parse, ct, codec =>
        {
            var p = codec.Decode(parse.GetRequiredValue(prefix), "PREFIX");
            if (p.Length == 0)
            {
                // The engine answers an empty prefix with no entries; say so instead of printing nothing.
                throw new CliException("PREFIX must not be empty: a scan of the whole key space is not supported.");
            }
            return async (client, token) =>
            {
                var scan = await client.ScanPrefixAsync(p, token);
                var output = Console.Out;
                foreach (var entry in scan.Entries)
                {
                    await output.WriteAsync(codec.Encode(entry.Key));
                    await output.WriteAsync('\t');
                    await output.WriteLineAsync(codec.Encode(entry.Value));
                }
                return ExitCodes.Success;
            };
        }));
        return command;
    }

    private static Argument<int> PartitionArgument() => new("P") { Description = "The partition id (0 .. partitions-1)." };

    private static Command SnapshotCommand()
    {
        var create = new Command("create", "Take a snapshot of partition P now; prints NAME<TAB>INDEX/TERM<TAB>BYTES<TAB>SHA256.");
        var createPartition = PartitionArgument();
        create.Arguments.Add(createPartition);
        create.SetAction((parse, ct) => ExecuteAsync(parse, ct, _ => async (client, token) =>
        {
            var snapshot = await client.CreateSnapshotAsync(parse.GetRequiredValue(createPartition), token);
            await Console.Out.WriteLineAsync(SnapshotLine(snapshot));
            return ExitCodes.Success;
        }));

        var list = new Command("list", "List the snapshots partition P keeps, oldest first: NAME<TAB>INDEX/TERM<TAB>BYTES<TAB>SHA256 per line.");
        var listPartition = PartitionArgument();
        list.Arguments.Add(listPartition);
        list.SetAction((parse, ct) => ExecuteAsync(parse, ct, _ => async (client, token) =>
        {
            foreach (var snapshot in await client.ListSnapshotsAsync(parse.GetRequiredValue(listPartition), token))
            {
                await Console.Out.WriteLineAsync(SnapshotLine(snapshot));
            }
            return ExitCodes.Success;
        }));

        return new Command("snapshot", "Create or list a partition's snapshots (verified RocksDB checkpoints).") { create, list };
    }

    private static Command SiloCommand()
    {
        var name = new Argument<string>("NAME") { Description = "The silo's --name (as `dengine status` shows it)." };
        var forget = new Command(
            "forget",
            "Forget silo NAME, which is gone for good (its disk is lost): remove it from every partition's holders registry and as owner, so its partitions are served from the newest copy on the remaining silos (writes only it had are lost). Refused while a silo of that name is in the cluster. Prints what it changed.")
        {
            name,
        };
        forget.SetAction((parse, ct) => ExecuteAsync(parse, ct, _ =>
        {
            var silo = parse.GetRequiredValue(name);
            if (string.IsNullOrWhiteSpace(silo))
            {
                throw new CliException("NAME must not be empty.");
            }
            return async (client, token) =>
            {
                var report = await client.ForgetSiloAsync(silo, token);
                await Console.Out.WriteLineAsync(string.Create(CultureInfo.InvariantCulture,
                    $"forgot silo {report.Silo}: removed from the holders of {report.HolderOf.Length} partitions ({List(report.HolderOf)}); {report.OwnerOf.Length} partitions it owned ({List(report.OwnerOf)}) are served from the newest remaining copy"));
                return ExitCodes.Success;
            };
        }));
        var drainName = new Argument<string>("NAME") { Description = "The silo's --name (as `dengine status` shows it)." };
        var drain = new Command(
            "drain",
            "Drain silo NAME before it is retired or stopped: mark it draining (durably: it gets no new replica and no primary role), hand its primary roles to other replicas and move each of its replicas to another silo. Shows progress; returns once NAME holds nothing, then it can stop with no partition affected. Prints the partitions moved.")
        {
            drainName,
        };
        drain.SetAction((parse, ct) => ExecuteAsync(parse, ct, _ =>
        {
            var silo = RequiredName(parse.GetRequiredValue(drainName));
            return async (client, token) =>
            {
                var shown = new Progress<string>(line => Console.Error.WriteLine(line));
                var moved = await client.DrainSiloAsync(silo, TimeSpan.FromMinutes(30), shown, token);
                await Console.Out.WriteLineAsync($"drained silo {silo}: it holds no replica; moved partitions {List([.. moved])}. It stays draining until `dengine silo undrain {silo}`.");
                return ExitCodes.Success;
            };
        }));
        var undrainName = new Argument<string>("NAME") { Description = "The silo's --name." };
        var undrain = new Command("undrain", "End the drain of silo NAME: it takes new replicas and primary roles again (nothing moves back by itself). Prints the silos still draining.") { undrainName };
        undrain.SetAction((parse, ct) => ExecuteAsync(parse, ct, _ =>
        {
            var silo = RequiredName(parse.GetRequiredValue(undrainName));
            return async (client, token) =>
            {
                var still = await client.UndrainSiloAsync(silo, token);
                await Console.Out.WriteLineAsync($"silo {silo} is not draining; draining: {(still.Length == 0 ? "none" : string.Join(",", still))}");
                return ExitCodes.Success;
            };
        }));
        return new Command("silo", "Operator commands about silos.") { forget, drain, undrain };

        static string RequiredName(string silo) => string.IsNullOrWhiteSpace(silo) ? throw new CliException("NAME must not be empty.") : silo;

        static string List(int[] partitions) => partitions.Length == 0 ? "none" : string.Join(",", partitions);
    }

    private static string SnapshotLine(DEngine.Orleans.SnapshotSummary s) =>
        string.Create(CultureInfo.InvariantCulture, $"{s.Name}\t{s.Index}/{s.Term}\t{s.Bytes}\t{s.ChecksumHex}");

    private static Command MoveCommand()
    {
        var partition = PartitionArgument();
        var to = new Option<string>("--to") { Description = "Name of the silo to move the partition to (see `dengine status`).", HelpName = "SILO", Required = true };
        var replica = new Option<string>("--replica")
        {
            Description = "Move the replica on silo FROM (a replicated partition's data) instead of the primary role: a copy is built on SILO (snapshot, then the log), joins once caught up, then FROM's is dropped.",
            HelpName = "FROM",
        };
        var command = new Command("move", "Move partition P to silo SILO: the data is fetched from its current silo, then the partition serves there (in a replica group: the primary role moves to SILO, one of its replicas; with --replica FROM the replica on FROM moves to SILO). Shows progress; prints the transfer summary.") { partition, to, replica };
        command.SetAction((parse, ct) => ExecuteAsync(parse, ct, _ => async (client, token) =>
        {
            var p = parse.GetRequiredValue(partition);
            var silo = parse.GetRequiredValue(to);
            if (parse.GetValue(replica) is { } from)
            {
                if (string.IsNullOrWhiteSpace(from) || from == silo)
                {
                    throw new CliException("--replica FROM must name a silo other than --to SILO.");
                }
                var shown = new Progress<string>(line => Console.Error.WriteLine($"moving the replica of partition {p}: {line}"));
                var set = await client.MoveReplicaAsync(p, from, silo, TimeSpan.FromMinutes(30), shown, token);
                await Console.Out.WriteLineAsync(string.Create(CultureInfo.InvariantCulture, $"moved the replica of partition {p} from {from} to {silo}: replicas {string.Join(",", set.Replicas)}, primary {set.Primary}, version {set.Version}"));
                return ExitCodes.Success;
            }
            var lastShown = TimeSpan.Zero;
            var progress = new Progress<TimeSpan>(elapsed =>
            {
                if (elapsed - lastShown >= TimeSpan.FromSeconds(2))
                {
                    lastShown = elapsed;
                    Console.Error.WriteLine($"moving partition {p} to {silo}: {elapsed.TotalSeconds:0} s");
                }
            });
            var status = await client.MovePartitionAsync(p, silo, TimeSpan.FromMinutes(10), progress, token);
            var moved = status.LastTransfer is { } t
                ? string.Create(CultureInfo.InvariantCulture, $"moved partition {p} to {silo}: {t.Bytes} bytes in {t.Seconds:0.00} s ({t.MegabytesPerSecond:0.0} MB/s), applied {status.AppliedIndex}/{status.AppliedTerm}, epoch {status.Epoch}")
                : $"partition {p} is on {silo}";
            await Console.Out.WriteLineAsync(moved);
            return ExitCodes.Success;
        }));
        return command;
    }

    private static Command PartitionCommand()
    {
        var key = KeyArgument();
        var command = new Command("partition", "Print the id of the partition that holds KEY (XxHash64 of the key bytes mod the cluster's partition count); `partition move` moves a partition.") { key };
        command.Subcommands.Add(MoveCommand());
        command.SetAction((parse, ct) => ExecuteAsync(parse, ct, codec =>
        {
            var k = codec.Decode(parse.GetRequiredValue(key), "KEY");
            return async (client, token) =>
            {
                var partition = await client.PartitionOfAsync(k);
                await Console.Out.WriteLineAsync(partition.ToString(CultureInfo.InvariantCulture));
                return ExitCodes.Success;
            };
        }));
        return command;
    }

    private static Command TtlCommand()
    {
        var key = KeyArgument();
        var command = new Command("ttl", "Print the remaining lifetime of KEY in whole seconds (rounded up), or -1 if it has no TTL; exits 1 when the key is absent.") { key };
        command.SetAction((parse, ct) => ExecuteAsync(parse, ct, codec =>
        {
            var k = codec.Decode(parse.GetRequiredValue(key), "KEY");
            return async (client, token) =>
            {
                var ttl = await client.GetTtlAsync(k, token);
                if (!ttl.Exists)
                {
                    return ExitCodes.NotFound;
                }
                var seconds = ttl.RemainingMs is { } ms ? Math.Max(1, (ms + 999) / 1000) : -1;
                await Console.Out.WriteLineAsync(seconds.ToString(CultureInfo.InvariantCulture));
                return ExitCodes.Success;
            };
        }));
        return command;
    }

    private static Command StatusCommand()
    {
        var json = new Option<bool>("--json") { Description = "Print the statuses as a JSON array (every field, per replica too) instead of the tables." };
        var command = new Command("status", "Print a table of every partition: PARTITION, SILO, APPLIED (index/term), EPOCH, SNAPSHOT (index/term, - when none), and for replicated partitions REPLICAS plus a second table with one line per copy: PARTITION, VERSION, REPLICA, ROLE (primary, replica, learner), APPLIED, LOG (last index in its log), LAG (entries behind the primary), STATE (away, a snapshot install's progress, the last error; - when in step).") { json };
        command.SetAction((parse, ct) => ExecuteAsync(parse, ct, _ => async (client, token) =>
        {
            var statuses = await client.GetStatusAsync(token);
            await Console.Out.WriteAsync(parse.GetValue(json) ? StatusTable.FormatJson(statuses) : StatusTable.Format(statuses));
            return ExitCodes.Success;
        }));
        return command;
    }

    /// <summary>
    /// Runs one command: <paramref name="prepare"/> validates and decodes the arguments (before any
    /// connection is made) and returns the work to do against the cluster. Maps every failure to
    /// exit code 2 with a one-line message on stderr (stack trace only with --verbose).
    /// </summary>
    private static async Task<int> ExecuteAsync(
        ParseResult parse,
        CancellationToken cancellationToken,
        Func<ByteCodec, Func<DEngineClient, CancellationToken, Task<int>>> prepare)
    {
        var verbose = parse.GetValue(VerboseOption);
        try
        {
            var work = prepare(new ByteCodec(parse.GetValue(HexOption)));
            var gateways = Gateways.Select(parse.GetValue(GatewayOption), Environment.GetEnvironmentVariable(Gateways.EnvironmentVariable));
            await using var connection = await ClusterConnection.ConnectAsync(gateways, verbose, cancellationToken);
            return await work(connection.Client, cancellationToken);
        }
        catch (Exception ex)
        {
            var message = ex switch
            {
                CliException => ex.Message,
                DEngineException => ex.Message,
                OperationCanceledException when cancellationToken.IsCancellationRequested => "cancelled.",
                TimeoutException => $"the cluster did not answer in time: {ex.Message}",
                _ => $"{ex.GetType().Name}: {ex.Message}",
            };
            await Console.Error.WriteLineAsync($"error: {message}");
            if (verbose)
            {
                await Console.Error.WriteLineAsync(ex.ToString());
            }
            return ExitCodes.Error;
        }
    }
}
