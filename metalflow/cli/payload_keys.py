"""`metalflow payload-key new` and `metalflow codec-server`: the key file that seals payloads in
Temporal's history, and the endpoint that opens them for the UI and the `temporal` CLI."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from metalflow.runtime.payload_codec import EncryptionCodec, PayloadKeyError, load_payload_keys, new_key
from metalflow.runtime.settings import Settings


def add_parsers(sub: Any) -> None:
    sp = sub.add_parser(
        "payload-key",
        help="new: add a fresh AES-256 key to a payload key file (created if missing) and make it active",
    )
    sp.add_argument("action", choices=("new",))
    sp.add_argument("--file", type=Path, help="the key file; default METALFLOW_PAYLOAD_KEYS_FILE")
    sp.add_argument("--id", dest="key_id", required=True, help="the new key's id, e.g. 2026-12")
    sp.set_defaults(run=cmd_payload_key)

    sp = sub.add_parser("codec-server", help="decode sealed payloads for the Temporal UI and CLI")
    sp.add_argument("--listen", default="127.0.0.1:8089", help="HOST:PORT (default 127.0.0.1:8089)")
    sp.add_argument(
        "--allow-origin",
        action="append",
        default=[],
        help="a Temporal UI origin allowed to call it from the browser, e.g. http://localhost:8233",
    )
    sp.set_defaults(run=cmd_codec_server)


def _key_file(given: Path | None, settings: Settings) -> Path:
    path = given or settings.payload_keys_file
    if path is None:
        raise ValueError("no key file: give --file or set METALFLOW_PAYLOAD_KEYS_FILE")
    return path


async def cmd_payload_key(args: argparse.Namespace, settings: Settings) -> int:
    path = _key_file(args.file, settings)
    keys: dict[str, str] = {}
    if path.exists():
        keys = dict(load_payload_keys(path).keys)
        if args.key_id in keys:
            raise PayloadKeyError(f"--id {args.key_id}: {path} already has that key; pick a new id")
    keys[args.key_id] = new_key()
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"active": args.key_id, "keys": keys}, f, indent=1)
    tmp.replace(path)
    print(f"{path}: key {args.key_id} added and active ({len(keys)} key(s)); restart what uses it")
    return 0


async def cmd_codec_server(args: argparse.Namespace, settings: Settings) -> int:
    from worker.codec_server import serve

    codec = EncryptionCodec(load_payload_keys(_key_file(None, settings)))
    host, _, port = args.listen.rpartition(":")
    await serve(codec, host or "127.0.0.1", int(port), args.allow_origin)
    return 0
