using System.Security.Cryptography;
using Google.Protobuf;

namespace DEngine.Client.Sessions;

/// <summary>
/// One client session: a random 16-byte id (unique without a registration round trip), the numbering
/// of its writes (1, 2, … across partitions), the writes still in flight (their lowest is the
/// low-water mark every write carries) and the partitions where the session is known to be open.
/// Thread-safe.
/// </summary>
internal sealed class WriteSession
{
    /// <summary>Guards <see cref="_next"/>, <see cref="_lowWater"/> and <see cref="_endedAbove"/>; held only for a few field updates.</summary>
    private readonly object _gate = new();
    private ulong _next = 1;
    // The lowest sequence not ended yet; every sequence below it has ended.
    private ulong _lowWater = 1;
    // Ended sequences above the low-water mark (a write that ends before an older one still in flight).
    private readonly HashSet<ulong> _endedAbove = [];
    // Per partition: 1 once a write of this session was answered there (the session is open there).
    private readonly int[] _openAt;

    /// <summary>Creates a session with a fresh random id for a cluster of <paramref name="partitions"/> partitions.</summary>
    public WriteSession(int partitions)
    {
        Id = RandomNumberGenerator.GetBytes(16);
        IdBytes = UnsafeByteOperations.UnsafeWrap(Id);
        _openAt = new int[partitions];
    }

    /// <summary>The session id (never changed).</summary>
    public byte[] Id { get; }

    /// <summary>The session id as the wire carries it.</summary>
    public ByteString IdBytes { get; }

    /// <summary>The partition count this session was made for.</summary>
    public int Partitions => _openAt.Length;

    /// <summary>Numbers a new write; it counts as in flight until <see cref="End"/>.</summary>
    public ulong Begin()
    {
        lock (_gate)
        {
            return _next++;
        }
    }

    /// <summary>The lowest sequence still in flight (the next one when none is).</summary>
    public ulong LowWater
    {
        get
        {
            lock (_gate)
            {
                return _lowWater;
            }
        }
    }

    /// <summary>
    /// The client no longer waits for write <paramref name="sequence"/> (answered, failed, or given up
    /// at its deadline): the low-water mark may pass it, and a late copy of it is refused.
    /// </summary>
    public void End(ulong sequence)
    {
        lock (_gate)
        {
            if (sequence != _lowWater)
            {
                _endedAbove.Add(sequence);
                return;
            }
            _lowWater++;
            while (_endedAbove.Remove(_lowWater))
            {
                _lowWater++;
            }
        }
    }

    /// <summary>Whether a write of this session was answered by <paramref name="partition"/> (the session is open there).</summary>
    public bool IsOpenAt(int partition) => Volatile.Read(ref _openAt[partition]) != 0;

    /// <summary>Records that <paramref name="partition"/> answered a write of this session.</summary>
    public void OpenedAt(int partition) => Volatile.Write(ref _openAt[partition], 1);
}
