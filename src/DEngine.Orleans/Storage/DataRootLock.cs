using DEngine.Orleans.Configuration;
using DEngine.StateMachine.Snapshots;
using Microsoft.Extensions.Options;
using Orleans;
using Orleans.Runtime;

namespace DEngine.Orleans.Storage;

/// <summary>
/// Holds an exclusive lock on <c>{DataRoot}/dengine.lock</c> for the silo's lifetime, taken when the
/// silo starts. A second silo process pointed at the same data directory fails at start-up with a
/// clear error instead of fighting over RocksDB locks partition by partition later. Under the lock it
/// reads (at the first start: creates) the directory's <see cref="SiloIncarnation"/>.
/// </summary>
public sealed class DataRootLock(IOptions<DEngineOptions> options) : ILifecycleParticipant<ISiloLifecycle>, IDisposable
{
    private FileStream? _lock;
    private SiloIncarnation? _incarnation;

    /// <summary>The lock file.</summary>
    public string LockPath { get; } = Path.Combine(Path.GetFullPath(options.Value.DataRoot), "dengine.lock");

    /// <inheritdoc />
    public void Participate(ISiloLifecycle lifecycle) =>
        lifecycle.Subscribe(nameof(DataRootLock), ServiceLifecycleStage.RuntimeInitialize, _ => Acquire(), _ => Release());

    /// <summary>The incarnation of the data directory, read or created by <see cref="Acquire"/> (which this takes first if needed).</summary>
    public SiloIncarnation Incarnation
    {
        get
        {
            if (_incarnation is null)
            {
                Acquire().GetAwaiter().GetResult(); // synchronous: Acquire completes before it returns
            }
            return _incarnation!;
        }
    }

    /// <summary>
    /// Takes the lock (idempotent), then reads or creates the incarnation; throws StorageFailure when
    /// another process holds the lock or the incarnation file is damaged.
    /// </summary>
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
        try
        {
            _incarnation ??= SiloIncarnation.LoadOrCreate(Path.GetDirectoryName(LockPath)!);
        }
        catch
        {
            Dispose(); // a silo that cannot start must not keep the directory locked
            throw;
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
