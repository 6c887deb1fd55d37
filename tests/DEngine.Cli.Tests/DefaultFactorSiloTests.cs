using System.Text.RegularExpressions;

namespace DEngine.Cli.Tests;

/// <summary>One silo started without <c>--DEngine:Replication:Factor 1</c>: the default Factor 3 and its floor of 2 replicas.</summary>
public sealed class DefaultFactorSiloFixture : SiloFixture
{
    /// <inheritdoc />
    protected override IEnumerable<string> ReplicationArgs => [];
}

/// <summary>
/// A user who runs one silo without <c>--DEngine:Replication:Factor 1</c> gets a clear, retryable
/// error naming the setting (never a hang), and the silo says so once in its log.
/// </summary>
public sealed class DefaultFactorSiloTests(DefaultFactorSiloFixture silo) : IClassFixture<DefaultFactorSiloFixture>
{
    [Fact]
    public async Task A_single_silo_at_the_default_factor_refuses_a_write_naming_the_setting_serves_reads_and_warns_once_in_its_log()
    {
        // CliAsync kills the CLI after 60 s: exit 2 with the message means it answered, it did not hang.
        var put = await silo.CliAsync("put", "floor-key", "v");

        Assert.True(put.ExitCode == 2, put.ToString());
        var error = Assert.Single(put.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.StartsWith("error: PartitionUnavailable (partition ", error);
        Assert.Contains("fewer than DEngine:Replication:MinReplicas = 2: writes are refused (nothing was applied)", error);
        Assert.Contains("Retry.", error);
        Assert.Contains("--DEngine:Replication:Factor 1", error);

        // Reads are served (not found: exit 1), and the write was not applied.
        var get = await silo.CliAsync("get", "floor-key");
        Assert.True(get.ExitCode == 1, get.ToString());

        var warnings = Regex.Matches(silo.Log(), Regex.Escape("The cluster has 1 active silo(s)") + ".*" + Regex.Escape("fewer than DEngine:Replication:MinReplicas = 2 (DEngine:Replication:Factor 3)"));
        Assert.True(warnings.Count == 1, $"{warnings.Count} floor warnings in the silo log:\n{silo.Log()}");
    }
}
