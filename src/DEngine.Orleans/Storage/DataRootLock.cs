using DEngine.StateMachine.Snapshots;
using Microsoft.Extensions.Options;
using Orleans;
using Orleans.Runtime;

namespace DEngine.Orleans.Storage;

/// <summary>
/// Holds an exclusive lock on <c>{DataRoot}/dengine.lock</c> for the silo's lifetime, taken when the
/// silo starts. A second silo process pointed at the same data directory fails at start-up with a
/// clear error instead of fighting over RocksDB locks partition by partition later.
/// </summary>
public sealed class DataRootLock(IOptions<DEngineOptions> options) : ILifecycleParticipant<ISiloLifecycle>, IDisposable
{
    private FileStream? _lock;

    /// <summary>The lock file.</summary>
    public string LockPath { get; } = Path.Combine(Path.GetFullPath(options.Value.DataRoot), "dengine.lock");

    /// <inheritdoc />
    public void Participate(ISiloLifecycle lifecycle) =>
        lifecycle.Subscribe(nameof(DataRootLock), ServiceLifecycleStage.RuntimeInitialize, _ => Acquire(), _ => Release());

    /// <summary>Takes the lock (idempotent); throws StorageFailure when another process holds it.</summary>
    public Task Acquire()
    {
        if (_lock is not null)
        {
            return Task.CompletedTask;
        }
        // Synced into its parent: a data root whose entry a power cut takes would take every partition with it.
        DurableFiles.CreateDirectoryDurably(Path.GetDirectoryName(LockPath)!);
        try
        {
            // FileShare.None takes an exclusive advisory lock, released by the OS when the process dies.
            _lock = new FileStream(LockPath, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None);
        }
        catch (IOException ex)
        {
            throw new DEngineException(DEngineErrorCode.StorageFailure, $"The data directory '{Path.GetDirectoryName(LockPath)}' is in use by another silo process (lock file {LockPath}: {ex.Message}). Stop that silo or give this one its own --data-dir.", inner: ex);
        }
        return Task.CompletedTask;
    }

    private Task Release()
    {
        Dispose();
        return Task.CompletedTask;
    }

    /// <inheritdoc />
    public void Dispose()
    {
        _lock?.Dispose();
        _lock = null;
    }
}
