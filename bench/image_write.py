"""Image writer throughput vs `curl | dd bs=4M`, and its peak RSS at two image sizes.

Both sides fetch the same bytes from the same boot server (aiohttp, sendfile) on loopback and
write them to the same sparse target file with an fsync at the end; the writer also hashes
(sha256) every byte and wipes the target's metadata first, which dd does not. The writer is
timed inside its process (its interpreter start is not counted), curl|dd from outside (two
process starts, a few ms, are). One untimed curl|dd per image first puts it in the page cache
for both sides; the rounds then alternate which side goes first, and the figure is the median
of the per-round ratios, each round printed. Prints the command and the load; asserts nothing.
Run: .venv/bin/python -m bench.image_write [--mib 1024] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.context import load, preamble
from testbed.images import build_raw_image
from testbed.processes import boot_server, free_port

WRITER = r"""
import json, resource, sys, time
from pathlib import Path
from activities.agent.devices import BlockDevice
from activities.agent.image import write_image
from metalflow.api.models import ImageSpec
url, digest, target, size = sys.argv[1], sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])
dev = BlockDevice(name="/dev/bench", path=target, size_bytes=size)
start = time.perf_counter()
spec = ImageSpec(url=url, checksum=digest, checksumType="sha256", format="raw")
written = write_image(spec, dev, lambda n, t: None)
elapsed = time.perf_counter() - start
print(json.dumps({"seconds": elapsed, "bytes": written.bytes_written,
                  "maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def run_writer(url: str, digest: str, target: Path, disk_size: int) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", WRITER, url, digest, str(target), str(disk_size)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout)


def run_dd(url: str, target: Path) -> float:
    start = time.perf_counter()
    subprocess.run(
        f"curl -sf {url} | dd of={target} bs=4M iflag=fullblock conv=notrunc,fsync status=none",
        shell=True,
        check=True,
    )
    return time.perf_counter() - start


def rounds(
    url: str, digest: str, mib: int, target: Path, disk_size: int, n: int
) -> tuple[list[tuple[float, float]], float]:
    """N paired runs, alternating which side goes first: each round's (writer, curl|dd) MiB/s and
    the writer's peak RSS."""
    pairs, peak = [], 0.0
    run_dd(url, target)  # untimed: the image into the page cache, for both sides alike
    for i in range(n):
        rate: dict[str, float] = {}
        order = ("writer", "curl|dd") if i % 2 == 0 else ("curl|dd", "writer")
        for side in order:
            if side == "writer":
                w = run_writer(url, digest, target, disk_size)
                rate[side], peak = mib / w["seconds"], max(peak, w["maxrss_mib"])
            else:
                rate[side] = mib / run_dd(url, target)
        pairs.append((rate["writer"], rate["curl|dd"]))
        print(
            f"    round {i + 1} ({order[0]} first): writer {rate['writer']:7.1f} MiB/s, "
            f"curl|dd {rate['curl|dd']:7.1f} MiB/s, ratio {rate['writer'] / rate['curl|dd']:.2f}",
            flush=True,
        )
    return pairs, peak


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--mib", type=int, default=1024, help="large image size in MiB")
    p.add_argument("--small-mib", type=int, default=128, help="small image size (RSS comparison)")
    p.add_argument("--rounds", type=int, default=5, help="paired runs per image size (odd: a true median)")
    args = p.parse_args()
    print(preamble("bench.image_write"), flush=True)
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR", "/var/tmp")) as tmp:
        root = Path(tmp)
        port = free_port()
        server = boot_server(root / "boot", port, root / "boot-server.log")
        try:
            target = root / "disk.img"
            disk_size = (args.mib + 64) << 20
            with target.open("wb") as f:
                os.truncate(f.fileno(), disk_size)
            print(f"image writer vs curl|dd, loopback HTTP, target {target} (sparse file)")
            rss = {}
            for mib in (args.small_mib, args.mib):
                img = build_raw_image(
                    root / "boot" / "images" / f"img-{mib}.img", size_mib=mib, label=str(mib)
                )
                url = f"http://127.0.0.1:{port}/images/{img.path.name}"
                print(f"  {mib} MiB image:")
                pairs, rss[mib] = rounds(url, img.sha256, mib, target, disk_size, args.rounds)
                ratios = [w / d for w, d in pairs]
                writer, dd = (statistics.median(side) for side in zip(*pairs, strict=True))
                print(
                    f"  {mib:5d} MiB, medians of {len(pairs)} rounds: writer {writer:.0f} MiB/s "
                    f"(sha256 included), curl|dd {dd:.0f} MiB/s, ratio {statistics.median(ratios):.2f} "
                    f"(min {min(ratios):.2f}, max {max(ratios):.2f}); writer peak RSS {rss[mib]:.0f} MiB"
                )
            small, large = rss[args.small_mib], rss[args.mib]
            print(
                f"  peak RSS {small:.0f} MiB at {args.small_mib} MiB vs {large:.0f} MiB at {args.mib} MiB "
                f"(x{args.mib // args.small_mib} image, RSS x{large / small:.2f})"
            )
        finally:
            server.stop()
    print(f"after: {load()}")


if __name__ == "__main__":
    main()
