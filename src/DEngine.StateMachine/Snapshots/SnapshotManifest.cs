using System.Globalization;
using System.Security.Cryptography;
using System.Text.Json;

namespace DEngine.StateMachine.Snapshots;

/// <summary>
/// The manifest of a snapshot directory, stored in it as <c>MANIFEST.json</c>:
/// <code>
/// {
///   "format": "dengine-snapshot",
///   "version": 1,
///   "last_included": { "index": 3, "term": 1 },
///   "files": [ { "name": "000009.sst", "size": 1069, "sha256": "ab12..." }, ... ]
/// }
/// </code>
/// Files are listed in ordinal name order; every file of the directory except the manifest itself is
/// listed. <c>SnapshotMetadata.checksum</c> is the SHA-256 of the manifest's exact bytes, so checking
/// the manifest against that checksum and every file against the manifest verifies the whole snapshot.
/// </summary>
public sealed class SnapshotManifest
{
    /// <summary>The manifest's file name inside a snapshot directory.</summary>
    public const string FileName = "MANIFEST.json";

    /// <summary>The format version this code writes and reads.</summary>
    public const int CurrentVersion = 1;

    private const string FormatName = "dengine-snapshot";

    /// <summary>Creates a manifest.</summary>
    public SnapshotManifest(LogPosition lastIncluded, IReadOnlyList<SnapshotFile> files, int version = CurrentVersion)
    {
        ArgumentNullException.ThrowIfNull(files);
        LastIncluded = lastIncluded;
        Files = files.OrderBy(f => f.Name, StringComparer.Ordinal).ToArray();
        Version = version;
    }

    /// <summary>The format version.</summary>
    public int Version { get; }

    /// <summary>The last entry contained in the snapshot.</summary>
    public LogPosition LastIncluded { get; }

    /// <summary>Every file of the snapshot, by ordinal name.</summary>
    public IReadOnlyList<SnapshotFile> Files { get; }

    /// <summary>Sum of the file sizes.</summary>
    public long TotalBytes => Files.Sum(f => f.Size);

    /// <summary>Lists and hashes every file of <paramref name="directory"/> (except a manifest already there).</summary>
    public static SnapshotManifest Build(string directory, LogPosition lastIncluded)
    {
        var files = new List<SnapshotFile>();
        foreach (var path in Directory.EnumerateFiles(directory, "*", SearchOption.AllDirectories))
        {
            var name = Path.GetRelativePath(directory, path).Replace(Path.DirectorySeparatorChar, '/');
            if (name == FileName)
            {
                continue;
            }
            var (size, hash) = Hash(path);
            files.Add(new SnapshotFile(name, size, hash));
        }
        return new SnapshotManifest(lastIncluded, files);
    }

    /// <summary>The manifest's bytes (UTF-8 JSON, deterministic for the same content).</summary>
    public byte[] ToBytes()
    {
        using var buffer = new MemoryStream();
        using (var json = new Utf8JsonWriter(buffer, new JsonWriterOptions { Indented = true }))
        {
            json.WriteStartObject();
            json.WriteString("format", FormatName);
            json.WriteNumber("version", Version);
            json.WriteStartObject("last_included");
            json.WriteNumber("index", LastIncluded.Index);
            json.WriteNumber("term", LastIncluded.Term);
            json.WriteEndObject();
            json.WriteStartArray("files");
            foreach (var file in Files)
            {
                json.WriteStartObject();
                json.WriteString("name", file.Name);
                json.WriteNumber("size", file.Size);
                json.WriteString("sha256", file.Sha256);
                json.WriteEndObject();
            }
            json.WriteEndArray();
            json.WriteEndObject();
        }
        buffer.WriteByte((byte)'\n');
        return buffer.ToArray();
    }

    /// <summary>SHA-256 of <paramref name="manifestBytes"/>: the value of <c>SnapshotMetadata.checksum</c>.</summary>
    public static byte[] Checksum(ReadOnlySpan<byte> manifestBytes) => SHA256.HashData(manifestBytes);

