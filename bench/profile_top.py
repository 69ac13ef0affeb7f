"""Where a sampled process spent its CPU: the top functions by own and by inclusive samples.

Reads py-spy's raw output (one collapsed stack per line, root first, then a sample count), as
`bench.fleet --profile FILE` writes it. Idle samples (threads parked in a poll) are dropped by
py-spy itself unless it was run with --idle.
Run: .venv/bin/python -m bench.profile_top FILE [--top 30] [--match temporalio]
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

FRAME = re.compile(r"^(?P<fn>.*?) \((?P<file>.*?)(?::\d+)?\)$")


def short(frame: str) -> str:
    """`fn (path/to/site-packages/pkg/mod.py:12)` -> `pkg/mod.py:fn`."""
    m = FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    path = m["file"].split("site-packages/")[-1].split("/work/")[-1]
    return f"{'/'.join(path.split('/')[-2:])}:{m['fn']}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("file", type=Path)
    p.add_argument("--top", type=int, default=30)
    p.add_argument("--match", default="", help="inclusive table only for frames containing this")
    a = p.parse_args()
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    for line in a.file.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        frames = [short(f) for f in stack.split(";") if f and not f.startswith("process ")]
        frames = [f for f in frames if not f.startswith("thread ")]
        if not frames:
            continue
        total += int(n)
        own[frames[-1]] += int(n)
        for f in set(frames):
            if a.match in f:
                incl[f] += int(n)
    print(f"{total} samples")
    print("own:")
    for f, n in own.most_common(a.top):
        print(f"  {100 * n / total:5.1f}%  {f}")
    print("inclusive:")
    for f, n in incl.most_common(a.top):
        print(f"  {100 * n / total:5.1f}%  {f}")


if __name__ == "__main__":
    main()
