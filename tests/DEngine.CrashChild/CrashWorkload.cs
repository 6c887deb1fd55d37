using DEngine.Protos.Client;
using DEngine.Protos.Common;
using Google.Protobuf;

namespace DEngine.CrashChild;

/// <summary>
/// The chunks the crash child applies, as a pure function of the chunk's first index, so the test
/// (which compiles this same file) can recompute exactly what any acknowledged prefix contains.
/// </summary>
public static class CrashWorkload
{
    /// <summary>Every key of the mixed workload starts with this.</summary>
    public const string KeyPrefix = "/crash/";

    /// <summary>Written by the last entry of every chunk with the chunk's last index, so a torn chunk cannot hide.</summary>
    public const string MarkerKey = KeyPrefix + "~last";

    /// <summary>Number of distinct data keys.</summary>
    public const int KeyCount = 12;

    private static readonly string[] Values = ["a", "b", "c", "d", "e"];

    /// <summary>TTL workload: plain keys start with this.</summary>
    public const string KeepPrefix = "/keep/";

    /// <summary>TTL workload: keys with a TTL start with this.</summary>
    public const string TtlPrefix = "/ttl/";

    /// <summary>The term of the entries of a chunk starting at <paramref name="firstIndex"/> (it grows, so a torn term shows).</summary>
    public static ulong TermOf(ulong firstIndex) => 1 + (firstIndex / 500);

    /// <summary>The mixed Insert/Delete/CAS chunk that starts at <paramref name="firstIndex"/> (2..9 entries).</summary>
    public static Entry[] MixedChunk(ulong firstIndex)
    {
        var random = new SplitMix64(firstIndex);
        var term = TermOf(firstIndex);
        var size = 1 + random.Next(8);
        var entries = new Entry[size + 1];
        for (var i = 0; i < size; i++)
        {
            var index = firstIndex + (ulong)i;
            var key = ByteString.CopyFromUtf8($"{KeyPrefix}{random.Next(KeyCount):D2}");
            var pick = random.Next(10);
            WriteCommand command;
            if (pick < 5)
            {
                command = new WriteCommand { Insert = new WriteCommand.Types.Insert { Key = key, Value = ByteString.CopyFromUtf8(Values[random.Next(Values.Length)]) } };
            }
            else if (pick < 7)
            {
                command = new WriteCommand { Delete = new WriteCommand.Types.Delete { Key = key } };
            }
            else
            {
                var cas = new WriteCommand.Types.CompareAndSwap { Key = key, NewValue = ByteString.CopyFromUtf8(Values[random.Next(Values.Length)] + index) };
                var expected = random.Next(Values.Length + 1);
                if (expected < Values.Length)
                {
                    cas.ExpectedValue = ByteString.CopyFromUtf8(Values[expected]);
                }
                command = new WriteCommand { CompareAndSwap = cas };
            }
            entries[i] = Entry(index, term, command);
        }
        var last = firstIndex + (ulong)size;
        entries[size] = Entry(last, term, new WriteCommand
        {
            Insert = new WriteCommand.Types.Insert { Key = ByteString.CopyFromUtf8(MarkerKey), Value = ByteString.CopyFromUtf8(last.ToString(System.Globalization.CultureInfo.InvariantCulture)) },
        });
        return entries;
    }

    /// <summary>The TTL key of a TTL-workload chunk starting at <paramref name="firstIndex"/>.</summary>
    public static string TtlKey(ulong firstIndex) => $"{TtlPrefix}{firstIndex:D8}";

    /// <summary>The plain key of a TTL-workload chunk starting at <paramref name="firstIndex"/>.</summary>
    public static string KeepKey(ulong firstIndex) => $"{KeepPrefix}{firstIndex:D8}";

    /// <summary>The TTL key's stamped expiry: 10, 20 or 30 s after <paramref name="clockUnixMs"/>.</summary>
    public static ulong TtlExpiry(ulong firstIndex, ulong clockUnixMs) => clockUnixMs + TtlSecs(firstIndex) * 1000;

