namespace DEngine.Cli.Tests;

/// <summary>The silo executable's own contract: bad configuration and a shared data directory are clear errors.</summary>
public sealed class SiloProcessTests(SiloFixture silo) : IClassFixture<SiloFixture>
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(60);

    [Theory]
    [InlineData("--partitions", "0", "DEngine:Partitions")]
    [InlineData("--partitions", "abc", "DEngine:Partitions")]
    [InlineData("--silo-port", "70000", "Silo:SiloPort")]
    [InlineData("--primary", "nonsense", "Silo:Primary")]
    [InlineData("--DEngine:MaxValueBytes", "-1", "DEngine:MaxValueBytes")]
    [InlineData("--DEngine:Replication:Factor", "0", "DEngine:Replication:Factor")]
    [InlineData("--DEngine:Replication:HeartbeatInterval", "00:00:03", "DEngine:Replication:HeartbeatInterval")]
    public async Task A_bad_configuration_value_stops_the_silo_with_one_line_naming_the_key_and_exit_2(string flag, string value, string key)
    {
        var data = Path.Combine(Path.GetTempPath(), "dengine-badconfig-" + Guid.NewGuid().ToString("N"));
        var result = await ProcessRunner.RunAsync(ProcessRunner.SiloDll, ["--data-dir", data, "--no-dashboard", flag, value], Timeout);

        Assert.Equal(2, result.ExitCode);
        var error = Assert.Single(result.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.Contains(key, error);
        Assert.DoesNotContain("   at ", result.Stderr);
        Assert.False(Directory.Exists(data), "a rejected configuration must not create the data directory");
    }

    [Fact]
    public async Task A_replication_factor_from_the_command_line_is_bound_so_a_floor_above_it_is_rejected_naming_both_keys()
    {
        var data = Path.Combine(Path.GetTempPath(), "dengine-badconfig-" + Guid.NewGuid().ToString("N"));
        var result = await ProcessRunner.RunAsync(ProcessRunner.SiloDll,
            ["--data-dir", data, "--no-dashboard", "--DEngine:Replication:Factor", "2", "--DEngine:Replication:MinReplicas", "3"], Timeout);

        // The message names the factor it checked against: 2 shows the command line's value arrived (the default is 3).
        Assert.Equal(2, result.ExitCode);
        var error = Assert.Single(result.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.Contains("DEngine:Replication:MinReplicas must be between 1 and DEngine:Replication:Factor (2)", error);
        Assert.False(Directory.Exists(data));
    }

    [Fact]
    public async Task A_damaged_incarnation_file_stops_the_silo_with_one_line_naming_the_file_and_exit_2()
    {
        var data = Path.Combine(Path.GetTempPath(), "dengine-incarnation-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(data);
        try
        {
            await File.WriteAllTextAsync(Path.Combine(data, "incarnation"), "not an incarnation\n");

            var result = await ProcessRunner.RunAsync(ProcessRunner.SiloDll,
                ["--data-dir", data, "--no-dashboard", "--silo-port", SiloFixture.FreePort().ToString(), "--gateway-port", SiloFixture.FreePort().ToString()], Timeout);

            Assert.Equal(2, result.ExitCode);
            var error = Assert.Single(result.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries));
            Assert.Contains(Path.Combine(data, "incarnation"), error);
            Assert.Contains("is damaged", error);
            Assert.DoesNotContain("   at ", result.Stderr);
            Assert.Equal("not an incarnation\n", await File.ReadAllTextAsync(Path.Combine(data, "incarnation")));
        }
        finally
        {
            Directory.Delete(data, recursive: true);
        }
    }

    [Fact]
    public async Task An_unknown_silo_flag_is_rejected_with_exit_2()
    {
        var result = await ProcessRunner.RunAsync(ProcessRunner.SiloDll, ["--no-such-flag"], Timeout);

        Assert.Equal(2, result.ExitCode);
        Assert.Contains("--no-such-flag", result.Stderr);
    }

    [Fact]
    public async Task A_second_silo_on_the_same_data_directory_stops_with_a_clear_error_and_the_first_keeps_serving()
    {
        var key = "shared-dir-" + Guid.NewGuid().ToString("N");
        Assert.Equal(0, (await silo.CliAsync("put", key, "before")).ExitCode);

        var second = await ProcessRunner.RunAsync(ProcessRunner.SiloDll,
            ["--data-dir", silo.DataDir, "--silo-port", SiloFixture.FreePort().ToString(), "--gateway-port", SiloFixture.FreePort().ToString(), "--no-dashboard"], Timeout);

        Assert.Equal(2, second.ExitCode);
        Assert.Contains("in use by another silo process", second.Stderr);
        Assert.DoesNotContain("   at ", second.Stderr);
        var get = await silo.CliAsync("get", key);
        Assert.Equal(0, get.ExitCode);
        Assert.Equal("before", get.Stdout.Trim());
        Assert.Equal(0, (await silo.CliAsync("put", key, "after")).ExitCode);
    }
}
