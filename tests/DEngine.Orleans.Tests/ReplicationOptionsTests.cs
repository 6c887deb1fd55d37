using DEngine.Orleans.Configuration;
using Microsoft.Extensions.Configuration;

namespace DEngine.Orleans.Tests;

/// <summary>The <c>DEngine:Replication</c> options: defaults, the floor's rule, binding and validation naming the key.</summary>
public sealed class ReplicationOptionsTests
{
    [Fact]
    public void The_defaults_are_replica_groups_of_three_a_floor_of_two_a_four_second_lease_and_they_validate()
    {
        var options = new DEngineOptions();

        Assert.Null(options.Validate());
        var replication = options.Replication;
        Assert.Equal(3, replication.Factor);
        Assert.Equal(3, ReplicationOptions.DEFAULT_FACTOR);
        Assert.Null(replication.MinReplicas);
        Assert.Equal(2, replication.EffectiveMinReplicas);
        Assert.Equal(1, new ReplicationOptions { Factor = 1 }.EffectiveMinReplicas);
        Assert.Equal(TimeSpan.FromSeconds(4), replication.LeaseDuration);
        Assert.Equal(TimeSpan.FromSeconds(1), replication.HeartbeatInterval);
        Assert.Equal(TimeSpan.FromSeconds(6), replication.ReplicaTimeout);
        Assert.Equal(0.05, replication.MaxClockDrift);
        Assert.Equal(TimeSpan.FromSeconds(4.2), replication.NewPrimaryReadDelay);
        Assert.Equal(65_536, replication.LogCompactionEntries);
        Assert.Equal(64L << 20, replication.LogSegmentBytes);
        Assert.Equal(1, replication.MaxChunksInFlight);
    }

    [Theory]
    [InlineData(1, 1)]
    [InlineData(2, 1)]
    [InlineData(3, 2)]
    [InlineData(5, 2)]
    public void The_default_floor_is_two_from_three_replicas_up_and_one_below(int factor, int floor)
    {
        Assert.Equal(floor, new ReplicationOptions { Factor = factor }.EffectiveMinReplicas);
    }

    [Fact]
    public void An_explicit_floor_replaces_the_default()
    {
        Assert.Equal(3, new ReplicationOptions { Factor = 3, MinReplicas = 3 }.EffectiveMinReplicas);
        Assert.Equal(1, new ReplicationOptions { Factor = 3, MinReplicas = 1 }.EffectiveMinReplicas);
    }

    [Theory]
    [InlineData(0, 0)]
    [InlineData(1, 1)]
    [InlineData(2, 2)]
    [InlineData(3, 3)]
    [InlineData(7, 3)]
    public void A_cluster_with_fewer_silos_than_the_factor_runs_with_as_many_replicas_as_it_has_silos(int liveSilos, int replicas)
    {
        Assert.Equal(replicas, new ReplicationOptions { Factor = 3 }.EffectiveFactor(liveSilos));
    }

    [Fact]
    public void Writes_are_refused_below_the_floor_even_when_the_cluster_has_fewer_silos_than_the_floor()
    {
        var options = new ReplicationOptions();

        Assert.False(options.CanWrite(options.EffectiveFactor(1)));
        Assert.True(options.CanWrite(options.EffectiveFactor(2)));
        Assert.True(options.CanWrite(3));
        Assert.False(options.CanWrite(0));
        Assert.True(new ReplicationOptions { Factor = 1 }.CanWrite(1));
    }

    public static TheoryData<string, Action<ReplicationOptions>> BadValues => new()
    {
        { "DEngine:Replication:Factor", o => o.Factor = 0 },
        { "DEngine:Replication:Factor", o => o.Factor = 17 },
        { "DEngine:Replication:MinReplicas", o => o.MinReplicas = 0 },
        { "DEngine:Replication:MinReplicas", o => o.MinReplicas = 4 },
        { "DEngine:Replication:MinReplicas", o => (o.Factor, o.MinReplicas) = (1, 2) },
        { "DEngine:Replication:LeaseDuration", o => o.LeaseDuration = TimeSpan.Zero },
        { "DEngine:Replication:HeartbeatInterval", o => o.HeartbeatInterval = TimeSpan.FromSeconds(2) },
        { "DEngine:Replication:HeartbeatInterval", o => o.HeartbeatInterval = TimeSpan.Zero },
        { "DEngine:Replication:ReplicaTimeout", o => o.ReplicaTimeout = TimeSpan.FromSeconds(4) },
        { "DEngine:Replication:MaxClockDrift", o => o.MaxClockDrift = -0.1 },
        { "DEngine:Replication:MaxClockDrift", o => o.MaxClockDrift = double.NaN },
        { "DEngine:Replication:MaxChunksInFlight", o => o.MaxChunksInFlight = 0 },
        { "DEngine:Replication:MaxChunksInFlight", o => o.MaxChunksInFlight = 65 },
        { "DEngine:Replication:LogCompactionEntries", o => o.LogCompactionEntries = 0 },
        { "DEngine:Replication:LogSegmentBytes", o => o.LogSegmentBytes = 1024 },
    };

    [Theory]
    [MemberData(nameof(BadValues))]
    public void An_invalid_replication_option_is_rejected_naming_the_key(string key, Action<ReplicationOptions> configure)
    {
        var options = new DEngineOptions();
        configure(options.Replication);

        var problem = options.Validate();

        Assert.NotNull(problem);
        Assert.StartsWith(key + " must ", problem);
    }

    [Fact]
    public void The_replication_options_bind_from_the_DEngine_Replication_section_of_a_command_line()
    {
        var configuration = new ConfigurationBuilder()
            .AddCommandLine(["--DEngine:Replication:Factor", "2", "--DEngine:Replication:LeaseDuration", "00:00:08", "--DEngine:Replication:ReplicaTimeout", "00:00:10", "--DEngine:Replication:MaxClockDrift", "0.1"])
            .Build();

        var options = configuration.GetSection(DEngineOptions.SectionName).Get<DEngineOptions>()!;

        Assert.Null(options.Validate());
        Assert.Equal(2, options.Replication.Factor);
        Assert.Null(options.Replication.MinReplicas);
        Assert.Equal(1, options.Replication.EffectiveMinReplicas);
        Assert.Equal(TimeSpan.FromSeconds(8), options.Replication.LeaseDuration);
        Assert.Equal(TimeSpan.FromSeconds(10), options.Replication.ReplicaTimeout);
        Assert.Equal(0.1, options.Replication.MaxClockDrift);
    }
}
