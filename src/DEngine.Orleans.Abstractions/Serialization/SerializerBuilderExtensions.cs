using Microsoft.Extensions.DependencyInjection;
using Orleans.Serialization;
using Orleans.Serialization.Cloning;
using Orleans.Serialization.Serializers;

namespace DEngine.Orleans.Serialization;

/// <summary>Registers DEngine's serializers; call on every silo and every client.</summary>
public static class SerializerBuilderExtensions
{
    /// <summary>Adds the protobuf message codec and copier (one instance behind all three roles).</summary>
    public static ISerializerBuilder AddDEngineSerializers(this ISerializerBuilder builder)
    {
        var services = builder.Services;
        if (services.Any(d => d.ServiceType == typeof(ProtobufMessageCodec)))
        {
            return builder;
        }
        services.AddSingleton<ProtobufMessageCodec>();
        services.AddSingleton<IGeneralizedCodec>(sp => sp.GetRequiredService<ProtobufMessageCodec>());
        services.AddSingleton<IGeneralizedCopier>(sp => sp.GetRequiredService<ProtobufMessageCodec>());
        services.AddSingleton<ITypeFilter>(sp => sp.GetRequiredService<ProtobufMessageCodec>());
        return builder;
    }
}
