"""Image writer throughput vs `curl | dd bs=4M` (raw) and curl + `qemu-img convert` (qcow2), and its
peak RSS, at two image sizes, in one run.

Every side fetches the same bytes from the same boot server (aiohttp, sendfile) on loopback, writes
the same sparse target file and flushes it before its clock stops: the writer fsyncs (raw) or has
qemu-img flush (`-t writeback`, qcow2), dd runs with conv=fsync, the qcow2 baseline's qemu-img
with `-t writeback` too. The writer also hashes (sha256) every byte and wipes the target's metadata
first, which the baselines do not; for qcow2 both spool the file to the same directory, in RAM
(tmpfs, as the deploy ramdisk's /tmp is: a disk spool made both sides race the kernel's
write-back of it, ratios 0.56-2.52 in one run; the writer then runs `qemu-img info` and
`convert`, the baseline only `convert`). The writer is timed inside
its process (its interpreter start is not counted), the baselines from outside (process starts, a
few ms, are). One untimed baseline per image first puts it in the page cache for both sides; every
side starts after a `sync` (untimed: neither pays for the write-back of the one before); the
rounds then alternate which side goes first, and the ratio is the median of the per-round ratios,
each round printed; MiB/s are of the raw image (a qcow2's virtual size). Prints the command and the
load; asserts nothing.
Run: .venv/bin/python -m bench.image_write [--mib 1024] [--small-mib 128] [--rounds 3]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.context import load, preamble
from testbed.images import build_raw_image, convert_to_qcow2
from testbed.processes import boot_server, free_port

# The deploy ramdisk spools a qcow2 to its /tmp, which is RAM; /dev/shm is that here.
SPOOL_DIR = os.environ.get("BENCH_SPOOL_DIR", "/dev/shm")

WRITER = r"""
import json, resource, sys, time
from pathlib import Path
from activities.agent.devices import BlockDevice
from activities.agent.image import write_image
from metalflow.api.models import ImageSpec
url, digest, target, size, fmt, spool = sys.argv[1:7]
dev = BlockDevice(name="/dev/bench", path=Path(target), size_bytes=int(size))
start = time.perf_counter()
spec = ImageSpec(url=url, checksum=digest, checksumType="sha256", format=fmt)
written = write_image(spec, dev, lambda n, t: None, workdir=Path(spool))
elapsed = time.perf_counter() - start
print(json.dumps({"seconds": elapsed, "bytes": written.bytes_written,
                  "maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


@dataclass(frozen=True)
class Case:
    """One image in one format: where it is served, its digest, and the baseline's shell command."""

    fmt: str
    url: str
    digest: str
    baseline: str


def baseline_command(fmt: str, url: str, target: Path, spool: Path) -> str:
    if fmt == "raw":
        return f"curl -sf {url} | dd of={target} bs=4M iflag=fullblock conv=notrunc,fsync status=none"
    tmp = spool / "baseline.qcow2"
    return (
        f"curl -sf -o {tmp} {url} && qemu-img convert -t writeback -n -f qcow2 -O raw {tmp} {target}"
        f" && rm {tmp}"
    )


def run_writer(case: Case, target: Path, disk_size: int, spool: Path) -> dict[str, float]:
    argv = [case.url, case.digest, str(target), str(disk_size), case.fmt, str(spool)]
    out = subprocess.run([sys.executable, "-c", WRITER, *argv], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def run_baseline(case: Case) -> float:
    start = time.perf_counter()
    subprocess.run(case.baseline, shell=True, check=True)
    return time.perf_counter() - start


def rounds(
    case: Case, mib: int, target: Path, disk_size: int, spool: Path, n: int
) -> tuple[list[tuple[float, float]], float]:
    """N paired runs, alternating which side goes first: each round's (writer, baseline) MiB/s and
    the writer's peak RSS (its own process: qemu-img's, a forked child's, is not told apart)."""
    pairs, peak = [], 0.0
    run_baseline(case)  # untimed: the image into the page cache, for both sides alike
    base = "curl|dd" if case.fmt == "raw" else "curl+qemu-img"
    for i in range(n):
        rate: dict[str, float] = {}
        order = ("writer", base) if i % 2 == 0 else (base, "writer")
        for side in order:
            os.sync()  # the other side's write-back is not this side's to pay for (untimed)
            if side == "writer":
                w = run_writer(case, target, disk_size, spool)
                rate[side], peak = mib / w["seconds"], max(peak, w["maxrss_mib"])
            else:
                rate[side] = mib / run_baseline(case)
        pairs.append((rate["writer"], rate[base]))
        print(
            f"    round {i + 1} ({order[0]} first): writer {rate['writer']:7.1f} MiB/s, "
            f"{base} {rate[base]:7.1f} MiB/s, ratio {rate['writer'] / rate[base]:.2f}",
            flush=True,
        )
    return pairs, peak


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--mib", type=int, default=1024, help="large image size in MiB")
    p.add_argument("--small-mib", type=int, default=128, help="small image size (RSS comparison)")
    p.add_argument("--rounds", type=int, default=3, help="paired runs per case (odd: a true median)")
    args = p.parse_args()
    print(preamble("bench.image_write"), flush=True)
    with contextlib.ExitStack() as stack:
        bench_dir = os.environ.get("BENCH_DIR", "/var/tmp")
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(dir=bench_dir)))
        port = free_port()
        server = boot_server(root / "boot", port, root / "boot-server.log")
        try:
            target = root / "disk.img"
            spool = Path(stack.enter_context(tempfile.TemporaryDirectory(dir=SPOOL_DIR)))
            disk_size = (max(args.mib, args.small_mib) + 64) << 20
            with target.open("wb") as f:
                os.truncate(f.fileno(), disk_size)
            print(f"loopback HTTP, target {target} (sparse file), qcow2 spooled to {spool}")
            summary, rss = [], {}
            for mib in (args.small_mib, args.mib):
                images = root / "boot" / "images"
                raw = build_raw_image(images / f"img-{mib}.img", size_mib=mib, label=str(mib))
                qcow2 = convert_to_qcow2(raw, images / f"img-{mib}.qcow2")
                for fmt, img in (("raw", raw), ("qcow2", qcow2)):
                    url = f"http://127.0.0.1:{port}/images/{img.path.name}"
                    case = Case(fmt, url, img.sha256, baseline_command(fmt, url, target, spool))
                    print(f"  {mib} MiB {fmt} image ({img.size >> 20} MiB file); baseline: {case.baseline}")
                    pairs, peak = rounds(case, mib, target, disk_size, spool, args.rounds)
                    rss[mib, fmt] = peak
                    ratios = [w / b for w, b in pairs]
                    writer, base = (statistics.median(side) for side in zip(*pairs, strict=True))
                    summary.append(
                        f"  {mib:5d} MiB {fmt:5s} medians of {len(pairs)}: writer {writer:4.0f} MiB/s, "
                        f"{'curl|dd' if fmt == 'raw' else 'curl+qemu-img'} {base:4.0f} MiB/s, ratio "
                        f"{statistics.median(ratios):.2f} (min {min(ratios):.2f}, max {max(ratios):.2f}); "
                        f"writer peak RSS {peak:.0f} MiB"
                    )
                    print(summary[-1], flush=True)
                raw.path.unlink()
                qcow2.path.unlink()
            print("summary (writer: sha256 + fsync; baselines: fsync too):", *summary, sep="\n")
            small, large = (max(rss[mib, f] for f in ("raw", "qcow2")) for mib in (args.small_mib, args.mib))
            print(
                f"  peak RSS {small:.0f} MiB at {args.small_mib} MiB vs {large:.0f} MiB at {args.mib} MiB "
                f"(x{args.mib / args.small_mib:.0f} image, RSS x{large / small:.2f})"
            )
        finally:
            server.stop()
    print(f"after: {load()}")


if __name__ == "__main__":
    main()
