using DEngine.Client;
using Microsoft.Extensions.Time.Testing;
using Orleans.TestingHost;
using static DEngine.Orleans.Tests.Keys;

namespace DEngine.Orleans.Tests;

/// <summary>
/// A write whose answer never comes back (a gateway that stops while the write is in flight drops
/// the response; a paused silo) is sent again after the client's attempt timeout, not after the
/// Orleans response timeout (60 s here), under the same (session, sequence), and answered once.
/// The attempt timeout runs on the client's clock: the test moves a fake one.
/// </summary>
public sealed class AttemptTimeoutTests(AttemptTimeoutFixture fixture) : IClassFixture<AttemptTimeoutFixture>
{
    // Well under the cluster client's 60 s response timeout: without the attempt timeout the held
    // write is not sent again within it.
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(30);

    [Fact]
    public async Task A_write_left_unanswered_is_sent_again_after_the_attempt_timeout_under_its_session_and_applied_once()
    {
        var clock = new FakeTimeProvider(DateTimeOffset.UtcNow);
        var client = new DEngineClient(fixture.Cluster.Client, new DEngineClientOptions { TimeProvider = clock, AttemptTimeout = TimeSpan.FromSeconds(1) });
        var key = InPartition(3, "attempt-timeout");
        fixture.Held.Hold(nameof(IStateMachineGrain.CompareAndSwapInSession), key);

        // A CAS from "absent" to v1: applied twice, the second would answer false.
        var put = client.CompareAndSwapAsync(key, null, B("v1"));
        await Poll.UntilAsync(() => Task.FromResult(fixture.Held.Arrived == 1), Bound, "the first attempt reaches the partition");
        Assert.False(put.IsCompleted);

        // Move the client's clock past the attempt timeout (and the backoff after it) until the
        // write is sent again; the second arrival releases the held first one.
        var deadline = DateTime.UtcNow + Bound;
        while (!put.IsCompleted && DateTime.UtcNow < deadline)
        {
            clock.Advance(TimeSpan.FromMilliseconds(100));
            await Task.Delay(20);
        }
        var swapped = await put.WaitAsync(Bound);

        Assert.True(swapped, "the CAS answered false: a copy of it was applied a second time");
        Assert.Equal(2, fixture.Held.Arrived);
        Assert.Equal("v1", S(await client.GetAsync(key)));
    }

    [Fact]
    public async Task A_call_deadline_shorter_than_the_attempt_timeout_bounds_only_the_retries_the_first_attempt_is_answered()
    {
        // One attempt, as the cluster tests' load clients use: the deadline is spent before the call.
        var client = new DEngineClient(fixture.Cluster.Client, new DEngineClientOptions { MaxRetries = 0, CallDeadline = TimeSpan.FromTicks(1) });
        var key = InPartition(4, "one-attempt");

        await client.PutAsync(key, B("v1")).WaitAsync(Bound);

        Assert.Equal("v1", S(await client.GetAsync(key)));
    }

    [Fact]
    public void A_client_with_a_non_positive_attempt_timeout_is_refused_with_InvalidArgument()
    {
        var ex = Assert.Throws<DEngineException>(() => new DEngineClient(fixture.Cluster.Client, new DEngineClientOptions { AttemptTimeout = TimeSpan.Zero }));
        Assert.Equal(DEngineErrorCode.InvalidArgument, ex.Code);
    }
}

/// <summary>One silo whose chosen calls can be held; its client's Orleans response timeout is 60 s.</summary>
public sealed class AttemptTimeoutFixture : IAsyncLifetime
{
    public string Root { get; } = Path.Combine(Path.GetTempPath(), "dengine-attempt-" + Guid.NewGuid().ToString("N"));

    public HeldCalls Held { get; } = new();

    public InProcessTestCluster Cluster { get; private set; } = null!;

    public async Task InitializeAsync()
    {
        Cluster = await ClientTimeoutFixture.DeployAsync(Root, Held, TimeSpan.FromSeconds(60), _ => { });
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
