using DEngine.Orleans.Configuration;
using DEngine.Orleans.Diagnostics;
using DEngine.Orleans.Ownership;
using DEngine.Orleans.Placement;
using DEngine.Orleans.Serialization;
using DEngine.Orleans.Snapshots;
using DEngine.Orleans.Storage;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Options;
using Orleans;
using Orleans.Hosting;
using Orleans.Runtime;
using Orleans.Runtime.Placement;
using Orleans.Runtime.Hosting;
using Orleans.Storage;
using Orleans.Serialization;

namespace DEngine.Orleans.Hosting;

/// <summary>Registers DEngine in an Orleans silo.</summary>
public static class SiloBuilderExtensions
{
    /// <summary>
    /// Adds partition grains, their placement, the WAL sync loop, protobuf serialization, metrics and
    /// (unless one is configured already) file storage on this silo's disk for the configuration records. Options bind from
    /// the <c>DEngine</c> configuration section, then <paramref name="configure"/> runs; they are
    /// validated when the silo starts, with a message naming the bad key.
    /// </summary>
    public static ISiloBuilder AddDEngine(this ISiloBuilder builder, Action<DEngineOptions>? configure = null)
    {
        var services = builder.Services;
        var options = services.AddOptions<DEngineOptions>().BindConfiguration(DEngineOptions.SectionName);
        if (configure is not null)
        {
            options.Configure(configure);
        }
        options.ValidateOnStart();
        services.AddSingleton<IValidateOptions<DEngineOptions>, DEngineOptionsValidator>();

        services.TryAddSingleton(TimeProvider.System);
        services.TryAddSingleton<PartitionStore>();
        services.TryAddSingleton<WalSyncLoop>();
        services.TryAddSingleton<DEngineMetrics>();
        services.TryAddSingleton<DataRootLock>();
        services.TryAddSingleton<Replication.ReplicaRegistry>();
        services.AddSingleton<ILifecycleParticipant<ISiloLifecycle>>(sp => sp.GetRequiredService<DataRootLock>());
        services.TryAddSingleton(sp => sp.GetRequiredService<DataRootLock>().Incarnation);
        services.AddSingleton<ILifecycleParticipant<ISiloLifecycle>, PartitionHandover>();
        services.TryAddSingleton<PrimaryEligibility>();
        services.TryAddSingleton<LocalSiloStopping>();
        services.TryAddSingleton<PrimaryBalancer>();
        services.AddSingleton<ILifecycleParticipant<ISiloLifecycle>>(sp => sp.GetRequiredService<PrimaryBalancer>());
        services.AddSingleton<ILifecycleParticipant<ISiloLifecycle>, Replication.ReplicationFloorWatch>();
        services.TryAddSingleton<Replication.DrainState>();
        services.TryAddSingleton<Replication.SurplusCopySweeper>();
        services.AddSingleton<ILifecycleParticipant<ISiloLifecycle>>(sp => sp.GetRequiredService<Replication.SurplusCopySweeper>());
        services.AddMetrics();
        services.AddSerializer(s => s.AddDEngineSerializers());
        services.AddPlacementDirector<DataAffinityPlacement, DataAffinityPlacementDirector>();
        services.AddPlacementDirector<SiloIdentityPlacement, SiloIdentityPlacementDirector>();
        services.AddPlacementDirector<RecordPlacement, RecordPlacementDirector>();
        services.AddPlacementDirector<Replication.ReplicaPlacement, Replication.ReplicaPlacementDirector>();
        if (!services.Any(d => d.ServiceKey as string == PartitionOwnerGrain.StorageName && d.ServiceType == typeof(IGrainStorage)))
        {
            // Configuration records on this silo's disk; RecordPlacement keeps their grains on the
            // primary, so in the local profile they outlive every other silo.
            services.AddKeyedSingleton<IGrainStorage>(PartitionOwnerGrain.StorageName, (sp, _) => new FileGrainStorage(
                Path.Combine(sp.GetRequiredService<PartitionStore>().DataRoot, "records"),
                sp.GetRequiredService<Serializer>(),
                sp.GetRequiredService<Microsoft.Extensions.Logging.ILogger<FileGrainStorage>>()));
        }
        return builder;
    }

    private sealed class DEngineOptionsValidator : IValidateOptions<DEngineOptions>
    {
        public ValidateOptionsResult Validate(string? name, DEngineOptions options) =>
            options.Validate() is { } problem ? ValidateOptionsResult.Fail(problem) : ValidateOptionsResult.Success;
    }
}
