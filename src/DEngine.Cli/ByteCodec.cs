using System.Text;

namespace DEngine.Cli;

/// <summary>Turns command-line text into key/value bytes and back: UTF-8 by default, hex with <c>--hex</c>.</summary>
internal sealed class ByteCodec(bool hex)
{
    private static readonly UTF8Encoding Utf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: false);

    /// <summary>The bytes that <paramref name="text"/> stands for; <paramref name="what"/> names it in errors.</summary>
    public byte[] Decode(string text, string what)
    {
        if (!hex)
        {
            return Utf8.GetBytes(text);
        }
        try
        {
            return Convert.FromHexString(text);
        }
        catch (FormatException)
        {
            throw new CliException($"{what} '{text}' is not valid hex: use an even number of digits 0-9, a-f (e.g. 00ff10).");
        }
    }

    /// <summary>The text form of <paramref name="bytes"/>.</summary>
    public string Encode(ReadOnlySpan<byte> bytes) => hex ? Convert.ToHexStringLower(bytes) : Utf8.GetString(bytes);
}
