using System.Globalization;
using DEngine.CrashChild;
using DEngine.StateMachine;

// Crash-test child. Usage:
//   DEngine.CrashChild mixed <dir>            apply CrashWorkload.MixedChunk chunks
//   DEngine.CrashChild ttl <dir> <clockUnixMs> apply CrashWorkload.TtlChunk chunks
//   DEngine.CrashChild install <dir> <snapshotDirA> <snapshotDirB> [hold]   (hold: stop after the first install)
//                                             install B, A, B, A, ... (forced) into <dir>
//   DEngine.CrashChild mixed-deferred <dir>   the same chunks, each written unsynced then made durable by SyncWal
//   DEngine.CrashChild snapshot <dir>         apply mixed chunks, taking a snapshot every 20 chunks
//   DEngine.CrashChild session <dir>          apply CrashWorkload.SessionChunk chunks (one client session's CAS writes)
// Prints "start <lastAppliedIndex>", then, after each ApplyChunk has returned (fsynced), the chunk's
// last index, one per line, flushed. In install mode it prints "step <name>" as each install step is
// reached and "installed <index>" after each install; in snapshot mode it also prints
// "snapshot <index>" after each CreateSnapshot has returned. It runs until it is killed, its stdout closes
// or a cap is hit.
if (args.Length < 2 || (args[0] == "ttl" && args.Length < 3) || (args[0] == "install" && args.Length < 4))
{
    Console.Error.WriteLine("usage: DEngine.CrashChild mixed <dir> | snapshot <dir> | ttl <dir> <clockUnixMs> | install <dir> <snapshotDirA> <snapshotDirB>");
    return 2;
}

var options = new RocksDbStateMachineOptions
{
    WriteBufferSize = 1UL << 20,
    BlockCacheBytes = 8UL << 20,
    AuxWriteBufferSize = 1UL << 20,
    MaxBackgroundJobs = 2,
};
using var machine = new RocksDbStateMachine(args[1], options);
if (args[0] == "install")
{
    return InstallLoop.Run(machine, args[2], args[3], holdAfterFirst: args.Length > 4 && args[4] == "hold");
}
var clock = args[0] == "ttl" ? ulong.Parse(args[2], CultureInfo.InvariantCulture) : 0;
var snapshotEvery = args[0] == "snapshot" ? 20 : 0;
var next = machine.LastApplied.Index + 1;
var stdout = Console.Out;
try
{
    stdout.WriteLine($"start {machine.LastApplied.Index}");
    stdout.Flush();
    for (var n = 0; n < 100_000; n++)
    {
        var chunk = args[0] switch
        {
            "ttl" => CrashWorkload.TtlChunk(next, clock),
            "session" => CrashWorkload.SessionChunk(next),
            _ => CrashWorkload.MixedChunk(next),
        };
        if (args[0] == "mixed-deferred")
        {
            // The silo's way: write without sync, then one WAL sync (WalSyncLoop), then acknowledge.
            machine.ApplyChunk(chunk, ApplyDurability.Deferred);
            machine.SyncWal();
        }
        else
        {
            machine.ApplyChunk(chunk);
        }
        var last = chunk[^1].Index;
        stdout.WriteLine(last.ToString(CultureInfo.InvariantCulture));
        stdout.Flush();
        next = last + 1;
        if (snapshotEvery > 0 && n % snapshotEvery == snapshotEvery - 1)
        {
            var snapshot = machine.CreateSnapshot();
            stdout.WriteLine($"snapshot {snapshot.LastIncluded.Index.ToString(CultureInfo.InvariantCulture)}");
            stdout.Flush();
        }
    }
}
catch (IOException)
{
    // The parent went away; nothing to report to.
}
return 0;
