using System.Diagnostics.Metrics;
using DEngine.Client;
using DEngine.Orleans.Hosting;
using DEngine.Orleans.Ownership;
using DEngine.Orleans.Storage;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;
using Microsoft.Extensions.Time.Testing;
using Orleans;
using Orleans.Storage;
using Orleans.TestingHost;

namespace DEngine.Orleans.Tests;

/// <summary>
/// A one-silo in-process cluster whose DEngine clock is a <see cref="FakeTimeProvider"/> (Orleans keeps
/// the real one) and whose WAL sync rounds can be held by <see cref="Gate"/>. Data root and ownership
/// storage can be handed to a second instance, to restart "the same" partition with other settings.
/// One silo runs with a single copy per partition (DEngine:Replication:Factor 1), as a one-silo
/// deployment must: with the default Factor 3 its floor of 2 replicas refuses every write.
/// </summary>
public sealed class OneSiloCluster : IAsyncDisposable
{
    private OneSiloCluster(InProcessTestCluster cluster, FakeTimeProvider clock, string root, SharedGrainStorage ownership)
    {
        Cluster = cluster;
        Clock = clock;
        Root = root;
        Ownership = ownership;
        var silo = (InProcessSiloHandle)cluster.Silos[0];
        Gate = new SyncGate(silo.SiloHost.Services.GetRequiredService<WalSyncLoop>());
    }

    public InProcessTestCluster Cluster { get; }

    public FakeTimeProvider Clock { get; }

    public string Root { get; }

    public SharedGrainStorage Ownership { get; }

    public SyncGate Gate { get; }

    public IGrainFactory Grains => Cluster.Client;

    public static async Task<OneSiloCluster> StartAsync(Action<DEngineOptions>? configure = null, FakeTimeProvider? clock = null, string? root = null, SharedGrainStorage? ownership = null)
    {
        clock ??= new FakeTimeProvider(DateTimeOffset.UtcNow);
        root ??= Path.Combine(Path.GetTempPath(), "dengine-one-" + Guid.NewGuid().ToString("N"));
        ownership ??= new SharedGrainStorage();
        var builder = new InProcessTestClusterBuilder(1);
        builder.ConfigureSilo((siloOptions, silo) =>
        {
            silo.Services.AddKeyedSingleton<IGrainStorage>(PartitionOwnerGrain.StorageName, ownership);
            // Registered before AddDEngine (which only adds a PartitionStore when none is): DEngine's
            // TTL clock is the fake one, Orleans' timers keep real time.
            silo.Services.AddSingleton(sp => new PartitionStore(sp.GetRequiredService<IOptions<DEngineOptions>>(), clock, sp.GetRequiredService<IMeterFactory>()));
            silo.AddDEngine(o =>
            {
                o.DataRoot = Path.Combine(root, siloOptions.SiloName);
                o.Partitions = ClusterFixture.Partitions;
                o.WriteBufferMiB = 4;
                o.BlockCacheMiB = 8;
                o.Replication.Factor = 1;
                configure?.Invoke(o);
            });
        });
        builder.ConfigureClient(client => client.AddDEngineClient());
        var cluster = builder.Build();
        await cluster.DeployAsync();
        return new OneSiloCluster(cluster, clock, root, ownership);
    }

    /// <summary>Stops the cluster, keeping the data directory (for a restart).</summary>
    public async Task StopAsync()
    {
        Gate.Open();
        await Cluster.DisposeAsync();
    }

    public async ValueTask DisposeAsync()
    {
        await StopAsync();
        try
        {
            Directory.Delete(Root, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}

/// <summary>
/// Holds the silo's WAL sync rounds (the test seam <see cref="WalSyncLoop.BeforeRound"/>): while held,
/// a chunk is applied but not synced, so its writers wait and its data is not durable. Bounded: a held
/// round gives up after 60 s, so a failing test cannot hang the silo.
/// </summary>
public sealed class SyncGate
{
    private readonly object _lock = new();
    private SemaphoreSlim? _held;
    private int _waiting;

    public SyncGate(WalSyncLoop loop) => loop.BeforeRound = BeforeRound;

    /// <summary>Rounds that reached the gate while it was held (each is one chunk's sync, or more).</summary>
    public int Waiting => Volatile.Read(ref _waiting);

    /// <summary>From now on every sync round waits.</summary>
    public void Hold()
    {
        lock (_lock)
        {
            _held ??= new SemaphoreSlim(0);
            _waiting = 0;
        }
    }

    /// <summary>Lets <paramref name="rounds"/> held rounds through; the gate stays held for later ones.</summary>
    public void Pass(int rounds = 1)
    {
        lock (_lock)
        {
            _held?.Release(rounds);
        }
    }

    /// <summary>Lets everything through, now and later.</summary>
    public void Open()
    {
        lock (_lock)
        {
            _held?.Release(1000);
            _held = null;
        }
    }

    /// <summary>Polls until <paramref name="rounds"/> rounds wait at the gate (a chunk applied, its sync held).</summary>
    public async Task WaitForHeldRoundsAsync(int rounds)
    {
        var deadline = DateTime.UtcNow.AddSeconds(20);
        while (Waiting < rounds)
        {
            if (DateTime.UtcNow > deadline)
            {
                throw new TimeoutException($"{Waiting} sync rounds reached the gate within 20 s, expected {rounds}.");
            }
            await Task.Delay(10);
        }
    }

    private void BeforeRound()
    {
        SemaphoreSlim? held;
        lock (_lock)
        {
            held = _held;
            if (held is not null)
            {
                _waiting++;
            }
        }
        held?.Wait(TimeSpan.FromSeconds(60));
    }
}
