using DEngine.StateMachine;

namespace DEngine.Orleans.Partitions;

/// <summary>The partition's open database and the epoch (term) this activation writes it with.</summary>
/// <param name="Engine">The open state machine.</param>
/// <param name="Epoch">The ownership epoch: the term of every entry this activation sequences.</param>
public sealed record OpenPartition(IStateMachine Engine, ulong Epoch);

/// <summary>
/// The phase of one partition activation: <see cref="Opening"/> until activation ends, then
/// <see cref="Serving"/> or <see cref="Unavailable"/>, and <see cref="Closing"/> once deactivation began.
/// </summary>
public abstract record PartitionState
{
    private PartitionState()
    {
    }

    /// <summary>The database still open in this phase (writes already accepted drain into it), or null.</summary>
    public virtual OpenPartition? Open => null;

    /// <summary>Activation is running: nothing is served yet.</summary>
    public sealed record Opening : PartitionState;

    /// <summary>Reads and writes are served from <paramref name="Partition"/>.</summary>
    public sealed record Serving(OpenPartition Partition) : PartitionState
    {
        /// <inheritdoc />
        public override OpenPartition? Open => Partition;
    }

    /// <summary>
    /// Every call answers <paramref name="Error"/>. <paramref name="DataSilo"/> is the silo that holds the
    /// current data when it is elsewhere (the partition migrates there once it is active again);
    /// <paramref name="Still"/> is a database that stays open until deactivation (an activation that
    /// lost its epoch: what it already accepted still drains and gets its answer).
    /// </summary>
    public sealed record Unavailable(DEngineException Error, string? DataSilo = null, OpenPartition? Still = null) : PartitionState
    {
        /// <inheritdoc />
        public override OpenPartition? Open => Still;
    }

    /// <summary>Deactivating: new calls answer NotServing; <paramref name="Draining"/> is closed after the queue drained.</summary>
    public sealed record Closing(OpenPartition? Draining) : PartitionState
    {
        /// <inheritdoc />
        public override OpenPartition? Open => Draining;
    }
}
