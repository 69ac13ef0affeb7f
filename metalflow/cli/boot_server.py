"""`metalflow boot-server`: iPXE scripts, kernel, ramdisk, images; a host's secrets only to its
agent token (worker/boot_server.py), over HTTPS on a second port when given a certificate."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_parser(sub: Any) -> None:
    sp = sub.add_parser("boot-server", help="serve iPXE scripts, kernel, ramdisk and images")
    sp.add_argument("--host", default="0.0.0.0")
    sp.add_argument("--port", type=int, default=8088)
    sp.add_argument("--boot-dir")
    sp.add_argument(
        "--tls-port",
        type=int,
        help="also serve HTTPS here (with --tls-cert/--tls-key): set METALFLOW_BOOT_SERVER_TLS_URL to it "
        "and METALFLOW_BOOT_SERVER_CA to the certificate's CA, and ramdisk agents fetch secrets there",
    )
    sp.add_argument("--tls-cert", help="the boot server's PEM certificate (its SANs: the address hosts use)")
    sp.add_argument("--tls-key", help="the PEM private key of --tls-cert")
    sp.set_defaults(run=cmd_boot_server)


async def cmd_boot_server(args: argparse.Namespace, settings: Any) -> int:
    from worker.boot_server import BootServerTLS, serve

    given = [args.tls_port is not None, bool(args.tls_cert), bool(args.tls_key)]
    if any(given) and not all(given):
        raise ValueError("--tls-port, --tls-cert and --tls-key go together: give all three, or none")
    tls = BootServerTLS(args.tls_port, Path(args.tls_cert), Path(args.tls_key)) if all(given) else None
    await serve(args.host, args.port, Path(args.boot_dir or settings.boot_dir), tls)
    return 0
