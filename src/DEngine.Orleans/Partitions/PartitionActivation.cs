using DEngine.Orleans.Ownership;
using DEngine.Orleans.Snapshots;
using DEngine.Orleans.Storage;
using DEngine.StateMachine;
using Microsoft.Extensions.Logging;
using Orleans;
using Orleans.Runtime;

namespace DEngine.Orleans.Partitions;

/// <summary>
/// What a partition activation does before it serves: reads the ownership record, finds the newest
/// copy when the record is missing, takes the data over from the silo that holds it (see
/// <see cref="PartitionTakeover"/>) or opens the local copy and claims ownership with a higher epoch.
/// It never serves empty or stale data as current: every path that cannot prove the data current
/// ends <see cref="PartitionState.Unavailable"/>.
/// </summary>
/// <param name="partition">The partition.</param>
/// <param name="identity">This silo's stable identity for ownership (its configured name).</param>
/// <param name="options">DEngine options.</param>
/// <param name="store">Where the partition's database is opened.</param>
/// <param name="grains">Grain factory (ownership record, holders, snapshot servers).</param>
/// <param name="members">Which silos are alive.</param>
/// <param name="time">The clock deadlines and pauses use.</param>
/// <param name="logger">The partition grain's logger.</param>
public sealed partial class PartitionActivation(
    int partition,
    string identity,
    DEngineOptions options,
    PartitionStore store,
    IGrainFactory grains,
    SiloMembers members,
    TimeProvider time,
    ILogger logger)
{
    /// <summary>The last transfer of the data to this silo, when this activation fetched it.</summary>
    public TransferReport? LastTransfer { get; private set; }

    /// <summary>
    /// Runs the activation. Returns <see cref="PartitionState.Serving"/> with the open database, or
    /// <see cref="PartitionState.Unavailable"/> (nothing left open). <paramref name="serve"/> runs once
    /// the database is current and owned, before this returns; when it throws, the database is closed
    /// again and the partition is unavailable.
    /// </summary>
    public async Task<PartitionState> ActivateAsync(Action<OpenPartition> serve, CancellationToken cancellationToken)
    {
        if (RefuseEarly(partition, identity, options, members) is { } refused)
        {
            return refused;
        }
        var owner = grains.GetGrain<IPartitionOwnerGrain>(partition);
        OwnershipRecord record;
        try
        {
            record = await ReadOwnershipAsync(owner);
        }
        catch (TimeoutException ex)
        {
            // Nothing is served or applied without knowing the owner: answer retryably.
            return Unavailable(ex.Message);
        }
        if (record.OwnerSilo is null)
        {
            // A new partition, or one whose record was lost: never take it for new while a silo may
            // hold its data. The newest copy wins; if it is elsewhere, it is claimed for that silo and
            // fetched from there through the takeover below.
            try
            {
                var newest = await FindNewestCopyAsync();
                if (newest.Exists && newest.Silo != identity)
                {
                    record = await owner.Claim(newest.Silo, newest.Term + 1);
                    LogRecovered(logger, partition, newest.Silo, newest.Index, newest.Term);
                }
            }
            catch (Exception ex) when (ex is DEngineException or OrleansException or IOException or TimeoutException)
            {
                return Unavailable(ex is DEngineException known ? known.Detail : $"looking for the newest copy of its data failed ({ex.Message}). Retry.");
            }
        }
        if (record.OwnerSilo is not null && record.OwnerSilo != identity)
        {
            if (!members.IsReachable(record.OwnerSilo))
            {
                return Unavailable($"its data is on silo '{record.OwnerSilo}', which is down. Retry; it serves again when that silo is back.", record.OwnerSilo);
            }
            try
            {
                var takeover = new PartitionTakeover(partition, identity, store, grains, time, logger);
                var moved = await takeover.RunAsync(owner, record);
                LastTransfer = takeover.Report;
                try
                {
                    WarnIfClockBehind(moved.Engine);
                    serve(moved);
                }
                catch
                {
                    await CloseAsync(moved.Engine);
                    throw;
                }
                return new PartitionState.Serving(moved);
            }
            catch (Exception ex) when (ex is DEngineException or OrleansException or IOException or TimeoutException)
            {
                return Unavailable($"moving its data from silo '{record.OwnerSilo}' failed ({ex.Message}). Retry; the transfer resumes where it stopped.", record.OwnerSilo);
            }
        }
        try
        {
            // Registered before this silo first writes the partition's data (opening creates it).
            await grains.GetGrain<IPartitionHoldersGrain>(partition).Add(identity);
        }
        catch (Exception ex) when (ex is DEngineException or OrleansException or IOException or TimeoutException)
        {
            // Typically the record store (the primary's disk, or Redis) is unreachable or full.
            return Unavailable($"registering this silo as a holder of its data failed ({ex.Message}). Retry.");
        }
        IStateMachine engine;
        try
        {
            engine = await Task.Run(() => store.Open(partition), cancellationToken);
        }
        catch (DEngineException ex)
        {
            // Typically the previous activation on this silo still holds the RocksDB lock.
            return Unavailable($"its database could not be opened ({ex.Detail}). Retry shortly.");
        }
        try
        {
            record = await owner.Claim(identity, engine.LastApplied.Term + 1);
            if (record.OwnerSilo != identity)
            {
                await CloseAsync(engine);
                return Unavailable($"silo '{record.OwnerSilo}' claimed it first. Retry.", record.OwnerSilo);
            }
            var open = new OpenPartition(engine, record.Epoch);
            LogActivated(logger, partition, identity, open.Epoch, engine.LastApplied.Index);
            WarnIfClockBehind(engine);
            serve(open);
            return new PartitionState.Serving(open);
        }
        catch (Exception ex)
        {
            // Orleans does not call OnDeactivateAsync for an activation whose OnActivateAsync failed,
            // so the database would stay open and locked until the silo restarts: release it here.
            await CloseAsync(engine);
            return Unavailable($"claiming its ownership record failed ({ex.Message}). Retry.");
        }
    }

    /// <summary>
    /// The refusals that need no record: a partition id outside the cluster, or a silo that is leaving
    /// (a late message from a stale cached address must not pull the partition back onto it: the
    /// retry is placed on an active silo). Null when neither applies.
    /// </summary>
    public static PartitionState.Unavailable? RefuseEarly(int partition, string identity, DEngineOptions options, SiloMembers members)
    {
        if (partition < 0 || partition >= options.Partitions)
        {
            return new PartitionState.Unavailable(new DEngineException(DEngineErrorCode.InvalidArgument, $"Partition {partition} does not exist: the cluster has partitions 0..{options.Partitions - 1}.", partition));
        }
        if (members.IsLocalSiloLeaving)
        {
            return new PartitionState.Unavailable(new DEngineException(DEngineErrorCode.PartitionUnavailable, $"Partition {partition} is unavailable on silo '{identity}': this silo is shutting down. Retry.", partition));
        }
        return null;
    }

    private PartitionState.Unavailable Unavailable(string why, string? dataSilo = null) =>
        new(new DEngineException(DEngineErrorCode.PartitionUnavailable, $"Partition {partition} is unavailable on silo '{identity}': {why}", partition), dataSilo);

    private Task CloseAsync(IStateMachine engine) => Task.Run(() => store.Close(engine));

    /// <summary>
    /// Reads the ownership record, riding out a moment when its grain is moving (its silo stopping):
    /// the record is in shared storage and comes back on another silo. Gives up with a
    /// TimeoutException after 15 s.
    /// </summary>
    private async Task<OwnershipRecord> ReadOwnershipAsync(IPartitionOwnerGrain owner)
    {
        var delay = TimeSpan.FromMilliseconds(50);
        var deadline = time.GetUtcNow() + TimeSpan.FromSeconds(15);
        while (true)
        {
            try
            {
                return await owner.Get();
            }
            catch (Exception ex) when (ex is OrleansException or TimeoutException)
            {
                if (time.GetUtcNow() > deadline)
                {
                    throw new TimeoutException($"its ownership record could not be read for 15 s ({ex.Message}). Retry.", ex);
                }
                await Task.Delay(delay, time);
                delay = TimeSpan.FromTicks(Math.Min(delay.Ticks * 2, TimeSpan.FromSeconds(1).Ticks));
            }
        }
    }

    /// <summary>
    /// Asks every live silo for its copy of the partition and returns the newest (ties keep the copy
    /// on this silo). Throws PartitionUnavailable while a silo registered as a holder is unreachable:
    /// it may have the newest data.
    /// </summary>
    private async Task<LocalCopy> FindNewestCopyAsync()
    {
        var holders = await grains.GetGrain<IPartitionHoldersGrain>(partition).Get();
        foreach (var holder in holders)
        {
            if (!members.IsReachable(holder))
            {
                throw new DEngineException(DEngineErrorCode.PartitionUnavailable, $"its ownership record is missing and silo '{holder}', which has held its data and may have the newest copy, is down. Retry; it serves again when that silo is back (or, if it is gone for good, after `dengine silo forget {holder}`).", partition);
            }
        }
        var silos = members.ReachableNames().Union(holders, StringComparer.Ordinal).ToArray();
        var copies = await Task.WhenAll(silos.Select(name => grains.GetGrain<ISnapshotServerGrain>(name).DescribeCopy(partition)));
        var newest = new LocalCopy(identity, false, 0, 0);
        foreach (var copy in copies.OrderBy(c => c.Silo == identity ? 0 : 1))
        {
            if (copy.Exists && (!newest.Exists || copy.IsNewerThan(newest)))
            {
                newest = copy;
            }
        }
        return newest;
    }

    /// <summary>The partition's data was stamped by a clock further ahead than DEngine:MaxClockSkew (the dengine.clock.skew gauge shows how far).</summary>
    private void WarnIfClockBehind(IStateMachine engine)
    {
        var now = TtlClock.NowUnixMs(store.Time);
        var floor = engine.TimeFloor;
        if (floor > now && floor - now > (ulong)options.MaxClockSkew.TotalMilliseconds)
        {
            LogClockBehind(logger, partition, floor - now, options.MaxClockSkew);
        }
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Partition {Partition} had no ownership record; the newest copy of its data is on silo {Silo} (applied {Index}/{Term}), which is now its owner.")]
    private static partial void LogRecovered(ILogger logger, int partition, string silo, ulong index, ulong term);

    [LoggerMessage(Level = LogLevel.Information, Message = "Partition {Partition} activated on {Silo} with epoch {Epoch} at applied index {Applied}.")]
    private static partial void LogActivated(ILogger logger, int partition, string silo, ulong epoch, ulong applied);

    [LoggerMessage(Level = LogLevel.Warning, Message = "Partition {Partition}: its time floor (highest applied clock stamp) is {AheadMs} ms ahead of this silo's clock, beyond DEngine:MaxClockSkew ({MaxClockSkew}). Expiry is judged at clock + MaxClockSkew here, so keys stamped by the faster clock may reappear for up to the difference; check the silos' clocks (NTP).")]
    private static partial void LogClockBehind(ILogger logger, int partition, ulong aheadMs, TimeSpan maxClockSkew);
}
