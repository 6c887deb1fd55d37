using System.Runtime.InteropServices;
using DEngine.Protos.Client;
using Google.Protobuf;
using RocksDbSharp;

namespace DEngine.StateMachine;

public sealed partial class RocksDbStateMachine
{
    /// <summary>
    /// Turns the entries of one chunk into WriteBatch operations. When the chunk holds a CAS or an
    /// ExpireKeys command, every write is also recorded in an overlay so that later entries of the
    /// same chunk read what earlier ones wrote. Writes with a client session go through the session
    /// table first (RocksDbStateMachine.ChunkWriter.Sessions.cs).
    /// </summary>
    private sealed partial class ChunkWriter(RocksDbStateMachine machine, WriteBatch batch, bool useOverlay)
    {
        private static readonly byte[] Empty = [];

        // key -> stored bytes (value with expiry header), or null for deleted.
        private readonly Dictionary<byte[], byte[]?>? _overlay = useOverlay ? new(ByteArrayComparer.Instance) : null;

        /// <summary>The lowest TTL index key this chunk puts, or null when it puts none.</summary>
        public byte[]? LowestTtlKeyWritten { get; private set; }

        /// <summary>The highest clock stamp (<c>as_of_unix_ms</c>) of the chunk's entries; 0 when none is stamped.</summary>
        public ulong HighestStamp { get; private set; }

        private void Stamp(ulong asOfUnixMs) => HighestStamp = Math.Max(HighestStamp, asOfUnixMs);

        public ApplyResult Apply(in ApplyEntry entry) =>
            entry.Command?.Session is { } session ? ApplyWithSession(entry, session) : ApplyOperation(entry);

        private ApplyResult ApplyOperation(in ApplyEntry entry)
        {
            var command = entry.Command;
            switch (command?.OperationCase)
            {
                case null:
                    return new ApplyResult(entry.Index, ApplyStatus.Applied);
                case WriteCommand.OperationOneofCase.Insert:
                    Stamp(command.Insert.AsOfUnixMs);
                    Insert(command.Insert);
                    return new ApplyResult(entry.Index, ApplyStatus.Applied);
                case WriteCommand.OperationOneofCase.Delete:
                    Stamp(command.Delete.AsOfUnixMs);
                    Delete(command.Delete.Key.Span);
                    return new ApplyResult(entry.Index, ApplyStatus.Applied);
                case WriteCommand.OperationOneofCase.CompareAndSwap:
                    Stamp(command.CompareAndSwap.AsOfUnixMs);
                    return new ApplyResult(entry.Index, CompareAndSwap(command.CompareAndSwap) ? ApplyStatus.Applied : ApplyStatus.CompareFailed);
                case WriteCommand.OperationOneofCase.ExpireKeys:
                    Stamp(command.ExpireKeys.AsOfUnixMs);
                    return new ApplyResult(entry.Index, ApplyStatus.Applied, ExpireKeys(command.ExpireKeys));
                case WriteCommand.OperationOneofCase.ExpireSessions:
                    Stamp(command.ExpireSessions.AsOfUnixMs);
                    return new ApplyResult(entry.Index, ApplyStatus.Applied, ExpireSessions(command.ExpireSessions, entry.Index));
                default:
                    throw new InvalidOperationException("validated before apply");
            }
        }

        private void Insert(WriteCommand.Types.Insert insert)
        {
            var expiry = 0UL;
            if (insert.TtlSecs > 0)
            {
                // The sequencer's stamp makes replay deterministic; an unstamped command (from an
                // external log) falls back to the apply-time clock.
                expiry = insert.ExpiresAtUnixMs != 0 ? insert.ExpiresAtUnixMs : TtlClock.ExpiryFrom(machine.NowUnixMs, insert.TtlSecs);
            }
            Put(insert.Key.Span, insert.Value.Span, expiry);
        }

        private void Put(ReadOnlySpan<byte> key, ReadOnlySpan<byte> value, ulong expiry)
        {
            var stored = StoredValue.Encode(value, expiry);
            batch.Put(key, stored, machine._data);
            if (expiry != 0)
            {
                var indexKey = StoredValue.TtlIndexKey(expiry, key);
                batch.Put(indexKey, Empty, machine._ttl);
                if (LowestTtlKeyWritten is null || Compare(indexKey, LowestTtlKeyWritten) < 0)
                {
                    LowestTtlKeyWritten = indexKey;
                }
            }
            // An older TTL index entry of this key stays behind; cleanup sees that the key's stored
            // expiry differs and drops the entry. That keeps puts free of reads.
            if (_overlay is not null)
            {
                _overlay[key.ToArray()] = stored;
            }
        }

        private void Delete(ReadOnlySpan<byte> key)
        {
            batch.Delete(key, machine._data);
            if (_overlay is not null)
            {
                _overlay[key.ToArray()] = null;
            }
        }

