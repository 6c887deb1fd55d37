using System.Net;
using DEngine.Orleans.Ownership;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using Orleans;
using Orleans.Configuration;
using Orleans.Runtime;
using Orleans.Runtime.Placement;
using Orleans.Serialization;
using Orleans.Storage;

namespace DEngine.Orleans.Tests;

/// <summary>The local profile's record store (files on the primary's disk) and the placement that keeps the record grains there.</summary>
public sealed class FileGrainStorageTests : IDisposable
{
    private static readonly GrainId Owner3 = GrainId.Create("partitionowner", "3");

    private readonly string _root = Path.Combine(Path.GetTempPath(), "dengine-records-" + Guid.NewGuid().ToString("N"));
    private readonly ServiceProvider _services = new ServiceCollection().AddSerializer().BuildServiceProvider();

    private FileGrainStorage NewStorage() => new(_root, _services.GetRequiredService<Serializer>(), NullLogger<FileGrainStorage>.Instance);

    [Fact]
    public async Task A_written_record_is_read_back_by_a_new_store_on_the_same_directory_as_after_a_restart()
    {
        var written = new GrainState<OwnershipRecord> { State = new OwnershipRecord("c", 7) };
        await NewStorage().WriteStateAsync("ownership", Owner3, written);

        var read = new GrainState<OwnershipRecord>();
        await NewStorage().ReadStateAsync("ownership", Owner3, read);

        Assert.True(read.RecordExists);
        Assert.Equal(new OwnershipRecord("c", 7), read.State);
        Assert.Equal(written.ETag, read.ETag);
    }

    [Fact]
    public async Task A_write_leaves_no_temp_file_and_a_leftover_temp_file_of_a_crashed_write_is_ignored()
    {
        var storage = NewStorage();
        await storage.WriteStateAsync("ownership", Owner3, new GrainState<OwnershipRecord> { State = new OwnershipRecord("a", 1) });
        var path = storage.PathOf("ownership", Owner3);
        Assert.Equal([path], Directory.GetFiles(Path.GetDirectoryName(path)!));
        // A crash between the temp file's write and its rename leaves it beside the record.
        await File.WriteAllBytesAsync(path + ".tmp", [1, 2, 3]);

        var read = new GrainState<OwnershipRecord>();
        await NewStorage().ReadStateAsync("ownership", Owner3, read);

        Assert.Equal(new OwnershipRecord("a", 1), read.State);
    }

    [Fact]
    public async Task A_damaged_record_file_is_set_aside_and_reported_missing_so_the_partition_recovers_it_from_the_copies()
    {
        var storage = NewStorage();
        await storage.WriteStateAsync("ownership", Owner3, new GrainState<OwnershipRecord> { State = new OwnershipRecord("a", 1) });
        var path = storage.PathOf("ownership", Owner3);
        var bytes = await File.ReadAllBytesAsync(path);
        bytes[^6] ^= 0xff;
        await File.WriteAllBytesAsync(path, bytes);

        var read = new GrainState<OwnershipRecord>();
        await storage.ReadStateAsync("ownership", Owner3, read);

        Assert.False(read.RecordExists);
        Assert.False(File.Exists(path));
        Assert.True(File.Exists(path + ".damaged"));
    }

    [Fact]
    public async Task A_write_with_a_stale_ETag_is_refused_and_leaves_the_record()
    {
        var storage = NewStorage();
        var first = new GrainState<OwnershipRecord> { State = new OwnershipRecord("a", 1) };
        await storage.WriteStateAsync("ownership", Owner3, first);
        var stale = new GrainState<OwnershipRecord> { State = new OwnershipRecord("b", 2), ETag = null };

        await Assert.ThrowsAsync<InconsistentStateException>(() => storage.WriteStateAsync("ownership", Owner3, stale));

        var read = new GrainState<OwnershipRecord>();
        await storage.ReadStateAsync("ownership", Owner3, read);
        Assert.Equal(new OwnershipRecord("a", 1), read.State);
    }

    [Fact]
    public async Task Record_grains_are_placed_on_the_configured_primary_silo_and_are_unavailable_while_it_is_absent()
    {
        var primary = SiloAddress.New(new IPEndPoint(IPAddress.Loopback, 11111), 1);
        var others = new[] { SiloAddress.New(new IPEndPoint(IPAddress.Loopback, 11112), 1), SiloAddress.New(new IPEndPoint(IPAddress.Loopback, 11113), 1) };
        var director = new RecordPlacementDirector(Options.Create(new DevelopmentClusterMembershipOptions { PrimarySiloEndpoint = primary.Endpoint }));
        var target = new PlacementTarget(Owner3, new Dictionary<string, object>(), default, 0);

        var placed = await director.OnAddActivation(RecordPlacement.Instance, target, new Context(others[0], [others[0], primary, others[1]]));
        var error = await Assert.ThrowsAsync<DEngineException>(() => director.OnAddActivation(RecordPlacement.Instance, target, new Context(others[0], others)));

        Assert.Equal(primary, placed);
        Assert.Equal(DEngineErrorCode.PartitionUnavailable, error.Code);
    }

    public void Dispose()
    {
        _services.Dispose();
        try
        {
            Directory.Delete(_root, recursive: true);
        }
        catch (DirectoryNotFoundException)
        {
        }
    }

    private sealed class Context(SiloAddress local, SiloAddress[] compatible) : IPlacementContext
    {
        public SiloAddress LocalSilo => local;

        public SiloStatus LocalSiloStatus => SiloStatus.Active;

        public SiloAddress[] GetCompatibleSilos(PlacementTarget target) => compatible;

        public IReadOnlyDictionary<ushort, SiloAddress[]> GetCompatibleSilosWithVersions(PlacementTarget target) => new Dictionary<ushort, SiloAddress[]> { [0] = compatible };
    }
}
