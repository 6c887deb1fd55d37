#!/usr/bin/env python3
"""Top-N self / inclusive functions from `perf script -F comm,tid,time,ip,sym,dso` output.

Record (JIT frames resolved through the runtime's perf map; W^X off so perf sees the map, R2R off so
framework code is jitted and named too):

  DOTNET_PerfMapEnabled=1 DOTNET_EnableWriteXorExecute=0 DOTNET_ReadyToRun=0 \
      perf record -F 997 -g -o run.perf -- tests/DEngine.Benchmarks/bin/Release/net10.0/DEngine.Benchmarks get-e2e
  perf script -i run.perf -F comm,tid,time,ip,sym,dso > run.txt
  perf_top.py run.txt --window-of 'StateMachineGrain+<Get>' --top 40

perf samples CPU time only (cpu-clock), so percentages are shares of the CPU the process used in the window.

  --window-of S    count only samples between the first and last sample whose stack contains S
  --children S     print what the first frame matching S spends its inclusive time in (its direct callees)
  --group NAME=S   also report the inclusive share of samples whose stack contains S (repeatable)
"""
import argparse
import collections
import re

HEADER = re.compile(r"^(\S.*?)\s+(\d+)\s+([\d.]+):\s*$")
FRAME = re.compile(r"^\s+([0-9a-f]+)\s+(.*)\s+\((.*)\)\s*$")


def clean(sym: str, dso: str) -> str:
    if sym == "[unknown]":
        return f"[unknown] ({dso.rsplit('/', 1)[-1]})"
    # perf-map names: "instance void [Asm] Ns.Type::Method(args)[Tier]" -> "Ns.Type::Method [Tier]"
    m = re.search(r"\[([^\]]+)\]\s+([^\s\[]+::[^(]+)\(.*\)\[(\w+)\]$", sym)
    if m:
        return f"{m.group(2)}"
    if dso.endswith(".so") or ".so." in dso or dso == "[kernel.kallsyms]":
        return f"{sym} ({dso.rsplit('/', 1)[-1]})"
    return sym


def samples(path):
    stack = None
    t = None
    with open(path, errors="replace") as f:
        for line in f:
            if not line.strip():
                if stack is not None:
                    yield t, stack
                stack = None
                continue
            h = HEADER.match(line)
            if h and not line.startswith("\t") and not line.startswith(" "):
                stack = []
                t = float(h.group(3))
                continue
            fm = FRAME.match(line)
            if fm and stack is not None:
                stack.append(clean(fm.group(2), fm.group(3)))
    if stack is not None:
        yield t, stack


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("file")
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("--window-of", default=None)
    ap.add_argument("--children", action="append", default=[])
    ap.add_argument("--group", action="append", default=[])
    ap.add_argument("--bins-with", default=None,
                    help="count only samples in 100 ms time bins that hold a sample containing this (phases that alternate)")
    ap.add_argument("--bins-without", default=None,
                    help="count only samples in 100 ms time bins that hold no sample containing this")
    ap.add_argument("--bins-need", default=None,
                    help="with --bins-without: the bin must still hold a sample containing this (the load is running)")
    ap.add_argument("--after-last", default=None, help="start the window after the last sample containing this")
    ap.add_argument("--before-first", default=None, help="end the window before the first sample containing this")
    args = ap.parse_args()

    all_samples = list(samples(args.file))
    lo, hi = float("-inf"), float("inf")
    if args.window_of:
        times = [t for t, s in all_samples if any(args.window_of in f for f in s)]
        lo, hi = min(times), max(times)
        print(f"window: {hi - lo:.2f} s from samples containing '{args.window_of}'")
    if args.after_last:
        lo = max(t for t, s in all_samples if any(args.after_last in f for f in s))
    if args.before_first:
        hi = min(t for t, s in all_samples if any(args.before_first in f for f in s))
    if args.after_last or args.before_first:
        print(f"window: {hi - lo:.2f} s (after the last '{args.after_last}', before the first '{args.before_first}')")
    selected = [(t, s) for t, s in all_samples if lo <= t <= hi]
    if args.bins_with or args.bins_without:
        def bins(needle):
            return {int(t * 10) for t, s in selected if any(needle in f for f in s)}
        keep = bins(args.bins_with) if args.bins_with else {int(t * 10) for t, s in selected}
        if args.bins_without:
            keep -= bins(args.bins_without)
        if args.bins_need:
            keep &= bins(args.bins_need)
        selected = [(t, s) for t, s in selected if int(t * 10) in keep]
        print(f"time bins kept: {len(keep)} x 100 ms")
    selected = [s for t, s in selected]
    n = len(selected)
    print(f"samples: {n}")
    self_c = collections.Counter(s[0] for s in selected if s)
    incl = collections.Counter()
    for s in selected:
        for f in set(s):
            incl[f] += 1
    dso = collections.Counter()
    for s in selected:
        if s:
            leaf = s[0]
            m = re.search(r"\(([^()]*)\)$", leaf)
            dso[m.group(1) if m and leaf.endswith(")") and not leaf.startswith("[unknown]") else ("jitted/managed" if not leaf.startswith("[unknown]") else leaf)] += 1

    print("\nSelf time by module:")
    for k, c in dso.most_common(12):
        print(f"  {100 * c / n:6.2f} %  {k}")
    print(f"\nTop {args.top} by self samples:")
    for k, c in self_c.most_common(args.top):
        print(f"  {100 * c / n:6.2f} %  {k}")
    print(f"\nTop {args.top} by inclusive samples:")
    for k, c in incl.most_common(args.top):
        print(f"  {100 * c / n:6.2f} %  {k}")
    for g in args.group:
        name, _, needle = g.partition("=")
        c = sum(1 for s in selected if any(needle in f for f in s))
        print(f"  group {name}: {100 * c / n:6.2f} %  (stacks containing '{needle}')")
    for c in args.children:
        kids = collections.Counter()
        total = 0
        for s in selected:
            # s[0] is the leaf; callers follow. Find the outermost frame matching c.
            idx = [i for i, f in enumerate(s) if c in f]
            if not idx:
                continue
            i = idx[-1]
            total += 1
            kids[s[i - 1] if i > 0 else "(self)"] += 1
        print(f"\nCallees of '{c}' ({total} samples, {100 * total / n if n else 0:.1f} %):")
        for k, cnt in kids.most_common(args.top):
            print(f"  {100 * cnt / total:6.2f} %  {k}")


if __name__ == "__main__":
    main()
