using DEngine.Orleans;

namespace DEngine.Client;

/// <summary>
/// The client of a DEngine cluster: routes each key to its partition grain (see
/// <see cref="KeyRouting"/>), fans multi-key operations out per partition, retries what may be
/// retried and throws <see cref="DEngineException"/> otherwise. Writes are exactly-once: each client
/// has a session and numbers its writes, so a write sent again is applied at most once and answered
/// with the first answer. Thread-safe; create one per application (one session per instance).
/// </summary>
/// <remarks>
/// <para>
/// Writes (Put, Delete, CompareAndSwap) are retried under the same (session, sequence), with
/// exponential backoff, until they are answered or <see cref="DEngineClientOptions.CallDeadline"/>
/// (30 s) passes — on every error after which the write may not have been applied: a response
/// timeout, a dead gateway or silo (an Orleans message rejection or connection error), OutcomeUnknown,
/// a failover (NotServing, StaleEpoch, PartitionUnavailable) and Overloaded. A retried write that had
/// been applied returns the recorded answer: the same index, and for a CAS that matched, true.
/// </para>
/// <para>
/// What still reaches the caller of a write, and what it means:
/// a <see cref="TimeoutException"/> — not answered within the deadline; it may have been applied
/// (read the key to learn what happened); a retryable <see cref="DEngineException"/> (NotServing,
/// PartitionUnavailable, StaleEpoch, Overloaded) — every attempt until the deadline was refused
/// before it was sequenced: not applied; OutcomeUnknown — the partition ended this client's session
/// while the write was being retried after an attempt that may have been applied (only a client
/// that retried one write longer than DEngine:SessionTimeout can see it): read the key; LateDuplicate
/// — a copy of a write the client had already given up on: refused, not applied; InvalidArgument,
/// TooLarge, FeatureNotEnabled — the request itself is wrong: not applied. SessionExpired does not
/// reach the caller: when a partition no longer knows the session (idle longer than
/// DEngine:SessionTimeout), the client continues there under a new session and sends the write
/// again, because a write refused that way was not applied in any attempt (if an earlier attempt may
/// have been, the caller gets OutcomeUnknown instead). Other partitions keep their session.
/// </para>
/// <para>
/// Reads (Get, GetMulti, ScanPrefix, GetTtl, status, snapshot lists) are retried at most
/// <see cref="DEngineClientOptions.MaxRetries"/> times, on a retryable <see cref="DEngineException"/>,
/// an Orleans message rejection, and a <see cref="TimeoutException"/> (also Orleans' "message expired
/// before placement", an <see cref="OperationCanceledException"/> the caller's token did not cause;
/// it reaches the caller as a <see cref="TimeoutException"/>): a read changes nothing, and its
/// answer can take longer than a response timeout while a new primary of a replica group waits out
/// the old one's lease before it serves (LeaseDuration × (1 + MaxClockDrift), 4.2 s by default).
/// </para>
/// <para>
/// Writes through <see cref="IStateMachineGrain"/> directly (Put, Delete, CompareAndSwap without a
/// session), and later front doors' clients that send no session, are at-most-once: such a write whose
/// answer is lost has an unknown outcome, and sending it again may apply it twice.
/// </para>
/// </remarks>
public sealed partial class DEngineClient
{
    private readonly IGrainFactory _grains;
    private readonly DEngineClientOptions _options;
    private Task<int>? _partitions;

    /// <summary>Creates a client over an Orleans grain factory (an <c>IClusterClient</c>, or a silo's own factory).</summary>
    public DEngineClient(IGrainFactory grains, DEngineClientOptions? options = null)
    {
        _grains = grains ?? throw new ArgumentNullException(nameof(grains));
        _options = options ?? new DEngineClientOptions();
        if (_options.CallDeadline <= TimeSpan.Zero)
        {
            throw new DEngineException(DEngineErrorCode.InvalidArgument, $"DEngineClientOptions.{nameof(DEngineClientOptions.CallDeadline)} must be positive (was {_options.CallDeadline}).");
        }
        if (_options.AttemptTimeout <= TimeSpan.Zero)
        {
            throw new DEngineException(DEngineErrorCode.InvalidArgument, $"DEngineClientOptions.{nameof(DEngineClientOptions.AttemptTimeout)} must be positive (was {_options.AttemptTimeout}).");
        }
    }

