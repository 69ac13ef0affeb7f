"""The agent's log streamed to the real boot server (aiohttp on loopback), kept per host and boot,
read back by `metalflow logs` / the watch tail; and no secret in it (issue #20 point 2)."""

from __future__ import annotations

import asyncio
import io
import logging
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import requests

from activities.agent import configdrive as agent_configdrive
from activities.agent.logs import REDACTED, LogShipper, RedactingFormatter, Redactor
from activities.configdrive import build_iso, drive_files
from metalflow.api.models import HostRef
from metalflow.client import agent_log
from testbed.processes import free_port
from tests.tests_support import eventually
from worker.agent_logs import MAX_POST_BYTES, AgentLogStore
from worker.boot_server import start_boot_server

REF = HostRef(namespace="metal", name="log-0")
BOOT = "0f6c2b6e-5d4a-4a8e-9d1c-3b7f2a1e9c10"


@pytest.fixture
async def boot_server(tmp_path: Path) -> AsyncIterator[tuple[str, Path]]:
    port = free_port()
    runner = await start_boot_server("127.0.0.1", port, tmp_path / "boot")
    try:
        yield f"http://127.0.0.1:{port}", tmp_path / "boot"
    finally:
        await runner.cleanup()


def kept(boot_dir: Path, boot: str = BOOT) -> str:
    path = boot_dir / "agent-logs" / REF.host_id / f"{boot}.log"
    return path.read_text() if path.exists() else ""


async def apost(url: str, **kw: object) -> requests.Response:
    """A POST from a thread: the boot server runs on this test's event loop."""
    return await asyncio.to_thread(requests.post, url, timeout=10, **kw)  # type: ignore[arg-type]


def shipper(url: str, tmp_path: Path, **kw: object) -> LogShipper:
    init_log = tmp_path / "init.log"
    init_log.touch()
    kw.setdefault("interval", 0.1)
    return LogShipper(f"{url}/agent-log/{REF.host_id}", BOOT, init_log=init_log, **kw)  # type: ignore[arg-type]


async def test_agent_and_init_lines_reach_the_boot_server_and_read_back(
    boot_server: tuple[str, Path], tmp_path: Path
) -> None:
    url, boot_dir = boot_server
    ship = shipper(url, tmp_path)
    log = logging.getLogger("test.agentlog.stream")
    log.addHandler(ship)
    log.setLevel(logging.INFO)
    try:
        (tmp_path / "init.log").write_text(
            "[4.20s] drivers loaded at 4.20s: virtio_net\n[5.1s] network at 5.1s\n"
        )
        log.info("config drive written to %s at offset %d", "/dev/vda", 1 << 30)
        try:
            raise OSError("disk vanished")
        except OSError:
            log.exception("write failed\nsecond line")
        text = await eventually(
            lambda: (t := kept(boot_dir)) and "disk vanished" in t and "network at" in t and t,
            "the lines kept",
        )
    finally:
        log.removeHandler(ship)
        ship.close()
    assert f"config drive written to /dev/vda at offset {1 << 30}" in text
    assert "init: [4.20s] drivers loaded at 4.20s: virtio_net" in text
    assert "write failed\n    second line\n    Traceback" in text  # one record stays one entry
    # read back as `metalflow logs` and the watch tail do
    chunk = await asyncio.to_thread(agent_log.read, url, REF)
    assert chunk.boot == BOOT and chunk.text == text and chunk.next_offset == len(text.encode())
    assert await asyncio.to_thread(agent_log.boots, url, REF) == [BOOT]
    tail = agent_log.Tail(url, REF)
    first = await asyncio.to_thread(tail.poll)
    assert first[0] == text.splitlines()[0] and await asyncio.to_thread(tail.poll) == []
    env_url = {"METALFLOW_BOOT_SERVER_URL": url, "PATH": "/usr/bin:/bin"}
    cli = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "metalflow", "logs", REF.name, "-n", REF.namespace],
        capture_output=True,
        text=True,
        timeout=120,
        env=env_url,
    )
    assert cli.returncode == 0, cli.stderr
    assert cli.stdout == text


