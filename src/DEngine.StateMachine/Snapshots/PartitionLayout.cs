using System.Globalization;
using System.Text;

namespace DEngine.StateMachine.Snapshots;

/// <summary>
/// The on-disk layout of one partition directory:
/// <code>
/// {partition}/PARTITION.lock        held (flock) while an engine has the partition open
/// {partition}/CURRENT-DB            "db-{g}": names the live generation; replaced atomically
/// {partition}/db-{g}/               the live RocksDB database
/// {partition}/db-{g+1}.tmp/         a generation being prepared by an install (never live)
/// {partition}/snapshots/snapshot-{index}-{term}/   checkpoints with their MANIFEST.json
/// </code>
/// Switching generations is one atomic rename of the pointer file, so after a crash at any instant the
/// pointer names either the old, complete generation or the new, complete one. On open every
/// generation directory the pointer does not name is an interrupted install or an old generation whose
/// deletion was cut short, and is deleted.
/// </summary>
internal sealed class PartitionLayout
{
    public const string PointerFileName = "CURRENT-DB";
    public const string LockFileName = "PARTITION.lock";
    public const string SnapshotsDirectoryName = "snapshots";
    private const string GenerationPrefix = "db-";
    private const string TempSuffix = ".tmp";

    private readonly int _partition;

    public PartitionLayout(string partitionPath, int partition)
    {
        PartitionPath = partitionPath;
        _partition = partition;
    }

    public string PartitionPath { get; }

    public string PointerPath => Path.Combine(PartitionPath, PointerFileName);

    public string SnapshotsPath => Path.Combine(PartitionPath, SnapshotsDirectoryName);

    public static string GenerationName(long generation) => GenerationPrefix + generation.ToString(CultureInfo.InvariantCulture);

    public string GenerationPath(long generation) => Path.Combine(PartitionPath, GenerationName(generation));

    public string PreparingPath(long generation) => GenerationPath(generation) + TempSuffix;

    /// <summary>Takes the partition's lock file; throws StorageFailure when another engine holds it.</summary>
    public FileStream Lock()
    {
        DurableFiles.CreateDirectoryDurably(PartitionPath);
        var path = Path.Combine(PartitionPath, LockFileName);
        try
        {
            // FileShare.None is an exclusive flock on Unix and a share-mode lock on Windows.
            return new FileStream(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None);
        }
        catch (IOException ex)
        {
            throw new DEngineException(DEngineErrorCode.StorageFailure, $"Cannot lock the partition directory '{PartitionPath}' ({ex.Message}). Another process (or another open state machine) is using it; stop it or choose another data directory.", _partition, inner: ex);
        }
    }

    /// <summary>
    /// Finds the live generation, creating generation 1 for a fresh directory, and deletes every other
    /// generation directory and leftover temp file. Call with the partition lock held.
    /// </summary>
    public long Recover()
    {
        Directory.CreateDirectory(PartitionPath);
        DurableFiles.DeleteIfExists(PointerPath + TempSuffix);
        var live = ReadPointer();
        if (live is null)
        {
            var orphans = GenerationDirectories().Where(d => !d.EndsWith(TempSuffix, StringComparison.Ordinal)).ToList();
            if (orphans.Count > 0)
            {
                throw new DEngineException(DEngineErrorCode.StorageFailure, $"The partition directory '{PartitionPath}' holds database generations ({string.Join(", ", orphans.Select(Path.GetFileName))}) but no {PointerFileName} file naming the live one. Restore {PointerFileName} (its content is the live directory's name, e.g. 'db-1') or move the directory aside.", _partition);
            }
            live = 1;
            WritePointer(live.Value);
        }
        var keep = GenerationName(live.Value);
        foreach (var directory in GenerationDirectories())
        {
            if (!string.Equals(Path.GetFileName(directory), keep, StringComparison.Ordinal))
            {
                DurableFiles.DeleteIfExists(directory);
            }
        }
        if (Directory.Exists(SnapshotsPath))
        {
            foreach (var partial in Directory.EnumerateDirectories(SnapshotsPath, "*" + TempSuffix))
            {
                DurableFiles.DeleteIfExists(partial); // a snapshot whose creation was cut short
            }
        }
        DurableFiles.SyncDirectory(PartitionPath);
        return live.Value;
    }

    /// <summary>The generation named by the pointer file, or null when there is none.</summary>
    public long? ReadPointer()
    {
        string text;
        try
        {
            text = File.ReadAllText(PointerPath, Encoding.UTF8).Trim();
        }
        catch (FileNotFoundException)
        {
            return null;
        }
        if (text.StartsWith(GenerationPrefix, StringComparison.Ordinal)
            && long.TryParse(text.AsSpan(GenerationPrefix.Length), NumberStyles.None, CultureInfo.InvariantCulture, out var generation)
            && generation > 0)
        {
            return generation;
        }
        throw new DEngineException(DEngineErrorCode.StorageFailure, $"{PointerPath} does not name a generation (found '{text}', expected 'db-<number>'). Fix it to name the live db-* directory.", _partition);
    }

    /// <summary>Points <see cref="PointerPath"/> at <paramref name="generation"/> atomically (temp file, fsync, rename, directory fsync).</summary>
    public void WritePointer(long generation, Action<string>? fault = null) =>
        DurableFiles.ReplaceAtomically(
            PointerPath,
            Encoding.UTF8.GetBytes(GenerationName(generation) + "\n"),
            afterWrite: fault is null ? null : () => fault("after-pointer-write"),
            afterRename: fault is null ? null : () => fault("after-pointer-rename"));

    private IEnumerable<string> GenerationDirectories() =>
        Directory.EnumerateDirectories(PartitionPath, GenerationPrefix + "*")
            .Where(d => IsGenerationName(Path.GetFileName(d)));

    private static bool IsGenerationName(string name)
    {
        var rest = name.AsSpan(GenerationPrefix.Length);
        if (rest.EndsWith(TempSuffix, StringComparison.Ordinal))
        {
            rest = rest[..^TempSuffix.Length];
        }
        return rest.Length > 0 && long.TryParse(rest, NumberStyles.None, CultureInfo.InvariantCulture, out _);
    }
}
