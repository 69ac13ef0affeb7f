"""oci:// image writes vs plain HTTP writes of the same raw image, through the same boot server.

A raw image is pushed (skopeo) into a loopback docker-registry; each round writes it to a sparse
target file twice with the agent's writer: once from the boot server's /images/ (aiohttp
sendfile), once as DeployHost does for `oci://` (oci.stage resolves the tag and grants the blob;
the boot server pulls it from the registry and streams it on; the writer checks the layer's
sha256). Rounds alternate which goes first; the figure is the median per-round ratio. Writes are
timed inside this process (staging included for oci). Prints the command and the load.
Run: .venv/bin/python -m bench.oci_write [--mib 512] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from bench.context import load, preamble
from testbed.images import build_raw_image
from testbed.processes import boot_server, free_port
from testbed.registry import Layout, push, start_registry


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--mib", type=int, default=512, help="image size in MiB")
    p.add_argument("--rounds", type=int, default=3, help="paired runs (odd: a true median)")
    args = p.parse_args()
    print(preamble("bench.oci_write"), flush=True)
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR", "/var/tmp")) as tmp:
        root = Path(tmp)
        port = free_port()
        os.environ["METALFLOW_BOOT_DIR"] = str(root / "boot")
        os.environ["METALFLOW_BOOT_SERVER_URL"] = f"http://127.0.0.1:{port}"
        # imported after the environment is set: the activities read Settings from it
        from activities.agent.devices import BlockDevice
        from activities.agent.image import write_image
        from activities.oci import stage_oci
        from metalflow.api.models import ChecksumType, HostRef, ImageFormat, ImageSpec
        from metalflow.api.oci import OciStageRequest, write_request

        server = boot_server(root / "boot", port, root / "boot-server.log")
        registry = start_registry(root / "registry")
        try:
            img = build_raw_image(root / "boot" / "images" / "os.img", size_mib=args.mib, label="bench")
            lay = Layout(root / "layout")
            lay.tag("v1", lay.manifest([(img.path.read_bytes(), "application/octet-stream")], disktype="raw"))
            push(lay, "v1", registry, "bench/os")
            target = root / "disk.img"
            dev = BlockDevice(name="/dev/bench", path=target, size_bytes=(args.mib + 64) << 20)
            with target.open("wb") as f:
                os.truncate(f.fileno(), dev.size_bytes)
            plain = ImageSpec(
                url=f"http://127.0.0.1:{port}/images/os.img",
                checksum=img.sha256,
                checksum_type=ChecksumType.SHA256,
                format=ImageFormat.RAW,
            )
            oci = OciStageRequest(
                host=HostRef(name="bench"),
                image=ImageSpec(url=f"oci://{registry.host}/bench/os:v1"),
                attempt="b",
            )

            def http_write() -> float:
                start = time.perf_counter()
                write_image(plain, dev, lambda n, t: None)
                return time.perf_counter() - start

            def oci_write() -> float:
                start = time.perf_counter()
                req = write_request(stage_oci(oci), None)
                write_image(req.image, dev, lambda n, t: None, compression=req.compression)
                return time.perf_counter() - start

            http_write()  # untimed: the image into the page cache for both
            print(f"{args.mib} MiB raw image, target {target} (sparse file)")
            ratios, rates = [], []
            for i in range(args.rounds):
                order = (http_write, oci_write) if i % 2 == 0 else (oci_write, http_write)
                secs = {fn.__name__: fn() for fn in order}
                h, o = args.mib / secs["http_write"], args.mib / secs["oci_write"]
                rates.append((h, o))
                ratios.append(o / h)
                print(
                    f"  round {i + 1}: http {h:6.1f} MiB/s, oci {o:6.1f} MiB/s, ratio {o / h:.2f}", flush=True
                )
            h_med, o_med = (statistics.median(side) for side in zip(*rates, strict=True))
            print(
                f"  medians of {args.rounds}: http {h_med:.0f} MiB/s, oci {o_med:.0f} MiB/s "
                f"(registry -> boot server -> writer, sha256 included), ratio {statistics.median(ratios):.2f}"
            )
        finally:
            registry.stop()
            server.stop()
    print(f"after: {load()}")


if __name__ == "__main__":
    main()
