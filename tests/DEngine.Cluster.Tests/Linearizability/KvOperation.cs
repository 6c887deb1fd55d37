namespace DEngine.Cluster.Tests.Linearizability;

/// <summary>What a client asked for.</summary>
public enum KvOpKind
{
    Put,
    Get,
    Delete,
    CompareAndSwap,
}

/// <summary>
/// One operation of a recorded history on one key. Times come from one monotonic clock.
/// <see cref="Return"/> is <see cref="long.MaxValue"/> when the outcome is unknown (the call failed
/// in a way that does not say whether it took effect): such an operation may take effect at any
/// point after its call, or never.
/// </summary>
public sealed record KvOperation(
    int Client,
    string Key,
    KvOpKind Kind,
    long Call,
    long Return,
    string? Value = null,
    string? Expected = null,
    string? Output = null,
    bool? Swapped = null)
{
    public bool OutcomeUnknown => Return == long.MaxValue;

    public override string ToString() => Kind switch
    {
        KvOpKind.Put => $"c{Client} put({Key}, {Value}) [{Call}, {Ret}]",
        KvOpKind.Get => $"c{Client} get({Key}) -> {Output ?? "absent"} [{Call}, {Ret}]",
        KvOpKind.Delete => $"c{Client} del({Key}) [{Call}, {Ret}]",
        _ => $"c{Client} cas({Key}, {Expected ?? "absent"} -> {Value}) -> {(Swapped is null ? "?" : Swapped.Value ? "true" : "false")} [{Call}, {Ret}]",
    };

    private string Ret => OutcomeUnknown ? "?" : Return.ToString();
}
