namespace DEngine.Cluster.Tests.Linearizability;

/// <summary>
/// Checks that a history of put / get / delete / CAS operations is linearizable for a key-value
/// register. Keys are independent objects, so the history is split per key (linearizability is
/// compositional) and each key is checked with the Wing–Gong search with Lowe's memoisation: try to
/// linearize a pending call whose effect is consistent with the state, backtrack when a return
/// arrives before its call was linearized, and remember (linearized set, state) pairs already
/// explored.
/// </summary>
public static class LinearizabilityChecker
{
    /// <summary>The result: linearizable, or the key whose history is not.</summary>
    public sealed record Result(bool IsLinearizable, string? FailingKey, IReadOnlyList<KvOperation> FailingHistory);

    public static Result Check(IEnumerable<KvOperation> history)
    {
        foreach (var group in history.GroupBy(o => o.Key))
        {
            var ops = group.ToList();
            if (!CheckKey(ops))
            {
                return new Result(false, group.Key, ops);
            }
        }
        return new Result(true, null, []);
    }

    /// <summary>The register's transition: returns false when <paramref name="op"/> cannot have produced its output from <paramref name="state"/>.</summary>
    public static bool Step(string? state, KvOperation op, out string? next)
    {
        next = state;
        switch (op.Kind)
        {
            case KvOpKind.Put:
                next = op.Value;
                return true;
            case KvOpKind.Delete:
                next = null;
                return true;
            case KvOpKind.Get:
                return op.Output == state;
            default:
                var matches = op.Expected is null ? state is null : state == op.Expected;
                if (op.Swapped is bool swapped && swapped != matches)
                {
                    return false;
                }
                if (matches)
                {
                    next = op.Value;
                }
                return true;
        }
    }

    private sealed class Node
    {
        public required int Op;
        public required bool IsCall;
        public required long Time;
        public Node? Prev;
        public Node? Next;
        public Node? Match; // a call's return node
    }

    private static bool CheckKey(List<KvOperation> ops)
    {
        // Reads whose outcome is unknown observed nothing: drop them.
        ops = ops.Where(o => !(o.Kind == KvOpKind.Get && o.OutcomeUnknown)).ToList();
        var n = ops.Count;
        if (n == 0)
        {
            return true;
        }
        var nodes = new List<Node>(2 * n);
        for (var i = 0; i < n; i++)
        {
            var call = new Node { Op = i, IsCall = true, Time = ops[i].Call };
            var ret = new Node { Op = i, IsCall = false, Time = ops[i].Return };
            call.Match = ret;
            nodes.Add(call);
            nodes.Add(ret);
        }
        // Time order; at equal times calls first (the more permissive reading of a tie).
        nodes.Sort((a, b) => a.Time != b.Time ? a.Time.CompareTo(b.Time) : a.IsCall == b.IsCall ? 0 : a.IsCall ? -1 : 1);
        var head = new Node { Op = -1, IsCall = false, Time = long.MinValue };
        var prev = head;
        foreach (var node in nodes)
        {
            prev.Next = node;
            node.Prev = prev;
            prev = node;
        }

        var linearized = new ulong[(n + 63) / 64];
        var seen = new HashSet<string>();
        var stack = new Stack<(Node Call, string? State)>();
        string? state = null;
        var entry = head.Next;
        while (head.Next is not null)
        {
            if (entry is null)
            {
                // Ran off the end without linearizing everything: only possible after lifts; backtrack.
                if (stack.Count == 0)
                {
                    return false;
                }
                (entry, state) = Backtrack(stack, linearized);
                continue;
            }
            if (entry.IsCall)
            {
                var op = ops[entry.Op];
                if (Step(state, op, out var next))
                {
                    Set(linearized, entry.Op, true);
                    var key = Key(linearized, next);
                    if (seen.Add(key))
                    {
                        stack.Push((entry, state));
                        state = next;
                        Lift(entry);
                        entry = head.Next;
                        continue;
                    }
                    Set(linearized, entry.Op, false);
                }
                entry = entry.Next;
            }
            else
            {
                // A return whose call is not linearized yet: the current prefix cannot work.
                if (stack.Count == 0)
                {
                    return false;
                }
                (entry, state) = Backtrack(stack, linearized);
            }
        }
        return true;
    }

    private static (Node? Next, string? State) Backtrack(Stack<(Node Call, string? State)> stack, ulong[] linearized)
    {
        var (call, state) = stack.Pop();
        Set(linearized, call.Op, false);
        Unlift(call);
        return (call.Next, state);
    }

    private static void Lift(Node call)
    {
        call.Prev!.Next = call.Next;
        if (call.Next is not null)
        {
            call.Next.Prev = call.Prev;
        }
        var ret = call.Match!;
        ret.Prev!.Next = ret.Next;
        if (ret.Next is not null)
        {
            ret.Next.Prev = ret.Prev;
        }
    }

    private static void Unlift(Node call)
    {
        var ret = call.Match!;
        ret.Prev!.Next = ret;
        if (ret.Next is not null)
        {
            ret.Next.Prev = ret;
        }
        call.Prev!.Next = call;
        if (call.Next is not null)
        {
            call.Next.Prev = call;
        }
    }

    private static void Set(ulong[] bits, int i, bool value)
    {
        if (value)
        {
            bits[i >> 6] |= 1UL << (i & 63);
        }
        else
        {
            bits[i >> 6] &= ~(1UL << (i & 63));
        }
    }

    private static string Key(ulong[] bits, string? state) => string.Join(',', bits) + "|" + (state is null ? "\0" : "v" + state);
}
