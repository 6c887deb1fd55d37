using System.Diagnostics.Metrics;
using DEngine.Orleans.Replication;
using DEngine.Orleans.Storage;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;
using Microsoft.Extensions.Time.Testing;
using Orleans.Hosting;

namespace DEngine.Orleans.Tests.Sessions;

/// <summary>
/// The 3-silo cluster with replica groups of three, whose engines' clock (the one that stamps
/// writes and sessions' last activity) is one <see cref="FakeTimeProvider"/> shared by the silos
/// (Orleans and the replication leases keep real time), and whose chosen responses can be lost
/// (<see cref="LostResponses"/>).
/// </summary>
public sealed class SessionClusterFixture : ClusterFixture
{
    /// <inheritdoc />
    protected override int ReplicationFactor => 3;

    /// <summary>The engines' clock.</summary>
    public FakeTimeProvider Clock { get; } = new(DateTimeOffset.UtcNow);

    /// <summary>Loses chosen responses.</summary>
    public LostResponses Lost { get; } = new();

    /// <inheritdoc />
    protected override void ConfigureSiloExtra(ISiloBuilder silo)
    {
        // Registered after AddDEngine's TryAdd: this one is resolved.
        silo.Services.AddSingleton(sp => new PartitionStore(sp.GetRequiredService<IOptions<DEngineOptions>>(), Clock, sp.GetRequiredService<IMeterFactory>()));
        silo.AddIncomingGrainCallFilter(Lost);
    }

    /// <summary>The replica registry of silo <paramref name="name"/> (its copies).</summary>
    public ReplicaRegistry RegistryOf(string name) =>
        Cluster.Silos.Concat(Extra).First(s => s.Name == name).ServiceProvider.GetRequiredService<ReplicaRegistry>();
}

[CollectionDefinition(Name)]
public sealed class SessionClusterCollection : ICollectionFixture<SessionClusterFixture>
{
    public const string Name = "session-cluster";
}
