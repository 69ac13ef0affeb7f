"""`metalflow agent`: the in-band agent's command, importable without the rest of the CLI.

The deploy ramdisk runs it on every boot under emulation and on slow consoles, so its start is
counted: `python -m metalflow agent` comes here directly (metalflow/__main__.py) and imports
only what the agent needs (no rich, no YAML hostfiles, no client operations).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path
from typing import Any


def add_parser(sub: Any) -> argparse.ArgumentParser:
    sp: argparse.ArgumentParser = sub.add_parser(
        "agent", help="run the in-band agent (inside the deploy ramdisk)"
    )
    sp.add_argument("--host-id", required=True, help="<namespace>.<name>")
    sp.add_argument("--temporal", help="Temporal frontend address host:port")
    sp.add_argument("--temporal-namespace", default="default")
    sp.add_argument("--config", help="agent config YAML (emulated disks/NICs)")
    sp.add_argument("--tls", action="store_true", help="TLS to the Temporal frontend")
    sp.add_argument(
        "--tls-ca", help="PEM CA certificate the frontend's certificate must chain to (implies --tls)"
    )
    sp.add_argument("--tls-server-name", help="name to check the frontend's certificate for (implies --tls)")
    sp.add_argument("--tls-cert", help="PEM client certificate for mTLS (with --tls-key; implies --tls)")
    sp.add_argument("--tls-key", help="PEM private key of --tls-cert")
    sp.add_argument(
        "--token-file",
        default=os.environ.get("METALFLOW_AGENT_TOKEN_FILE"),
        help="file holding this boot's agent token (the ramdisk's init writes it from the boot medium)",
    )
    sp.add_argument(
        "--boot-server",
        default=os.environ.get("METALFLOW_AGENT_BOOT_SERVER", ""),
        help="the boot server's base URL: the only place the agent token is sent",
    )
    sp.add_argument(
        "--boot-server-ca",
        default=os.environ.get("METALFLOW_AGENT_BOOT_SERVER_CA"),
        help="PEM CA the boot server's HTTPS certificate must chain to (from the boot medium)",
    )
    sp.add_argument(
        "--log-url",
        default=os.environ.get("METALFLOW_AGENT_LOG_URL"),
        help="the boot server's agent-log endpoint for this host (<boot server>/agent-log/<host id>): "
        "the agent's and the init's log lines are streamed there, secrets redacted",
    )
    sp.set_defaults(run=cmd_agent)
    return sp


async def cmd_agent(args: argparse.Namespace, settings: Any = None) -> int:
    from activities.agent import logs
    from worker.agent import TokenRefused, agent_config_from_args, agent_tls, run_agent

    shipper = logs.install(args.log_url)  # redacts the console too, with or without a URL
    try:
        config = agent_config_from_args(
            args.host_id,
            Path(args.config) if args.config else None,
            Path(args.token_file) if args.token_file else None,
            args.boot_server,
            Path(args.boot_server_ca) if args.boot_server_ca else None,
        )
        if config.token is not None:
            logs.REDACTOR.add(config.token.get_secret_value())
        tls = agent_tls(
            args.tls,
            Path(args.tls_ca) if args.tls_ca else None,
            args.tls_server_name,
            Path(args.tls_cert) if args.tls_cert else None,
            Path(args.tls_key) if args.tls_key else None,
        )
        if args.temporal:
            address = args.temporal
        else:
            from metalflow.runtime.settings import get_settings

            address = (settings or get_settings()).temporal_address
        try:
            await run_agent(config, address, args.temporal_namespace, tls)
        except TokenRefused:
            return TokenRefused.exit_code
    finally:
        if shipper is not None:
            await asyncio.to_thread(shipper.close)
    return 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="metalflow")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        code = asyncio.run(args.run(args))
    except KeyboardInterrupt:
        code = 130
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        code = 2
    # as metalflow.cli.main: skip interpreter teardown (temporalio/sdk-python#300)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
