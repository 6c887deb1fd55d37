namespace DEngine.Orleans.Replication;

/// <summary>
/// The primary's bookkeeping for one configuration of a replica group: what each replica holds
/// durably, the commit index that gives, the read lease, and which replicas stopped answering.
/// Pure (no I/O, time passed in as <see cref="TimeProvider"/> timestamps), so the commit and lease
/// rules are tested without a cluster.
/// </summary>
/// <remarks>
/// <para><b>Commit rule.</b> An index is committed when every replica of the configuration, the
/// primary included, has it durably in its log: <see cref="CommitIndex"/> is the minimum over them.
/// It never goes back, also when a replica is removed or added (an added replica joins only once
/// caught up, so it already holds everything committed).</para>
/// <para><b>Lease.</b> A replica that acknowledges a message sent at instant t promises to refuse
/// every lower configuration version from the moment it sees a higher one; a new primary, itself a
/// replica of this configuration, waits at least the lease after it stopped acknowledging this one.
/// So this primary may serve a read at instant now if every other replica acknowledged a message
/// sent after now − lease (measured on this primary's clock, from the send, never from the
/// acknowledgement: the message may have been delayed). A configuration of one replica holds the
/// lease alone.</para>
/// </remarks>
public sealed class CommitTracker
{
    private readonly string _self;
    private readonly TimeProvider _time;
    private readonly TimeSpan _lease;
    private readonly Dictionary<string, Progress> _replicas = new(StringComparer.Ordinal);
    private ulong _commit;

    /// <summary>Starts tracking a configuration whose committed prefix is known to end at <paramref name="commitIndex"/>.</summary>
    /// <param name="self">The primary's silo name (a member of <paramref name="replicas"/>).</param>
    /// <param name="replicas">Every replica of the configuration, the primary included.</param>
    /// <param name="commitIndex">The commit index known when the tracking starts.</param>
    /// <param name="lease">How long an acknowledgement lets the primary serve reads, from the message's send.</param>
    /// <param name="time">The clock.</param>
    public CommitTracker(string self, IEnumerable<string> replicas, ulong commitIndex, TimeSpan lease, TimeProvider time)
    {
        ArgumentException.ThrowIfNullOrEmpty(self);
        ArgumentNullException.ThrowIfNull(replicas);
        ArgumentNullException.ThrowIfNull(time);
        _self = self;
        _time = time;
        _lease = lease;
        _commit = commitIndex;
        var now = time.GetTimestamp();
        foreach (var replica in replicas)
        {
            _replicas[replica] = new Progress(now);
        }
        if (!_replicas.ContainsKey(self))
        {
            throw new ArgumentException($"The primary '{self}' must be one of the replicas.", nameof(replicas));
        }
    }

    /// <summary>The replicas tracked, the primary included.</summary>
    public IReadOnlyCollection<string> Replicas => _replicas.Keys;

    /// <summary>The highest index every replica holds durably (never decreases).</summary>
    public ulong CommitIndex => _commit;

    /// <summary>The highest index <paramref name="replica"/> is known to hold durably.</summary>
    public ulong MatchIndex(string replica) => _replicas.TryGetValue(replica, out var p) ? p.Match : 0;

    /// <summary>
    /// Records that <paramref name="replica"/> holds everything up to <paramref name="durableIndex"/>
    /// in its log, acknowledging a message sent at <paramref name="sentAt"/> (a
    /// <see cref="TimeProvider.GetTimestamp"/> value). Returns true when the commit index moved.
    /// Acknowledgements of replicas not in the configuration are ignored.
    /// </summary>
    public bool Acknowledged(string replica, ulong durableIndex, long sentAt)
    {
        if (!_replicas.TryGetValue(replica, out var progress))
        {
            return false;
        }
        progress.Match = Math.Max(progress.Match, durableIndex);
        progress.LeaseFrom = progress.LeaseFrom is { } from ? Math.Max(from, sentAt) : sentAt;
        progress.AnsweredAt = _time.GetTimestamp();
        return Recompute();
    }

    /// <summary>Records that the primary's own log holds everything up to <paramref name="durableIndex"/>.</summary>
    public bool LocalDurable(ulong durableIndex) => Acknowledged(_self, durableIndex, long.MaxValue);

    /// <summary>True while the primary holds the read lease (every other replica acknowledged a message sent within the lease).</summary>
    public bool HoldsLease()
    {
        var now = _time.GetTimestamp();
        foreach (var (name, progress) in _replicas)
        {
            if (name != _self && (progress.LeaseFrom is not { } from || _time.GetElapsedTime(from, now) >= _lease))
            {
                return false;
            }
        }
        return true;
    }

    /// <summary>
    /// Replicas (never the primary) that answered nothing for <paramref name="timeout"/>: candidates
    /// for removal from the configuration.
    /// </summary>
    public IReadOnlyList<string> Unresponsive(TimeSpan timeout)
    {
        var now = _time.GetTimestamp();
        var late = new List<string>();
        foreach (var (name, progress) in _replicas)
        {
            if (name != _self && _time.GetElapsedTime(progress.AnsweredAt, now) >= timeout)
            {
                late.Add(name);
            }
        }
        return late;
    }

    /// <summary>Stops tracking <paramref name="replica"/> (it was removed from the configuration); the commit index may move.</summary>
    public bool Remove(string replica)
    {
        if (replica == _self)
        {
            throw new ArgumentException("The primary cannot be removed from its own tracker.", nameof(replica));
        }
        return _replicas.Remove(replica) && Recompute();
    }

    /// <summary>
    /// Starts tracking <paramref name="replica"/>, which holds everything up to <paramref name="durableIndex"/>
    /// (at least the commit index: a replica joins only once caught up).
    /// </summary>
    public void Add(string replica, ulong durableIndex, long sentAt)
    {
        if (durableIndex < _commit)
        {
            throw new ArgumentException($"Replica '{replica}' holds only up to {durableIndex}, below the commit index {_commit}: it must catch up before it joins.", nameof(durableIndex));
        }
        _replicas[replica] = new Progress(_time.GetTimestamp()) { Match = durableIndex, LeaseFrom = sentAt };
    }

    private bool Recompute()
    {
        var min = ulong.MaxValue;
        foreach (var progress in _replicas.Values)
        {
            min = Math.Min(min, progress.Match);
        }
        if (min > _commit)
        {
            _commit = min;
            return true;
        }
        return false;
    }

    private sealed class Progress(long now)
    {
        public ulong Match { get; set; }

        /// <summary>Send instant of the newest message this replica acknowledged (lease start); null before the first.</summary>
        public long? LeaseFrom { get; set; }

        /// <summary>When it last answered (for the removal timeout); the tracking start counts as an answer.</summary>
        public long AnsweredAt { get; set; } = now;
    }
}
