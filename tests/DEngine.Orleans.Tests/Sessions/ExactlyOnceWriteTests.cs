using DEngine.Client;
using DEngine.Orleans.Configuration;
using DEngine.Protos.Client;
using Google.Protobuf;
using static DEngine.Orleans.Tests.Keys;

namespace DEngine.Orleans.Tests.Sessions;

/// <summary>
/// Exactly-once writes on replica groups of three: a write whose response was lost is sent again by
/// the client under the same (session, sequence) and applied once, answered as the first time; an
/// idle session ends on every replica through the log, and its client continues under a new one.
/// </summary>
[Collection(SessionClusterCollection.Name)]
public sealed class ExactlyOnceWriteTests(SessionClusterFixture cluster)
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(60);

    private IStateMachineGrain Grain(int partition) => cluster.Grains.GetGrain<IStateMachineGrain>(partition);

    private async Task<PartitionConfiguration> ConfigurationOf(int partition) =>
        await cluster.Grains.GetGrain<IPartitionConfigurationGrain>(partition).Get();

    /// <summary>Polls <paramref name="condition"/> until it holds, at most <see cref="Bound"/>.</summary>
    private static Task WaitUntilAsync(Func<Task<bool>> condition, string what) => Poll.UntilAsync(condition, Bound, what);

    /// <summary>Whether every replica's copy of <paramref name="partition"/> satisfies <paramref name="check"/>.</summary>
    private async Task<bool> OnEveryReplicaAsync(int partition, Func<DEngine.StateMachine.IStateMachine, bool> check)
    {
        var config = await ConfigurationOf(partition);
        if (config.Replicas.Length != 3)
        {
            return false;
        }
        foreach (var replica in config.Replicas)
        {
            if (!cluster.RegistryOf(replica.Silo).TryGet(partition, out var copy) || !check(copy.Engine))
            {
                return false;
            }
        }
        return true;
    }

    [Fact]
    public async Task A_put_whose_response_was_lost_is_sent_again_and_applied_once_with_the_first_index()
    {
        const int partition = 3;
        var key = InPartition(partition, "lost-put");
        await cluster.Client.PutAsync(InPartition(partition), B("activate"));
        var lost = cluster.Lost.Arm(nameof(IStateMachineGrain.PutInSession), key);

        var put = cluster.Client.PutIndexAsync(key, B("first"));
        var firstIndex = (ulong)(await lost.Applied.WaitAsync(Bound))!;
        // A newer write lands between the applied first attempt and its retry: a second apply of the
        // retry would overwrite it.
        await Grain(partition).Put(key, B("newer"), 0);
        lost.Release();
        var index = await put.WaitAsync(Bound);

        Assert.Equal(2, lost.Arrived);
        Assert.Equal(firstIndex, index);
        Assert.Equal("newer", S(await cluster.Client.GetAsync(key)));
    }

    [Fact]
    public async Task A_CAS_whose_response_was_lost_is_sent_again_and_returns_true()
    {
        const int partition = 4;
        var key = InPartition(partition, "lost-cas");
        await cluster.Client.PutAsync(InPartition(partition), B("activate"));
        var lost = cluster.Lost.Arm(nameof(IStateMachineGrain.CompareAndSwapInSession), key);

        var cas = cluster.Client.CompareAndSwapAsync(key, null, B("1"));
        Assert.True((bool)(await lost.Applied.WaitAsync(Bound))!);
        lost.Release();

        // Applied again, the CAS would find "1" where it expects no key, and answer false.
        Assert.True(await cas.WaitAsync(Bound));
        Assert.Equal(2, lost.Arrived);
        Assert.Equal("1", S(await cluster.Client.GetAsync(key)));
    }

    [Fact]
    public async Task An_idle_session_ends_on_every_replica_its_late_write_gets_SessionExpired_and_its_tombstone_is_purged_after_the_retention()
    {
        const int partition = 5;
        var client = new DEngineClient(cluster.Grains);
        var key = InPartition(partition, "idle");
        await client.PutAsync(key, B("v1"));
        var id = await client.GetSessionIdAsync(partition);
        await WaitUntilAsync(() => OnEveryReplicaAsync(partition, e => e.HasSession(id)), "every replica has the session");

        cluster.Clock.Advance(DEngineOptions.DEFAULT_SESSION_TIMEOUT + TimeSpan.FromMinutes(1));
        Assert.True(await Grain(partition).ExpireIdleSessions() >= 1);
        await WaitUntilAsync(() => OnEveryReplicaAsync(partition, e => !e.HasSession(id) && e.HasSessionTombstone(id)), "the session ended (tombstone kept) on every replica");
        Assert.False(await Grain(partition).HasSession(id));

        var late = new ClientSession { SessionId = ByteString.CopyFrom(id), Sequence = 2, LowWater = 2 };
        var error = await Assert.ThrowsAsync<DEngineException>(() => Grain(partition).PutInSession(key, B("late"), 0, late));
        Assert.Equal(DEngineErrorCode.SessionExpired, error.Code);
        Assert.Contains("SessionTimeout", error.Message);
        Assert.Equal("v1", S(await client.GetAsync(key)));

        cluster.Clock.Advance(DEngineOptions.DEFAULT_SESSION_TOMBSTONE_RETENTION + TimeSpan.FromMinutes(1));
        Assert.True(await Grain(partition).ExpireIdleSessions() >= 1);
        await WaitUntilAsync(() => OnEveryReplicaAsync(partition, e => !e.HasSessionTombstone(id)), "the tombstone is purged on every replica");
    }

    [Fact]
    public async Task A_client_whose_session_expired_on_a_partition_continues_there_under_a_new_session_and_keeps_its_session_elsewhere()
    {
        const int expiring = 6;
        const int other = 7;
        var client = new DEngineClient(cluster.Grains);
        var key = InPartition(expiring, "renew");
        await client.PutAsync(key, B("before"));
        await client.PutAsync(InPartition(other, "renew"), B("other"));
        var id = await client.GetSessionIdAsync(expiring);
        Assert.Equal(id, await client.GetSessionIdAsync(other));

        cluster.Clock.Advance(DEngineOptions.DEFAULT_SESSION_TIMEOUT + TimeSpan.FromMinutes(1));
        await Grain(expiring).ExpireIdleSessions();
        await WaitUntilAsync(async () => !await Grain(expiring).HasSession(id), "the session ended at the primary");

        // Refused with SessionExpired (nothing applied), then sent again under a new session.
        await client.PutAsync(key, B("after"));

        Assert.Equal("after", S(await client.GetAsync(key)));
        var renewed = await client.GetSessionIdAsync(expiring);
        Assert.NotEqual(id, renewed);
        Assert.True(await Grain(expiring).HasSession(renewed));
        Assert.Equal(id, await client.GetSessionIdAsync(other));
    }

    [Fact]
    public async Task A_write_whose_session_expired_after_an_attempt_that_may_have_applied_gets_OutcomeUnknown_and_is_not_sent_under_a_new_session()
    {
        const int partition = 1;
        var client = new DEngineClient(cluster.Grains);
        var key = InPartition(partition, "expired-retry");
        await client.PutAsync(InPartition(partition), B("open"));
        var id = await client.GetSessionIdAsync(partition);
        var lost = cluster.Lost.Arm(nameof(IStateMachineGrain.CompareAndSwapInSession), key);

        var cas = client.CompareAndSwapAsync(key, null, B("1"));
        Assert.True((bool)(await lost.Applied.WaitAsync(Bound))!);
        // The session ends while the applied attempt's answer is being lost.
        cluster.Clock.Advance(DEngineOptions.DEFAULT_SESSION_TIMEOUT + TimeSpan.FromMinutes(1));
        await Grain(partition).ExpireIdleSessions();
        await WaitUntilAsync(async () => !await Grain(partition).HasSession(id), "the session ended at the primary");
        lost.Release();

        // Sent under a new session, the CAS would apply again (and answer false): the caller learns
        // instead that the outcome is unknown.
        var error = await Assert.ThrowsAsync<DEngineException>(() => cas.WaitAsync(Bound));
        Assert.Equal(DEngineErrorCode.OutcomeUnknown, error.Code);
        Assert.Equal(2, lost.Arrived);
        Assert.Equal("1", S(await client.GetAsync(key)));
    }

    [Fact]
    public async Task A_session_write_with_a_malformed_session_is_refused_with_InvalidArgument_before_it_is_sequenced()
    {
        const int partition = 2;
        var key = InPartition(partition, "malformed");
        await cluster.Client.PutAsync(InPartition(partition), B("activate"));
        var noId = new ClientSession { Sequence = 1, LowWater = 1, FirstToPartition = true };
        var lowWaterAbove = new ClientSession { SessionId = ByteString.CopyFrom(new byte[16]), Sequence = 1, LowWater = 2, FirstToPartition = true };

        Assert.Equal(DEngineErrorCode.InvalidArgument, (await Assert.ThrowsAsync<DEngineException>(() => Grain(partition).PutInSession(key, B("x"), 0, noId))).Code);
        Assert.Equal(DEngineErrorCode.InvalidArgument, (await Assert.ThrowsAsync<DEngineException>(() => Grain(partition).CompareAndSwapInSession(key, null, B("x"), lowWaterAbove))).Code);
        Assert.Null(await cluster.Client.GetAsync(key));
    }
}
