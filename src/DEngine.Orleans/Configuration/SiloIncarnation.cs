using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using DEngine.Orleans.Snapshots;
using DEngine.StateMachine.Snapshots;

namespace DEngine.Orleans.Configuration;

/// <summary>
/// The incarnation of this silo's data directory: a random 128-bit id created at the directory's
/// first start and read at every later one (file <c>{DataRoot}/incarnation</c>). A replica is a silo
/// name and this id, so a silo restarted on a missing or emptied data directory is a new replica and
/// cannot be counted as holding what the old one acknowledged.
/// </summary>
/// <remarks>
/// Created atomically and durably (a synced temp file renamed into place, the directory synced), so a
/// power cut never makes the next start invent a second identity for data it already had. A file that
/// exists but does not parse or fails its CRC-32C stops the start with StorageFailure instead of being
/// replaced: a silent new identity would hide a damaged disk. Loaded by <see cref="Storage.DataRootLock"/>
/// under the data directory's lock, so two processes never both create one.
/// </remarks>
public sealed class SiloIncarnation
{
    /// <summary>Name of the file inside the data root.</summary>
    public const string FileName = "incarnation";

    private const string Header = "dengine-incarnation-v1";

    private SiloIncarnation(string value) => Value = value;

    /// <summary>The id: 32 lowercase hex digits.</summary>
    public string Value { get; }

    /// <inheritdoc />
    public override string ToString() => Value;

    /// <summary>
    /// Reads the incarnation of <paramref name="dataRoot"/>, creating the directory and a new
    /// incarnation when it has none. Blocking I/O. Call under the data root's lock.
    /// </summary>
    /// <exception cref="DEngineException">StorageFailure when the file exists but is damaged, or cannot be read or written.</exception>
    public static SiloIncarnation LoadOrCreate(string dataRoot)
    {
        var path = Path.Combine(Path.GetFullPath(dataRoot), FileName);
        try
        {
            if (File.Exists(path))
            {
                var text = File.ReadAllText(path, Encoding.ASCII);
                return TryParse(text, out var value)
                    ? new SiloIncarnation(value)
                    : throw new DEngineException(DEngineErrorCode.StorageFailure, $"The incarnation file '{path}' is damaged (it does not hold a valid, checksummed id). The data in '{Path.GetDirectoryName(path)}' cannot be trusted as this silo's: restore the file, or move the data directory away so the silo starts as a new, empty replica.");
            }
            DurableFiles.CreateDirectoryDurably(Path.GetDirectoryName(path)!);
            var created = RandomNumberGenerator.GetHexString(32, lowercase: true);
            DurableFiles.ReplaceAtomically(path, Encoding.ASCII.GetBytes(Format(created)));
            return new SiloIncarnation(created);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw new DEngineException(DEngineErrorCode.StorageFailure, $"The incarnation file '{path}' cannot be read or written ({ex.Message}). Check the data directory's permissions and disk.", inner: ex);
        }
    }

    /// <summary>The file's contents for <paramref name="value"/>: header, id and the CRC-32C of both, on one line.</summary>
    internal static string Format(string value)
    {
        var body = $"{Header} {value}";
        return $"{body} {Crc32C.Compute(Encoding.ASCII.GetBytes(body)).ToString("x8", CultureInfo.InvariantCulture)}\n";
    }

    private static bool TryParse(string text, out string value)
    {
        value = "";
        var parts = text.TrimEnd('\n').Split(' ');
        if (parts is not [Header, var id, var crc] || id.Length != 32 || !id.All(char.IsAsciiHexDigitLower) || crc.Length != 8)
        {
            return false;
        }
        if (!uint.TryParse(crc, NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out var stored)
            || stored != Crc32C.Compute(Encoding.ASCII.GetBytes($"{Header} {id}")))
        {
            return false;
        }
        value = id;
        return true;
    }
}