    /// <summary>The cluster's partition count, read from the cluster once and cached.</summary>
    public Task<int> GetPartitionCountAsync()
    {
        var known = _partitions;
        if (known is { IsCompletedSuccessfully: true })
        {
            return known;
        }
        return _partitions = FetchPartitionCountAsync();
    }

    private async Task<int> FetchPartitionCountAsync()
    {
        var info = await _grains.GetGrain<IClusterInfoGrain>(0).GetInfo();
        return info.Partitions;
    }

    /// <summary>The partition that holds <paramref name="key"/>.</summary>
    public async Task<int> PartitionOfAsync(byte[] key)
    {
        var partitions = await GetPartitionCountAsync();
        return KeyRouting.PartitionOf(key, partitions);
    }

    /// <summary>Stores a value; with <paramref name="ttlSeconds"/> &gt; 0 the key expires that many seconds from now. Returns once durable (exactly once, see the remarks).</summary>
    public Task PutAsync(byte[] key, byte[] value, ulong ttlSeconds = 0, CancellationToken cancellationToken = default) =>
        PutIndexAsync(key, value, ttlSeconds, cancellationToken);

    /// <summary>As <see cref="PutAsync"/>, and returns the log index of the write (a retried write that had been applied returns the index of its first apply).</summary>
    public Task<ulong> PutIndexAsync(byte[] key, byte[] value, ulong ttlSeconds = 0, CancellationToken cancellationToken = default) =>
        WriteAsync(key, (value, ttlSeconds), static (grain, key, args, session) => grain.PutInSession(key, args.value, args.ttlSeconds, session), cancellationToken);

    /// <summary>The value of <paramref name="key"/>, or null when absent.</summary>
    public Task<byte[]?> GetAsync(byte[] key, CancellationToken cancellationToken = default) =>
        CallAsync(key, 0, static (grain, key, _) => grain.Get(key), read: true, cancellationToken);

    /// <summary>Deletes <paramref name="key"/>; deleting an absent key is not an error.</summary>
    public Task DeleteAsync(byte[] key, CancellationToken cancellationToken = default) =>
        WriteAsync(key, 0, static (grain, key, _, session) => grain.DeleteInSession(key, session), cancellationToken);

    /// <summary>Writes <paramref name="newValue"/> if the value equals <paramref name="expected"/> (null = absent). Returns whether it did (a retried CAS that had matched returns true).</summary>
    public Task<bool> CompareAndSwapAsync(byte[] key, byte[]? expected, byte[] newValue, CancellationToken cancellationToken = default) =>
        WriteAsync(key, (expected, newValue), static (grain, key, args, session) => grain.CompareAndSwapInSession(key, args.expected, args.newValue, session), cancellationToken);

    /// <summary>The TTL state of <paramref name="key"/>.</summary>
    public Task<KeyTtl> GetTtlAsync(byte[] key, CancellationToken cancellationToken = default) =>
        CallAsync(key, 0, static (grain, key, _) => grain.GetTtl(key), read: true, cancellationToken);

    /// <summary>Values of <paramref name="keys"/> in request order (null = absent); one consistent read per partition.</summary>
    public async Task<IReadOnlyList<byte[]?>> GetMultiAsync(IReadOnlyList<byte[]> keys, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(keys);
        var partitions = await GetPartitionCountAsync();
        var byPartition = new Dictionary<int, List<int>>();
        for (var i = 0; i < keys.Count; i++)
        {
            var p = KeyRouting.PartitionOf(keys[i], partitions);
            if (!byPartition.TryGetValue(p, out var positions))
            {
                byPartition[p] = positions = [];
            }
            positions.Add(i);
        }
        var results = new byte[]?[keys.Count];
        await Task.WhenAll(byPartition.Select(async pair =>
        {
            var partKeys = pair.Value.Select(i => keys[i]).ToArray();
            var grain = _grains.GetGrain<IStateMachineGrain>(pair.Key);
            var values = await RetryAsync(() => grain.GetMulti(partKeys), read: true, cancellationToken);
            for (var j = 0; j < values.Length; j++)
            {
                results[pair.Value[j]] = values[j];
            }
        }));
        return results;
    }

