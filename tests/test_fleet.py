"""A fleet run through `metalflow provision --fleet`: the provisioning limit, "delayed" hosts,
the failure summary with errorType, and no secret anywhere in the run's histories."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml
from fixtures.kubeapi import KubeCluster
from history_scan import assert_no_secret_in, assert_no_secret_in_histories
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHistory
from temporalio.testing import ActivityEnvironment
from test_join import kubeconfig_token, kubelet, target_cluster  # noqa: F401 - the fixture, for the joining host
from tests_support import record

from activities import fleet as fleet_activities
from metalflow.api.fleet import (
    LIMITER_WORKFLOW,
    SLOT_RELEASE_SIGNAL,
    SLOT_REQUEST_SIGNAL,
    FleetObserve,
    FleetProgress,
    LimiterState,
    limiter_id,
)
from metalflow.api.models import ErrorType, OperationalStatus
from metalflow.client import operations
from metalflow.runtime.settings import Settings
from testbed.datacenter import Datacenter, write_secret
from worker.control import build_worker

LIMIT = 2
HOSTS = 4
LIMITED_STEPS = {"InspectHost", "CleanHost", "DeployHost"}


async def wait_until(what: str, check: Any, timeout: float = 120) -> None:
    """Poll an async condition with a deadline (never a bare sleep as synchronisation)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{what}: not reached in {timeout}s")
        await asyncio.sleep(0.3)


def hostfile_docs(
    dc: Datacenter, ns: str, user_data: str, fleet: set[str], join_kubeconfig: Path
) -> list[dict[str, Any]]:
    docs = [d for d in dc.manifests() if d["kind"] == "Secret" or d["metadata"]["name"] in fleet]
    docs.append(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "user-data", "namespace": ns},
            "stringData": {"userData": user_data},
        }
    )
    hosts = [d for d in docs if d["kind"] == "BareMetalHost"]
    for d in hosts:
        d["spec"]["userData"] = {"name": "user-data", "namespace": ns}
    hosts[-1]["spec"]["image"]["checksum"] = "0" * 64  # the last host must fail: wrong checksum
    # the first joins a cluster with kubeadm: a bootstrap token is made for it
    hosts[0]["spec"]["join"] = {"kubeconfig": {"name": "target", "path": str(join_kubeconfig)}}
    return docs


def max_concurrent_limited_steps(histories: list[WorkflowHistory]) -> int:
    """From the recorded host histories: the most limited step workflows ever running at once."""
    edges: list[tuple[float, int]] = []
    for history in histories:
        started: dict[int, float] = {}
        for ev in history.events:
            if ev.event_type == EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED:
                attrs = ev.start_child_workflow_execution_initiated_event_attributes
                if attrs.workflow_type.name in LIMITED_STEPS:
                    started[ev.event_id] = ev.event_time.ToMicroseconds()
                continue
            if ev.event_type == EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_COMPLETED:
                initiated = ev.child_workflow_execution_completed_event_attributes.initiated_event_id
            elif ev.event_type == EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_FAILED:
                initiated = ev.child_workflow_execution_failed_event_attributes.initiated_event_id
            else:
                continue
            if initiated in started:
                edges += [(started.pop(initiated), 1), (ev.event_time.ToMicroseconds(), -1)]
        edges += [(t, 1) for t in started.values()]  # still running
    running = peak = 0
    for _, delta in sorted(edges):  # at equal times an end (-1) sorts before a start
        running += delta
        peak = max(peak, running)
    return peak


