using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;
using DEngine.Orleans;

namespace DEngine.Cli.Tests;

/// <summary>
/// The `dengine` command-line contract (output formats and exit codes that scripts depend on),
/// checked by running the real CLI against one real silo process.
/// </summary>
public sealed class CliContractTests(SiloFixture silo) : IClassFixture<SiloFixture>
{
    // Keys are unique per test: the tests share one silo.
    private readonly string _p = "t" + Guid.NewGuid().ToString("N")[..8] + "/";

    [Fact]
    public async Task Put_prints_OK_and_get_prints_the_value()
    {
        AssertOk(await silo.CliAsync("put", _p + "k", "héllo wörld"), "OK\n");
        AssertOk(await silo.CliAsync("get", _p + "k"), "héllo wörld\n");
    }

    [Fact]
    public async Task Get_of_an_absent_key_prints_nothing_and_exits_1()
    {
        var result = await silo.CliAsync("get", _p + "missing");
        Assert.True(result.ExitCode == 1, result.ToString());
        Assert.Equal("", result.Stdout);
        Assert.Equal("", result.Stderr);
    }

    [Fact]
    public async Task Del_prints_OK_and_a_following_get_exits_1()
    {
        AssertOk(await silo.CliAsync("put", _p + "k", "v"), "OK\n");
        AssertOk(await silo.CliAsync("del", _p + "k"), "OK\n");
        var get = await silo.CliAsync("get", _p + "k");
        Assert.True(get.ExitCode == 1, get.ToString());
        Assert.Equal("", get.Stdout);
    }

    [Fact]
    public async Task Cas_absent_on_an_absent_key_prints_true_and_then_false()
    {
        AssertOk(await silo.CliAsync("cas", _p + "k", "first", "--absent"), "true\n");
        AssertOk(await silo.CliAsync("cas", _p + "k", "second", "--absent"), "false\n");
        AssertOk(await silo.CliAsync("get", _p + "k"), "first\n");
    }

    [Fact]
    public async Task Cas_expect_prints_true_when_the_value_matches_and_false_when_it_does_not()
    {
        AssertOk(await silo.CliAsync("put", _p + "k", "old"), "OK\n");
        AssertOk(await silo.CliAsync("cas", _p + "k", "new", "--expect", "wrong"), "false\n");
        AssertOk(await silo.CliAsync("get", _p + "k"), "old\n");
        AssertOk(await silo.CliAsync("cas", _p + "k", "new", "--expect", "old"), "true\n");
        AssertOk(await silo.CliAsync("get", _p + "k"), "new\n");
    }

    [Theory]
    [InlineData("neither")]
    [InlineData("both")]
    public async Task Cas_with_neither_or_both_of_expect_and_absent_exits_2_with_a_message(string which)
    {
        string[] flags = which == "both" ? ["--absent", "--expect", "x"] : [];
        var result = await silo.CliAsync(["cas", _p + "k", "v", .. flags]);
        Assert.True(result.ExitCode == 2, result.ToString());
        Assert.Equal("", result.Stdout);
        Assert.Contains("exactly one of --expect", result.Stderr);
        var get = await silo.CliAsync("get", _p + "k");
        Assert.True(get.ExitCode == 1, "nothing was written: " + get);
    }

    [Fact]
    public async Task Scan_prints_KEY_TAB_VALUE_lines_in_key_order_across_partitions_and_nothing_else()
    {
        var keys = Enumerable.Range(0, 12).Select(i => $"{_p}{(char)('a' + (i * 7 % 12))}{i}").ToList();
        Assert.True(keys.Select(k => KeyRouting.PartitionOf(Encoding.UTF8.GetBytes(k), SiloFixture.Partitions)).Distinct().Count() > 1, "keys must span partitions");
        foreach (var key in keys)
        {
            AssertOk(await silo.CliAsync("put", key, "v-" + key), "OK\n");
        }
        AssertOk(await silo.CliAsync("put", "other-" + _p, "not in the prefix"), "OK\n");

        var result = await silo.CliAsync("scan", _p);

        var expected = string.Concat(keys.Order(StringComparer.Ordinal).Select(k => $"{k}\tv-{k}\n"));
        AssertOk(result, expected);
    }

