using DEngine.Client;
using DEngine.Orleans.Configuration;
using DEngine.Orleans.Hosting;
using DEngine.Orleans.Ownership;
using Microsoft.Extensions.DependencyInjection;
using Orleans;
using Orleans.Storage;
using Orleans.TestingHost;

namespace DEngine.Orleans.Tests;

/// <summary>
/// One in-process silo whose configuration records are in the given store, or (without one) in the
/// local profile's <see cref="FileGrainStorage"/> under its data root, so a restart on the same root
/// reads them back from disk.
/// </summary>
public sealed class ConfigurationSilo : IAsyncDisposable
{
    private readonly InProcessTestCluster _cluster;

    private ConfigurationSilo(InProcessTestCluster cluster) => _cluster = cluster;

    public IGrainFactory Grains => _cluster.Client;

    /// <summary>The silo's <see cref="SiloIncarnation"/> singleton.</summary>
    public SiloIncarnation Incarnation => ((InProcessSiloHandle)_cluster.Silos[0]).SiloHost.Services.GetRequiredService<SiloIncarnation>();

    public IPartitionConfigurationGrain Configuration(int partition) => Grains.GetGrain<IPartitionConfigurationGrain>(partition);

    public static async Task<ConfigurationSilo> StartAsync(string root, IGrainStorage? records = null)
    {
        var builder = new InProcessTestClusterBuilder(1);
        builder.ConfigureSilo((siloOptions, silo) =>
        {
            if (records is not null)
            {
                silo.Services.AddKeyedSingleton<IGrainStorage>(PartitionOwnerGrain.StorageName, records);
            }
            silo.AddDEngine(o =>
            {
                o.DataRoot = Path.Combine(root, siloOptions.SiloName);
                o.Partitions = ClusterFixture.Partitions;
                o.WriteBufferMiB = 4;
                o.BlockCacheMiB = 8;
            });
            silo.UseInMemoryReminderService();
        });
        builder.ConfigureClient(client => client.AddDEngineClient(o => o.MaxRetries = 0));
        var cluster = builder.Build();
        await cluster.DeployAsync();
        return new ConfigurationSilo(cluster);
    }

    public async ValueTask DisposeAsync() => await _cluster.DisposeAsync();
}

/// <summary>A silo with an injectable record store, shared by the compare-and-swap tests (each uses its own partition).</summary>
public sealed class ConfigurationSiloFixture : IAsyncLifetime
{
    public string Root { get; } = Path.Combine(Path.GetTempPath(), "dengine-config-" + Guid.NewGuid().ToString("N"));

    public FaultyRecords Records { get; } = new(new SharedGrainStorage());

    public ConfigurationSilo Silo { get; private set; } = null!;

    public async Task InitializeAsync() => Silo = await ConfigurationSilo.StartAsync(Root, Records);

    public async Task DisposeAsync()
    {
        await Silo.DisposeAsync();
        Directory.Delete(Root, recursive: true);
    }
}

/// <summary>A record store whose next configuration write fails, before or after it is stored (a store that is down; a timeout after the write).</summary>
public sealed class FaultyRecords(IGrainStorage inner) : IGrainStorage
{
    public enum Fault
    {
        None,
        FailBeforeStoring,
        FailAfterStoring,
    }

    private int _next;

    /// <summary>The fault of the configuration writes from now on.</summary>
    public Fault Next
    {
        get => (Fault)Volatile.Read(ref _next);
        set => Volatile.Write(ref _next, (int)value);
    }

    public Task ReadStateAsync<T>(string stateName, global::Orleans.Runtime.GrainId grainId, IGrainState<T> grainState) => inner.ReadStateAsync(stateName, grainId, grainState);

    public async Task WriteStateAsync<T>(string stateName, global::Orleans.Runtime.GrainId grainId, IGrainState<T> grainState)
    {
        var fault = stateName == "configuration" ? Next : Fault.None;
        if (fault == Fault.FailBeforeStoring)
        {
            throw new IOException($"Injected failure before storing '{stateName}' of {grainId}.");
        }
        await inner.WriteStateAsync(stateName, grainId, grainState);
        if (fault == Fault.FailAfterStoring)
        {
            throw new IOException($"Injected failure after storing '{stateName}' of {grainId}.");
        }
    }

    public Task ClearStateAsync<T>(string stateName, global::Orleans.Runtime.GrainId grainId, IGrainState<T> grainState) => inner.ClearStateAsync(stateName, grainId, grainState);
}

/// <summary>The configuration store: compare-and-swap on the version is the only way to change a partition's configuration.</summary>
public sealed class PartitionConfigurationTests(ConfigurationSiloFixture fixture) : IClassFixture<ConfigurationSiloFixture>
{
    private static readonly ReplicaId A = new("a", "00000000000000000000000000000001");
    private static readonly ReplicaId B = new("b", "00000000000000000000000000000002");
    private static readonly ReplicaId C = new("c", "00000000000000000000000000000003");

