using System.Globalization;
using DEngine.Protos.Storage;
using DEngine.StateMachine;
using DEngine.StateMachine.Snapshots;
using Google.Protobuf;

namespace DEngine.CrashChild;

/// <summary>The crash child's install mode: installs two snapshots alternately, reporting every step, until killed.</summary>
internal static class InstallLoop
{
    public static int Run(RocksDbStateMachine machine, string snapshotA, string snapshotB, bool holdAfterFirst = false)
    {
        var stdout = Console.Out;
        var snapshots = new[] { (snapshotB, MetadataOf(snapshotB)), (snapshotA, MetadataOf(snapshotA)) };
        machine.FaultInjector = step =>
        {
            stdout.WriteLine($"step {step}");
            stdout.Flush();
        };
        try
        {
            stdout.WriteLine($"start {machine.LastApplied.Index.ToString(CultureInfo.InvariantCulture)}");
            stdout.Flush();
            for (var n = 0; n < 10_000; n++)
            {
                var (directory, metadata) = snapshots[n % 2];
                machine.InstallSnapshot(directory, metadata, replaceNewerData: true);
                stdout.WriteLine($"installed {machine.LastApplied.Index.ToString(CultureInfo.InvariantCulture)}");
                stdout.Flush();
                if (holdAfterFirst)
                {
                    // The kill then lands exactly after an acknowledged install, not somewhere in a
                    // later one that ran ahead of what the parent has read.
                    Thread.Sleep(Timeout.Infinite);
                }
            }
        }
        catch (IOException)
        {
            // The parent went away; nothing to report to.
        }
        return 0;
    }

    /// <summary>The metadata a receiver would have been given with the snapshot (the checksum of its manifest, its label).</summary>
    private static SnapshotMetadata MetadataOf(string directory)
    {
        var bytes = File.ReadAllBytes(Path.Combine(directory, SnapshotManifest.FileName));
        return new SnapshotMetadata
        {
            LastIncluded = SnapshotManifest.Parse(bytes).LastIncluded.ToLogId(),
            Checksum = ByteString.CopyFrom(SnapshotManifest.Checksum(bytes)),
        };
    }
}