        private bool CompareAndSwap(WriteCommand.Types.CompareAndSwap cas)
        {
            // Judged at the stamp alone, not max(stamp, floor): the sequencer stamped max(clock,
            // floor) capped by its MaxClockSkew, and apply must give the same result on every
            // replica whatever its clock or settings.
            var asOf = cas.AsOfUnixMs != 0 ? cas.AsOfUnixMs : machine.NowUnixMs;
            var current = Read(cas.Key.Span);
            ReadOnlySpan<byte> currentValue = default;
            var exists = false;
            if (current is not null)
            {
                currentValue = StoredValue.Decode(current, out var expiry);
                exists = !StoredValue.IsExpired(expiry, asOf);
            }
            var matches = cas.HasExpectedValue
                ? exists && currentValue.SequenceEqual(cas.ExpectedValue.Span)
                : !exists;
            if (matches)
            {
                // A successful CAS writes its new value without TTL (documented in the README).
                Put(cas.Key.Span, cas.NewValue.Span, 0);
            }
            return matches;
        }

        private int ExpireKeys(WriteCommand.Types.ExpireKeys command)
        {
            var removed = 0;
            // One batched lookup for all listed keys (the database as it was before this chunk; the
            // overlay, consulted first, holds what earlier entries of the chunk wrote).
            var stored = machine.ReadStoredHeaders(command.Keys);
            for (var i = 0; i < command.Keys.Count; i++)
            {
                var listed = command.Keys[i];
                var key = listed.Key.Span;
                var current = _overlay is not null && _overlay.TryGetValue(key.ToArray(), out var pending) ? pending : stored[i];
                var currentExpiry = 0UL;
                if (current is not null)
                {
                    StoredValue.Decode(current, out currentExpiry);
                }
                if (current is not null && currentExpiry == listed.ExpiresAtUnixMs && StoredValue.IsExpired(currentExpiry, command.AsOfUnixMs))
                {
                    Delete(key);
                    batch.Delete(StoredValue.TtlIndexKey(listed.ExpiresAtUnixMs, key), machine._ttl);
                    removed++;
                }
                else if (current is null || currentExpiry != listed.ExpiresAtUnixMs)
                {
                    // The key was deleted or re-put since the index entry was written: the entry is stale.
                    batch.Delete(StoredValue.TtlIndexKey(listed.ExpiresAtUnixMs, key), machine._ttl);
                }
            }
            return removed;
        }

        private byte[]? Read(ReadOnlySpan<byte> key)
        {
            if (_overlay is not null && _overlay.TryGetValue(key.ToArray(), out var pending))
            {
                return pending;
            }
            return machine._db!.Get(key, machine._data);
        }
    }

    private static readonly ReadOptions HeaderReadOptions = new();

    /// <summary>
    /// The start of the stored value (at most the expiry header, enough for <see cref="StoredValue.Decode"/>)
    /// of each key in the data family, null where absent, read by one batched MultiGet.
    /// </summary>
    private unsafe byte[]?[] ReadStoredHeaders(IList<WriteCommand.Types.ExpiredKey> keys)
    {
        var n = keys.Count;
        var result = new byte[]?[n];
        if (n == 0)
        {
            return result;
        }
        var total = 0;
        foreach (var k in keys)
        {
            total += k.Key.Length;
        }
        var keyPointers = new IntPtr[n];
        var keySizes = new UIntPtr[n];
        var values = new IntPtr[n];
        var errors = new IntPtr[n];
        var buffer = (byte*)NativeMemory.Alloc((nuint)total);
        try
        {
            var offset = 0;
            for (var i = 0; i < n; i++)
            {
                var key = keys[i].Key.Span;
                key.CopyTo(new Span<byte>(buffer + offset, key.Length));
                keyPointers[i] = (IntPtr)(buffer + offset);
                keySizes[i] = (UIntPtr)key.Length;
                offset += key.Length;
            }
            fixed (IntPtr* valueSlots = values)
            {
                Native.Instance.rocksdb_batched_multi_get_cf(_db!.Handle, HeaderReadOptions.Handle, _data.Handle, (UIntPtr)n, keyPointers, keySizes, (IntPtr)valueSlots, errors, 0);
            }
            string? error = null;
            for (var i = 0; i < n; i++)
            {
                if (errors[i] != IntPtr.Zero)
                {
                    error ??= Marshal.PtrToStringUTF8(errors[i]);
                    Native.Instance.rocksdb_free(errors[i]);
                }
                if (values[i] == IntPtr.Zero)
                {
                    continue;
                }
                var data = Native.Instance.rocksdb_pinnableslice_value(values[i], out var length);
                var header = new byte[Math.Min((int)length, StoredValue.TtlHeaderLength)];
                new ReadOnlySpan<byte>((void*)data, header.Length).CopyTo(header);
                result[i] = header;
                Native.Instance.rocksdb_pinnableslice_destroy(values[i]);
            }
            if (error is not null)
            {
                throw new DEngineException(DEngineErrorCode.StorageFailure, $"Reading the keys of an ExpireKeys command failed ({error}). Nothing of the chunk was applied; check the disk, then retry.", PartitionId);
            }
            return result;
        }
        finally
        {
            NativeMemory.Free(buffer);
        }
    }
}
