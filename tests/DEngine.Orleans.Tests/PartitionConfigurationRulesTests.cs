using System.Collections.Immutable;
using DEngine.Orleans.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Orleans.Serialization;

namespace DEngine.Orleans.Tests;

/// <summary>The rules and helpers of <see cref="PartitionConfiguration"/>, without a cluster.</summary>
public sealed class PartitionConfigurationRulesTests
{
    private static readonly ReplicaId A = new("a", "0001");
    private static readonly ReplicaId B = new("b", "0002");
    private static readonly ReplicaId C = new("c", "0003");

    private static readonly PartitionConfiguration Abc = new(4, A, [A, B, C]);

    public static TheoryData<string, PartitionConfiguration> Invalid => new()
    {
        { "not one of the replicas", new(1, A, [B, C]) },
        { "more than one replica", new(1, A, [A, new ReplicaId("a", "0009")]) },
        { "empty silo name", new(1, new ReplicaId("", "1"), [new ReplicaId("", "1")]) },
        { "empty silo name", new(1, A, [A, new ReplicaId(" ", "1")]) },
        { "empty incarnation", new(1, new ReplicaId("a", ""), [new ReplicaId("a", "")]) },
        { "no primary", new(1, null, [A, B]) },
        { "no replica list", new(1, null, default) },
    };

    [Theory]
    [MemberData(nameof(Invalid))]
    public void A_configuration_breaking_a_rule_is_invalid_and_Validate_throws_InvalidArgument_naming_the_rule(string rule, PartitionConfiguration configuration)
    {
        Assert.False(configuration.TryValidate(out var problem));
        Assert.Contains(rule, problem);
        var error = Assert.Throws<DEngineException>(configuration.Validate);
        Assert.Equal(DEngineErrorCode.InvalidArgument, error.Code);
        Assert.Contains(rule, error.Message);
    }

    [Fact]
    public void A_configuration_whose_primary_is_one_of_distinct_replicas_is_valid_and_so_is_the_empty_one()
    {
        Assert.True(Abc.TryValidate(out _));
        Assert.True(new PartitionConfiguration(1, A, [A]).TryValidate(out _));
        Assert.True(PartitionConfiguration.Empty.TryValidate(out _));
        Assert.Equal(0ul, PartitionConfiguration.Empty.Version);
    }

    [Fact]
    public void Configurations_with_the_same_version_primary_and_replicas_are_equal()
    {
        var copy = new PartitionConfiguration(4, new ReplicaId("a", "0001"), [.. new[] { A, B, C }]);

        Assert.Equal(Abc, copy);
        Assert.Equal(Abc.GetHashCode(), copy.GetHashCode());
        Assert.NotEqual(Abc, copy with { Version = 5 });
        Assert.NotEqual(Abc, copy.WithPrimary(B));
        Assert.NotEqual(Abc, copy.Without("c"));
    }

    [Fact]
    public void Contains_and_Find_look_a_replica_up_by_silo_name()
    {
        Assert.True(Abc.Contains("b"));
        Assert.False(Abc.Contains("d"));
        Assert.Equal(B, Abc.Find("b"));
        Assert.Null(PartitionConfiguration.Empty.Find("a"));
    }

    [Fact]
    public void The_editing_helpers_keep_the_version_and_Next_raises_it_by_one()
    {
        var edited = Abc.Without("c").WithReplica(new ReplicaId("d", "0004"));

        Assert.Equal(4ul, edited.Version);
        Assert.Equal(new PartitionConfiguration(5, A, [A, B, new ReplicaId("d", "0004")]), edited.Next());
    }

    [Fact]
    public void Removing_the_primary_leaves_no_primary_which_is_invalid_until_another_is_set()
    {
        var withoutPrimary = Abc.Without("a");

        Assert.Null(withoutPrimary.Primary);
        Assert.False(withoutPrimary.TryValidate(out _));
        var next = withoutPrimary.WithPrimary(B).Next();
        Assert.True(next.TryValidate(out _));
        Assert.Equal(new PartitionConfiguration(5, B, [B, C]), next);
    }

    [Fact]
    public void A_silo_back_with_a_new_incarnation_replaces_its_old_replica_and_keeps_the_primary_role_only_if_it_was_the_primary()
    {
        var returned = new ReplicaId("b", "0099");

        Assert.Equal(new PartitionConfiguration(4, A, [A, returned, C]), Abc.WithReplica(returned));
        var newA = new ReplicaId("a", "0100");
        Assert.Equal(new PartitionConfiguration(4, newA, [newA, B, C]), Abc.WithReplica(newA));
    }

    [Fact]
    public void Next_with_a_primary_and_replicas_adds_the_primary_when_missing()
    {
        var next = PartitionConfiguration.Empty.Next(A, [B, C]);

        Assert.Equal(new PartitionConfiguration(1, A, [B, C, A]), next);
        Assert.True(next.TryValidate(out _));
    }

    [Fact]
    public void A_configuration_survives_the_Orleans_serializer_unchanged()
    {
        using var services = new ServiceCollection().AddSerializer().BuildServiceProvider();
        var serializer = services.GetRequiredService<Serializer>();

        var copy = serializer.Deserialize<PartitionConfiguration>(serializer.SerializeToArray(Abc));
        var change = serializer.Deserialize<ConfigurationChange>(serializer.SerializeToArray(new ConfigurationChange(false, Abc)));

        Assert.Equal(Abc, copy);
        Assert.Equal(new ConfigurationChange(false, Abc), change);
        Assert.Equal(PartitionConfiguration.Empty, serializer.Deserialize<PartitionConfiguration>(serializer.SerializeToArray(PartitionConfiguration.Empty)));
        Assert.Equal(ImmutableArray<ReplicaId>.Empty, serializer.Deserialize<PartitionConfiguration>(serializer.SerializeToArray(PartitionConfiguration.Empty))!.Replicas);
    }
}