    /// <summary>Every live entry whose key starts with <paramref name="prefix"/>, merged across partitions in key order.</summary>
    public async Task<ClusterScanResult> ScanPrefixAsync(byte[] prefix, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(prefix);
        var partitions = await GetPartitionCountAsync();
        var scans = await Task.WhenAll(Enumerable.Range(0, partitions).Select(p =>
        {
            var grain = _grains.GetGrain<IStateMachineGrain>(p);
            return RetryAsync(() => grain.ScanPrefix(prefix), read: true, cancellationToken);
        }));
        var entries = new List<KeyValuePair<byte[], byte[]>>();
        var revisions = new ulong[partitions];
        for (var p = 0; p < scans.Length; p++)
        {
            revisions[p] = scans[p].Revision;
            foreach (var e in scans[p].Entries)
            {
                entries.Add(new(e.Key.ToByteArray(), e.Value.ToByteArray()));
            }
        }
        entries.Sort(static (a, b) => a.Key.AsSpan().SequenceCompareTo(b.Key));
        return new ClusterScanResult(entries, revisions);
    }

    /// <summary>Status of every partition, in partition order.</summary>
    public async Task<IReadOnlyList<PartitionStatus>> GetStatusAsync(CancellationToken cancellationToken = default)
    {
        var partitions = await GetPartitionCountAsync();
        return await Task.WhenAll(Enumerable.Range(0, partitions).Select(p =>
        {
            var grain = _grains.GetGrain<IStateMachineGrain>(p);
            return RetryAsync(() => grain.GetStatus(), read: true, cancellationToken);
        }));
    }

    /// <summary>Status of partition <paramref name="partition"/>.</summary>
    public async Task<PartitionStatus> GetPartitionStatusAsync(int partition, CancellationToken cancellationToken = default)
    {
        var grain = await PartitionGrainAsync(partition);
        return await RetryAsync(() => grain.GetStatus(), read: true, cancellationToken);
    }

    /// <summary>Takes a snapshot of <paramref name="partition"/> now.</summary>
    public async Task<SnapshotSummary> CreateSnapshotAsync(int partition, CancellationToken cancellationToken = default)
    {
        var grain = await PartitionGrainAsync(partition);
        return await RetryAsync(() => grain.CreateSnapshot(), read: false, cancellationToken);
    }

    /// <summary>The snapshots <paramref name="partition"/> keeps, oldest first.</summary>
    public async Task<SnapshotSummary[]> ListSnapshotsAsync(int partition, CancellationToken cancellationToken = default)
    {
        var grain = await PartitionGrainAsync(partition);
        return await RetryAsync(() => grain.ListSnapshots(), read: true, cancellationToken);
    }

