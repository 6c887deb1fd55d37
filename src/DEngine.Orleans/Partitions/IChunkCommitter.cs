using DEngine.StateMachine;

namespace DEngine.Orleans.Partitions;

/// <summary>
/// The step after the <see cref="Sequencer"/> built a chunk: make it durable (today: apply it to the
/// local engine without fsync and wait for the silo's WAL sync; with replication: append it to the
/// log, ship it and wait for the commit rule) and give the per-entry results. The sequencer
/// acknowledges the chunk's writers when the returned task completes, and builds the next chunk only
/// after it completed, so the writes that arrive meanwhile gather into that next chunk (group commit).
/// </summary>
public interface IChunkCommitter
{
    /// <summary>
    /// Called in the partition's serial turn with a chunk built on <paramref name="partition"/>'s
    /// applied position (indexes applied + 1…, term = its epoch, commands stamped). Throws when the
    /// chunk is refused before any of it was written; otherwise the task completes with one result
    /// per entry once the chunk is durable, or faults with what the writers are told.
    /// </summary>
    Task<IReadOnlyList<ApplyResult>> Commit(OpenPartition partition, IReadOnlyList<ApplyEntry> chunk);

    /// <summary>The index the next chunk starts at (the local engine's applied index + 1; a replicated log's last sequenced + 1).</summary>
    ulong NextIndex(OpenPartition partition);

    /// <summary>
    /// Completes when the next chunk may be built, given the last one's <paramref name="lastCommit"/>:
    /// locally, once it is durable (one chunk in flight, the next gathers meanwhile); replicated, while
    /// fewer than <see cref="Configuration.ReplicationOptions.MaxChunksInFlight"/> chunks wait for their
    /// commit (default 1, as locally: on one disk larger chunks carry more writes per fsync).
    /// </summary>
    Task ReadyForNext(Task lastCommit);
}