    [Fact]
    public async Task A_partition_without_a_configuration_reads_the_empty_one_at_version_0()
    {
        Assert.Equal(PartitionConfiguration.Empty, await fixture.Silo.Configuration(0).Get());
    }

    [Fact]
    public async Task A_proposal_from_the_stored_version_wins_and_is_what_later_reads_return()
    {
        var store = fixture.Silo.Configuration(1);
        var first = PartitionConfiguration.Empty.Next(A, [A, B, C]);

        var change = await store.CompareAndSwap(0, first);

        Assert.True(change.Won);
        Assert.Equal(first, change.Current);
        Assert.Equal(first, await store.Get());
        var second = first.Without("c").Next();
        Assert.True((await store.CompareAndSwap(1, second)).Won);
        Assert.Equal(second, await store.Get());
    }

    [Fact]
    public async Task Of_two_concurrent_proposals_from_the_same_version_exactly_one_wins_and_the_loser_learns_the_winner()
    {
        var store = fixture.Silo.Configuration(2);
        var start = PartitionConfiguration.Empty.Next(A, [A, B, C]);
        Assert.True((await store.CompareAndSwap(0, start)).Won);
        // The old primary drops c while b takes over: both from version 1.
        var dropC = start.Without("c").Next();
        var bTakesOver = start.WithPrimary(B).Next();

        var results = await Task.WhenAll(store.CompareAndSwap(1, dropC), store.CompareAndSwap(1, bTakesOver));

        var winner = Assert.Single(results, r => r.Won);
        var loser = Assert.Single(results, r => !r.Won);
        Assert.Contains(winner.Current, new[] { dropC, bTakesOver });
        Assert.Equal(winner.Current, loser.Current);
        Assert.Equal(winner.Current, await store.Get());
    }

    [Fact]
    public async Task A_proposal_from_an_older_version_loses_returns_the_stored_configuration_and_changes_nothing()
    {
        var store = fixture.Silo.Configuration(3);
        var v1 = PartitionConfiguration.Empty.Next(A, [A, B]);
        var v2 = v1.WithReplica(C).Next();
        Assert.True((await store.CompareAndSwap(0, v1)).Won);
        Assert.True((await store.CompareAndSwap(1, v2)).Won);

        var stale = await store.CompareAndSwap(1, v1.WithPrimary(B).Next());

        Assert.False(stale.Won);
        Assert.Equal(v2, stale.Current);
        Assert.Equal(v2, await store.Get());
    }

    [Theory]
    [InlineData(0ul, 0ul)]
    [InlineData(1ul, 1ul)]
    [InlineData(2ul, 1ul)]
    public async Task A_proposal_whose_version_is_not_above_the_expected_one_is_refused_with_InvalidArgument_and_nothing_is_stored(ulong expected, ulong proposedVersion)
    {
        var store = fixture.Silo.Configuration(4);
        var before = await store.Get();

        var error = await Assert.ThrowsAsync<DEngineException>(() => store.CompareAndSwap(expected, new PartitionConfiguration(proposedVersion, A, [A])));

        Assert.Equal(DEngineErrorCode.InvalidArgument, error.Code);
        Assert.Contains("must have a higher version", error.Message);
        Assert.Equal(before, await store.Get());
    }

    [Fact]
    public async Task A_proposal_may_skip_versions_to_outbid_what_replicas_have_seen()
    {
        var store = fixture.Silo.Configuration(100);
        var jump = new PartitionConfiguration(7, A, [A]);

        var change = await store.CompareAndSwap(0, jump);

        Assert.True(change.Won);
        Assert.Equal(jump, await store.Get());
    }

    [Fact]
    public async Task No_proposal_can_follow_the_last_version()
    {
        var error = await Assert.ThrowsAsync<DEngineException>(() => fixture.Silo.Configuration(4).CompareAndSwap(ulong.MaxValue, new PartitionConfiguration(0, A, [A])));

        Assert.Equal(DEngineErrorCode.InvalidArgument, error.Code);
        Assert.Contains("No configuration can follow", error.Message);
    }

    public static TheoryData<string, PartitionConfiguration> InvalidProposals => new()
    {
        { "not one of the replicas", new(1, A, [B, C]) },
        { "more than one replica", new(1, A, [A, new ReplicaId("a", "00000000000000000000000000000009")]) },
        { "empty silo name", new(1, new ReplicaId("", "1"), [new ReplicaId("", "1")]) },
        { "empty incarnation", new(1, new ReplicaId("a", " "), [new ReplicaId("a", " ")]) },
        { "no primary", new(1, null, [A, B]) },
    };

