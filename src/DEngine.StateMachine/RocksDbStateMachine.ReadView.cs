using RocksDbSharp;

namespace DEngine.StateMachine;

// The durable read view: with Synced durability every read (Get, GetMulti, ScanPrefix and its
// revision, TryGetExpiry) reads a RocksDB snapshot taken at an index known to be on stable storage,
// never the live state, which may hold chunks applied without fsync (group commit). A WAL sync
// fixes its view before the fsync and publishes it after the fsync succeeded (SyncAndPublish); a
// synced apply publishes its own. The sequencer acknowledges writes only after their sync returned,
// so a read never shows what a crash could take back and always shows every acknowledged write.
//
// Chosen over re-checking the durable index after each await (and looping): that read could
// starve under a steady write load, and every read would wait for an fsync; a view read waits for
// nothing. Relaxed durability has no view: its reads are live, as its writes are never synced
// before they are acknowledged.
//
// Lifetime: a view holds one reference for being published and one per read using it; the snapshot
// is released with the last. Reads and publishers take references only under the lifecycle read
// lock, and Close (under the write lock, so with no read in flight) drops the published one, so a
// snapshot is always released while its database is open.
public sealed partial class RocksDbStateMachine
{
    // Guarded by _viewGate.
    private ReadView? _view;

    private bool UsesReadViews => _options.Durability == DurabilityMode.Synced;

    /// <summary>The applied index the read view shows (reads never show more); for tests and diagnostics.</summary>
    internal ulong ReadViewIndex
    {
        get
        {
            lock (_viewGate)
            {
                return _view?.Index ?? ReadPosition().Index;
            }
        }
    }

    /// <summary>A snapshot of the live state now, with the applied index and time floor stored in it. Callers hold the lifecycle read lock.</summary>
    private ReadView TakeView()
    {
        var view = new ReadView(_db!.CreateSnapshot());
        try
        {
            view.Index = ReadU64(_db.Get(LastAppliedIndexKey, _meta, view.Options));
            view.TimeFloor = ReadU64(_db.Get(TimeFloorKey, _meta, view.Options));
        }
        catch
        {
            view.Release();
            throw;
        }
        return view;
    }

    /// <summary>Makes <paramref name="view"/> (now durable) the read view unless a newer one is published already. Callers hold the lifecycle read lock.</summary>
    private void Publish(ReadView view)
    {
        ReadView? retired;
        lock (_viewGate)
        {
            if (_view is not null && _view.Index >= view.Index)
            {
                retired = view;
            }
            else
            {
                retired = _view;
                _view = view;
            }
        }
        retired?.Release();
        // After the view: whoever sees the index durable (and so acknowledges) finds it readable.
        AdvanceDurable(view.Index);
    }

    /// <summary>
    /// The state a read reads: the durable read view (Synced) or the live state (Relaxed; with
    /// <paramref name="consistent"/> through a snapshot taken now, for reads of several keys). Callers
    /// hold the lifecycle read lock until the scope is disposed.
    /// </summary>
    private ReadScope EnterReadView(bool consistent = false)
    {
        var clock = TtlClock.NowUnixMs(_options.TimeProvider);
        if (UsesReadViews)
        {
            ReadView view;
            lock (_viewGate)
            {
                view = _view!;
                view.Hold();
            }
            return new ReadScope(view, null, view.Options, view.Snapshot, Effective(clock, view.TimeFloor));
        }
        var now = Effective(clock, TimeFloor);
        if (!consistent)
        {
            return new ReadScope(null, null, PointReadOptions, null, now);
        }
        var snapshot = _db!.CreateSnapshot();
        return new ReadScope(null, snapshot, new ReadOptions().SetSnapshot(snapshot), snapshot, now);
    }

    /// <summary>A snapshot at a known applied index, shared by the reads that use it.</summary>
    private sealed class ReadView(Snapshot snapshot)
    {
        private int _references = 1;

        public Snapshot Snapshot { get; } = snapshot;

        /// <summary>Read options on <see cref="Snapshot"/>, shared by point reads (RocksDB does not modify them).</summary>
        public ReadOptions Options { get; } = new ReadOptions().SetSnapshot(snapshot);

        public ulong Index { get; set; }

        public ulong TimeFloor { get; set; }

        public void Hold() => Interlocked.Increment(ref _references);

        public void Release()
        {
            if (Interlocked.Decrement(ref _references) == 0)
            {
                Snapshot.Dispose();
            }
        }
    }

    /// <summary>One read's hold on what it reads, and the instant it judges expiry at (one clock read).</summary>
    private readonly struct ReadScope(ReadView? view, Snapshot? own, ReadOptions options, Snapshot? snapshot, ulong nowUnixMs) : IDisposable
    {
        public ReadOptions Options { get; } = options;

        /// <summary>The snapshot read (null for a live point read).</summary>
        public Snapshot? Snapshot { get; } = snapshot;

        public ulong NowUnixMs { get; } = nowUnixMs;

        public void Dispose()
        {
            view?.Release();
            own?.Dispose();
            // The options must outlive every native call that used them (their finalizer frees them).
            GC.KeepAlive(Options);
        }
    }
}
