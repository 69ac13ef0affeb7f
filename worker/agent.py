"""The agent worker: runs in the deploy ramdisk and polls the host's own task queue.

No bespoke agent API: Temporal is the transport, so the agent needs nothing but outbound
access to the Temporal frontend.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

from pydantic import SecretStr
from temporalio.client import Client, TLSConfig
from temporalio.worker import Worker

from activities.agent import agent_activities
from activities.agent.config import AgentConfig, load_agent_config
from activities.agent.proof import ProvingInterceptor
from metalflow.runtime.converter import agent_data_converter

log = logging.getLogger(__name__)


def agent_config_from_args(
    host_id: str,
    config_file: Path | None,
    token_file: Path | None = None,
    boot_server: str = "",
    boot_server_ca: Path | None = None,
) -> AgentConfig:
    """The agent's binding; `token_file` holds this boot's agent token (the ramdisk's init writes
    it from the boot medium), sent only to `boot_server`, whose HTTPS is checked against
    `boot_server_ca`."""
    config = (
        load_agent_config(config_file, host_id) if config_file is not None else AgentConfig(host_id=host_id)
    )
    if boot_server_ca is not None:
        _read_pem(boot_server_ca, "--boot-server-ca", b"-----BEGIN CERTIFICATE-----", "CA certificate", "CA")
        config = config.model_copy(update={"boot_server_ca": boot_server_ca})
    if token_file is None:
        return config
    try:
        token = token_file.read_text().strip()
    except OSError as err:
        raise ValueError(f"--token-file {token_file}: cannot read the agent token ({err.strerror})") from None
    if not token:
        raise ValueError(f"--token-file {token_file} is empty; the boot medium carries no agent token")
    if not boot_server:
        raise ValueError("--token-file needs --boot-server: the only place the token may be sent")
    return config.model_copy(update={"token": SecretStr(token), "boot_server": boot_server})


def _read_pem(path: Path, flag: str, marker: bytes, what: str, whose: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ValueError(f"{flag} {path}: cannot read the {what} ({err.strerror}); give a PEM file") from None
    if marker not in data:
        raise ValueError(f"{flag} {path}: not a PEM {what.split()[-1]}; give the {whose}'s PEM file")
    return data


def agent_tls(
    enabled: bool,
    ca_file: Path | None,
    server_name: str | None,
    cert_file: Path | None = None,
    key_file: Path | None = None,
) -> TLSConfig | bool:
    """The agent's TLS to the Temporal frontend: off, on with the system CAs, or pinned to a CA
    file and/or a server name (from the ramdisk's kernel command line); with a client certificate
    and key for a frontend that requires mTLS."""
    if (cert_file is None) != (key_file is None):
        raise ValueError("--tls-cert and --tls-key go together: give both, or neither")
    if not (enabled or ca_file or server_name or cert_file):
        return False
    cert = b"-----BEGIN CERTIFICATE-----"
    return TLSConfig(
        server_root_ca_cert=None
        if ca_file is None
        else _read_pem(ca_file, "--tls-ca", cert, "CA certificate", "CA"),
        domain=server_name or None,
        client_cert=None
        if cert_file is None
        else _read_pem(cert_file, "--tls-cert", cert, "certificate", "client certificate"),
        client_private_key=None
        if key_file is None
        else _read_pem(key_file, "--tls-key", b"PRIVATE KEY-----", "private key", "client key"),
    )


def uptime() -> str:
    """Seconds since the kernel started (the ramdisk's boot budget is counted from there)."""
    try:
        return Path("/proc/uptime").read_text().split()[0] + "s"
    except (OSError, IndexError):
        return "n/a"


async def connect(
    temporal_address: str, namespace: str, tls: TLSConfig | bool, patience: float = 120.0
) -> Client:
    """Connect, retrying while the network comes up: the init starts the agent before its DHCP
    lease so Python's start overlaps it. After PATIENCE seconds the error goes to the caller
    (the init restarts the agent)."""
    deadline = time.monotonic() + patience
    delay = 0.2
    while True:
        try:
            return await Client.connect(
                temporal_address, namespace=namespace, data_converter=agent_data_converter, tls=tls
            )
        except RuntimeError as err:  # the bridge's connection errors
            if time.monotonic() + delay > deadline:
                raise
            log.info("Temporal at %s not reachable yet (%s); retrying in %.1fs", temporal_address, err, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


def _call_soon(loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
    loop.call_soon_threadsafe(callback)


class TokenRefused(Exception):
    """The boot server refused this boot's agent token: the agent stopped serving the host."""

    exit_code = 3  # the ramdisk's init does not restart an agent that exits with it


async def run_agent(
    config: AgentConfig,
    temporal_address: str,
    namespace: str = "default",
    tls: TLSConfig | bool = False,
    connect_patience: float = 120.0,
) -> None:
    """Serve in-band work for one host until cancelled, or until the boot server refuses this
    boot's token (TokenRefused): an agent whose token is stale or compromised must not keep
    taking the host's work, so the step's retry boots the host again with a new one."""
    client = await connect(temporal_address, namespace, tls, connect_patience)
    loop = asyncio.get_running_loop()
    refused = asyncio.Event()
    with ThreadPoolExecutor(max_workers=4, thread_name_prefix=f"agent-{config.host_id}") as executor:
        worker = Worker(
            client,
            task_queue=config.task_queue,
            activities=agent_activities(config, lambda: _call_soon(loop, refused.set)),
            interceptors=[ProvingInterceptor(config)],  # each reply proved with the boot's token
            activity_executor=executor,
            max_concurrent_activities=4,
            # Heartbeats (bytes written/erased) reach the server at most this far apart, so
            # `metalflow watch` and the UI show live progress instead of every 48 s.
            max_heartbeat_throttle_interval=timedelta(seconds=2),
        )
        log.info(
            "agent for %s polling %s on %s (uptime %s)",
            config.host_id,
            config.task_queue,
            temporal_address,
            uptime(),
        )
        running = asyncio.create_task(worker.run())
        stop = asyncio.create_task(refused.wait())
        try:
            await asyncio.wait({running, stop}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:  # powered off: the worker goes down with us, as before
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running
            raise
        finally:
            stop.cancel()
        if not refused.is_set():
            await running  # ended by itself: its error, if any
            return
        log.error(
            "the boot server refused this boot's agent token: the agent stops serving %s; the host "
            "boots again with a new token",
            config.task_queue,
        )
        await worker.shutdown()  # the refused activity's failure is reported first
        await running
        raise TokenRefused(config.host_id)