    [Theory]
    [MemberData(nameof(InvalidProposals))]
    public async Task An_invalid_proposal_is_refused_with_InvalidArgument_naming_the_rule_and_nothing_is_stored(string rule, PartitionConfiguration proposal)
    {
        var store = fixture.Silo.Configuration(5);

        var error = await Assert.ThrowsAsync<DEngineException>(() => store.CompareAndSwap(0, proposal));

        Assert.Equal(DEngineErrorCode.InvalidArgument, error.Code);
        Assert.Equal(5, error.Partition);
        Assert.Contains(rule, error.Message);
        Assert.Equal(PartitionConfiguration.Empty, await store.Get());
    }

    [Fact]
    public async Task A_store_write_that_fails_surfaces_StorageFailure_and_leaves_the_stored_configuration_as_it_was()
    {
        var store = fixture.Silo.Configuration(6);
        var v1 = PartitionConfiguration.Empty.Next(A, [A, B, C]);
        Assert.True((await store.CompareAndSwap(0, v1)).Won);

        fixture.Records.Next = FaultyRecords.Fault.FailBeforeStoring;
        DEngineException error;
        try
        {
            error = await Assert.ThrowsAsync<DEngineException>(() => store.CompareAndSwap(1, v1.Without("c").Next()));
            Assert.Equal(DEngineErrorCode.StorageFailure, error.Code);
            Assert.Equal(v1, await store.Get());
        }
        finally
        {
            fixture.Records.Next = FaultyRecords.Fault.None;
        }

        // The store works again: the same proposal from the still-stored version wins.
        Assert.Contains("Read the configuration again", error.Message);
        var retried = await store.CompareAndSwap(1, v1.Without("c").Next());
        Assert.True(retried.Won);
        Assert.Equal(v1.Without("c").Next(), await store.Get());
    }

    [Fact]
    public async Task A_store_write_whose_outcome_is_unknown_surfaces_StorageFailure_and_the_next_read_returns_what_the_store_holds()
    {
        var store = fixture.Silo.Configuration(7);
        var v1 = PartitionConfiguration.Empty.Next(A, [A, B, C]);
        Assert.True((await store.CompareAndSwap(0, v1)).Won);
        var v2 = v1.Without("c").Next();

        fixture.Records.Next = FaultyRecords.Fault.FailAfterStoring;
        try
        {
            Assert.Equal(DEngineErrorCode.StorageFailure, (await Assert.ThrowsAsync<DEngineException>(() => store.CompareAndSwap(1, v2))).Code);
        }
        finally
        {
            fixture.Records.Next = FaultyRecords.Fault.None;
        }

        // The store took it: a read learns so, and a proposal from the old version loses to it.
        Assert.Equal(v2, await store.Get());
        var late = await store.CompareAndSwap(1, v1.WithPrimary(B).Next());
        Assert.False(late.Won);
        Assert.Equal(v2, late.Current);
    }
}

/// <summary>What a restart of the silo on the same data directory keeps: the stored configurations (local profile's file records) and the incarnation.</summary>
public sealed class PartitionConfigurationRestartTests : IDisposable
{
    private readonly string _root = Path.Combine(Path.GetTempPath(), "dengine-config-restart-" + Guid.NewGuid().ToString("N"));

    [Fact]
    public async Task A_configuration_survives_a_restart_of_the_cluster_on_the_same_data_directory()
    {
        var replica = new ReplicaId("a", "00000000000000000000000000000001");
        var stored = PartitionConfiguration.Empty.Next(replica, [replica]);
        await using (var silo = await ConfigurationSilo.StartAsync(_root))
        {
            Assert.True((await silo.Configuration(3).CompareAndSwap(0, stored)).Won);
        }

        await using var restarted = await ConfigurationSilo.StartAsync(_root);

        Assert.Equal(stored, await restarted.Configuration(3).Get());
        Assert.False((await restarted.Configuration(3).CompareAndSwap(0, stored)).Won);
    }

    [Fact]
    public async Task The_incarnation_is_stable_across_a_restart_and_new_after_the_data_directory_is_wiped()
    {
        string first;
        await using (var silo = await ConfigurationSilo.StartAsync(_root))
        {
            first = silo.Incarnation.Value;
        }
        string afterRestart;
        await using (var silo = await ConfigurationSilo.StartAsync(_root))
        {
            afterRestart = silo.Incarnation.Value;
        }
        Directory.Delete(_root, recursive: true);

        await using var wiped = await ConfigurationSilo.StartAsync(_root);

        Assert.Equal(first, afterRestart);
        Assert.NotEqual(first, wiped.Incarnation.Value);
    }

    public void Dispose()
    {
        try
        {
            Directory.Delete(_root, recursive: true);
        }
        catch (DirectoryNotFoundException)
        {
        }
    }
}
