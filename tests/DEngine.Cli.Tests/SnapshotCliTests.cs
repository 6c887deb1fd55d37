namespace DEngine.Cli.Tests;

public sealed class SnapshotCliTests(SiloFixture silo) : IClassFixture<SiloFixture>
{
    [Fact]
    public async Task Snapshot_create_prints_name_label_size_and_checksum_and_list_shows_it()
    {
        Assert.Equal(0, (await silo.CliAsync("put", "snap-key", "v")).ExitCode);
        var partition = (await silo.CliAsync("partition", "snap-key")).Stdout.Trim();

        var created = await silo.CliAsync("snapshot", "create", partition);

        Assert.True(created.ExitCode == 0, created.ToString());
        var fields = created.Stdout.Trim().Split('\t');
        Assert.Equal(4, fields.Length);
        Assert.Matches(@"^snapshot-\d+-\d+$", fields[0]);
        Assert.Matches(@"^\d+/\d+$", fields[1]);
        Assert.Equal(fields[0], $"snapshot-{fields[1].Replace('/', '-')}");
        Assert.True(long.Parse(fields[2]) > 0);
        Assert.Matches("^[0-9a-f]{64}$", fields[3]);

        var list = await silo.CliAsync("snapshot", "list", partition);
        Assert.Equal(0, list.ExitCode);
        Assert.Contains(created.Stdout.Trim(), list.Stdout.Split('\n').Select(l => l.Trim()));

        var status = await silo.CliAsync("status");
        Assert.Contains(fields[1], status.Stdout.Split('\n').Single(l => l.StartsWith(partition + " ", StringComparison.Ordinal)));
    }

    [Fact]
    public async Task Snapshot_of_a_partition_that_does_not_exist_is_an_error()
    {
        var result = await silo.CliAsync("snapshot", "create", "99");
        Assert.Equal(2, result.ExitCode);
        Assert.Contains("Partition 99 does not exist", result.Stderr);
    }

    [Fact]
    public async Task Partition_move_to_an_unknown_silo_is_an_error_that_names_it()
    {
        var result = await silo.CliAsync("partition", "move", "0", "--to", "no-such-silo");
        Assert.Equal(2, result.ExitCode);
        Assert.Contains("no-such-silo", result.Stderr);
    }

    [Fact]
    public async Task Partition_move_without_a_target_is_a_usage_error()
    {
        var result = await silo.CliAsync("partition", "move", "0");
        Assert.Equal(2, result.ExitCode);
        Assert.Contains("--to", result.Stderr);
    }
}
