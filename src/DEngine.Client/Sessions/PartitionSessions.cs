namespace DEngine.Client.Sessions;

/// <summary>
/// Which session a client's writes to each partition belong to: one session shared by every
/// partition, except where a partition refused it as expired — there the client continues under a
/// new session of that partition's own, and the other partitions keep theirs. Thread-safe.
/// </summary>
internal sealed class PartitionSessions
{
    /// <summary>Guards the swaps of <see cref="_replaced"/> (rare: only after a SessionExpired); reads take no lock.</summary>
    private readonly object _gate = new();
    private readonly WriteSession _shared;
    private readonly WriteSession?[] _replaced;

    /// <summary>Creates the sessions of a client of a cluster with <paramref name="partitions"/> partitions.</summary>
    public PartitionSessions(int partitions)
    {
        _shared = new WriteSession(partitions);
        _replaced = new WriteSession?[partitions];
    }

    /// <summary>The partition count these sessions were made for.</summary>
    public int Partitions => _replaced.Length;

    /// <summary>The session writes to <paramref name="partition"/> belong to now.</summary>
    public WriteSession For(int partition) => Volatile.Read(ref _replaced[partition]) ?? _shared;

    /// <summary>
    /// <paramref name="partition"/> refused <paramref name="expired"/>: it gets a new session (unless a
    /// concurrent write already renewed it, whose new session is returned then).
    /// </summary>
    public WriteSession Renew(int partition, WriteSession expired)
    {
        lock (_gate)
        {
            var current = For(partition);
            if (current != expired)
            {
                return current;
            }
            var fresh = new WriteSession(_replaced.Length);
            Volatile.Write(ref _replaced[partition], fresh);
            return fresh;
        }
    }
}