    /// <summary>Parses manifest bytes; anything malformed is a <see cref="DEngineErrorCode.SnapshotRejected"/> error.</summary>
    public static SnapshotManifest Parse(ReadOnlySpan<byte> bytes, int? partition = null)
    {
        try
        {
            using var document = JsonDocument.Parse(bytes.ToArray());
            var root = document.RootElement;
            if (root.GetProperty("format").GetString() != FormatName)
            {
                throw Rejected($"{FileName} is not a DEngine snapshot manifest (format is not '{FormatName}').", partition);
            }
            var version = root.GetProperty("version").GetInt32();
            if (version != CurrentVersion)
            {
                throw Rejected($"{FileName} has format version {version}; this engine reads version {CurrentVersion}. Create the snapshot with a matching version.", partition);
            }
            var label = root.GetProperty("last_included");
            var lastIncluded = new LogPosition(label.GetProperty("index").GetUInt64(), label.GetProperty("term").GetUInt64());
            var files = new List<SnapshotFile>();
            foreach (var file in root.GetProperty("files").EnumerateArray())
            {
                files.Add(new SnapshotFile(
                    file.GetProperty("name").GetString() ?? throw Rejected($"{FileName} lists a file without a name.", partition),
                    file.GetProperty("size").GetInt64(),
                    file.GetProperty("sha256").GetString() ?? throw Rejected($"{FileName} lists a file without a hash.", partition)));
            }
            return new SnapshotManifest(lastIncluded, files, version);
        }
        catch (Exception ex) when (ex is JsonException or KeyNotFoundException or InvalidOperationException or FormatException)
        {
            throw Rejected($"{FileName} cannot be read ({ex.Message}).", partition, ex);
        }
    }

    /// <summary>
    /// Verifies the snapshot in <paramref name="directory"/>: the manifest's SHA-256 equals
    /// <paramref name="expectedChecksum"/>; every listed name is a safe relative path (no <c>..</c>, not
    /// absolute, no link on the way); every listed file exists as a regular file with the listed size and
    /// SHA-256; and the directory holds nothing that is not listed. Reads only; touches nothing.
    /// </summary>
    /// <returns>The verified manifest.</returns>
    /// <exception cref="DEngineException">SnapshotRejected naming the file and what is wrong.</exception>
    public static SnapshotManifest Verify(string directory, ReadOnlySpan<byte> expectedChecksum, int? partition = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(directory);
        var root = Path.GetFullPath(directory);
        if (!Directory.Exists(root))
        {
            throw Rejected($"The snapshot directory '{root}' does not exist.", partition);
        }
        var manifestPath = Path.Combine(root, FileName);
        if (new FileInfo(manifestPath).LinkTarget is not null)
        {
            throw Rejected($"{FileName} in '{root}' is a symbolic link; a snapshot holds regular files only.", partition);
        }
        if (!File.Exists(manifestPath))
        {
            throw Rejected($"'{root}' has no {FileName}; it is not a complete snapshot.", partition);
        }
        var bytes = File.ReadAllBytes(manifestPath);
        var actual = Checksum(bytes);
        if (!CryptographicOperations.FixedTimeEquals(actual, expectedChecksum))
        {
            throw Rejected($"{FileName} in '{root}' has SHA-256 {Convert.ToHexStringLower(actual)} but the snapshot metadata expects {Convert.ToHexStringLower(expectedChecksum)}. The manifest was altered or belongs to another snapshot.", partition);
        }
        var manifest = Parse(bytes, partition);

        var listed = new HashSet<string>(StringComparer.Ordinal);
        foreach (var file in manifest.Files)
        {
            CheckName(file.Name, partition);
            if (!listed.Add(file.Name))
            {
                throw Rejected($"{FileName} lists '{file.Name}' twice.", partition);
            }
        }
        CheckNothingUnlisted(root, root, listed, partition);
        foreach (var file in manifest.Files)
        {
            var path = Path.Combine(root, file.Name.Replace('/', Path.DirectorySeparatorChar));
            CheckNoLinkOnTheWay(root, file.Name, partition);
            var info = new FileInfo(path);
            if (!info.Exists)
            {
                throw Rejected($"'{file.Name}' is listed in {FileName} but missing from '{root}'.", partition);
            }
            if (info.Length != file.Size)
            {
                throw Rejected($"'{file.Name}' has {info.Length} bytes but {FileName} lists {file.Size} (truncated or altered).", partition);
            }
            var (_, hash) = Hash(path);
            if (!string.Equals(hash, file.Sha256, StringComparison.OrdinalIgnoreCase))
            {
                throw Rejected($"'{file.Name}' has SHA-256 {hash} but {FileName} lists {file.Sha256} (altered contents).", partition);
            }
        }
        return manifest;
    }