    [Fact]
    public async Task Partition_prints_the_KeyRouting_partition_of_the_key()
    {
        foreach (var key in new[] { "alpha", "beta", "gamma", "delta", "epsilon", _p })
        {
            var result = await silo.CliAsync("partition", key);
            Assert.True(result.ExitCode == 0, result.ToString());
            var partition = int.Parse(result.Stdout.TrimEnd('\n'));
            Assert.InRange(partition, 0, SiloFixture.Partitions - 1);
            Assert.Equal(KeyRouting.PartitionOf(Encoding.UTF8.GetBytes(key), SiloFixture.Partitions), partition);
        }
    }

    [Fact]
    public async Task Put_with_ttl_100_then_ttl_prints_the_remaining_seconds_rounded_up()
    {
        var clock = System.Diagnostics.Stopwatch.StartNew();
        AssertOk(await silo.CliAsync("put", _p + "k", "v", "--ttl", "100"), "OK\n");
        var result = await silo.CliAsync("ttl", _p + "k");
        var elapsed = (int)Math.Ceiling(clock.Elapsed.TotalSeconds);
        Assert.True(result.ExitCode == 0, result.ToString());
        // 100 when read at once; two CLI processes on a loaded machine take a few seconds, and the
        // remaining time can only have dropped by that much.
        Assert.InRange(int.Parse(result.Stdout.TrimEnd('\n')), 100 - elapsed, 100);
        Assert.Equal("", result.Stderr);
    }

    [Fact]
    public async Task Ttl_of_a_key_without_ttl_prints_minus_1()
    {
        AssertOk(await silo.CliAsync("put", _p + "k", "v"), "OK\n");
        AssertOk(await silo.CliAsync("ttl", _p + "k"), "-1\n");
    }

    [Fact]
    public async Task Ttl_of_an_absent_key_prints_nothing_and_exits_1()
    {
        var result = await silo.CliAsync("ttl", _p + "missing");
        Assert.True(result.ExitCode == 1, result.ToString());
        Assert.Equal("", result.Stdout);
    }

    [Fact]
    public async Task Hex_round_trips_binary_keys_and_values_and_scan_prints_hex()
    {
        var prefix = Convert.ToHexStringLower(Encoding.UTF8.GetBytes(_p));
        AssertOk(await silo.CliAsync("--hex", "put", prefix + "00ff10", "00ff10"), "OK\n");
        AssertOk(await silo.CliAsync("--hex", "get", prefix + "00ff10"), "00ff10\n");
        AssertOk(await silo.CliAsync("get", prefix + "00FF10", "--hex"), "00ff10\n");
        AssertOk(await silo.CliAsync("--hex", "scan", prefix), $"{prefix}00ff10\t00ff10\n");
    }

    [Theory]
    [InlineData("get", "0g")]
    [InlineData("get", "abc")]
    [InlineData("put", "00", "zz")]
    public async Task Bad_hex_exits_2_with_a_clear_message(params string[] args)
    {
        var result = await silo.CliAsync(["--hex", .. args]);
        Assert.True(result.ExitCode == 2, result.ToString());
        Assert.Equal("", result.Stdout);
        Assert.StartsWith("error: ", result.Stderr);
        Assert.Contains("not valid hex", result.Stderr);
        Assert.DoesNotContain("   at ", result.Stderr);
    }

    [Fact]
    public async Task Status_prints_a_header_line_and_one_row_per_partition()
    {
        var result = await silo.CliAsync("status");
        Assert.True(result.ExitCode == 0, result.ToString());
        var lines = result.Stdout.TrimEnd('\n').Split('\n');
        Assert.Equal(1 + SiloFixture.Partitions, lines.Length);
        Assert.Equal(["PARTITION", "SILO", "APPLIED", "EPOCH", "SNAPSHOT"], lines[0].Split(' ', StringSplitOptions.RemoveEmptyEntries));
        for (var p = 0; p < SiloFixture.Partitions; p++)
        {
            var row = lines[1 + p];
            Assert.StartsWith(p.ToString(), row);
            Assert.Matches(@"\s\d+/\d+\s+\d+\s+(-|\d+/\d+)$", row);
            // Aligned: every column starts where its header does.
            Assert.Equal(lines[0].IndexOf("SILO", StringComparison.Ordinal), row.IndexOf("silo", StringComparison.Ordinal));
        }
    }