    /// <summary>
    /// Moves <paramref name="partition"/> to the silo named <paramref name="siloName"/> and waits until
    /// it serves there (or <paramref name="timeout"/> passes). <paramref name="progress"/> hears the
    /// elapsed time while it waits. Returns the partition's status on the new silo.
    /// </summary>
    public async Task<PartitionStatus> MovePartitionAsync(int partition, string siloName, TimeSpan timeout, IProgress<TimeSpan>? progress = null, CancellationToken cancellationToken = default)
    {
        var grain = await PartitionGrainAsync(partition);
        await RetryAsync(async () =>
        {
            await grain.MoveTo(siloName);
            return true;
        }, read: false, cancellationToken);
        var started = _options.TimeProvider.GetTimestamp();
        while (true)
        {
            var elapsed = _options.TimeProvider.GetElapsedTime(started);
            try
            {
                var status = await grain.GetStatus();
                if (status.Silo.StartsWith(siloName + " ", StringComparison.Ordinal))
                {
                    return status;
                }
            }
            catch (Exception ex) when (IsRetryable(ex, read: true, cancellationToken))
            {
                // Moving: the new activation is fetching the data (or, in a replica group, waiting out the old primary's lease).
            }
            if (elapsed > timeout)
            {
                throw new DEngineException(DEngineErrorCode.PartitionUnavailable, $"Partition {partition} did not arrive on silo '{siloName}' within {timeout.TotalSeconds:0} s; it keeps moving in the background. Check `dengine status`.", partition);
            }
            progress?.Report(elapsed);
            await Task.Delay(TimeSpan.FromMilliseconds(250), _options.TimeProvider, cancellationToken);
        }
    }

    /// <summary>
    /// Forgets the silo named <paramref name="siloName"/>, which is gone for good: it leaves every
    /// partition's holders registry, and the partitions it owned are served from the newest remaining
    /// copy. Refused (InvalidArgument) while a silo of that name is in the cluster. Not retried: an
    /// operator reruns it (it is idempotent).
    /// </summary>
    public Task<ForgetReport> ForgetSiloAsync(string siloName, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(siloName);
        cancellationToken.ThrowIfCancellationRequested();
        return _grains.GetGrain<IRecordsAdminGrain>(0).ForgetSilo(siloName);
    }

    /// <summary>The replica set of replicated partition <paramref name="partition"/>, as its primary sees it.</summary>
    public async Task<ReplicaSetStatus> GetReplicaSetAsync(int partition, CancellationToken cancellationToken = default)
    {
        var grain = await PartitionGrainAsync(partition);
        return await RetryAsync(() => grain.GetReplicaSet(), read: true, cancellationToken);
    }

    /// <summary>
    /// Moves the replica of <paramref name="partition"/> on silo <paramref name="fromSilo"/> to silo
    /// <paramref name="toSilo"/> and waits until it is done (or <paramref name="timeout"/> passes): a
    /// copy is built on <paramref name="toSilo"/>, joins once caught up, then <paramref name="fromSilo"/>'s
    /// is dropped. When <paramref name="fromSilo"/> is the primary, the primary role is first handed to
    /// another replica. <paramref name="progress"/> hears what is being done. Returns the replica set after.
    /// </summary>
    /// <exception cref="DEngineException">
    /// InvalidArgument when <paramref name="fromSilo"/> holds no replica, or <paramref name="toSilo"/>
    /// already holds one, is not active or is draining; PartitionUnavailable when it did not finish in time.
    /// </exception>
    public async Task<ReplicaSetStatus> MoveReplicaAsync(int partition, string fromSilo, string toSilo, TimeSpan timeout, IProgress<string>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(fromSilo);
        ArgumentException.ThrowIfNullOrEmpty(toSilo);
        var grain = await PartitionGrainAsync(partition);
        var started = _options.TimeProvider.GetTimestamp();
        var set = await RetryAsync(() => grain.GetReplicaSet(), read: true, cancellationToken);
        if (!set.Holds(fromSilo))
        {
            throw new DEngineException(DEngineErrorCode.InvalidArgument, $"Silo '{fromSilo}' holds no replica of partition {partition} (replicas: {string.Join(", ", set.Replicas)}); nothing was changed.", partition);
        }
        if (set.Holds(toSilo))
        {
            throw new DEngineException(DEngineErrorCode.InvalidArgument, $"Silo '{toSilo}' already holds a replica of partition {partition} (replicas: {string.Join(", ", set.Replicas)}); nothing was changed.", partition);
        }
        if (set.Primary == fromSilo)
        {
            var other = set.Replicas.FirstOrDefault(r => r != fromSilo)
                ?? throw new DEngineException(DEngineErrorCode.InvalidArgument, $"Silo '{fromSilo}' holds the only replica of partition {partition}; nothing was changed.", partition);
            progress?.Report($"handing the primary role of partition {partition} from {fromSilo} to {other}");
            await MovePartitionAsync(partition, other, timeout, null, cancellationToken);
        }
        var last = "";
        while (true)
        {
            set = await RetryAsync(() => grain.GetReplicaSet(), read: true, cancellationToken);
            if (!set.Holds(fromSilo) && set.Holds(toSilo))
            {
                return set;
            }
            var moving = $"{fromSilo}->{toSilo}";
            if (set.Holds(fromSilo) && !set.Moves.Contains(moving))
            {
                // Not recorded yet, or recorded by a primary that has since changed: (re)request it.
                await RetryAsync(async () =>
                {
                    await grain.MoveReplica(fromSilo, toSilo);
                    return true;
                }, read: false, cancellationToken);
            }
            var now = DescribeMove(set, toSilo);
            if (now != last)
            {
                last = now;
                progress?.Report(now);
            }
            if (_options.TimeProvider.GetElapsedTime(started) > timeout)
            {
                throw new DEngineException(DEngineErrorCode.PartitionUnavailable, $"Moving the replica of partition {partition} from '{fromSilo}' to '{toSilo}' did not finish within {timeout.TotalSeconds:0} s ({now}); the primary keeps going while it runs. Check `dengine status`, run the command again to wait.", partition);
            }
            await Task.Delay(TimeSpan.FromMilliseconds(250), _options.TimeProvider, cancellationToken);
        }
    }

