using DEngine.StateMachine.Snapshots;
using DEngine.StateMachine.Tests.Support;

namespace DEngine.StateMachine.Tests;

/// <summary>
/// The durable-file helpers behind the records, the incarnation, a copy's version file and the
/// snapshot pointers report a failed fsync (EIO from the power-cut file system) instead of returning
/// as if the data were on disk.
/// </summary>
[Trait("Category", "PowerCut")]
public sealed class PowerCutDurableFilesTests
{
    [Fact]
    public void A_failed_fsync_of_a_written_file_is_reported()
    {
        using var fs = new PowerCutFs();
        var path = Path.Combine(fs.MountPoint, "record");
        fs.FailFsync("*record*");
        Assert.Throws<IOException>(() => DurableFiles.WriteAndSync(path, "contents"u8));
        fs.StopFailingFsync();
    }

    [Fact]
    public void A_failed_fsync_of_an_atomic_replace_is_reported_and_the_old_contents_stay()
    {
        using var fs = new PowerCutFs();
        var path = Path.Combine(fs.MountPoint, "pointer");
        DurableFiles.ReplaceAtomically(path, "old"u8);
        fs.FailFsync("*pointer.tmp");
        Assert.Throws<IOException>(() => DurableFiles.ReplaceAtomically(path, "new"u8));
        fs.StopFailingFsync();
        Assert.Equal("old", File.ReadAllText(path));
    }

    [Fact]
    public void A_failed_fsync_of_an_existing_file_is_reported()
    {
        using var fs = new PowerCutFs();
        var path = Path.Combine(fs.MountPoint, "installed");
        File.WriteAllText(path, "data");
        fs.FailFsync("*installed");
        Assert.Throws<IOException>(() => DurableFiles.SyncFile(path));
        fs.StopFailingFsync();
    }
}
