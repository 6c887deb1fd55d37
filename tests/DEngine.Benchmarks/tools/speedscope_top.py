#!/usr/bin/env python3
"""Aggregates a dotnet-trace speedscope file (evented, per-thread) into top-N self and inclusive frames.

usage: speedscope_top.py FILE [--top N] [--under SUBSTRING] [--thread SUBSTRING] [--children SUBSTRING]
                                [--exclude-leaf SUBSTRING ...]

  --under S      count only time whose stack contains a frame matching S (e.g. a benchmark delegate)
  --thread S     only threads whose profile name contains S
  --children S   also print the direct children of the first frame matching S, with their share
  --idle S       a frame name that marks a thread as idle (waiting); repeatable. Stacks whose leaf part
                 contains one is reported separately ("idle") and left out of the percentages.

Percentages are of the counted time (the sampled wall time of the selected threads/stacks), so for the
thread-time sampler of dotnet-trace they mean "share of the samples", running or blocked in native code.
"""
import argparse
import collections
import json
import re


PSEUDO = {"CPU_TIME": "managed", "UNMANAGED_CODE_TIME": "native/blocked"}


def short(name: str) -> str:
    # "Module!Namespace.Type.Method(args)" -> keep module!Type.Method, drop argument lists.
    name = re.sub(r"\(.*\)$", "", name)
    return name


def window(data, frames, needle):
    lo, hi = float("inf"), float("-inf")
    for prof in data["profiles"]:
        stack = []
        for ev in prof["events"]:
            if ev["type"] == "O":
                stack.append(ev["frame"])
                if needle in frames[ev["frame"]]:
                    lo = min(lo, ev["at"])
                    hi = max(hi, ev["at"])
            elif stack:
                if needle in frames[stack[-1]]:
                    hi = max(hi, ev["at"])
                stack.pop()
    return lo, hi


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("file")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--under", default=None)
    ap.add_argument("--thread", default=None)
    ap.add_argument("--children", action="append", default=[])
    ap.add_argument("--idle", action="append", default=[])
    ap.add_argument("--window-of", default=None,
                    help="count only between the first and last sample (any thread) whose stack contains this")
    args = ap.parse_args()

    data = json.load(open(args.file))
    frames = [short(f["name"]) for f in data["shared"]["frames"]]
    self_t = collections.Counter()
    incl_t = collections.Counter()
    children = {c: collections.Counter() for c in args.children}
    child_total = collections.Counter()
    total = 0.0
    idle_total = 0.0

    lo, hi = float("-inf"), float("inf")
    if args.window_of:
        lo, hi = window(data, frames, args.window_of)
        print(f"window: {lo:.0f} .. {hi:.0f} ms ({hi - lo:.0f} ms) from samples containing '{args.window_of}'")

    for prof in data["profiles"]:
        if args.thread and args.thread not in prof["name"]:
            continue
        stack: list[int] = []
        last = None
        for ev in prof["events"]:
            at = ev["at"]
            if last is not None and stack and at > last and last >= lo and at <= hi:
                dt = at - last
                names = [frames[i] for i in stack]
                if args.under is None or any(args.under in n for n in names):
                    if any(any(s in n for s in args.idle) for n in names):
                        idle_total += dt
                    else:
                        total += dt
                        # The thread-time sampler ends every stack with a pseudo-frame saying whether the
                        # thread ran managed code (CPU_TIME) or was in native code (UNMANAGED_CODE_TIME:
                        # running native code, in a syscall such as fsync, or blocked). Self time goes to
                        # the last real frame, tagged with that state.
                        leaf = names[-1]
                        if leaf in PSEUDO and len(names) > 1:
                            self_t[f"{names[-2]}  [{PSEUDO[leaf]}]"] += dt
                        else:
                            self_t[leaf] += dt
                        for n in set(names):
                            incl_t[n] += dt
                        for c in args.children:
                            for j, n in enumerate(names):
                                if c in n:
                                    child = names[j + 1] if j + 1 < len(names) else "(self)"
                                    children[c][child] += dt
                                    child_total[c] += dt
                                    break
            last = at
            if ev["type"] == "O":
                stack.append(ev["frame"])
            else:
                # Close events match the innermost open frame.
                if stack:
                    stack.pop()

    print(f"counted time: {total:.0f} ms" + (f" (plus {idle_total:.0f} ms idle, excluded)" if args.idle else ""))
    print(f"\nTop {args.top} by self time:")
    for name, t in self_t.most_common(args.top):
        print(f"  {100 * t / total:6.2f} %  {t:9.0f} ms  {name}")
    print(f"\nTop {args.top} by inclusive time:")
    for name, t in incl_t.most_common(args.top):
        print(f"  {100 * t / total:6.2f} %  {t:9.0f} ms  {name}")
    for c in args.children:
        ct = child_total[c]
        print(f"\nChildren of first frame matching '{c}' ({ct:.0f} ms, {100 * ct / total if total else 0:.1f} % of counted):")
        for name, t in children[c].most_common(args.top):
            print(f"  {100 * t / ct:6.2f} %  {t:9.0f} ms  {name}")


if __name__ == "__main__":
    main()