    /// <summary>
    /// Drains silo <paramref name="siloName"/>: marks it draining (durably: it gets no new replica and
    /// no primary role), hands each primary role it holds to another replica and lets each primary
    /// move its replica elsewhere; returns once it holds none (or throws PartitionUnavailable after
    /// <paramref name="timeout"/>; the drain goes on). <paramref name="progress"/> hears what remains.
    /// Returns the partitions that were moved off it.
    /// </summary>
    public async Task<IReadOnlyList<int>> DrainSiloAsync(string siloName, TimeSpan timeout, IProgress<string>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(siloName);
        await _grains.GetGrain<ISiloDrainGrain>(0).SetDraining(siloName, true);
        var partitions = await GetPartitionCountAsync();
        var started = _options.TimeProvider.GetTimestamp();
        var held = new SortedSet<int>();
        var last = "";
        while (true)
        {
            var sets = await Task.WhenAll(Enumerable.Range(0, partitions).Select(p =>
            {
                var grain = _grains.GetGrain<IStateMachineGrain>(p);
                return RetryAsync(() => grain.GetReplicaSet(), read: true, cancellationToken);
            }));
            var remaining = sets.Where(s => s.Holds(siloName)).ToArray();
            held.UnionWith(remaining.Select(s => s.Partition));
            if (remaining.Length == 0)
            {
                return [.. held];
            }
            foreach (var set in remaining.Where(s => s.Primary == siloName))
            {
                if (set.Replicas.FirstOrDefault(r => r != siloName) is { } other)
                {
                    try
                    {
                        await _grains.GetGrain<IStateMachineGrain>(set.Partition).MoveTo(other);
                    }
                    catch (Exception ex) when (IsRetryable(ex, read: true, cancellationToken))
                    {
                        // Moving already, or the configuration changed: the next round looks again.
                    }
                }
            }
            var now = $"draining {siloName}: {remaining.Length} partition(s) still on it: {string.Join("; ", remaining.Select(s => $"{s.Partition}{(s.Primary == siloName ? " (primary)" : "")}{(s.Learners.Length > 0 ? " building " + string.Join(", ", s.Learners) : "")}"))}";
            if (now != last)
            {
                last = now;
                progress?.Report(now);
            }
            if (_options.TimeProvider.GetElapsedTime(started) > timeout)
            {
                throw new DEngineException(DEngineErrorCode.PartitionUnavailable, $"Silo '{siloName}' still holds partitions {string.Join(",", remaining.Select(s => s.Partition))} after {timeout.TotalSeconds:0} s; the drain goes on. Run the command again to wait, or `dengine silo undrain {siloName}` to stop it.");
            }
            await Task.Delay(TimeSpan.FromMilliseconds(500), _options.TimeProvider, cancellationToken);
        }
    }

