using System.Runtime.InteropServices;

namespace DEngine.StateMachine.Replication;

/// <summary>
/// fsync of a segment's handle that reports failure. FileStream.Flush(flushToDisk: true) returned
/// normally when fsync failed with EIO (seen on the power-cut file system), which would acknowledge an
/// append the disk may not hold; so on Unix the log calls fsync(2) itself and checks its result.
/// </summary>
internal static partial class SegmentSync
{
    /// <summary>Flushes <paramref name="file"/> to stable storage; throws <see cref="IOException"/> when that fails.</summary>
    public static void Fsync(FileStream file, string path)
    {
        if (OperatingSystem.IsWindows())
        {
            file.Flush(flushToDisk: true);
            return;
        }
        var handle = file.SafeFileHandle;
        var added = false;
        try
        {
            handle.DangerousAddRef(ref added);
            if (NativeFsync((int)handle.DangerousGetHandle()) != 0)
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

    [LibraryImport("libc", EntryPoint = "fsync", SetLastError = true)]
    private static partial int NativeFsync(int fd);
}