    private static ulong TtlSecs(ulong firstIndex) => 10 * (1 + (firstIndex / 2 % 3));

    /// <summary>TTL workload chunk: a key with a stamped TTL, then a plain key (always two entries).</summary>
    public static Entry[] TtlChunk(ulong firstIndex, ulong clockUnixMs) =>
    [
        Entry(firstIndex, 1, new WriteCommand
        {
            Insert = new WriteCommand.Types.Insert
            {
                Key = ByteString.CopyFromUtf8(TtlKey(firstIndex)),
                Value = ByteString.CopyFromUtf8("t"),
                TtlSecs = TtlSecs(firstIndex),
                ExpiresAtUnixMs = TtlExpiry(firstIndex, clockUnixMs),
            },
        }),
        Entry(firstIndex + 1, 1, new WriteCommand
        {
            Insert = new WriteCommand.Types.Insert { Key = ByteString.CopyFromUtf8(KeepKey(firstIndex)), Value = ByteString.CopyFromUtf8("k") },
        }),
    ];

    /// <summary>Session workload: every key starts with this.</summary>
    public const string SessionPrefix = "/session/";

    /// <summary>The one client session of the session workload.</summary>
    public static readonly ByteString SessionId = ByteString.CopyFromUtf8("crash-session-01");

    /// <summary>Sequences the session workload's client keeps answers for (its low-water mark trails by this).</summary>
    public const ulong SessionWindow = 64;

    /// <summary>
    /// The session write at <paramref name="index"/>: sequence = index, low-water mark = index − window,
    /// the first-write flag on sequence 1; a CAS from the previous value of its key to this index's,
    /// so a second apply of it would answer CompareFailed.
    /// </summary>
    public static WriteCommand SessionCommand(ulong index)
    {
        var cas = new WriteCommand.Types.CompareAndSwap
        {
            Key = ByteString.CopyFromUtf8(SessionKey(index)),
            NewValue = ByteString.CopyFromUtf8(index.ToString(System.Globalization.CultureInfo.InvariantCulture)),
        };
        if (index > 8)
        {
            cas.ExpectedValue = ByteString.CopyFromUtf8((index - 8).ToString(System.Globalization.CultureInfo.InvariantCulture));
        }
        return new WriteCommand
        {
            CompareAndSwap = cas,
            Session = new ClientSession
            {
                SessionId = SessionId,
                Sequence = index,
                LowWater = index > SessionWindow ? index - SessionWindow : 1,
                FirstToPartition = index == 1,
            },
        };
    }

    /// <summary>The key the session write at <paramref name="index"/> swaps (eight keys, in turn).</summary>
    public static string SessionKey(ulong index) => $"{SessionPrefix}{(index - 1) % 8}";

    /// <summary>The session chunk that starts at <paramref name="firstIndex"/>: four session writes.</summary>
    public static Entry[] SessionChunk(ulong firstIndex) =>
        [.. Enumerable.Range(0, 4).Select(i => Entry(firstIndex + (ulong)i, 1, SessionCommand(firstIndex + (ulong)i)))];

    /// <summary>An entry at <paramref name="index"/> carrying <paramref name="command"/>.</summary>
    public static Entry Entry(ulong index, ulong term, WriteCommand command) =>
        new() { Index = index, Term = term, Payload = new EntryPayload { Command = command.ToByteString() } };

    /// <summary>A tiny seeded generator whose sequence is fixed by its algorithm, not by the runtime.</summary>
    private struct SplitMix64(ulong seed)
    {
        private ulong _state = seed;

        public int Next(int bound)
        {
            _state += 0x9E3779B97F4A7C15UL;
            var z = _state;
            z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
            z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
            z ^= z >> 31;
            return (int)(z % (ulong)bound);
        }
    }
}