async def test_a_new_boot_is_a_new_log_and_the_tail_follows_it(boot_server: tuple[str, Path]) -> None:
    url, _ = boot_server
    post = f"{url}/agent-log/{REF.host_id}"
    assert (await apost(post, params={"boot": BOOT}, data="first boot\n")).status_code == 204
    tail = agent_log.Tail(url, REF)
    assert await asyncio.to_thread(tail.poll) == ["first boot"]
    await asyncio.sleep(0.05)  # distinct mtimes order the boots
    second = "1e2d3c4b-5a69-4788-9abc-def012345678"
    assert (await apost(post, params={"boot": second}, data="second boot\n")).status_code == 204
    assert await asyncio.to_thread(tail.poll) == ["second boot"]
    assert await asyncio.to_thread(agent_log.boots, url, REF) == [BOOT, second]
    old = await asyncio.to_thread(agent_log.read, url, REF, BOOT)
    assert old.text == "first boot\n"


async def test_the_endpoint_refuses_bad_input_naming_the_field(boot_server: tuple[str, Path]) -> None:
    url, boot_dir = boot_server
    post = f"{url}/agent-log/{REF.host_id}"
    no_boot = await apost(post, data="x\n")
    assert no_boot.status_code == 400 and "boot" in no_boot.text
    bad_boot = await apost(post, params={"boot": "../../etc"}, data="x\n")
    assert bad_boot.status_code == 400 and "boot" in bad_boot.text
    bad_host = await apost(f"{url}/agent-log/..%2F..%2Fetc", params={"boot": BOOT}, data="x\n")
    assert bad_host.status_code in (400, 404)
    big = await apost(post, params={"boot": BOOT}, data="x" * (MAX_POST_BYTES + 10))
    assert big.status_code == 413
    # nothing of it was written, nowhere
    logs = boot_dir / "agent-logs"
    assert not logs.exists() or not any(logs.rglob("*")), list(logs.rglob("*"))
    escape = await apost(post, params={"boot": BOOT}, data="\x1b[2Jclear\n")
    assert escape.status_code == 204 and kept(boot_dir) == "?[2Jclear\n"


async def test_each_boot_log_is_capped_and_old_boots_pruned(tmp_path: Path) -> None:
    store = AgentLogStore(tmp_path, max_bytes=100, keep_boots=2)
    for _ in range(5):
        await store.append(REF.host_id, BOOT, "0123456789" * 3)
    path = tmp_path / "agent-logs" / REF.host_id / f"{BOOT}.log"
    text = path.read_text()
    assert text.startswith("0123456789" * 3 + "\n") and "reached 100 bytes" in text
    assert len(text.encode()) < 100 + 100  # the lines kept fit the cap, then one truncation line
    size = path.stat().st_size
    await store.append(REF.host_id, BOOT, "more")
    assert path.stat().st_size == size
    boots = [f"{i:08x}-0000-4000-8000-000000000000" for i in range(3)]
    for b in boots:
        await store.append(REF.host_id, b, "line")
        await asyncio.sleep(0.02)
    assert store.boots(REF.host_id) == boots[1:]