    /// <summary>Ends the drain of silo <paramref name="siloName"/>: it takes new replicas and primary roles again (nothing moves back by itself). Returns the silos still draining.</summary>
    public Task<string[]> UndrainSiloAsync(string siloName, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(siloName);
        cancellationToken.ThrowIfCancellationRequested();
        return _grains.GetGrain<ISiloDrainGrain>(0).SetDraining(siloName, false);
    }

    private static string DescribeMove(ReplicaSetStatus set, string toSilo)
    {
        var building = set.Learners.FirstOrDefault(l => l.StartsWith(toSilo + " ", StringComparison.Ordinal));
        return set.Holds(toSilo)
            ? $"{toSilo} joined (v{set.Version}); dropping the old replica"
            : building is not null ? $"building the replica on {building}" : $"waiting for the primary ({set.Primary}, v{set.Version}) to start the copy on {toSilo}";
    }

    private async Task<IStateMachineGrain> PartitionGrainAsync(int partition)
    {
        var partitions = await GetPartitionCountAsync();
        if (partition < 0 || partition >= partitions)
        {
            throw new DEngineException(DEngineErrorCode.InvalidArgument, $"Partition {partition} does not exist: the cluster has partitions 0..{partitions - 1}.");
        }
        return _grains.GetGrain<IStateMachineGrain>(partition);
    }

    /// <summary>The partition grains by partition, built once the partition count is known (grain references are immutable and thread-safe).</summary>
    private IStateMachineGrain[]? _byPartition;

    private IStateMachineGrain[] PartitionGrains(int partitions)
    {
        var known = Volatile.Read(ref _byPartition);
        if (known is not null && known.Length == partitions)
        {
            return known;
        }
        var grains = new IStateMachineGrain[partitions];
        for (var p = 0; p < partitions; p++)
        {
            grains[p] = _grains.GetGrain<IStateMachineGrain>(p);
        }
        Volatile.Write(ref _byPartition, grains);
        return grains;
    }

    private static Exception? InvalidKey(byte[] key) =>
        key is null ? new ArgumentNullException(nameof(key))
        : key.Length == 0 ? new DEngineException(DEngineErrorCode.InvalidArgument, "Keys must not be empty.")
        : null;

    /// <summary>
    /// One single-key call with retries. Once the partition count is known (after the first call) this
    /// neither allocates a closure nor runs an async method until the grain call is awaited: the grain
    /// reference comes from a cached array and the call's arguments travel as a struct.
    /// </summary>
    private Task<T> CallAsync<TArgs, T>(byte[] key, TArgs args, Func<IStateMachineGrain, byte[], TArgs, Task<T>> call, bool read, CancellationToken cancellationToken)
    {
        if (InvalidKey(key) is { } invalid)
        {
            return Task.FromException<T>(invalid);
        }
        var partitions = _partitions;
        if (partitions is not { IsCompletedSuccessfully: true })
        {
            return CallSlowAsync(key, args, call, read, cancellationToken);
        }
        var request = Request(partitions.Result, key, args, call);
        var first = Invoke(request, SingleKeyCall<TArgs, T>.Run);
        return first.IsCompletedSuccessfully ? first : RetryAsync(first, request, SingleKeyCall<TArgs, T>.Run, read, cancellationToken);
    }

    private async Task<T> CallSlowAsync<TArgs, T>(byte[] key, TArgs args, Func<IStateMachineGrain, byte[], TArgs, Task<T>> call, bool read, CancellationToken cancellationToken)
    {
        var partitions = await GetPartitionCountAsync();
        var request = Request(partitions, key, args, call);
        return await RetryAsync(Invoke(request, SingleKeyCall<TArgs, T>.Run), request, SingleKeyCall<TArgs, T>.Run, read, cancellationToken);
    }

