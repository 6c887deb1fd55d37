namespace DEngine.Cluster.Tests.Linearizability;

/// <summary>
/// Checks that a history of put / get / delete / CAS operations is linearizable for a key-value
/// register. Keys are independent objects, so the history is split per key (linearizability is
/// compositional) and each key is checked with the Wing–Gong search with Lowe's memoisation: try to
/// linearize a pending call whose effect is consistent with the state, backtrack when a return
/// arrives before its call was linearized, and remember configurations (linearized set, state)
/// already explored.
/// </summary>
/// <remarks>
/// Operations with an unknown outcome (a write that failed without saying whether it took effect)
/// may take effect at any point after their call, or never; a one-attempt client across a kill
/// leaves dozens of them, each pending to the end of the history, and a plain search explores every
/// subset of them (it ran for over ten minutes on one such history). Three exact reductions keep it
/// small, none of which can turn a non-linearizable history into a linearizable one or back:
/// <list type="bullet">
/// <item>A value no operation observes (no read returned it, no CAS expected it) is one state:
/// every such value answers every read and CAS alike.</item>
/// <item>An unknown-outcome operation is linearized only where it changes the state: where it
/// would not, leaving it out (it may never have happened) allows every continuation that
/// linearizing it there would. The key is linearizable once every known operation is.</item>
/// <item>Unknown-outcome operations with the same kind, expected value and (collapsed) new value
/// are interchangeable (none has a return to respect), so a configuration counts how many of each
/// class are linearized instead of which.</item>
/// </list>
/// The search is bounded: past <see cref="MaxConfigurations"/> explored configurations of one key
/// the result is inconclusive (reported as a failure with the reason), never a hang.
/// </remarks>
public static class LinearizabilityChecker
{
    /// <summary>How many configurations one key's search may explore before it gives up.</summary>
    public const int MaxConfigurations = 2_000_000;

    /// <summary>
    /// The result: linearizable, or the key whose history is not (or could not be decided, with
    /// <see cref="Reason"/> saying so).
    /// </summary>
    public sealed record Result(bool IsLinearizable, string? FailingKey, IReadOnlyList<KvOperation> FailingHistory, string? Reason = null);

    public static Result Check(IEnumerable<KvOperation> history) => Check(history, MaxConfigurations);