async def test_fleet_limit_delayed_failure_summary_and_no_secrets(
    client: Client,
    settings: Settings,
    tmp_path: Path,
    ns: str,
    monkeypatch: pytest.MonkeyPatch,
    target_cluster: tuple[KubeCluster, Path, bytes],  # noqa: F811 - the fixture imported above
) -> None:
    monkeypatch.setenv("COLUMNS", "250")  # the CLI's rich tables, unwrapped
    join_secret = tmp_path / "target.yaml"
    write_secret(join_secret, {"kubeconfig": target_cluster[1].read_text()})
    marker = f"fleet-user-data-{uuid.uuid4().hex}"
    user_data = f"#cloud-config\nruncmd:\n  - echo {marker}\n"
    # HOSTS in the fleet, plus two outside it that take both slots first
    async with Datacenter(settings, hosts=HOSTS + 2, prefix="fl", namespace=ns) as dc:
        fleet_names = {f"fl-{i}" for i in range(HOSTS)}
        hostfile = tmp_path / "fleet.yaml"
        hostfile.write_text(yaml.safe_dump_all(hostfile_docs(dc, ns, user_data, fleet_names, join_secret)))
        blockers = [f"host/{ns}/fl-{i}" for i in (HOSTS, HOSTS + 1)]
        with ThreadPoolExecutor(max_workers=32) as executor:
            async with build_worker(client, settings, executor):
                # Two (paused) hosts outside the fleet take both slots first, so every fleet host
                # has to wait: "delayed" is then a certainty, not a race.
                for i in (HOSTS, HOSTS + 1):
                    await operations.apply(client, dc.host(i), settings, operations.StartOptions(paused=True))
                limiter = await client.start_workflow(
                    LIMITER_WORKFLOW,
                    LimiterState(namespace=ns, limit=LIMIT),
                    id=limiter_id(ns),
                    task_queue=settings.task_queue,
                )
                for holder in blockers:
                    await limiter.signal(SLOT_REQUEST_SIGNAL, holder)

                async def both_held() -> bool:
                    st = await limiter.query("state", result_type=LimiterState)
                    return st.holders == blockers

                await wait_until("the two outside holders hold both slots", both_held)
                kubelet_fl0 = asyncio.create_task(kubelet(dc.emulated[0], target_cluster[0]))
                cli = asyncio.create_task(
                    asyncio.to_thread(
                        subprocess.run,
                        [
                            sys.executable,
                            "-m",
                            "metalflow",
                            "provision",
                            str(hostfile),
                            "--fleet",
                            "--limit",
                            str(LIMIT),
                            "--timeout",
                            "240",
                            "--secrets-dir",
                            str(tmp_path / "secrets"),
                        ],
                        capture_output=True,
                        text=True,
                        timeout=300,
                    )
                )

                async def all_delayed() -> bool:
                    rows = await operations.list_hosts(client, f'HostNamespace="{ns}"')
                    delayed = [r for r in rows if r.operational_status == OperationalStatus.DELAYED.value]
                    return {r.ref.name for r in delayed} == fleet_names

                await wait_until("every fleet host delayed", all_delayed)
                waiting = (await limiter.query("state", result_type=LimiterState)).waiting
                assert sorted(waiting) == sorted(f"host/{ns}/fl-{i}" for i in range(HOSTS))
                for holder in blockers:
                    await limiter.signal(SLOT_RELEASE_SIGNAL, holder)
                done = await cli
                token = await asyncio.wait_for(kubelet_fl0, 30)
                state = await limiter.query("state", result_type=LimiterState)

                fleet_id = re.search(r"started (fleet/\w+)", done.stdout)
                assert fleet_id, done.stdout + done.stderr
                fleet = client.get_workflow_handle(fleet_id.group(1), result_type=FleetProgress)
                result = await fleet.result()
                ids = [wf.id async for wf in client.list_workflows(f'WorkflowId STARTS_WITH "host/{ns}/fl-"')]
                ids += [limiter_id(ns), fleet.id]
                histories = [await client.get_workflow_handle(i).fetch_history() for i in set(ids)]
                for recorded in (f"host/{ns}/fl-3", limiter_id(ns), fleet.id):
                    await record(client, recorded, "fleet")

    # exit code and failure summary name the failed host and its errorType
    assert done.returncode == 1, done.stdout + done.stderr
    assert "3 of 4 hosts done, 1 failed" in done.stdout
    lines = done.stdout.splitlines()
    failed_line = next((line for line in lines if f"FAILED {ns}/fl-3" in line), done.stdout)
    assert ErrorType.PROVISIONING.value in failed_line and "ImageChecksumMismatch" in failed_line
    outcome = {h.name: h for h in result.hosts}
    assert [outcome[f"fl-{i}"].state for i in range(3)] == ["provisioned"] * 3
    assert outcome["fl-3"].error_type == ErrorType.PROVISIONING.value
    assert "ImageChecksumMismatch" in outcome["fl-3"].error_message
    assert [f.name for f in result.failed] == ["fl-3"] and result.done and not result.timed_out

    # never more than LIMIT hosts in limited steps: the limiter's own record, and the histories
    assert state.peak <= LIMIT and state.delayed >= HOSTS
    host_histories = [h for h in histories if h.workflow_id in {f"host/{ns}/{n}" for n in fleet_names}]
    assert len(host_histories) == HOSTS
    assert 1 <= max_concurrent_limited_steps(host_histories) <= LIMIT

    # no secret value in any payload of any history of the run (hosts, steps, limiter, fleet),
    # nor in the CLI's output or the fleet's summary
    secrets = [dc.password, user_data, token, token.split(".")[1], kubeconfig_token(target_cluster[1])]
    prefixes = (f"host/{ns}/fl-", limiter_id(ns), fleet.id)
    await assert_no_secret_in_histories(client, secrets, *prefixes, at_least=HOSTS * 4 + 1)
    assert_no_secret_in(done.stdout + done.stderr, secrets, "the CLI's output")
    assert_no_secret_in(result, secrets, "the fleet's result")


