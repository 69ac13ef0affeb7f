"""Image writer throughput vs `curl | dd bs=4M`, and its peak RSS at two image sizes.

Both sides fetch the same bytes from the same boot server (aiohttp, sendfile) on loopback and
write them to the same sparse target file with an fsync at the end; the writer also hashes
(sha256) every byte, which dd does not. Run: .venv/bin/python -m bench.image_write [--mib 1024]
Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from testbed.images import build_raw_image
from testbed.processes import Process, free_port, port_open, wait_for

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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--mib", type=int, default=1024, help="large image size in MiB")
    p.add_argument("--small-mib", type=int, default=128, help="small image size (RSS comparison)")
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR", "/var/tmp")) as tmp:
        root = Path(tmp)
        port = free_port()
        server = Process(
            "boot server",
            [
                sys.executable,
                "-m",
                "metalflow",
                "boot-server",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--boot-dir",
                str(root / "boot"),
            ],
            root / "boot-server.log",
        )
        try:
            wait_for(lambda: port_open("127.0.0.1", port), 30, "the boot server")
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
                writer_rates, dd_rates, peak = [], [], 0.0
                for _ in range(args.rounds):
                    w = run_writer(url, img.sha256, target, disk_size)
                    writer_rates.append(mib / w["seconds"])
                    peak = max(peak, w["maxrss_mib"])
                    dd_rates.append(mib / run_dd(url, target))
                rss[mib] = peak
                best_w, best_dd = max(writer_rates), max(dd_rates)
                print(
                    f"  {mib:5d} MiB: writer {best_w:7.1f} MiB/s (sha256 included), "
                    f"curl|dd bs=4M {best_dd:7.1f} MiB/s, ratio {best_w / best_dd:.2f}, "
                    f"writer peak RSS {peak:.0f} MiB"
                )
            small, large = rss[args.small_mib], rss[args.mib]
            print(
                f"  peak RSS {small:.0f} MiB at {args.small_mib} MiB vs {large:.0f} MiB at {args.mib} MiB "
                f"(x{args.mib // args.small_mib} image, RSS x{large / small:.2f})"
            )
        finally:
            server.stop()


if __name__ == "__main__":
    main()
