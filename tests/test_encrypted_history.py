"""With a payload key configured, Temporal's history holds ciphertext (issue 27, item 4).

A host is provisioned through the emulated datacenter by a worker whose client seals payloads;
then every payload of every event of the host's workflows is read raw from the server: each is
AES-GCM sealed with the active key, except what the ramdisk exchanges (marked, secret-free by
contract) and the search attributes (indexes, readable by design). The sealed history still
answers the status query, and `temporal workflow show --codec-endpoint` against
`metalflow codec-server` shows the decoded spec to an operator who holds the key.
"""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web
from history_scan import histories_of, payloads_in
from temporalio.api.common.v1 import Payload
from temporalio.client import Client
from test_lifecycle import wait_status

from metalflow.api.models import ProvisioningState as S
from metalflow.client import operations
from metalflow.runtime.payload_codec import (
    ENCODING,
    KEY_ID,
    PLAINTEXT_MARK,
    EncryptionCodec,
    load_payload_keys,
    new_key,
)
from metalflow.runtime.settings import Settings
from metalflow.runtime.temporal import connect
from testbed.datacenter import Datacenter
from testbed.processes import free_port
from testbed.temporal import temporal_cli
from worker.codec_server import build_app
from worker.control import build_worker


@pytest.fixture
def sealed_settings(settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    keys = tmp_path / "payload-keys.json"
    keys.write_text(json.dumps({"active": "k2", "keys": {"k1": new_key(), "k2": new_key()}}))
    monkeypatch.setenv("METALFLOW_PAYLOAD_KEYS_FILE", str(keys))
    return Settings()


@pytest_asyncio.fixture
async def sealed_client(sealed_settings: Settings) -> Client:
    return await connect(sealed_settings)


@pytest_asyncio.fixture
async def codec_server(sealed_settings: Settings) -> AsyncIterator[str]:
    assert sealed_settings.payload_keys_file is not None
    codec = EncryptionCodec(load_payload_keys(sealed_settings.payload_keys_file))
    runner = web.AppRunner(build_app(codec, ["http://ui.example"]))
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def _payload_texts(node: Any) -> Iterator[str]:
    """The data of every payload in `temporal workflow show --output json` (base64 there)."""
    if isinstance(node, dict):
        if set(node) >= {"metadata", "data"} and isinstance(node["data"], str):
            yield base64.b64decode(node["data"]).decode("utf-8", "replace")
        for value in node.values():
            yield from _payload_texts(value)
    elif isinstance(node, list):
        for value in node:
            yield from _payload_texts(value)


def _readable_by_design(path: str) -> bool:
    """Search attributes (indexes), the SDK's patch markers (the patch's name) and its local
    activity markers' bookkeeping (sequence number, activity type, times; the result itself goes
    through the codec), set by the SDK without the codec, are not payloads of the user's data."""
    return "search_attributes" in path or "details['patch-data']" in path or "details['data']" in path


async def test_history_is_ciphertext_but_for_the_agents_marked_traffic(
    sealed_settings: Settings, sealed_client: Client, ns: str, codec_server: str
) -> None:
    settings, client = sealed_settings, sealed_client
    async with Datacenter(settings, hosts=1, namespace=ns, image_mib=4) as dc:
        with ThreadPoolExecutor(max_workers=8) as executor:
            async with build_worker(client, settings, executor):
                host = dc.host(0)
                await operations.apply(client, host, settings)
                st = await wait_status(
                    client, host.ref, lambda s: s.provisioning.state == S.PROVISIONED or s.error_type
                )
    assert st.error_type is None, st.error_message
    assert host.spec.image is not None

    histories = await histories_of(client, host.ref.workflow_id)
    assert len(histories) >= 4  # the host and its register, inspect, clean and deploy steps
    sealed: list[Payload] = []
    agent: list[Payload] = []
    for wid, events in histories.items():
        for event in events:
            for path, p in payloads_in(event):
                if _readable_by_design(path):
                    continue
                where = f"{wid} event {event.event_id} {path}"
                if PLAINTEXT_MARK in p.metadata:
                    agent.append(p)
                    continue
                assert p.metadata.get("encoding") == ENCODING, f"plaintext payload at {where}: {p.metadata}"
                assert p.metadata[KEY_ID] == b"k2", where
                assert set(p.metadata) == {"encoding", KEY_ID}, where
                sealed.append(p)
    assert len(sealed) > 50 and agent  # the spec, every step's input and result, memos, summaries
    raw = b"".join(p.SerializeToString() for p in sealed)
    for plain in (host.spec.image.url, host.spec.bmc.address, host.spec.bmc.credentials.name, "json/plain"):
        assert plain.encode() not in raw, plain
    # what the agent was sent and sent back: its inventory, its image write (the URL it needs)
    agent_raw = b"".join(p.data for p in agent)
    assert host.spec.image.url.encode() in agent_raw and b"bytesWritten" in agent_raw

    # the operator with the key: the temporal CLI through the codec server shows the spec decoded
    address = settings.temporal_address
    cmd = [
        str(temporal_cli()),
        "workflow",
        "show",
        "-w",
        host.ref.workflow_id,
        "--address",
        address,
        "--namespace",
        settings.temporal_namespace,
        "--output",
        "json",
    ]
    without = await asyncio.to_thread(subprocess.run, cmd, capture_output=True, text=True, timeout=60)
    assert without.returncode == 0, without.stderr
    # (the BMC address and image URL are search attributes: readable by design, so not probed here)
    secret_path, checksum = host.spec.bmc.credentials.path, host.spec.image.checksum
    assert secret_path and checksum
    bare = "\n".join(_payload_texts(json.loads(without.stdout)))
    assert secret_path not in bare and checksum not in bare
    sealed_mark = base64.b64encode(ENCODING).decode()  # the JSON output shows metadata as base64
    assert sealed_mark in without.stdout
    with_codec = await asyncio.to_thread(
        subprocess.run, [*cmd, "--codec-endpoint", codec_server], capture_output=True, text=True, timeout=60
    )
    assert with_codec.returncode == 0, with_codec.stderr
    shown = "\n".join(_payload_texts(json.loads(with_codec.stdout)))
    assert secret_path in shown and checksum in shown
    assert sealed_mark not in with_codec.stdout


async def test_codec_server_answers_the_ui_origin_it_was_given_only(codec_server: str) -> None:
    import aiohttp

    async with aiohttp.ClientSession() as http:
        ok = await http.options(
            f"{codec_server}/decode",
            headers={
                "Origin": "http://ui.example",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type,x-namespace",
            },
        )
        assert ok.status == 204 and ok.headers["Access-Control-Allow-Origin"] == "http://ui.example"
        assert "X-Namespace" in ok.headers["Access-Control-Allow-Headers"]
        other = await http.options(f"{codec_server}/decode", headers={"Origin": "http://evil.example"})
        assert other.status == 403 and "Access-Control-Allow-Origin" not in other.headers
        sealed = await http.post(
            f"{codec_server}/encode",
            data='{"payloads": [{"metadata": {"encoding": "anNvbi9wbGFpbg=="}, "data": "ImEi"}]}',
        )
        body = await sealed.json()
        assert sealed.status == 200 and body["payloads"][0]["data"] != "ImEi"
        opened = await http.post(f"{codec_server}/decode", data=json.dumps(body))
        assert (await opened.json())["payloads"][0]["data"] == "ImEi"
        bad = await http.post(f"{codec_server}/decode", data="{")
        assert bad.status == 400 and "body: not a JSON Payloads message" in await bad.text()
