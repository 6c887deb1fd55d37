using DEngine.Orleans;

namespace DEngine.Cli.Tests;

/// <summary>How <c>dengine status</c> renders replica groups: one line per copy, with its indexes, lag and state.</summary>
public sealed class StatusTableTests
{
    private static PartitionStatus Partition(int partition, ReplicationStatus? group) =>
        new(partition, 120, 7, 7, "a (127.0.0.1:11111)", 10, null, null, 3, 120, 0, null)
        {
            Replication = group is null ? null : $"v{group.Version}: a*, b",
            ReplicaGroup = group,
        };

    private static readonly ReplicationStatus Group = new(7, "a", 3, 2, 2, false,
    [
        new ReplicaStatus("a", ReplicaRole.Primary, true, 120, 120, 0, null, null),
        new ReplicaStatus("b", ReplicaRole.Replica, false, 100, 110, 10, "the silo is away", null),
        new ReplicaStatus("c", ReplicaRole.Learner, true, 0, 0, 120, null, new SnapshotInstallProgress("snapshot-100-7", 1_048_576, 4_194_304, 6)),
    ]);

    [Fact]
    public void A_replicated_partition_gets_one_line_per_copy_with_role_applied_and_log_index_lag_and_state()
    {
        var lines = StatusTable.Format([Partition(0, Group)]).TrimEnd('\n').Split('\n');

        Assert.Equal(["PARTITION", "SILO", "APPLIED", "EPOCH", "SNAPSHOT", "REPLICAS"], lines[0].Split(' ', StringSplitOptions.RemoveEmptyEntries));
        Assert.Equal("", lines[2]);
        Assert.Equal(["PARTITION", "VERSION", "REPLICA", "ROLE", "APPLIED", "LOG", "LAG", "STATE"], lines[3].Split(' ', StringSplitOptions.RemoveEmptyEntries));
        Assert.Equal(7, lines.Length);
        Assert.Matches(@"^0\s+7\s+a\s+primary\s+120\s+120\s+0\s+-$", lines[4]);
        Assert.Matches(@"^0\s+7\s+b\s+replica\s+100\s+110\s+10\s+away; failing: the silo is away$", lines[5]);
        Assert.Matches(@"^0\s+7\s+c\s+learner\s+0\s+0\s+120\s+installing snapshot-100-7: 1048576/4194304 bytes \(25%\), 6 files$", lines[6]);
        // Aligned: every column starts where its header does.
        Assert.Equal(lines[3].IndexOf("LAG", StringComparison.Ordinal), lines[6].IndexOf("120  installing", StringComparison.Ordinal));
    }

    [Fact]
    public void Single_copy_partitions_keep_the_five_column_table_and_no_replica_lines()
    {
        var text = StatusTable.Format([Partition(0, null), Partition(1, null)]);

        var lines = text.TrimEnd('\n').Split('\n');
        Assert.Equal(3, lines.Length);
        Assert.Equal(["PARTITION", "SILO", "APPLIED", "EPOCH", "SNAPSHOT"], lines[0].Split(' ', StringSplitOptions.RemoveEmptyEntries));
    }

    [Fact]
    public void The_json_output_carries_every_copy_s_fields_with_roles_as_words()
    {
        using var json = System.Text.Json.JsonDocument.Parse(StatusTable.FormatJson([Partition(0, Group)]));

        var group = json.RootElement[0].GetProperty("replicaGroup");
        Assert.Equal(7ul, group.GetProperty("version").GetUInt64());
        Assert.Equal("a", group.GetProperty("primary").GetString());
        var learner = group.GetProperty("replicas")[2];
        Assert.Equal("learner", learner.GetProperty("role").GetString());
        Assert.Equal(120ul, learner.GetProperty("lag").GetUInt64());
        Assert.Equal(1_048_576, learner.GetProperty("installing").GetProperty("bytesDone").GetInt64());
        Assert.Equal(4_194_304, learner.GetProperty("installing").GetProperty("totalBytes").GetInt64());
        Assert.Equal(120ul, json.RootElement[0].GetProperty("appliedIndex").GetUInt64());
    }
}