async def test_a_boot_server_away_neither_blocks_nor_grows_the_agent(tmp_path: Path) -> None:
    """Lines queue (bounded) while nothing listens; once the boot server is there they arrive,
    with a count of the ones dropped."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    ship = shipper(url, tmp_path, max_lines=50, max_backoff=0.3)
    log = logging.getLogger("test.agentlog.away")
    log.addHandler(ship)
    log.setLevel(logging.INFO)
    try:
        started = time.monotonic()
        for i in range(500):
            log.info("line %d", i)
        assert time.monotonic() - started < 5  # emit never waits on the network
        await eventually(lambda: ship.failed_posts >= 1, "a failed POST")
        assert ship.pending() <= 50
        runner = await start_boot_server("127.0.0.1", port, tmp_path / "boot")
        try:
            text = await eventually(
                lambda: "line 499" in (t := kept(tmp_path / "boot")) and t, "the queue sent"
            )
        finally:
            await runner.cleanup()
    finally:
        log.removeHandler(ship)
        ship.close()
    assert "lines dropped: the boot server was away or refused them" in text
    assert "line 449\n" not in text and "line 450\n" in text  # the newest 50 kept, in order
    assert text.index("line 450") < text.index("line 499")


def test_redaction_of_planted_secrets_in_user_data_urls_and_headers() -> None:
    """The config drive's userData (from a real drive image) and credentials in URLs or headers
    never reach a log line, console or boot server."""
    secret = "s3cr3t-join-token.abcdef0123456789"
    user_data = f"#cloud-config\nruncmd:\n  - kubeadm join --token {secret}\n"
    iso = build_iso(drive_files(REF, user_data, None, None))
    assert agent_configdrive.user_data(iso) == user_data.encode()
    redactor = Redactor()
    redactor.add(agent_configdrive.user_data(iso))
    redactor.add("http://10.0.0.1:8088/configdrive/metal.log-0/Zm9vYmFy.iso")
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(RedactingFormatter("%(message)s", redactor))
    log = logging.getLogger("test.agentlog.redact")
    log.addHandler(handler)
    try:
        log.warning("cloud-init said: kubeadm join --token %s failed", secret)
        log.warning("fetching http://10.0.0.1:8088/configdrive/metal.log-0/Zm9vYmFy.iso")
        log.warning("image https://admin:hunter2@registry.example/v2/os?token=abc123&x=1")
        log.warning("headers {'Authorization': 'Bearer eyJhbGciOi.payload.sig'}")
        log.warning("init: kernel command line: quiet metalflow.token=Tk3n-0f-this_boot BOOTIF=01-aa")
        try:
            raise RuntimeError(f"join failed with {secret}")
        except RuntimeError:
            log.exception("join")
    finally:
        log.removeHandler(handler)
    text = out.getvalue()
    for leaked in (secret, "Zm9vYmFy", "hunter2", "abc123", "eyJhbGciOi", "Tk3n-0f-this_boot"):
        assert leaked not in text, text
    assert "BOOTIF=01-aa" in text
    assert text.count(REDACTED) >= 7 and "registry.example/v2/os" in text and "x=1" in text


async def test_the_agent_worker_redacts_its_console_and_ships(boot_server: tuple[str, Path]) -> None:
    """`metalflow agent --log-url`: the process's own lines (its connect retries, as the
    ramdisk's first seconds show) go to the boot server, redacted, while Temporal is away."""
    url, boot_dir = boot_server
    proc = await asyncio.to_thread(
        subprocess.Popen,
        [sys.executable, "-m", "metalflow", "agent", "--host-id", REF.host_id, "--temporal",
         "127.0.0.1:1", "--log-url", f"{url}/agent-log/{REF.host_id}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        text = await eventually(
            lambda: next((p.read_text() for p in (boot_dir / "agent-logs" / REF.host_id).glob("*.log")), ""),
            "the agent's own lines",
            timeout=120,
        )
        assert "Temporal at 127.0.0.1:1 not reachable yet" in text
    finally:
        proc.kill()
        proc.wait(timeout=30)


async def test_drain_sends_the_last_lines_before_a_reboot(
    boot_server: tuple[str, Path], tmp_path: Path
) -> None:
    """An activity after which the BMC reboots the host (the config drive written) drains the
    shipper: its last line is on the boot server when drain returns, not a batch interval later."""
    url, boot_dir = boot_server
    ship = shipper(url, tmp_path, interval=3600)  # no periodic send during this test
    try:
        ship.emit(logging.LogRecord("agent", logging.INFO, __file__, 1, "config drive written", None, None))
        assert await asyncio.to_thread(ship.drain, 15.0)
        assert "config drive written" in kept(boot_dir)
    finally:
        ship.close()


async def test_a_line_too_big_for_one_post_is_cut_and_later_lines_still_arrive(
    boot_server: tuple[str, Path], tmp_path: Path
) -> None:
    """One huge record (a dumped inventory) is cut to fit, not resent forever ahead of the rest."""
    url, boot_dir = boot_server
    ship = shipper(url, tmp_path)
    try:
        huge = "x" * (MAX_POST_BYTES + 10)
        ship.emit(logging.LogRecord("agent", logging.INFO, __file__, 1, huge, None, None))
        ship.emit(logging.LogRecord("agent", logging.INFO, __file__, 2, "config drive written", None, None))
        assert await asyncio.to_thread(ship.drain, 15.0)
        text = kept(boot_dir)
    finally:
        ship.close()
    assert "config drive written" in text and "bytes cut]" in text
    assert ship.refused_posts == 0


async def test_a_batch_the_boot_server_refuses_is_counted_and_the_rest_go(
    boot_server: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 4xx for a batch (here: a boot server with a lower size cap) drops that batch, counted;
    the lines after it are sent, not stuck behind it."""
    url, boot_dir = boot_server
    monkeypatch.setattr("worker.agent_logs.MAX_POST_BYTES", 1000)
    ship = shipper(url, tmp_path, interval=3600)
    try:
        ship.emit(logging.LogRecord("agent", logging.INFO, __file__, 1, "y" * 5000, None, None))
        assert await asyncio.to_thread(ship.drain, 15.0)
        ship.emit(logging.LogRecord("agent", logging.INFO, __file__, 2, "config drive written", None, None))
        assert await asyncio.to_thread(ship.drain, 15.0)
        text = kept(boot_dir)
    finally:
        ship.close()
    assert ship.refused_posts == 1
    assert "[agent-log: 1 lines dropped: the boot server was away or refused them]" in text
    assert "config drive written" in text


async def test_the_shipper_survives_an_error_of_its_own(
    boot_server: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A garbled answer (http.client.BadStatusLine is no OSError) or any bug in the thread is one
    failed attempt, retried; before, it ended the thread and every later line was lost."""
    import http.client
    import urllib.request

    url, boot_dir = boot_server
    real = urllib.request.urlopen
    calls = {"n": 0}

    def flaky(*args: object, **kw: object) -> object:
        calls["n"] += 1
        if calls["n"] == 1:
            raise http.client.BadStatusLine("garbage")
        if calls["n"] == 2:
            raise RuntimeError("a bug of the shipper's own")
        return real(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(urllib.request, "urlopen", flaky)
    ship = shipper(url, tmp_path, max_backoff=0.2)
    try:
        ship.emit(logging.LogRecord("agent", logging.INFO, __file__, 1, "config drive written", None, None))
        assert await asyncio.to_thread(ship.drain, 15.0)
        text = kept(boot_dir)
    finally:
        ship.close()
    assert "config drive written" in text and ship.failed_posts >= 2 and ship.sent_lines >= 1


def test_lines_a_drain_could_not_send_are_said_on_the_console(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The boot server away at the reboot: the console (which the reboot keeps) says how many
    lines never reached it, instead of losing them silently."""
    from activities.agent import logs

    ship = shipper(f"http://127.0.0.1:{free_port()}", tmp_path, max_backoff=0.2)
    monkeypatch.setattr(logs, "_INSTALLED", [ship])
    try:
        ship.emit(logging.LogRecord("agent", logging.INFO, __file__, 1, "config drive written", None, None))
        with caplog.at_level(logging.WARNING, logger=logs.__name__):
            assert logs.drain_installed(timeout=1.0) is False
    finally:
        ship.close()
    said = [r.getMessage() for r in caplog.records if r.name == logs.__name__]
    assert said and "1 lines not taken by the boot server in 1s" in said[0], said