    /// <summary><see cref="Check(IEnumerable{KvOperation})"/> with another search bound (tests of the bound).</summary>
    public static Result Check(IEnumerable<KvOperation> history, int maxConfigurations)
    {
        foreach (var group in history.GroupBy(o => o.Key))
        {
            var ops = group.ToList();
            var verdict = CheckKey(ops, maxConfigurations, out var explored);
            if (verdict != true)
            {
                var unknown = ops.Count(o => o.OutcomeUnknown && o.Kind != KvOpKind.Get);
                var reason = verdict is null
                    ? $"inconclusive: the search gave up after {explored} configurations ({ops.Count} operations, {unknown} with an unknown outcome)"
                    : $"not linearizable ({ops.Count} operations, {unknown} with an unknown outcome, {explored} configurations explored)";
                return new Result(false, group.Key, ops, reason);
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
        public Node? Match; // a call's return node; none for an unknown outcome
    }

    /// <summary>The state every unobserved value collapses to.</summary>
    private const string Unobserved = "\u0001unobserved";

    /// <summary>true: linearizable; false: not; null: gave up after <paramref name="maxConfigurations"/>.</summary>
    private static bool? CheckKey(List<KvOperation> ops, int maxConfigurations, out int explored)
    {
        explored = 0;
        // Reads whose outcome is unknown observed nothing: drop them.
        ops = ops.Where(o => !(o.Kind == KvOpKind.Get && o.OutcomeUnknown)).ToList();
        var observed = new HashSet<string>(ops.Where(o => o.Kind == KvOpKind.Get && o.Output is not null).Select(o => o.Output!)
            .Concat(ops.Where(o => o.Kind == KvOpKind.CompareAndSwap && o.Expected is not null).Select(o => o.Expected!)));
        ops = ops.Select(o => o.Value is { } v && !observed.Contains(v) ? o with { Value = Unobserved } : o).ToList();
        var n = ops.Count;
        var known = ops.Count(o => !o.OutcomeUnknown);
        if (known == 0)
        {
            return true;
        }

        // Classes of interchangeable unknown-outcome operations (what Step reads of them); -1 for a known one.
        var classOf = new int[n];
        var classes = new Dictionary<(KvOpKind, string?, string?), int>();
        for (var i = 0; i < n; i++)
        {
            var op = ops[i];
            (KvOpKind, string?, string?) effect = op.Kind switch
            {
                KvOpKind.Put => (op.Kind, null, op.Value),
                KvOpKind.Delete => (op.Kind, null, null),
                _ => (op.Kind, op.Expected, op.Value),
            };
            classOf[i] = !op.OutcomeUnknown ? -1 : classes.TryGetValue(effect, out var c) ? c : classes[effect] = classes.Count;
        }

        var nodes = new List<Node>(2 * n);
        for (var i = 0; i < n; i++)
        {
            var call = new Node { Op = i, IsCall = true, Time = ops[i].Call };
            nodes.Add(call);
            if (!ops[i].OutcomeUnknown)
            {
                var ret = new Node { Op = i, IsCall = false, Time = ops[i].Return };
                call.Match = ret;
                nodes.Add(ret);
            }
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

        var configuration = new Configuration(n, classes.Count, classOf);
        var seen = new HashSet<string>();
        var stack = new Stack<(Node Call, string? State)>();
        string? state = null;
        var entry = head.Next;
        while (true)
        {
            if (entry is null)
            {
                // Past the last return with known operations left unlinearized: backtrack.
                if (stack.Count == 0)
                {
                    return false;
                }
                (entry, state) = Backtrack(stack, configuration);
                continue;
            }
            if (entry.IsCall)
            {
                var op = ops[entry.Op];
                if (Step(state, op, out var next) && !(op.OutcomeUnknown && next == state))
                {
                    configuration.Set(entry.Op, true);
                    if (configuration.KnownLinearized == known)
                    {
                        return true;
                    }
                    if (seen.Add(configuration.Key(next)))
                    {
                        if (++explored > maxConfigurations)
                        {
                            return null;
                        }
                        stack.Push((entry, state));
                        state = next;
                        Lift(entry);
                        entry = head.Next;
                        continue;
                    }
                    configuration.Set(entry.Op, false);
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
                (entry, state) = Backtrack(stack, configuration);
            }
        }
    }

    private static (Node? Next, string? State) Backtrack(Stack<(Node Call, string? State)> stack, Configuration configuration)
    {
        var (call, state) = stack.Pop();
        configuration.Set(call.Op, false);
        Unlift(call);
        return (call.Next, state);
    }

    /// <summary>Which known operations are linearized, and how many of each unknown-outcome class.</summary>
    private sealed class Configuration(int n, int classCount, int[] classOf)
    {
        private readonly ulong[] known = new ulong[(n + 63) / 64];
        private readonly int[] counts = new int[classCount];

        public int KnownLinearized { get; private set; }

        public void Set(int op, bool linearized)
        {
            if (classOf[op] >= 0)
            {
                counts[classOf[op]] += linearized ? 1 : -1;
                return;
            }
            if (linearized)
            {
                known[op >> 6] |= 1UL << (op & 63);
            }
            else
            {
                known[op >> 6] &= ~(1UL << (op & 63));
            }
            KnownLinearized += linearized ? 1 : -1;
        }

        public string Key(string? state) => string.Join(',', known) + "|" + string.Join(',', counts) + "|" + (state is null ? "\0" : "v" + state);
    }

    private static void Lift(Node call)
    {
        call.Prev!.Next = call.Next;
        if (call.Next is not null)
        {
            call.Next.Prev = call.Prev;
        }
        if (call.Match is { } ret)
        {
            ret.Prev!.Next = ret.Next;
            if (ret.Next is not null)
            {
                ret.Next.Prev = ret.Prev;
            }
        }
    }

    private static void Unlift(Node call)
    {
        if (call.Match is { } ret)
        {
            ret.Prev!.Next = ret;
            if (ret.Next is not null)
            {
                ret.Next.Prev = ret;
            }
        }
        call.Prev!.Next = call;
        if (call.Next is not null)
        {
            call.Next.Prev = call;
        }
    }
}
