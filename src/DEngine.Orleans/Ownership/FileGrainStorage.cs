using System.Buffers.Binary;
using DEngine.Orleans.Snapshots;
using DEngine.StateMachine.Snapshots;
using Microsoft.Extensions.Logging;
using Orleans;
using Orleans.Runtime;
using Orleans.Serialization;
using Orleans.Storage;

namespace DEngine.Orleans.Ownership;

/// <summary>
/// Grain storage in files on this silo's disk, one file per grain and state under
/// <c>{DataRoot}/records/{state}/</c>. The store of the configuration records (ownership and holders)
/// in the local profile, where the record grains are pinned to the primary silo
/// (<see cref="RecordPlacement"/>), so the records live as long as the primary's disk.
/// </summary>
/// <remarks>
/// A write is acknowledged only once durable: the record goes to a temp file that is fsynced, renamed
/// over the old one (atomic), then the directory is fsynced. A reader therefore sees the old or the
/// new record, never a torn one. Each file carries a CRC-32C; a file that fails it (a damaged disk
/// block) is set aside as <c>*.damaged</c> and reported as missing, so the partition's activation
/// recovers the record from the silos' copies and the holders registry instead of failing forever.
/// </remarks>
public sealed partial class FileGrainStorage(string directory, Serializer serializer, ILogger<FileGrainStorage> logger) : IGrainStorage
{
    private const uint Magic = 0x31524544; // "DER1"
    private const int HeaderBytes = 4 + 8 + 4; // magic, version (the ETag), payload length
    private const int TrailerBytes = 4; // CRC-32C of header and payload

    /// <summary>Where the records are.</summary>
    public string Directory { get; } = Path.GetFullPath(directory);

    /// <inheritdoc />
    public async Task ReadStateAsync<T>(string stateName, GrainId grainId, IGrainState<T> grainState)
    {
        var path = PathOf(stateName, grainId);
        var stored = await Task.Run(() => Read<T>(path));
        if (stored is { } record)
        {
            grainState.State = record.State;
            grainState.ETag = record.Version.ToString(System.Globalization.CultureInfo.InvariantCulture);
            grainState.RecordExists = true;
        }
        else
        {
            grainState.ETag = null;
            grainState.RecordExists = false;
        }
    }

    /// <inheritdoc />
    public async Task WriteStateAsync<T>(string stateName, GrainId grainId, IGrainState<T> grainState)
    {
        var path = PathOf(stateName, grainId);
        var payload = serializer.SerializeToArray(grainState.State);
        var version = await Task.Run(() =>
        {
            var current = Read<T>(path)?.Version ?? 0;
            CheckETag(grainState.ETag, current, path);
            var next = current + 1;
            EnsureDirectory(Path.GetDirectoryName(path)!);
            DurableFiles.ReplaceAtomically(path, Encode(next, payload));
            return next;
        });
        grainState.ETag = version.ToString(System.Globalization.CultureInfo.InvariantCulture);
        grainState.RecordExists = true;
    }

    /// <inheritdoc />
    public async Task ClearStateAsync<T>(string stateName, GrainId grainId, IGrainState<T> grainState)
    {
        var path = PathOf(stateName, grainId);
        await Task.Run(() =>
        {
            var current = Read<T>(path)?.Version ?? 0;
            CheckETag(grainState.ETag, current, path);
            if (File.Exists(path))
            {
                File.Delete(path);
                DurableFiles.SyncDirectory(Path.GetDirectoryName(path)!);
            }
        });
        grainState.ETag = null;
        grainState.RecordExists = false;
    }

    /// <summary>The file of one grain's state: the grain id escaped into one file name.</summary>
    public string PathOf(string stateName, GrainId grainId) =>
        Path.Combine(Directory, Uri.EscapeDataString(stateName), Uri.EscapeDataString(grainId.ToString()) + ".rec");

    private static void CheckETag(string? etag, ulong current, string path)
    {
        var expected = current == 0 ? null : current.ToString(System.Globalization.CultureInfo.InvariantCulture);
        if (etag != expected)
        {
            // Two writers of one record (never expected: one activation per grain) must not overwrite each other.
            throw new InconsistentStateException($"The record '{path}' is at version {expected ?? "none"}, not {etag ?? "none"}: another writer changed it.", expected, etag);
        }
    }

    private (T State, ulong Version)? Read<T>(string path)
    {
        byte[] bytes;
        try
        {
            bytes = File.ReadAllBytes(path);
        }
        catch (FileNotFoundException)
        {
            return null;
        }
        catch (DirectoryNotFoundException)
        {
            return null;
        }
        if (TryDecode(bytes, out var version, out var payload))
        {
            return (serializer.Deserialize<T>(payload.ToArray())!, version);
        }
        var aside = path + ".damaged";
        File.Move(path, aside, overwrite: true);
        DurableFiles.SyncDirectory(Path.GetDirectoryName(path)!);
        LogDamaged(path, aside);
        return null;
    }

    private static byte[] Encode(ulong version, byte[] payload)
    {
        var bytes = new byte[HeaderBytes + payload.Length + TrailerBytes];
        BinaryPrimitives.WriteUInt32LittleEndian(bytes, Magic);
        BinaryPrimitives.WriteUInt64LittleEndian(bytes.AsSpan(4), version);
        BinaryPrimitives.WriteInt32LittleEndian(bytes.AsSpan(12), payload.Length);
        payload.CopyTo(bytes.AsSpan(HeaderBytes));
        BinaryPrimitives.WriteUInt32LittleEndian(bytes.AsSpan(HeaderBytes + payload.Length), Crc32C.Compute(bytes.AsSpan(0, HeaderBytes + payload.Length)));
        return bytes;
    }

    private static bool TryDecode(byte[] bytes, out ulong version, out ReadOnlySpan<byte> payload)
    {
        version = 0;
        payload = default;
        if (bytes.Length < HeaderBytes + TrailerBytes || BinaryPrimitives.ReadUInt32LittleEndian(bytes) != Magic)
        {
            return false;
        }
        var length = BinaryPrimitives.ReadInt32LittleEndian(bytes.AsSpan(12));
        if (length < 0 || length != bytes.Length - HeaderBytes - TrailerBytes)
        {
            return false;
        }
        if (BinaryPrimitives.ReadUInt32LittleEndian(bytes.AsSpan(HeaderBytes + length)) != Crc32C.Compute(bytes.AsSpan(0, HeaderBytes + length)))
        {
            return false;
        }
        version = BinaryPrimitives.ReadUInt64LittleEndian(bytes.AsSpan(4));
        payload = bytes.AsSpan(HeaderBytes, length);
        return true;
    }

    /// <summary>Creates the directory chain, syncing each parent whose entries changed, so a new record's directory survives a power cut.</summary>
    private static void EnsureDirectory(string path)
    {
        if (System.IO.Directory.Exists(path))
        {
            return;
        }
        var parent = Path.GetDirectoryName(path);
        if (parent is not null)
        {
            EnsureDirectory(parent);
        }
        System.IO.Directory.CreateDirectory(path);
        if (parent is not null)
        {
            DurableFiles.SyncDirectory(parent);
        }
    }

    [LoggerMessage(Level = LogLevel.Error, Message = "The record file {Path} is damaged (checksum or length); it was moved to {Aside} and is treated as missing, so the partition recovers it from the silos' copies.")]
    private partial void LogDamaged(string path, string aside);
}
