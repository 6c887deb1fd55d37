namespace DEngine.StateMachine.Snapshots;

/// <summary>One file of a snapshot as its manifest lists it.</summary>
/// <param name="Name">Path relative to the snapshot directory, '/'-separated (RocksDB checkpoints are flat, so in practice a plain file name).</param>
/// <param name="Size">Length in bytes.</param>
/// <param name="Sha256">SHA-256 of the contents, lowercase hex.</param>
public readonly record struct SnapshotFile(string Name, long Size, string Sha256);
