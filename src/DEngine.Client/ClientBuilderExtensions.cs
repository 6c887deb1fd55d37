using DEngine.Orleans.Serialization;
using Microsoft.Extensions.DependencyInjection;
using Orleans.Serialization;

namespace DEngine.Client;

/// <summary>Registers what a DEngine client needs in an Orleans client.</summary>
public static class ClientBuilderExtensions
{
    /// <summary>Adds DEngine's serializers and a <see cref="DEngineClient"/> singleton.</summary>
    public static IClientBuilder AddDEngineClient(this IClientBuilder builder, Action<DEngineClientOptions>? configure = null)
    {
        builder.Services.AddSerializer(s => s.AddDEngineSerializers());
        var options = new DEngineClientOptions();
        configure?.Invoke(options);
        builder.Services.AddSingleton(sp => new DEngineClient(sp.GetRequiredService<IClusterClient>(), options));
        return builder;
    }
}
