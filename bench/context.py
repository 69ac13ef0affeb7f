"""What every benchmark prints with its figures: the exact command and the machine's load.

A figure without them cannot be rerun or judged: on 2 shared cores the same run moves by tens
of percent with what else is running. The load is printed before and after (the benchmark adds
its own), and a figure is only as good as the quieter of the two.
"""

from __future__ import annotations

import os
import shlex
import sys


def command(module: str) -> str:
    """The command line that reproduces this run, from the repository root."""
    return shlex.join([os.path.relpath(sys.executable), "-m", module, *sys.argv[1:]])


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} (1/5/15 min) on {os.cpu_count()} cores"


def preamble(module: str) -> str:
    return f"command: {command(module)}\nbefore: {load()}"
