using static DEngine.Orleans.Tests.Keys;

namespace DEngine.Orleans.Tests;

[Collection(ClusterCollection.Name)]
public sealed class TtlTests(ClusterFixture fixture)
{
    [Fact]
    public async Task A_key_with_ttl_is_readable_before_expiry_absent_after_and_physically_deleted_by_the_expiry_timer()
    {
        var grain = fixture.Grains.GetGrain<IStateMachineGrain>(4);
        var key = InPartition(4, "ttl");
        var before = await grain.GetStatus();

        await grain.Put(key, B("short-lived"), 1);
        var ttl = await grain.GetTtl(key);
        Assert.True(ttl.Exists);
        var expiresAt = ttl.ExpiresAtUnixMs!.Value;
        if ((ulong)DateTimeOffset.UtcNow.ToUnixTimeMilliseconds() < expiresAt)
        {
            Assert.Equal("short-lived", S(await grain.Get(key)));
        }

        // Waiting for real time here: the partition's own timer must fire. Poll with a deadline.
        var deadline = DateTime.UtcNow.AddSeconds(15);
        PartitionStatus status;
        do
        {
            status = await grain.GetStatus();
            if ((ulong)DateTimeOffset.UtcNow.ToUnixTimeMilliseconds() >= expiresAt)
            {
                Assert.Null(await grain.Get(key));
            }
        }
        while (status.KeysExpired == before.KeysExpired && DateTime.UtcNow < deadline);

        Assert.True(status.KeysExpired > before.KeysExpired, "the expired key was not deleted within 15 s");
        Assert.Null(await grain.Get(key));
        Assert.False((await grain.GetTtl(key)).Exists);
    }

    [Fact]
    public async Task A_key_without_ttl_is_never_removed_by_cleanup()
    {
        var grain = fixture.Grains.GetGrain<IStateMachineGrain>(4);
        var key = InPartition(4, "keep");
        await grain.Put(key, B("forever"), 0);

        await grain.CleanupExpired();

        Assert.Equal("forever", S(await grain.Get(key)));
    }
}
