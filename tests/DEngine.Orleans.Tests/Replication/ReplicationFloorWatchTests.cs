using DEngine.Orleans.Replication;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Orleans.Runtime;

namespace DEngine.Orleans.Tests.Replication;

/// <summary>The one line a silo logs when the cluster is too small for the write floor (e.g. one silo with the default Factor 3).</summary>
public sealed class ReplicationFloorWatchTests
{
    [Fact]
    public void A_cluster_below_the_write_floor_is_warned_about_once_naming_the_setting_and_again_only_after_it_recovered()
    {
        var log = new RecordingLogger();
        var watch = new ReplicationFloorWatch(new NoMembership(), Options.Create(new DEngineOptions()), log);

        watch.Observe(["a"]);
        watch.Observe(["a"]);

        var warning = Assert.Single(log.Entries);
        Assert.Equal(LogLevel.Warning, warning.Level);
        Assert.Contains("1 active silo(s) (a), fewer than DEngine:Replication:MinReplicas = 2", warning.Message);
        Assert.Contains("--DEngine:Replication:Factor 1", warning.Message);

        watch.Observe(["a", "b"]);
        watch.Observe(["a", "b", "c"]);
        Assert.Equal(2, log.Entries.Count);
        Assert.Equal(LogLevel.Information, log.Entries[1].Level);
        Assert.Contains("2 active silos (a, b), at least DEngine:Replication:MinReplicas = 2", log.Entries[1].Message);

        watch.Observe(["b"]);
        Assert.Equal(3, log.Entries.Count);
        Assert.Equal(LogLevel.Warning, log.Entries[2].Level);
    }

    [Fact]
    public void A_cluster_at_the_floor_from_the_start_or_running_a_single_copy_logs_nothing()
    {
        var log = new RecordingLogger();
        new ReplicationFloorWatch(new NoMembership(), Options.Create(new DEngineOptions()), log).Observe(["a", "b"]);
        var single = new DEngineOptions();
        single.Replication.Factor = 1;
        new ReplicationFloorWatch(new NoMembership(), Options.Create(single), log).Observe(["a"]);

        Assert.Empty(log.Entries);
    }

    private sealed class RecordingLogger : ILogger<ReplicationFloorWatch>
    {
        public List<(LogLevel Level, string Message)> Entries { get; } = [];

        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => true;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter) =>
            Entries.Add((logLevel, formatter(state, exception)));
    }

    /// <summary>Observe is called directly here; the membership stream is the silo's.</summary>
    private sealed class NoMembership : IClusterMembershipService
    {
        public ClusterMembershipSnapshot CurrentSnapshot => throw new NotSupportedException();

        public IAsyncEnumerable<ClusterMembershipSnapshot> MembershipUpdates => throw new NotSupportedException();

        public ValueTask Refresh(MembershipVersion minimumVersion = default, CancellationToken cancellationToken = default) => throw new NotSupportedException();

        public Task<bool> TryKill(SiloAddress siloAddress) => throw new NotSupportedException();
    }
}
