"""The agent worker: runs in the deploy ramdisk and polls the host's own task queue.

No bespoke agent API: Temporal is the transport, so the agent needs nothing but outbound
access to the Temporal frontend.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

from temporalio.client import Client, TLSConfig
from temporalio.worker import Worker

from activities.agent import agent_activities
from activities.agent.config import AgentConfig, load_agent_config
from metalflow.runtime.converter import agent_data_converter

log = logging.getLogger(__name__)


def agent_config_from_args(host_id: str, config_file: Path | None) -> AgentConfig:
    if config_file is not None:
        return load_agent_config(config_file, host_id)
    return AgentConfig(host_id=host_id)


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


async def run_agent(
    config: AgentConfig,
    temporal_address: str,
    namespace: str = "default",
    tls: TLSConfig | bool = False,
    connect_patience: float = 120.0,
) -> None:
    """Serve in-band work for one host until cancelled."""
    client = await connect(temporal_address, namespace, tls, connect_patience)
    with ThreadPoolExecutor(max_workers=4, thread_name_prefix=f"agent-{config.host_id}") as executor:
        worker = Worker(
            client,
            task_queue=config.task_queue,
            activities=agent_activities(config),
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
        await worker.run()
