using System.Text;
using DEngine.Orleans.Configuration;
using DEngine.Orleans.Storage;
using DEngine.StateMachine.Tests.Support;
using Microsoft.Extensions.Options;
using Xunit.Abstractions;

namespace DEngine.Orleans.Tests;

/// <summary>The incarnation of a data directory: created once, read at every start, never silently replaced.</summary>
public sealed class SiloIncarnationTests : IDisposable
{
    private readonly string _root = Path.Combine(Path.GetTempPath(), "dengine-incarnation-" + Guid.NewGuid().ToString("N"));

    private string DataRoot => Path.Combine(_root, "silo");

    private string FilePath => Path.Combine(DataRoot, SiloIncarnation.FileName);

    [Fact]
    public void A_missing_data_directory_is_created_with_a_new_incarnation_that_every_later_start_reads_again()
    {
        var first = SiloIncarnation.LoadOrCreate(DataRoot);

        Assert.Matches("^[0-9a-f]{32}$", first.Value);
        Assert.True(File.Exists(FilePath));
        Assert.Equal(first.Value, SiloIncarnation.LoadOrCreate(DataRoot).Value);
        Assert.Equal(first.Value, SiloIncarnation.LoadOrCreate(DataRoot).Value);
    }

    [Fact]
    public void An_emptied_data_directory_gets_a_new_incarnation()
    {
        var first = SiloIncarnation.LoadOrCreate(DataRoot);
        Directory.Delete(DataRoot, recursive: true);
        Directory.CreateDirectory(DataRoot);

        var second = SiloIncarnation.LoadOrCreate(DataRoot);

        Assert.NotEqual(first.Value, second.Value);
    }

    [Fact]
    public void Two_data_directories_get_different_incarnations()
    {
        Assert.NotEqual(SiloIncarnation.LoadOrCreate(DataRoot).Value, SiloIncarnation.LoadOrCreate(Path.Combine(_root, "other")).Value);
    }

    public static TheoryData<string, Func<string, string>> Damages => new()
    {
        { "one hex digit changed", text => text[..30] + (text[30] == '0' ? '1' : '0') + text[31..] },
        { "truncated", text => text[..20] },
        { "emptied", _ => "" },
        { "checksum changed", text => text[..^2] + (text[^2] == '0' ? '1' : '0') + "\n" },
        { "not an incarnation file", _ => "hello\n" },
    };

    [Theory]
    [MemberData(nameof(Damages))]
    public void A_damaged_incarnation_file_stops_the_start_with_StorageFailure_and_is_left_untouched(string damage, Func<string, string> change)
    {
        SiloIncarnation.LoadOrCreate(DataRoot);
        var damaged = change(File.ReadAllText(FilePath));
        File.WriteAllText(FilePath, damaged);

        var error = Assert.Throws<DEngineException>(() => SiloIncarnation.LoadOrCreate(DataRoot));

        Assert.Equal(DEngineErrorCode.StorageFailure, error.Code);
        Assert.Contains("is damaged", error.Message);
        Assert.Contains(FilePath, error.Message);
        Assert.Equal(damaged, File.ReadAllText(FilePath));
        _ = damage;
    }

    [Fact]
    public void A_temp_file_left_by_a_creation_that_crashed_before_its_rename_is_replaced_by_a_new_incarnation()
    {
        Directory.CreateDirectory(DataRoot);
        File.WriteAllText(FilePath + ".tmp", "dengine-incar");

        var created = SiloIncarnation.LoadOrCreate(DataRoot);

        Assert.Equal(created.Value, SiloIncarnation.LoadOrCreate(DataRoot).Value);
        Assert.False(File.Exists(FilePath + ".tmp"));
    }

    [Fact]
    public void The_data_root_lock_reads_the_incarnation_and_a_damaged_file_fails_the_lock_without_keeping_the_directory_locked()
    {
        var options = Options.Create(new DEngineOptions { DataRoot = DataRoot });
        string value;
        using (var dataLock = new DataRootLock(options))
        {
            value = dataLock.Incarnation.Value;
            Assert.True(File.Exists(dataLock.LockPath));
        }
        using (var again = new DataRootLock(options))
        {
            Assert.Equal(value, again.Incarnation.Value);
        }

        File.WriteAllText(FilePath, "garbage");
        using var damaged = new DataRootLock(options);
        Assert.Equal(DEngineErrorCode.StorageFailure, Assert.Throws<DEngineException>(() => damaged.Incarnation).Code);
        // Not left locked: once the file is repaired (here: removed) the same directory starts.
        File.Delete(FilePath);
        using var repaired = new DataRootLock(options);
        Assert.NotEqual(value, repaired.Incarnation.Value);
    }

    public void Dispose()
    {
        try
        {
            Directory.Delete(_root, recursive: true);
        }
        catch (DirectoryNotFoundException)
        {
        }
    }
}

/// <summary>The incarnation's creation is durable: a power cut right after the first start does not give the next start a second identity.</summary>
[Trait("Category", "PowerCut")]
public sealed class PowerCutIncarnationTests(ITestOutputHelper output)
{
    [Fact]
    public void PowerCut_an_incarnation_created_just_before_a_power_cut_is_the_one_read_after_it()
    {
        using var fs = new PowerCutFs();
        var dataRoot = Path.Combine(fs.MountPoint, "data", "silo");

        var created = SiloIncarnation.LoadOrCreate(dataRoot);
        output.WriteLine(fs.Cut());

        var path = Path.Combine(dataRoot, SiloIncarnation.FileName);
        Assert.True(File.Exists(path), $"the incarnation file {path} is gone after the cut");
        Assert.Equal(SiloIncarnation.Format(created.Value), File.ReadAllText(path, Encoding.ASCII));
        Assert.Equal(created.Value, SiloIncarnation.LoadOrCreate(dataRoot).Value);
    }
}