async def test_a_slot_held_by_an_ended_host_is_given_back(
    client: Client, settings: Settings, tmp_path: Path, ns: str
) -> None:
    """A host workflow terminated while holding a slot must not block the namespace forever."""
    async with Datacenter(settings, hosts=2, prefix="gh", namespace=ns) as dc:
        with ThreadPoolExecutor(max_workers=8) as executor:
            async with build_worker(client, settings, executor):
                # two real host workflows, paused: no BMC traffic, they only take part in the queue
                for i in range(2):
                    await operations.apply(client, dc.host(i), settings, operations.StartOptions(paused=True))
                holder, waiter = (f"host/{ns}/gh-{i}" for i in range(2))
                limiter = await client.start_workflow(
                    LIMITER_WORKFLOW,
                    LimiterState(namespace=ns, limit=1, check_holders_seconds=1),
                    id=limiter_id(ns),
                    task_queue=settings.task_queue,
                )
                for h in (holder, waiter):
                    await limiter.signal(SLOT_REQUEST_SIGNAL, h)

                async def one_holds_one_waits() -> bool:
                    st = await limiter.query("state", result_type=LimiterState)
                    return st.holders == [holder] and st.waiting == [waiter]

                await wait_until("one holder, one waiting", one_holds_one_waits)
                await client.get_workflow_handle(holder).terminate("test: ends holding its slot")

                async def waiter_holds() -> bool:
                    st = await limiter.query("state", result_type=LimiterState)
                    return st.holders == [waiter] and not st.waiting

                await wait_until("the ended holder's slot passes to the waiter", waiter_holds, timeout=60)

                # and a fleet watching these hosts reports the ended one as failed, not as pending
                async def observed() -> FleetProgress:
                    req = FleetObserve(namespace=ns, names=["gh-0", "gh-1"])
                    return await ActivityEnvironment(client).run(fleet_activities.observe, req)

                async def ended_is_reported() -> bool:
                    p = await observed()
                    return [f.name for f in p.failed] == ["gh-0"] and p.settled == 1

                await wait_until("the terminated host reported as failed", ended_is_reported)
                failed = (await observed()).failed[0]
                assert failed.error_type == "workflow terminated"
                assert "apply the host again" in failed.error_message


def test_delayed_reaches_the_baremetalhost_status_and_the_crd_accepts_it() -> None:
    from activities.status import bmh_status
    from metalflow.api.models import HostStatus

    body = bmh_status(HostStatus(operational_status=OperationalStatus.DELAYED))
    assert body["operationalStatus"] == "delayed"
    crd_file = Path(__file__).parents[1] / "k8s_bridge/crds/metal3.io_baremetalhosts.yaml"
    crd = yaml.safe_load(crd_file.read_text())
    status = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
    assert "delayed" in status["properties"]["operationalStatus"]["enum"]
