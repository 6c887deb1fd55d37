using DEngine.StateMachine.Snapshots;
using DEngine.StateMachine.Tests.Support;
using static DEngine.StateMachine.Tests.Support.Log;

namespace DEngine.StateMachine.Tests;

/// <summary>The partition directory: a pointer file names the live db-{generation}; everything else is cleaned up on open.</summary>
public sealed class PartitionLayoutTests
{
    [Fact]
    public void A_fresh_partition_directory_gets_generation_1_named_by_the_pointer_file()
    {
        using var engine = new TestEngine();
        Assert.Equal(engine.Path, engine.Machine.PartitionPath);
        Assert.Equal(engine.Path, engine.Machine.DataPath);
        Assert.Equal(Path.Combine(engine.Path, "db-1"), engine.Machine.DatabasePath);
        Assert.Equal("db-1", File.ReadAllText(Path.Combine(engine.Path, PartitionLayout.PointerFileName)).Trim());
        Assert.True(File.Exists(Path.Combine(engine.Machine.DatabasePath, "CURRENT")));
    }

    [Fact]
    public void Generation_directories_the_pointer_does_not_name_are_deleted_on_open()
    {
        using var engine = new TestEngine();
        engine.Machine.ApplyChunk([Insert(1, "k", "v")]);
        engine.Close();
        Directory.CreateDirectory(Path.Combine(engine.Path, "db-2.tmp"));
        File.WriteAllText(Path.Combine(engine.Path, "db-2.tmp", "000009.sst"), "half copied");
        Directory.CreateDirectory(Path.Combine(engine.Path, "db-0"));
        File.WriteAllText(Path.Combine(engine.Path, PartitionLayout.PointerFileName + ".tmp"), "db-2\n");

        engine.Reopen();
        Assert.Equal(["db-1"], SnapshotFiles.GenerationEntries(engine.Path));
        Assert.False(File.Exists(Path.Combine(engine.Path, PartitionLayout.PointerFileName + ".tmp")));
        Assert.Equal("v", engine.GetString("k"));
    }

    [Fact]
    public void Reset_switches_to_a_fresh_generation_and_deletes_the_old_one()
    {
        using var engine = new TestEngine();
        engine.Machine.ApplyChunk([Insert(1, "k", "v")]);
        engine.Machine.Reset();
        Assert.Equal(2, engine.Machine.Generation);
        Assert.Equal(["db-2"], SnapshotFiles.GenerationEntries(engine.Path));
        Assert.Null(engine.GetString("k"));
        engine.Reopen();
        Assert.Null(engine.GetString("k"));
        Assert.Equal(LogPosition.None, engine.Machine.LastApplied);
    }

    [Fact]
    public void Generations_without_a_pointer_file_are_refused_with_StorageFailure_instead_of_guessing()
    {
        using var engine = new TestEngine();
        engine.Close();
        File.Delete(Path.Combine(engine.Path, PartitionLayout.PointerFileName));
        var error = Assert.Throws<DEngineException>(() => engine.Reopen());
        Assert.Equal(DEngineErrorCode.StorageFailure, error.Code);
        Assert.Contains("db-1", error.Message, StringComparison.Ordinal);
        Assert.True(Directory.Exists(Path.Combine(engine.Path, "db-1")));
    }

    [Fact]
    public void A_malformed_pointer_file_is_refused_with_StorageFailure()
    {
        using var engine = new TestEngine();
        engine.Close();
        File.WriteAllText(Path.Combine(engine.Path, PartitionLayout.PointerFileName), "garbage");
        var error = Assert.Throws<DEngineException>(() => engine.Reopen());
        Assert.Equal(DEngineErrorCode.StorageFailure, error.Code);
    }

    [Theory]
    [InlineData("snapshot-3-1", true, 3UL, 1UL)]
    [InlineData("snapshot-0-0", true, 0UL, 0UL)]
    [InlineData("snapshot-3-1.tmp", false, 0UL, 0UL)]
    [InlineData("snapshot-03-1", false, 0UL, 0UL)]
    [InlineData("snapshot-3", false, 0UL, 0UL)]
    [InlineData("temp-3-1", false, 0UL, 0UL)]
    public void Snapshot_names_parse_only_in_their_canonical_form(string name, bool valid, ulong index, ulong term)
    {
        Assert.Equal(valid, SnapshotName.TryParse(name, out var position));
        if (valid)
        {
            Assert.Equal(new LogPosition(index, term), position);
            Assert.Equal(name, SnapshotName.Format(position));
        }
    }
}