    [Fact]
    public async Task Silo_forget_refuses_a_silo_in_the_cluster_and_says_what_it_changed_for_one_that_is_gone()
    {
        var status = await silo.CliAsync("status");
        var live = System.Text.RegularExpressions.Regex.Match(status.Stdout, @"silo-\d+").Value;

        var refused = await silo.CliAsync("silo", "forget", live);
        var forgotten = await silo.CliAsync("silo", "forget", "never-was");

        Assert.True(refused.ExitCode == 2, refused.ToString());
        Assert.Contains($"error: InvalidArgument: Silo '{live}' is in the cluster", refused.Stderr, StringComparison.Ordinal);
        Assert.True(forgotten.ExitCode == 0, forgotten.ToString());
        Assert.Equal("forgot silo never-was: removed from the holders of 0 partitions (none); 0 partitions it owned (none) are served from the newest remaining copy\n", forgotten.Stdout);
    }

    [Fact]
    public async Task A_DEngine_error_from_the_cluster_prints_error_and_its_message_and_exits_2()
    {
        var tooLong = new string('k', 5000); // over the default 4 KiB key limit
        var result = await silo.CliAsync("put", tooLong, "v");
        Assert.True(result.ExitCode == 2, result.ToString());
        Assert.Equal("", result.Stdout);
        Assert.StartsWith("error: LimitExceeded", result.Stderr);
        Assert.Single(result.Stderr.TrimEnd('\n').Split('\n'));
    }

    [Fact]
    public async Task A_value_that_looks_like_an_option_is_taken_after_double_dash()
    {
        AssertOk(await silo.CliAsync("put", _p + "k", "--", "-5"), "OK\n");
        AssertOk(await silo.CliAsync("get", _p + "k"), "-5\n");
    }

    [Fact]
    public async Task An_unknown_flag_exits_2_with_a_parse_error_on_stderr()
    {
        var result = await silo.CliAsync("get", "k", "--no-such-flag");
        Assert.True(result.ExitCode == 2, result.ToString());
        Assert.Equal("", result.Stdout);
        Assert.Contains("--no-such-flag", result.Stderr);
    }

    [Fact]
    public async Task A_gateway_where_nothing_listens_exits_2_naming_it_within_30_seconds()
    {
        var gateway = $"127.0.0.1:{ClosedPort()}";
        var clock = Stopwatch.StartNew();
        var result = await ProcessRunner.RunAsync(ProcessRunner.CliDll, ["--gateway", gateway, "get", "k"], TimeSpan.FromSeconds(60));
        Assert.True(result.ExitCode == 2, result.ToString());
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(30), result.ToString());
        Assert.Equal("", result.Stdout);
        Assert.Contains(gateway, result.Stderr);
        Assert.Single(result.Stderr.TrimEnd('\n').Split('\n'));
    }

    [Fact]
    public async Task The_DENGINE_GATEWAY_environment_variable_names_the_gateway_when_no_flag_is_given()
    {
        var env = new Dictionary<string, string?> { ["DENGINE_GATEWAY"] = $"127.0.0.1:{ClosedPort()},{silo.Gateway}" };
        AssertOk(await ProcessRunner.RunAsync(ProcessRunner.CliDll, ["put", _p + "k", "v"], TimeSpan.FromSeconds(60), env), "OK\n");
    }

    [Fact]
    public async Task Help_exits_0_and_lists_every_command()
    {
        var result = await ProcessRunner.RunAsync(ProcessRunner.CliDll, ["--help"], TimeSpan.FromSeconds(60));
        Assert.True(result.ExitCode == 0, result.ToString());
        foreach (var word in new[] { "put", "get", "del", "cas", "scan", "partition", "ttl", "status", "--gateway", "--hex", "DENGINE_GATEWAY" })
        {
            Assert.Contains(word, result.Stdout);
        }
    }

    [Theory]
    [InlineData("put", "--ttl")]
    [InlineData("cas", "--expect", "--absent")]
    public async Task Command_help_exits_0_and_explains_its_options(string command, params string[] options)
    {
        var result = await ProcessRunner.RunAsync(ProcessRunner.CliDll, [command, "--help"], TimeSpan.FromSeconds(60));
        Assert.True(result.ExitCode == 0, result.ToString());
        foreach (var option in options)
        {
            Assert.Contains(option, result.Stdout);
        }
    }

    private static void AssertOk(ProcessResult result, string stdout)
    {
        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Equal(stdout, result.Stdout);
        Assert.Equal("", result.Stderr);
    }

    // A port that was free a moment ago: nothing listens on it.
    private static int ClosedPort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }
}
