using RocksDbSharp;

namespace DEngine.StateMachine;

// The TTL scan floor.
//
// Cleanup deletes index entries from the front of the TTL index, so a scan from its first key walks
// the tombstones of every key deleted so far. The floor is an index key below which no entry
// exists: scans start there. It is a hint in memory only, never part of the state: apply neither
// reads nor writes it (beyond lowering it after a write), and open, reset and snapshot install
// restart it at the beginning of the index, so a wrong or stale floor can only make a scan slower.
//
// Invariant: no index entry is below _ttlFloor. It rises only to a key that a scan proved to be
// the first entry at or above the old floor (or the scan's upper bound when there was none),
// capped by every index key written while that scan ran (its ticket); it falls after every
// apply that writes an index entry below it. Expired entries are therefore never skipped,
// however old their expiry (an external ApplyChunk may write any) and whether or not an
// ExpireKeys command for them was ever applied.
//
// The floor and the scan tickets are guarded by _ttlFloorGate (see the lock list in RocksDbStateMachine.cs).
public sealed partial class RocksDbStateMachine
{
    private readonly List<TtlScanTicket> _ttlScans = [];
    private byte[] _ttlFloor = [];

    private sealed class TtlScanTicket
    {
        public byte[]? LowestWritten;
    }

    /// <summary>The TTL scan floor (empty = the start of the index). For tests and diagnostics.</summary>
    internal byte[] TtlScanFloor
    {
        get
        {
            lock (_ttlFloorGate)
            {
                return _ttlFloor;
            }
        }
    }

    /// <summary>Test seam: runs inside FindExpired after its iterator (and so its view) is fixed.</summary>
    internal Action? TtlScanStarted { get; set; }

    private static void SeekFloor(Iterator iterator, byte[] floor)
    {
        if (floor.Length == 0)
        {
            iterator.SeekToFirst();
        }
        else
        {
            iterator.Seek(floor);
        }
    }

    private TtlScanTicket BeginTtlScan(out byte[] floor)
    {
        var ticket = new TtlScanTicket();
        lock (_ttlFloorGate)
        {
            floor = _ttlFloor;
            _ttlScans.Add(ticket);
        }
        return ticket;
    }

    /// <summary>Ends a scan; <paramref name="proven"/> is a key with no index entry below it in the scan's view (null: nothing learned).</summary>
    private void EndTtlScan(TtlScanTicket ticket, byte[]? proven)
    {
        lock (_ttlFloorGate)
        {
            _ttlScans.Remove(ticket);
            if (proven is null)
            {
                return;
            }
            // Entries written since the scan began may be missing from its view.
            if (ticket.LowestWritten is { } written && Compare(written, proven) < 0)
            {
                proven = written;
            }
            if (Compare(proven, _ttlFloor) > 0)
            {
                _ttlFloor = proven;
            }
        }
    }

    /// <summary>Called after a chunk that wrote TTL index entries is written, with the lowest of them.</summary>
    private void NoteTtlInserted(byte[] lowest)
    {
        lock (_ttlFloorGate)
        {
            if (Compare(lowest, _ttlFloor) < 0)
            {
                _ttlFloor = lowest;
            }
            foreach (var scan in _ttlScans)
            {
                if (scan.LowestWritten is null || Compare(lowest, scan.LowestWritten) < 0)
                {
                    scan.LowestWritten = lowest;
                }
            }
        }
    }

    private void ResetTtlFloor()
    {
        lock (_ttlFloorGate)
        {
            _ttlFloor = [];
        }
    }

    private static int Compare(byte[] a, byte[] b) => a.AsSpan().SequenceCompareTo(b);
}
