namespace DEngine.Cli.Tests;

/// <summary>
/// <c>dengine status</c> against a real silo whose partitions are replica groups (the default Factor 3,
/// here of one copy each: one silo).
/// </summary>
public sealed class StatusCommandTests(DefaultFactorSiloFixture silo) : IClassFixture<DefaultFactorSiloFixture>
{
    [Fact]
    public async Task Status_of_replicated_partitions_adds_a_line_per_copy_and_json_gives_the_same_fields()
    {
        var table = await silo.CliAsync("status");
        var json = await silo.CliAsync("status", "--json");

        Assert.True(table.ExitCode == 0, table.ToString());
        var lines = table.Stdout.TrimEnd('\n').Split('\n');
        // The partition table, an empty line, then the copies' table: one primary per partition.
        Assert.Equal(1 + SiloFixture.Partitions + 1 + 1 + SiloFixture.Partitions, lines.Length);
        Assert.Equal(["PARTITION", "VERSION", "REPLICA", "ROLE", "APPLIED", "LOG", "LAG", "STATE"], lines[2 + SiloFixture.Partitions].Split(' ', StringSplitOptions.RemoveEmptyEntries));
        for (var p = 0; p < SiloFixture.Partitions; p++)
        {
            Assert.Matches($@"^{p}\s+\d+\s+silo-\S+\s+primary\s+\d+\s+\d+\s+0\s+-$", lines[3 + SiloFixture.Partitions + p]);
        }

        Assert.True(json.ExitCode == 0, json.ToString());
        using var document = System.Text.Json.JsonDocument.Parse(json.Stdout);
        Assert.Equal(SiloFixture.Partitions, document.RootElement.GetArrayLength());
        foreach (var partition in document.RootElement.EnumerateArray())
        {
            var group = partition.GetProperty("replicaGroup");
            Assert.Equal(3, group.GetProperty("factor").GetInt32());
            Assert.Equal(2, group.GetProperty("minReplicas").GetInt32());
            Assert.True(group.GetProperty("writesRefused").GetBoolean());
            var primary = Assert.Single(group.GetProperty("replicas").EnumerateArray());
            Assert.Equal("primary", primary.GetProperty("role").GetString());
            Assert.Equal(group.GetProperty("primary").GetString(), primary.GetProperty("silo").GetString());
            Assert.Equal(partition.GetProperty("appliedIndex").GetUInt64(), primary.GetProperty("appliedIndex").GetUInt64());
        }
    }
}
