using DEngine.Client;
using DEngine.Orleans.Hosting;
using Microsoft.Extensions.DependencyInjection;
using Orleans;
using Orleans.Configuration;
using Orleans.TestingHost;
using static DEngine.Orleans.Tests.Keys;

namespace DEngine.Orleans.Tests;

/// <summary>
/// What a DEngineClient caller sees when a partition's answer outlasts the client's response timeout
/// (as during a replica group's takeover, when the new primary waits out the old lease before it
/// serves): a read is sent again and returns the value; so is a write, under its session (applied at
/// most once, see Sessions/ExactlyOnceWriteTests).
/// </summary>
public sealed class ClientTimeoutTests(ClientTimeoutFixture fixture) : IClassFixture<ClientTimeoutFixture>
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(60);

    [Fact]
    public async Task A_read_whose_response_timed_out_is_sent_again_and_returns_the_value()
    {
        var key = InPartition(1, "timeout-read");
        await fixture.PutSurelyAsync(key, B("v1"));
        fixture.Held.Hold(nameof(IStateMachineGrain.Get), key);

        // The first Get is held until the client sends it again (after its response timeout).
        var value = await fixture.Client.GetAsync(key).WaitAsync(Bound);

        Assert.Equal("v1", S(value));
        Assert.Equal(2, fixture.Held.Arrived);
    }

    /// <summary>
    /// Orleans fails a call whose message expired before its grain was placed (a partition taking over
    /// on a loaded silo) with an OperationCanceledException the caller did not ask for: for a read, a
    /// timeout like any other, sent again (it reached a caller in CI: the client did not retry it).
    /// </summary>
    [Fact]
    public async Task A_read_the_runtime_dropped_before_placement_is_sent_again_and_returns_the_value()
    {
        var key = InPartition(3, "dropped-read");
        await fixture.PutSurelyAsync(key, B("v1"));
        fixture.Held.FailOnce(nameof(IStateMachineGrain.Get), key, new OperationCanceledException("Message expired before placement could complete for grain statemachine/3."));

        var value = await fixture.Client.GetAsync(key).WaitAsync(Bound);

        Assert.Equal("v1", S(value));
        Assert.Equal(2, fixture.Held.Arrived);
    }

    [Fact]
    public async Task A_write_whose_response_timed_out_is_sent_again_under_its_session_and_answered()
    {
        var key = InPartition(2, "timeout-write");
        fixture.Held.Hold(nameof(IStateMachineGrain.PutInSession), key);

        // The first Put is held until the client sends it again (after its response timeout) with the
        // same (session, sequence); whichever of the two is sequenced second is answered from the
        // session's record, so the caller gets the one answer instead of a TimeoutException.
        await fixture.Client.PutAsync(key, B("v1")).WaitAsync(Bound);

        Assert.Equal(2, fixture.Held.Arrived);
        Assert.Equal("v1", S(await fixture.Client.GetAsync(key)));
    }
}

/// <summary>
/// One silo (a single copy per partition, DEngine:Replication:Factor 1: the client's behaviour does
/// not depend on it) whose chosen calls can be held, and a client with a 2 s response timeout. Every
/// partition is activated first, so a held call is the only one that can time out.
/// </summary>
public sealed class ClientTimeoutFixture : IAsyncLifetime
{
    public string Root { get; } = Path.Combine(Path.GetTempPath(), "dengine-timeout-" + Guid.NewGuid().ToString("N"));

    public HeldCalls Held { get; } = new();

    public InProcessTestCluster Cluster { get; private set; } = null!;

    public DEngineClient Client { get; private set; } = null!;

    public async Task InitializeAsync()
    {
        Cluster = await DeployAsync(Root, Held, TimeSpan.FromSeconds(2), o => o.MaxRetries = 3);
        Client = Cluster.Client.ServiceProvider.GetRequiredService<DEngineClient>();
        // First activations on a loaded machine can outlast the short timeout: until every partition answered.
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(60);
        while (true)
        {
            try
            {
                await Client.GetStatusAsync();
                break;
            }
            catch (TimeoutException) when (DateTime.UtcNow < deadline)
            {
            }
        }
    }

