using System.Buffers;
using System.Collections.Concurrent;
using System.Diagnostics.CodeAnalysis;
using Google.Protobuf;
using Orleans.Serialization;
using Orleans.Serialization.Buffers;
using Orleans.Serialization.Cloning;
using Orleans.Serialization.Codecs;
using Orleans.Serialization.Serializers;
using Orleans.Serialization.WireProtocol;

namespace DEngine.Orleans.Serialization;

/// <summary>
/// One Orleans codec and copier for every generated Google.Protobuf message, so d-engine's wire
/// types (Entry, ScanResponse, ...) cross grain calls as themselves. On the wire a message is the
/// concrete type (written by Orleans' type codec, so the reader knows which parser to use) followed
/// by the length-prefixed protobuf encoding.
/// </summary>
public sealed class ProtobufMessageCodec : IGeneralizedCodec, IGeneralizedCopier, ITypeFilter
{
    private static readonly ConcurrentDictionary<Type, MessageParser?> Parsers = new();
    private static readonly ConcurrentDictionary<Type, Func<object, object>> Cloners = new();

    /// <inheritdoc />
    public bool IsSupportedType(Type type) => ParserFor(type) is not null;

    /// <inheritdoc />
    bool? ITypeFilter.IsTypeAllowed(Type type) => typeof(IMessage).IsAssignableFrom(type) ? true : null;

    /// <inheritdoc />
    public void WriteField<TBufferWriter>(ref Writer<TBufferWriter> writer, uint fieldIdDelta, Type? expectedType, object? value)
        where TBufferWriter : IBufferWriter<byte>
    {
        if (ReferenceCodec.TryWriteReferenceField(ref writer, fieldIdDelta, expectedType, value))
        {
            return;
        }
        var message = (IMessage)value!;
        // A null expected type forces the concrete type into the header.
        writer.WriteFieldHeader(fieldIdDelta, null, value!.GetType(), WireType.LengthPrefixed);
        var length = message.CalculateSize();
        writer.WriteVarUInt32((uint)length);
        if (length == 0)
        {
            return;
        }
        writer.EnsureContiguous(length);
        if (writer.WritableSpan.Length >= length)
        {
            message.WriteTo(writer.WritableSpan[..length]);
            writer.AdvanceSpan(length);
            return;
        }
        // EnsureContiguous does not promise large spans: serialise into a pooled array instead.
        var rented = ArrayPool<byte>.Shared.Rent(length);
        try
        {
            message.WriteTo(rented.AsSpan(0, length));
            writer.Write(rented.AsSpan(0, length));
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(rented);
        }
    }

    /// <inheritdoc />
    public object ReadValue<TInput>(ref Reader<TInput> reader, Field field)
    {
        if (field.IsReference)
        {
            return ReferenceCodec.ReadReference(ref reader, field.FieldType)!;
        }
        field.EnsureWireType(WireType.LengthPrefixed);
        var type = field.FieldType ?? throw new RequiredFieldMissingException("A protobuf message field arrived without its type.");
        var parser = ParserFor(type) ?? throw new NotSupportedException($"{type} is not a protobuf message.");
        var length = (int)reader.ReadVarUInt32();
        IMessage result;
        if (reader.TryReadBytes(length, out var span))
        {
            result = parser.ParseFrom(span);
        }
        else
        {
            var rented = ArrayPool<byte>.Shared.Rent(length);
            try
            {
                reader.ReadBytes(rented.AsSpan(0, length));
                result = parser.ParseFrom(rented.AsSpan(0, length));
            }
            finally
            {
                ArrayPool<byte>.Shared.Return(rented);
            }
        }
        ReferenceCodec.RecordObject(reader.Session, result);
        return result;
    }

    /// <inheritdoc />
    [return: NotNullIfNotNull(nameof(input))]
    public object? DeepCopy(object? input, CopyContext context)
    {
        if (input is null)
        {
            return null;
        }
        if (context.TryGetCopy<object>(input, out var existing) && existing is not null)
        {
            return existing;
        }
        var copy = Cloners.GetOrAdd(input.GetType(), static t =>
            typeof(ProtobufMessageCodec).GetMethod(nameof(CloneOf), System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Static)!
                .MakeGenericMethod(t)
                .CreateDelegate<Func<object, object>>())(input);
        context.RecordCopy(input, copy);
        return copy;
    }

    private static object CloneOf<T>(object message) where T : IDeepCloneable<T> => ((T)message).Clone()!;

    private static MessageParser? ParserFor(Type type) =>
        Parsers.GetOrAdd(type, static t =>
        {
            if (t.IsAbstract || t.IsInterface || !typeof(IMessage).IsAssignableFrom(t) || t.GetConstructor(Type.EmptyTypes) is null)
            {
                return null;
            }
            return ((IMessage)Activator.CreateInstance(t)!).Descriptor.Parser;
        });
}
