using System.Buffers.Binary;
using System.Globalization;
using System.IO.Hashing;
using DEngine.StateMachine.Snapshots;
using Microsoft.Win32.SafeHandles;

namespace DEngine.StateMachine.Replication;

/// <summary>
/// One segment file of a <see cref="ReplicatedLog"/>: its fixed header (generation, base position,
/// commit index at creation) and positioned reads and writes on its handle. The format is described
/// at the top of ReplicatedLog.cs.
/// </summary>
internal sealed class LogSegment : IDisposable
{
    /// <summary>Bytes of the segment header.</summary>
    public const int HeaderBytes = 44;

    private const uint Magic = 0x474C5244; // "DRLG" little-endian
    private const uint FormatVersion = 1;
    private readonly FileStream _file;

    private LogSegment(string path, ulong generation, LogPosition @base, ulong headerCommit, FileStream file, long length)
    {
        Path = path;
        Generation = generation;
        Base = @base;
        HeaderCommit = headerCommit;
        _file = file;
        Length = length;
    }

    /// <summary>Full path of the file.</summary>
    public string Path { get; }

    /// <summary>The generation: a <see cref="ReplicatedLog.Reset"/> starts a higher one and makes lower ones garbage.</summary>
    public ulong Generation { get; }

    /// <summary>The position just before this segment's first entry.</summary>
    public LogPosition Base { get; }

    /// <summary>The commit index recorded in the header.</summary>
    public ulong HeaderCommit { get; }

    /// <summary>The file's length as this process wrote or truncated it (the next record goes here).</summary>
    public long Length { get; private set; }

    /// <summary>The handle for positioned reads.</summary>
    public SafeFileHandle Handle => _file.SafeFileHandle;

    /// <summary>The file name of a segment: generation and first index, zero-padded so names sort in log order.</summary>
    public static string FileName(ulong generation, ulong firstIndex) =>
        string.Create(CultureInfo.InvariantCulture, $"{generation:D20}-{firstIndex:D20}.log");

    /// <summary>Parses a name made by <see cref="FileName"/>; false for any other file.</summary>
    public static bool TryParseName(string fileName, out ulong generation, out ulong firstIndex)
    {
        generation = 0;
        firstIndex = 0;
        return fileName.Length == 45 && fileName[20] == '-' && fileName.EndsWith(".log", StringComparison.Ordinal)
            && ulong.TryParse(fileName.AsSpan(0, 20), NumberStyles.None, CultureInfo.InvariantCulture, out generation)
            && ulong.TryParse(fileName.AsSpan(21, 20), NumberStyles.None, CultureInfo.InvariantCulture, out firstIndex);
    }

    /// <summary>
    /// Creates a segment whose header is durable and whose name is in the directory durably, before
    /// anything is appended: a Reset deletes the older generation only after this, and a roll's
    /// directory entry must survive with the entries later synced into the file.
    /// </summary>
    public static LogSegment Create(string directory, ulong generation, LogPosition @base, ulong commit)
    {
        var path = System.IO.Path.Combine(directory, FileName(generation, @base.Index + 1));
        var file = new FileStream(path, FileMode.CreateNew, FileAccess.ReadWrite, FileShare.Read, bufferSize: 0);
        try
        {
            Span<byte> header = stackalloc byte[HeaderBytes];
            BinaryPrimitives.WriteUInt32LittleEndian(header, Magic);
            BinaryPrimitives.WriteUInt32LittleEndian(header[4..], FormatVersion);
            BinaryPrimitives.WriteUInt64LittleEndian(header[8..], generation);
            BinaryPrimitives.WriteUInt64LittleEndian(header[16..], @base.Index);
            BinaryPrimitives.WriteUInt64LittleEndian(header[24..], @base.Term);
            BinaryPrimitives.WriteUInt64LittleEndian(header[32..], commit);
            BinaryPrimitives.WriteUInt32LittleEndian(header[40..], Crc32.HashToUInt32(header[..40]));
            RandomAccess.Write(file.SafeFileHandle, header, 0);
            DurableFiles.SyncStream(file, path); // mutation: replog-segment-sync
            DurableFiles.SyncDirectory(directory); // mutation: replog-segment-dir-sync
            return new LogSegment(path, generation, @base, commit, file, HeaderBytes);
        }
        catch
        {
            file.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Opens an existing segment for reading and writing. Returns null when the header is missing or
    /// invalid and <paramref name="why"/> says how; the caller decides whether that is a torn creation
    /// or corruption.
    /// </summary>
    public static LogSegment? OpenExisting(string path, ulong generation, ulong firstIndex, out string why)
    {
        var file = new FileStream(path, FileMode.Open, FileAccess.ReadWrite, FileShare.Read, bufferSize: 0);
        try
        {
            var length = file.Length;
            Span<byte> header = stackalloc byte[HeaderBytes];
            if (length < HeaderBytes || RandomAccess.Read(file.SafeFileHandle, header, 0) != HeaderBytes)
            {
                why = $"the file is {length} bytes, shorter than its {HeaderBytes}-byte header";
            }
            else if (BinaryPrimitives.ReadUInt32LittleEndian(header[40..]) != Crc32.HashToUInt32(header[..40]))
            {
                why = "the header's checksum does not match";
            }
            else if (BinaryPrimitives.ReadUInt32LittleEndian(header) != Magic || BinaryPrimitives.ReadUInt32LittleEndian(header[4..]) != FormatVersion)
            {
                why = $"not a log segment of format version {FormatVersion}";
            }
            else
            {
                var @base = new LogPosition(BinaryPrimitives.ReadUInt64LittleEndian(header[16..]), BinaryPrimitives.ReadUInt64LittleEndian(header[24..]));
                var headerGeneration = BinaryPrimitives.ReadUInt64LittleEndian(header[8..]);
                if (headerGeneration != generation || @base.Index + 1 != firstIndex)
                {
                    why = $"the header (generation {headerGeneration}, base {@base}) does not match the file name";
                }
                else
                {
                    why = "";
                    return new LogSegment(path, generation, @base, BinaryPrimitives.ReadUInt64LittleEndian(header[32..]), file, length);
                }
            }
            file.Dispose();
            return null;
        }
        catch
        {
            file.Dispose();
            throw;
        }
    }

    /// <summary>Writes <paramref name="bytes"/> at the end (not synced).</summary>
    public void Append(ReadOnlySpan<byte> bytes)
    {
        RandomAccess.Write(Handle, bytes, Length);
        Length += bytes.Length;
    }

    /// <summary>fsync of the file.</summary>
    public void Sync() => DurableFiles.SyncStream(_file, Path);

    /// <summary>Cuts the file to <paramref name="length"/> bytes (not synced).</summary>
    public void Truncate(long length)
    {
        _file.SetLength(length);
        Length = length;
    }

    /// <summary>Fills <paramref name="buffer"/> from <paramref name="offset"/>; false if the file ends first.</summary>
    public bool TryReadExactly(Span<byte> buffer, long offset)
    {
        while (buffer.Length > 0)
        {
            var n = RandomAccess.Read(Handle, buffer, offset);
            if (n <= 0)
            {
                return false;
            }
            buffer = buffer[n..];
            offset += n;
        }
        return true;
    }

    /// <summary>Closes the handle and deletes the file (the directory entry is not synced).</summary>
    public void Delete()
    {
        _file.Dispose();
        File.Delete(Path);
    }

    /// <inheritdoc />
    public void Dispose() => _file.Dispose();
}
