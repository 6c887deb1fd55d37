using Orleans;

namespace DEngine.Orleans.Serialization;

/// <summary>How a <see cref="DEngineException"/> crosses a grain call: code, message, partition and index survive.</summary>
[GenerateSerializer, Alias("dengine.DEngineException")]
public struct DEngineExceptionSurrogate
{
    /// <summary>The error code.</summary>
    [Id(0)] public DEngineErrorCode Code;

    /// <summary>The message without prefix.</summary>
    [Id(1)] public string Detail;

    /// <summary>The partition, if any.</summary>
    [Id(2)] public int? Partition;

    /// <summary>The index, if any.</summary>
    [Id(3)] public ulong? Index;
}

/// <summary>Converts <see cref="DEngineException"/> to and from its surrogate.</summary>
[RegisterConverter]
public sealed class DEngineExceptionConverter : IConverter<DEngineException, DEngineExceptionSurrogate>
{
    /// <inheritdoc />
    public DEngineException ConvertFromSurrogate(in DEngineExceptionSurrogate surrogate) =>
        new(surrogate.Code, surrogate.Detail, surrogate.Partition, surrogate.Index);

    /// <inheritdoc />
    public DEngineExceptionSurrogate ConvertToSurrogate(in DEngineException value) =>
        new() { Code = value.Code, Detail = value.Detail, Partition = value.Partition, Index = value.Index };
}
