"""The Temporal UI shows sealed payloads decoded through `metalflow codec-server` (issue 27, item
4), in Debian's Chromium: the dev server's UI is pointed at the codec server
(`--ui-codec-endpoint`, the UI's TEMPORAL_CODEC_ENDPOINT), a workflow is started by a client whose
payloads are sealed, and its page shows the input's plaintext that its history holds only sealed.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from aiohttp import web
from temporalio.api.enums.v1 import EventType
from test_temporal_ui import CHROMIUM, WAIT_MS

from metalflow.runtime.payload_codec import ENCODING, EncryptionCodec, load_payload_keys, new_key
from metalflow.runtime.settings import Settings
from metalflow.runtime.temporal import connect
from testbed.processes import free_port
from testbed.temporal import start_dev_server
from worker.codec_server import build_app


@pytest_asyncio.fixture
async def sealed_ui(tmp_path: Path) -> AsyncIterator[tuple[Settings, str]]:
    if not Path(CHROMIUM).exists():
        pytest.skip("Chromium is missing: apt-get install chromium (scripts/system-deps.sh does)")
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps({"active": "ui", "keys": {"ui": new_key()}}))
    port, ui_port, codec_port = free_port(), free_port(), free_port()
    ui = f"http://127.0.0.1:{ui_port}"
    runner = web.AppRunner(build_app(EncryptionCodec(load_payload_keys(keys)), [ui]))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", codec_port).start()
    proc = start_dev_server(
        tmp_path / "temporal",
        port=port,
        ui_port=ui_port,
        extra_args=("--ui-codec-endpoint", f"http://127.0.0.1:{codec_port}"),
    )
    try:
        yield Settings(temporal_address=f"127.0.0.1:{port}", payload_keys_file=keys), ui
    finally:
        proc.stop()
        await runner.cleanup()


async def test_the_ui_shows_a_sealed_input_decoded_by_the_codec_server(
    sealed_ui: tuple[Settings, str],
) -> None:
    from playwright.async_api import async_playwright

    settings, ui = sealed_ui
    client = await connect(settings)
    marker = f"only-through-the-codec-{uuid.uuid4().hex[:8]}"
    wid = f"codec-ui-{uuid.uuid4().hex[:6]}"
    handle = await client.start_workflow(
        "SealedProbe", {"credentials": marker}, id=wid, task_queue="no-worker"
    )
    started = [e async for e in handle.fetch_history_events()][0]  # noqa: RUF015 (async)
    assert started.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED
    [raw] = started.workflow_execution_started_event_attributes.input.payloads
    assert raw.metadata["encoding"] == ENCODING and marker.encode() not in raw.SerializeToString()

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = await browser.new_page(viewport={"width": 1600, "height": 1200})
        await page.goto(f"{ui}/namespaces/default/workflows/{wid}")
        deadline = asyncio.get_running_loop().time() + WAIT_MS / 1000
        while marker not in await page.inner_text("body"):
            assert asyncio.get_running_loop().time() < deadline, f"{marker} not decoded on {page.url}"
            await page.wait_for_timeout(200)
        await browser.close()
    await handle.terminate()