    /// <summary>
    /// A listed name must be relative, '/'-separated, without empty, '.' or '..' segments, and not the
    /// manifest itself; throws SnapshotRejected otherwise. Fetchers call it before writing a file.
    /// </summary>
    public static void CheckName(string name, int? partition = null)
    {
        if (name.Length == 0 || name.Contains('\\') || name.Contains('\0') || Path.IsPathRooted(name) || name.StartsWith('/'))
        {
            throw Rejected($"{FileName} lists '{name}', which is not a relative path inside the snapshot.", partition);
        }
        foreach (var segment in name.Split('/'))
        {
            if (segment is "" or "." or "..")
            {
                throw Rejected($"{FileName} lists '{name}', which has a '{segment}' segment; only plain relative names are accepted.", partition);
            }
        }
        if (name == FileName)
        {
            throw Rejected($"{FileName} lists itself.", partition);
        }
    }

    private static void CheckNoLinkOnTheWay(string root, string name, int? partition)
    {
        var path = root;
        foreach (var segment in name.Split('/'))
        {
            path = Path.Combine(path, segment);
            FileSystemInfo info = Directory.Exists(path) ? new DirectoryInfo(path) : new FileInfo(path);
            if (info.LinkTarget is not null)
            {
                throw Rejected($"'{Path.GetRelativePath(root, path)}' is a symbolic link (to '{info.LinkTarget}'); a snapshot holds regular files only.", partition);
            }
        }
    }

    private static void CheckNothingUnlisted(string root, string directory, HashSet<string> listed, int? partition)
    {
        foreach (var entry in new DirectoryInfo(directory).EnumerateFileSystemInfos("*", new EnumerationOptions { AttributesToSkip = 0, RecurseSubdirectories = false }))
        {
            var name = Path.GetRelativePath(root, entry.FullName).Replace(Path.DirectorySeparatorChar, '/');
            if (entry.LinkTarget is not null)
            {
                throw Rejected($"'{name}' is a symbolic link (to '{entry.LinkTarget}'); a snapshot holds regular files only.", partition);
            }
            if (entry is DirectoryInfo)
            {
                CheckNothingUnlisted(root, entry.FullName, listed, partition);
            }
            else if (name != FileName && !listed.Contains(name))
            {
                throw Rejected($"'{name}' is in the snapshot directory but not listed in {FileName}.", partition);
            }
        }
    }

    private static (long Size, string Sha256) Hash(string path)
    {
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, bufferSize: 1 << 16);
        var hash = SHA256.HashData(stream);
        return (stream.Length, Convert.ToHexStringLower(hash));
    }

    private static DEngineException Rejected(string message, int? partition, Exception? inner = null) =>
        new(DEngineErrorCode.SnapshotRejected, message, partition, inner: inner);

    /// <inheritdoc />
    public override string ToString() =>
        string.Create(CultureInfo.InvariantCulture, $"snapshot manifest v{Version} at {LastIncluded}: {Files.Count} files, {TotalBytes} bytes");
}
