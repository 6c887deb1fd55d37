using System.Runtime.InteropServices;

namespace DEngine.StateMachine.Snapshots;

/// <summary>
/// The few file-system operations that crash safety rests on: fsync of a file, fsync of a directory
/// (so a rename or a new directory entry is on disk), an atomic replace, and hard links with a copy as
/// fallback. On Unix these go to libc; on Windows directory fsync is a no-op and links become copies.
/// </summary>
internal static partial class DurableFiles
{
    /// <summary>Flushes the contents of <paramref name="path"/> to stable storage; throws <see cref="IOException"/> when that fails.</summary>
    public static void SyncFile(string path)
    {
        using var stream = new FileStream(path, FileMode.Open, FileAccess.ReadWrite, FileShare.ReadWrite);
        SyncStream(stream, path);
    }

    /// <summary>
    /// Flushes <paramref name="stream"/>'s buffers and fsyncs its file; throws <see cref="IOException"/>
    /// when the fsync fails. Not <c>FileStream.Flush(flushToDisk: true)</c>: that returned normally when
    /// fsync failed with EIO (seen on the power-cut file system), which would report data durable that
    /// the disk may not hold.
    /// </summary>
    public static void SyncStream(FileStream stream, string path)
    {
        stream.Flush();
        if (OperatingSystem.IsWindows())
        {
            stream.Flush(flushToDisk: true);
            return;
        }
        var handle = stream.SafeFileHandle;
        var added = false;
        try
        {
            handle.DangerousAddRef(ref added);
            if (Fsync((int)handle.DangerousGetHandle()) != 0)
            {
                throw new IOException($"fsync of '{path}' failed (errno {Marshal.GetLastPInvokeError()}).");
            }
        }
        finally
        {
            if (added)
            {
                handle.DangerousRelease();
            }
        }
    }

    /// <summary>Flushes the entries of directory <paramref name="path"/> (creations, renames, deletions) to stable storage.</summary>
    public static void SyncDirectory(string path)
    {
        if (OperatingSystem.IsWindows())
        {
            return; // NTFS journals metadata; there is no directory handle to fsync.
        }
        var fd = Open(path, ORdOnly, 0); // a directory opens read-only; fsync on that descriptor syncs its entries
        if (fd < 0)
        {
            throw new IOException($"Cannot open directory '{path}' to sync it (errno {Marshal.GetLastPInvokeError()}).");
        }
        try
        {
            if (Fsync(fd) != 0)
            {
                throw new IOException($"fsync of directory '{path}' failed (errno {Marshal.GetLastPInvokeError()}).");
            }
        }
        finally
        {
            _ = Close(fd);
        }
    }

    /// <summary>
    /// Creates <paramref name="path"/> and any missing parents so that they survive a power cut: each
    /// new directory's entry is synced in its parent (a new directory whose parent was never synced
    /// can vanish whole, with every synced file inside it).
    /// </summary>
    public static void CreateDirectoryDurably(string path)
    {
        var missing = new Stack<string>();
        for (var directory = Path.GetFullPath(path); !Directory.Exists(directory); directory = Path.GetDirectoryName(directory)!)
        {
            missing.Push(directory);
        }
        while (missing.TryPop(out var directory))
        {
            Directory.CreateDirectory(directory);
            SyncDirectory(Path.GetDirectoryName(directory)!); // mutation: new-directory-sync
        }
    }

    /// <summary>Writes <paramref name="contents"/> to <paramref name="path"/> and fsyncs it (the directory entry is not synced).</summary>
    public static void WriteAndSync(string path, ReadOnlySpan<byte> contents)
    {
        using var stream = new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.None);
        stream.Write(contents);
        SyncStream(stream, path);
    }

    /// <summary>
    /// Replaces <paramref name="path"/> atomically with <paramref name="contents"/>: a synced temp file
    /// renamed over it, then the directory synced. <paramref name="afterWrite"/> runs between the write
    /// and the rename (a fault point for tests).
    /// </summary>
    public static void ReplaceAtomically(string path, ReadOnlySpan<byte> contents, Action? afterWrite = null, Action? afterRename = null)
    {
        var temp = path + ".tmp";
        WriteAndSync(temp, contents); // mutation: pointer-file-sync
        afterWrite?.Invoke();
        File.Move(temp, path, overwrite: true); // rename(2): atomic on POSIX file systems
        afterRename?.Invoke();
        SyncDirectory(Path.GetDirectoryName(path)!); // mutation: pointer-rename-sync
    }

    /// <summary>
    /// Makes <paramref name="destination"/> a hard link to <paramref name="source"/> when both are on one
    /// file system, else a synced copy. Returns true when it linked.
    /// </summary>
    public static bool LinkOrCopy(string source, string destination)
    {
        if (!OperatingSystem.IsWindows() && Link(source, destination) == 0)
        {
            return true;
        }
        File.Copy(source, destination, overwrite: false);
        SyncFile(destination);
        return false;
    }

    /// <summary>Deletes <paramref name="path"/> (file or directory tree) if it exists.</summary>
    public static void DeleteIfExists(string path)
    {
        if (Directory.Exists(path) && new DirectoryInfo(path).LinkTarget is null)
        {
            Directory.Delete(path, recursive: true);
        }
        else if (File.Exists(path) || new FileInfo(path).LinkTarget is not null)
        {
            File.Delete(path);
        }
    }

    private const int ORdOnly = 0;

    [LibraryImport("libc", EntryPoint = "open", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    private static partial int Open(string path, int flags, int mode);

    [LibraryImport("libc", EntryPoint = "fsync", SetLastError = true)]
    private static partial int Fsync(int fd);

    [LibraryImport("libc", EntryPoint = "close", SetLastError = true)]
    private static partial int Close(int fd);

    [LibraryImport("libc", EntryPoint = "link", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    private static partial int Link(string oldPath, string newPath);
}
