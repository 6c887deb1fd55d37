using DEngine.Client;
using static DEngine.Orleans.Tests.Keys;

namespace DEngine.Orleans.Tests;

[Collection(ClusterCollection.Name)]
public sealed class ClientOperationTests(ClusterFixture fixture)
{
    private DEngineClient Client => fixture.Client;

    [Fact]
    public async Task Client_reads_the_partition_count_from_the_cluster()
    {
        Assert.Equal(ClusterFixture.Partitions, await Client.GetPartitionCountAsync());
    }

    [Fact]
    public async Task Put_then_get_returns_the_value_and_delete_removes_it()
    {
        var key = B("op/put-get/" + Guid.NewGuid());
        await Client.PutAsync(key, B("v1"));
        Assert.Equal("v1", S(await Client.GetAsync(key)));
        await Client.PutAsync(key, B("v2"));
        Assert.Equal("v2", S(await Client.GetAsync(key)));
        await Client.DeleteAsync(key);
        Assert.Null(await Client.GetAsync(key));
    }

    [Fact]
    public async Task Compare_and_swap_matches_on_absent_and_on_the_expected_value_only()
    {
        var key = B("op/cas/" + Guid.NewGuid());
        Assert.True(await Client.CompareAndSwapAsync(key, null, B("owner1")));
        Assert.False(await Client.CompareAndSwapAsync(key, null, B("owner2")));
        Assert.True(await Client.CompareAndSwapAsync(key, B("owner1"), B("owner2")));
        Assert.False(await Client.CompareAndSwapAsync(key, B("wrong"), B("owner3")));
        Assert.Equal("owner2", S(await Client.GetAsync(key)));
    }

    [Fact]
    public async Task GetMulti_returns_values_in_request_order_across_partitions_with_null_for_missing()
    {
        var prefix = "op/multi/" + Guid.NewGuid() + "/";
        var keys = Enumerable.Range(0, 20).Select(i => B(prefix + i)).ToArray();
        foreach (var (key, i) in keys.Select((k, i) => (k, i)).Where(p => p.i % 2 == 0))
        {
            await Client.PutAsync(key, B("value-" + i));
        }
        var request = keys.Reverse().Append(B(prefix + "missing")).ToArray();
        var values = await Client.GetMultiAsync(request);
        Assert.Equal(request.Length, values.Count);
        for (var j = 0; j < request.Length - 1; j++)
        {
            var i = keys.Length - 1 - j;
            Assert.Equal(i % 2 == 0 ? "value-" + i : "<null>", S(values[j]));
        }
        Assert.Null(values[^1]);
        Assert.True(keys.Select(k => KeyRouting.PartitionOf(k, ClusterFixture.Partitions)).Distinct().Count() > 1);
    }

    [Fact]
    public async Task ScanPrefix_merges_partitions_in_key_order_and_excludes_other_prefixes()
    {
        var prefix = "op/scan/" + Guid.NewGuid() + "/";
        var names = Enumerable.Range(0, 30).Select(i => $"{prefix}{i:D3}").ToArray();
        foreach (var name in names.Reverse())
        {
            await Client.PutAsync(B(name), B("v" + name[^3..]));
        }
        await Client.PutAsync(B(prefix[..^1] + "0"), B("adjacent"));

        var scan = await Client.ScanPrefixAsync(B(prefix));

        Assert.Equal(names, scan.Entries.Select(e => S(e.Key)));
        Assert.All(scan.Entries, e => Assert.Equal("v" + S(e.Key)[^3..], S(e.Value)));
        Assert.Equal(ClusterFixture.Partitions, scan.Revisions.Count);
    }

    [Fact]
    public async Task Ttl_of_a_key_reports_remaining_time_none_or_absent()
    {
        var withTtl = B("op/ttl/" + Guid.NewGuid());
        var without = B("op/ttl/" + Guid.NewGuid());
        await Client.PutAsync(withTtl, B("x"), ttlSeconds: 100);
        await Client.PutAsync(without, B("y"));

        var ttl = await Client.GetTtlAsync(withTtl);
        Assert.True(ttl.Exists);
        Assert.InRange(ttl.RemainingMs!.Value, 90_000, 100_000);
        var none = await Client.GetTtlAsync(without);
        Assert.True(none.Exists);
        Assert.Null(none.ExpiresAtUnixMs);
        Assert.False((await Client.GetTtlAsync(B("op/ttl/absent/" + Guid.NewGuid()))).Exists);
    }

    [Fact]
    public async Task Partitions_are_spread_over_more_than_one_silo()
    {
        var statuses = await Client.GetStatusAsync();
        Assert.Equal(ClusterFixture.Partitions, statuses.Count);
        Assert.Equal(Enumerable.Range(0, ClusterFixture.Partitions), statuses.Select(s => s.Partition));
        Assert.True(statuses.Select(s => s.Silo).Distinct().Count() > 1, string.Join(", ", statuses.Select(s => s.Silo)));
    }

    [Fact]
    public async Task Empty_key_and_oversize_value_are_rejected_with_typed_errors()
    {
        var empty = await Assert.ThrowsAsync<DEngineException>(() => Client.PutAsync([], B("v")));
        Assert.Equal(DEngineErrorCode.InvalidArgument, empty.Code);

        var key = B("op/limits/" + Guid.NewGuid());
        var big = await Assert.ThrowsAsync<DEngineException>(() => Client.PutAsync(key, new byte[1024 * 1024 + 1]));
        Assert.Equal(DEngineErrorCode.LimitExceeded, big.Code);
        Assert.Null(await Client.GetAsync(key));
    }

    [Fact]
    public async Task A_partition_id_out_of_range_answers_InvalidArgument()
    {
        var grain = fixture.Grains.GetGrain<IStateMachineGrain>(ClusterFixture.Partitions + 5);
        var error = await Assert.ThrowsAsync<DEngineException>(() => grain.Get(B("x")));
        Assert.Equal(DEngineErrorCode.InvalidArgument, error.Code);
    }
}