    private SingleKeyCall<TArgs, T> Request<TArgs, T>(int partitions, byte[] key, TArgs args, Func<IStateMachineGrain, byte[], TArgs, Task<T>> call) =>
        new(PartitionGrains(partitions)[KeyRouting.PartitionOf(key, partitions)], key, args, call);

    /// <summary>A single-key grain call with its arguments, as a struct (no closure per call).</summary>
    private readonly record struct SingleKeyCall<TArgs, T>(IStateMachineGrain Grain, byte[] Key, TArgs Args, Func<IStateMachineGrain, byte[], TArgs, Task<T>> Call)
    {
        public static readonly Func<SingleKeyCall<TArgs, T>, Task<T>> Run = static c => c.Call(c.Grain, c.Key, c.Args);
    }

    private static Task<T> Invoke<TState, T>(TState state, Func<TState, Task<T>> call)
    {
        try
        {
            return call(state);
        }
        catch (Exception ex)
        {
            // A call that throws before returning a task is treated like one whose task failed.
            return Task.FromException<T>(ex);
        }
    }

    // Requests without a session (snapshots, moves) are retried only on errors that guarantee they
    // did not run: DEngine's retryable errors, and Orleans rejections (a silo refused to deliver the
    // message). Writes go through WriteAsync (sessions) instead. A read changes nothing: one whose
    // response timed out is sent again, and so is one Orleans dropped as "message expired before
    // placement" (an OperationCanceledException the caller's token did not cause).
    private static bool IsRetryable(Exception ex, bool read, CancellationToken cancellationToken) =>
        ex is DEngineException { IsRetryable: true } or OrleansMessageRejectionException
        || (read && (ex is TimeoutException || (ex is OperationCanceledException && !cancellationToken.IsCancellationRequested)));

    private Task<T> RetryAsync<T>(Func<Task<T>> call, bool read, CancellationToken cancellationToken) =>
        RetryAsync(Invoke(call, static c => c()), call, static c => c(), read, cancellationToken);

    /// <summary>
    /// Awaits <paramref name="first"/> (the first attempt, already started) and repeats
    /// <paramref name="call"/> with exponential backoff while it fails retryably, at most
    /// <see cref="DEngineClientOptions.MaxRetries"/> times. <paramref name="read"/>: the call changes
    /// nothing, so a timed-out attempt is retried too.
    /// </summary>
    private async Task<T> RetryAsync<TState, T>(Task<T> first, TState state, Func<TState, Task<T>> call, bool read, CancellationToken cancellationToken)
    {
        var delay = _options.InitialBackoff;
        var attempt = first;
        for (var retries = 0; ; retries++)
        {
            try
            {
                return await attempt;
            }
            catch (Exception ex) when (IsRetryable(ex, read, cancellationToken) && retries < _options.MaxRetries)
            {
                await Task.Delay(delay, _options.TimeProvider, cancellationToken);
                delay = TimeSpan.FromTicks(Math.Min(delay.Ticks * 2, _options.MaxBackoff.Ticks));
            }
            catch (OperationCanceledException ex) when (!cancellationToken.IsCancellationRequested)
            {
                // Orleans gave up on the message (it expired before placement): a timeout, not a cancellation by the caller.
                throw new TimeoutException($"The call was not answered: the Orleans runtime dropped it ({ex.Message}).{(read ? " A read changes nothing: retry." : "")}", ex);
            }
            attempt = Invoke(state, call);
        }
    }
}

/// <summary>The result of a prefix scan across all partitions.</summary>
/// <param name="Entries">Matching entries in key order.</param>
/// <param name="Revisions">Per partition, the applied index its part was read at.</param>
public sealed record ClusterScanResult(IReadOnlyList<KeyValuePair<byte[], byte[]>> Entries, IReadOnlyList<ulong> Revisions);