    /// <summary>
    /// Deploys one silo (Factor 1) under <paramref name="root"/> whose calls <paramref name="held"/> can
    /// hold, and a client with <paramref name="responseTimeout"/> and the DEngine client options
    /// <paramref name="client"/>.
    /// </summary>
    internal static async Task<InProcessTestCluster> DeployAsync(string root, HeldCalls held, TimeSpan responseTimeout, Action<DEngineClientOptions> client)
    {
        var builder = new InProcessTestClusterBuilder(1);
        builder.ConfigureSilo((siloOptions, silo) =>
        {
            silo.AddDEngine(o =>
            {
                o.DataRoot = Path.Combine(root, siloOptions.SiloName);
                o.Partitions = ClusterFixture.Partitions;
                o.WriteBufferMiB = 4;
                o.BlockCacheMiB = 8;
                o.Replication.Factor = 1;
            });
            silo.AddIncomingGrainCallFilter(held);
        });
        builder.ConfigureClient(c => c
            .Configure<ClientMessagingOptions>(o => o.ResponseTimeout = responseTimeout)
            .AddDEngineClient(client));
        var cluster = builder.Build();
        await cluster.DeployAsync();
        return cluster;
    }

    /// <summary>Puts a value, repeating the same Put when its answer timed out (here only while the machine is loaded); for setting up a test.</summary>
    public async Task PutSurelyAsync(byte[] key, byte[] value)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(60);
        while (true)
        {
            try
            {
                await Client.PutAsync(key, value);
                return;
            }
            catch (TimeoutException) when (DateTime.UtcNow < deadline)
            {
            }
        }
    }

    public async Task DisposeAsync()
    {
        Held.Release();
        await Cluster.DisposeAsync();
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
/// Holds the first call of one method for one key until that call arrives a second time (its caller
/// gave up on the first and sent it again) or until <see cref="Release"/>; counts the arrivals.
/// </summary>
public sealed class HeldCalls : IIncomingGrainCallFilter
{
    private readonly Lock _gate = new();
    private string? _method;
    private byte[]? _key;
    private TaskCompletionSource _held = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private Exception? _failWith;
    private int _arrived;

    /// <summary>Calls of <paramref name="method"/> for <paramref name="key"/> that arrived since <see cref="Hold"/>.</summary>
    public int Arrived
    {
        get
        {
            lock (_gate)
            {
                return _arrived;
            }
        }
    }

    /// <summary>Holds the next call of <paramref name="method"/> for <paramref name="key"/>.</summary>
    public void Hold(string method, byte[] key)
    {
        lock (_gate)
        {
            _held.TrySetResult();
            _held = new(TaskCreationOptions.RunContinuationsAsynchronously);
            (_method, _key, _arrived, _failWith) = (method, key, 0, null);
        }
    }

    /// <summary>Fails the next call of <paramref name="method"/> for <paramref name="key"/> with <paramref name="error"/> (before it runs); later ones go through.</summary>
    public void FailOnce(string method, byte[] key, Exception error)
    {
        lock (_gate)
        {
            _held.TrySetResult();
            (_method, _key, _arrived, _failWith) = (method, key, 0, error);
        }
    }

    /// <summary>Lets the held call go on.</summary>
    public void Release()
    {
        lock (_gate)
        {
            _held.TrySetResult();
        }
    }

    /// <inheritdoc />
    public async Task Invoke(IIncomingGrainCallContext context)
    {
        Task? wait = null;
        if (context.Request.GetArgumentCount() > 0 && context.Request.GetArgument(0) is byte[] key)
        {
            lock (_gate)
            {
                if (context.MethodName == _method && _key is not null && key.AsSpan().SequenceEqual(_key))
                {
                    _arrived++;
                    if (_arrived == 1 && _failWith is { } error)
                    {
                        throw error;
                    }
                    if (_arrived == 1)
                    {
                        wait = _held.Task;
                    }
                    else
                    {
                        _held.TrySetResult();
                    }
                }
            }
        }
        if (wait is not null)
        {
            await wait;
        }
        await context.Invoke();
    }
}
