namespace DEngine.Cli.Tests;

/// <summary>
/// The replica commands' contract on a single-copy silo (Factor 1): `partition move --replica`,
/// `silo drain` and `silo undrain` parse, and refuse with a typed error and exit code 2 where there are
/// no replicas to move. Their work on a replica group is tested on real clusters
/// (DEngine.Cluster.Tests ReplicaReplacementTests through the client, ReplicaReplacementCliTests through
/// this binary).
/// </summary>
public sealed class ReplicaCommandsTests(SiloFixture silo) : IClassFixture<SiloFixture>
{
    [Fact]
    public async Task Silo_drain_and_undrain_on_single_copy_partitions_exit_2_with_FeatureNotEnabled_naming_partition_move()
    {
        var drain = await silo.CliAsync("silo", "drain", "anything");
        var undrain = await silo.CliAsync("silo", "undrain", "anything");

        foreach (var result in new[] { drain, undrain })
        {
            Assert.True(result.ExitCode == 2, result.ToString());
            Assert.Equal("", result.Stdout);
            Assert.StartsWith("error: FeatureNotEnabled", result.Stderr, StringComparison.Ordinal);
            Assert.Contains("dengine partition move P --to SILO", result.Stderr, StringComparison.Ordinal);
        }
    }

    [Fact]
    public async Task Partition_move_replica_to_the_same_silo_exits_2_and_on_single_copy_partitions_with_FeatureNotEnabled()
    {
        var same = await silo.CliAsync("partition", "move", "0", "--to", "a", "--replica", "a");
        var single = await silo.CliAsync("partition", "move", "0", "--to", "a", "--replica", "b");

        Assert.True(same.ExitCode == 2, same.ToString());
        Assert.Equal("error: --replica FROM must name a silo other than --to SILO.\n", same.Stderr);
        Assert.True(single.ExitCode == 2, single.ToString());
        Assert.StartsWith("error: FeatureNotEnabled", single.Stderr, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Silo_drain_with_an_empty_name_exits_2_before_connecting()
    {
        var result = await silo.CliAsync("silo", "drain", " ");

        Assert.True(result.ExitCode == 2, result.ToString());
        Assert.Equal("error: NAME must not be empty.\n", result.Stderr);
    }
}
