"""What an operator sees in the Temporal UI, in a real browser (issue 24): Debian's Chromium,
headless, driven by Playwright's Python package (no browser download: `executable_path`), on the
UI the dev server serves. Two hosts are provisioned, one with an image whose checksum is wrong.

Checked on the pages an operator opens: the workflow list filtered by `HostState="provisioned"`
(the good host only); the host's page (its step child workflows with their summaries, the status
publishes' activity summaries; the User Metadata tab's summary, details and current details;
the Memo tab's one line); the DeployHost child's page (the image write's activity summary); the
failed host's Memo with the error. Screenshots go to `.metalflow/artifacts/` (one is in docs/ for the README).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import urllib.parse
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import pytest_asyncio
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from metalflow.api.models import HostStatus
from metalflow.client import operations
from metalflow.runtime.settings import Settings
from testbed.datacenter import Datacenter
from testbed.processes import Process, free_port
from testbed.temporal import start_dev_server
from worker.control import build_worker

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / ".metalflow" / "artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
WAIT_MS = 30_000


@pytest.fixture
def ui_server(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, str]]:
    """A dev server of its own with its UI (the session's is headless): (address, UI URL). After
    `settings`: its address replaces the session server's in the environment."""
    if not Path(CHROMIUM).exists():
        pytest.skip("Chromium is missing: apt-get install chromium (scripts/system-deps.sh does)")
    port, ui_port = free_port(), free_port()
    proc: Process = start_dev_server(tmp_path / "temporal", port=port, ui_port=ui_port)
    monkeypatch.setenv("METALFLOW_TEMPORAL_ADDRESS", f"127.0.0.1:{port}")
    try:
        yield f"127.0.0.1:{port}", f"http://127.0.0.1:{ui_port}"
    finally:
        proc.stop()


@pytest_asyncio.fixture
async def ui_client(ui_server: tuple[str, str]) -> AsyncIterator[Client]:
    yield await Client.connect(ui_server[0], data_converter=pydantic_data_converter)


async def settle(client: Client, refs: list, timeout: float = 180) -> list[HostStatus]:  # type: ignore[type-arg]
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        sts = [await operations.status(client, r) for r in refs]
        if sts[0].provisioning.state.value == "provisioned" and not sts[0].current_step and sts[1].error_type:
            return sts
        assert asyncio.get_running_loop().time() < deadline, f"hosts not settled: {sts}"
        await asyncio.sleep(0.3)


async def test_the_temporal_ui_shows_an_operator_the_hosts_steps_summaries_and_errors(
    ui_server: tuple[str, str], ui_client: Client, settings: Settings, ns: str
) -> None:
    from playwright.async_api import Error as PlaywrightError
    from playwright.async_api import async_playwright

    _, ui = ui_server
    settings = Settings()  # the UI server's address from the environment
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    async with Datacenter(settings, hosts=2, prefix="ui", namespace=ns) as dc:
        good, bad = dc.host(0), dc.host(1)
        assert bad.spec.image is not None
        wrong = bad.spec.image.model_copy(update={"checksum": "0" * 64})
        bad = bad.model_copy(update={"spec": bad.spec.model_copy(update={"image": wrong})})
        with ThreadPoolExecutor(max_workers=16) as executor:
            async with build_worker(ui_client, settings, executor):
                await operations.apply(ui_client, good, settings)
                await operations.apply(ui_client, bad, settings)
                _, failed = await settle(ui_client, [good.ref, bad.ref])
                deploy = sorted(
                    [
                        w.id
                        async for w in ui_client.list_workflows(
                            f'WorkflowId STARTS_WITH "{good.ref.workflow_id}/"'
                        )
                        if w.workflow_type == "DeployHost"
                    ]
                )[-1]
                async with async_playwright() as pw:
                    browser = await pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
                    page = await browser.new_page(viewport={"width": 1600, "height": 1200})

                    async def see(text: str) -> None:
                        """Wait until TEXT shows on the page or in one of its frames (the UI renders
                        user metadata, markdown, in a sandboxed iframe)."""
                        deadline = asyncio.get_running_loop().time() + WAIT_MS / 1000
                        while True:
                            for frame in page.frames:
                                with contextlib.suppress(PlaywrightError):
                                    if text in await frame.inner_text("body", timeout=1000):
                                        return
                            if asyncio.get_running_loop().time() > deadline:
                                shot = ARTIFACTS / "ui-not-seen.png"
                                await page.screenshot(path=str(shot), full_page=True)
                                body = await page.inner_text("body")
                                raise AssertionError(
                                    f"{text!r} not on {page.url} (see {shot}):\n{body[-3000:]}"
                                )
                            await page.wait_for_timeout(200)

                    # the list, filtered as the README says: the good host only
                    query = (
                        f'WorkflowType="HostWorkflow" AND HostState="provisioned" AND HostNamespace="{ns}"'
                    )
                    await page.goto(f"{ui}/namespaces/default/workflows?query={urllib.parse.quote(query)}")
                    await see(good.ref.workflow_id)
                    await page.screenshot(path=str(ARTIFACTS / "ui-list.png"))
                    assert bad.ref.workflow_id not in await page.inner_text("body")

                    # the host's page: its steps and the activities' summaries in the timeline
                    base = f"{ui}/namespaces/default/workflows"
                    await page.goto(f"{base}/{urllib.parse.quote(good.ref.workflow_id, safe='')}")
                    for text in (
                        "InspectHost: boot the ramdisk, collect inventory",
                        "CleanHost: clean disks per automatedCleaningMode",
                        "DeployHost: write the image, boot from disk",
                        "ask for a provisioning slot",
                    ):
                        await see(text)
                    await page.screenshot(path=str(ARTIFACTS / "ui-host.png"))
                    await page.get_by_text("User Metadata", exact=True).first.click()
                    await see(f"host {ns}/{good.ref.name}")
                    await see(f"BMC {good.spec.bmc.address}")
                    await see(f"{ns}/{good.ref.name} | provisioned | on")  # Current Details: now
                    await page.get_by_text("Memo", exact=True).first.click()
                    await see(f"{ns}/{good.ref.name} | provisioned | on")

                    # the DeployHost child: the image write's activity summary
                    await page.goto(f"{base}/{urllib.parse.quote(deploy, safe='')}")
                    assert good.spec.image is not None
                    await see(f"write image {good.spec.image.url}")
                    await page.screenshot(path=str(ARTIFACTS / "ui-deploy.png"))

                    # the failed host: its error in the memo line
                    await page.goto(f"{base}/{urllib.parse.quote(bad.ref.workflow_id, safe='')}")
                    await page.get_by_text("Memo", exact=True).first.click()
                    await see("provisioning error: ")
                    body = await page.inner_text("body")
                    assert failed.error_message[:60] in body, body[-2000:]
                    await page.screenshot(path=str(ARTIFACTS / "ui-failed.png"))
                    await browser.close()
    assert dc.password not in (ARTIFACTS / "ui-host.png").read_bytes().decode(errors="ignore")
    if os.environ.get("METALFLOW_UPDATE_DOCS"):  # refresh the README's picture
        shutil.copy(ARTIFACTS / "ui-host.png", ROOT / "docs" / "temporal-ui-host.png")
