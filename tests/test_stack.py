"""On the production-shaped engine: temporal-server on PostgreSQL (SQL visibility), two metalflow
worker processes (`make test-stack`; testbed/stack.py, tests/fixtures/stack.py).

The emulated data center is the same as everywhere (sushy-emulator BMCs, emulated servers whose
agents come up when their BMC network-boots them). Each test reads what ran from the event
histories (read back from PostgreSQL through the restarted server where there was a fault) and
from what the BMC and the image server saw (the fault proxies' logs), and the emulated host's own
boot record: the host reaches its state and nothing destructive ran twice.

Faults at the engine level, each pinned by a condition, never a timer:
- kill -9 the worker that runs DeployHost's boot-device call while the BMC's answer is held;
- kill -9 temporal-server while the agent's image stream is held half-way, start it again;
- PostgreSQL's fast shutdown while the clean step runs, start it again;
- a worker cut off from the server (its connection stalled, not closed) for longer than the
  BMC heartbeat timeout while it runs a power-on: the other worker retries it, the late result of
  the first is ignored.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from fixtures.stack import StackWorld
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client
from temporalio.service import RPCError
from tests_support import ActivityRun, activity_runs, at_rest, step_histories, workflow_workers

from metalflow.api.models import BMCDetails, Host, HostStatus
from metalflow.api.models import ProvisioningState as S
from metalflow.client.operations import apply, status
from testbed.datacenter import Datacenter
from testbed.faultproxy import Fault, FaultProxy, Rule
from testbed.images import MARKER
from testbed.processes import Process
from testbed.stallproxy import StallProxy

pytestmark = [pytest.mark.stack, pytest.mark.timeout(450)]  # engine restarts, heartbeat timeouts

RESET = "/Actions/ComputerSystem.Reset"


async def until(what: str, check: Callable[[], Awaitable[bool]], timeout: float = 180) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.2)


@asynccontextmanager
async def datacenter(w: StackWorld, hosts: int, image_mib: int = 32) -> AsyncIterator[Datacenter]:
    async with Datacenter(
        w.settings,
        hosts=hosts,
        prefix="stack",
        namespace=w.ns,
        image_mib=image_mib,
        agent_tls=w.stack.agent_tls(),  # the frontend requires mTLS: agents carry the agent identity
    ) as dc:
        yield dc


def through(
    dc: Datacenter, index: int, bmc: FaultProxy | None = None, images: FaultProxy | None = None
) -> Host:
    """Host `index` with its BMC address and image URL pointed at fault proxies."""
    host = dc.host(index)
    update: dict[str, Any] = {}
    if bmc is not None:
        address = f"redfish+http://127.0.0.1:{bmc.port}/redfish/v1/Systems/{dc.systems[index].uuid}"
        update["bmc"] = BMCDetails(address=address, credentials=dc.credentials)
    if images is not None:
        assert dc.image is not None
        update["image"] = dc.image_spec().model_copy(
            update={"url": f"{images.url}/images/{dc.image.path.name}"}
        )
    return host.model_copy(update={"spec": host.spec.model_copy(update=update)})


async def provisioned_at_rest(client: Client, host: Host) -> bool:
    try:
        st: HostStatus = await status(client, host.ref)
    except RPCError as e:
        # right after a server restart (or a worker's death) a query can find no poller yet:
        # "no poller seen for task queue recently"; the workers come back by themselves
        if "no poller seen" in e.message:
            return False
        raise
    assert st.error_type is None, st.error_message
    return st.provisioning.state == S.PROVISIONED and await at_rest(client, host.ref.workflow_id)


def completed(runs: list[ActivityRun], name: str, step: str = "") -> list[int]:
    """The attempts by which activity `name` (in step workflows ending in `step`) completed."""
    return [
        r.attempt
        for r in runs
        if r.name == name and r.workflow_id.endswith(step) and r.outcome == "completed"
    ]


def assert_provisioned_once(runs: list[ActivityRun], dc: Datacenter, index: int) -> None:
    """One clean, one image write, one boot into the ramdisk and one from disk, the image on disk."""
    assert completed(runs, "agent.clean") == [1], "the disks were cleaned exactly once"
    assert completed(runs, "agent.write_image") == [1], "the image was written once, by its first attempt"
    emu = dc.emulated[index]
    assert [b.target for b in emu.boots] == ["Pxe", "Hdd"], emu.boots
    assert dc.image is not None
    with emu.disk_path.open("rb") as f:
        disk = f.read(dc.image.size)
    assert disk.startswith(MARKER) and disk == dc.image.path.read_bytes()


def worker_of(w: StackWorld, identity: str) -> Process:
    pid = int(identity.split("@", 1)[0])
    [proc] = [p for p in w.stack.workers if p.pid == pid]
    return proc


def started_by(events: list[HistoryEvent], name: str) -> list[tuple[int, str]]:
    """(attempt, worker identity) of each recorded start of activity `name` in one history."""
    scheduled = {
        e.event_id for e in events if e.activity_task_scheduled_event_attributes.activity_type.name == name
    }
    return [
        (e.activity_task_started_event_attributes.attempt, e.activity_task_started_event_attributes.identity)
        for e in events
        if e.HasField("activity_task_started_event_attributes")
        and e.activity_task_started_event_attributes.scheduled_event_id in scheduled
    ]


async def test_a_few_hosts_are_provisioned_on_postgresql_by_two_workers(stack_world: StackWorld) -> None:
    w = stack_world
    w.start_worker()
    w.start_worker()
    async with datacenter(w, hosts=3) as dc:
        hosts = dc.all_hosts()
        await asyncio.gather(*(apply(w.client, h, w.settings) for h in hosts))
        for h in hosts:
            await until(
                f"{h.ref.name} provisioned", lambda h=h: provisioned_at_rest(w.client, h), timeout=300
            )
        for i, h in enumerate(hosts):
            assert_provisioned_once(activity_runs(await step_histories(w.client, h.ref.workflow_id)), dc, i)

        # SQL visibility on PostgreSQL answers metalflow's search attributes
        async def listed() -> bool:
            query = f'HostNamespace="{w.ns}" AND HostState="{S.PROVISIONED.value}"'
            return len([wf async for wf in w.client.list_workflows(query)]) == len(hosts)

        await until("visibility to list the provisioned hosts", listed, timeout=60)


@pytest.mark.timeout(600)  # 95 s on a quiet machine; over 300 s under load 10 on 2 cores
async def test_a_fleet_of_20_is_provisioned_once_each_by_both_workers(stack_world: StackWorld) -> None:
    w = stack_world
    w.start_worker()
    w.start_worker()
    async with datacenter(w, hosts=20, image_mib=8) as dc:
        hosts = dc.all_hosts()
        await asyncio.gather(*(apply(w.client, h, w.settings) for h in hosts))

        async def all_done() -> bool:
            done = await asyncio.gather(*(provisioned_at_rest(w.client, h) for h in hosts))
            return all(done)

        await until("20 hosts provisioned", all_done, timeout=540)
        identities: set[str] = set()
        for i, h in enumerate(hosts):
            histories = await step_histories(w.client, h.ref.workflow_id)
            assert_provisioned_once(activity_runs(histories), dc, i)
            identities |= workflow_workers(histories)
        assert {int(i.split("@")[0]) for i in identities} == {p.pid for p in w.stack.workers}, identities


async def test_killed_worker_holding_the_boot_device_call_other_worker_finishes(
    stack_world: StackWorld,
) -> None:
    w = stack_world
    w.start_worker()
    w.start_worker()
    async with datacenter(w, hosts=1) as dc:
        assert dc.sushy is not None
        async with FaultProxy(dc.sushy.url) as bmc:
            host = through(dc, 0, bmc=bmc)
            # DeployHost's persistent boot-to-disk, the first half of its last power call (bmc.power
            # with `boot`): the BMC applies it, its answer is held
            bmc.add(Rule(Fault.HOLD_RESPONSE, method="PATCH", path="/Systems/", body=b'"Hdd"', times=1))
            await apply(w.client, host, w.settings)

            async def deploy_holding() -> str | None:
                if bmc.held != 1:
                    return None
                histories = await step_histories(w.client, host.ref.workflow_id)
                deploy = [wid for wid in histories if wid.endswith("-DeployHost")]
                if not deploy:
                    return None
                desc = (await w.client.get_workflow_handle(deploy[0]).describe()).raw_description
                for p in desc.pending_activities:
                    if p.activity_type.name == "bmc.power" and p.last_worker_identity:
                        return str(p.last_worker_identity)
                return None

            holder: list[str] = []

            async def found() -> bool:
                identity = await deploy_holding()
                if identity:
                    holder.append(identity)
                return bool(identity)

            await until("DeployHost's boot-device call held at the BMC", found, timeout=300)
            victim = worker_of(w, holder[0])
            victim.kill()
            bmc.release()
            await until(
                "provisioned after the kill", lambda: provisioned_at_rest(w.client, host), timeout=240
            )

        histories = await step_histories(w.client, host.ref.workflow_id)
        runs = activity_runs(histories)
        assert_provisioned_once(runs, dc, 0)
        [deploy] = [events for wid, events in histories.items() if wid.endswith("-DeployHost")]
        starts = started_by(deploy, "bmc.power")
        assert starts[-1][0] == 2, starts  # the lost attempt was retried once ...
        survivor = starts[-1][1]
        assert survivor != holder[0] and int(survivor.split("@")[0]) != victim.pid, "... by the other worker"
        assert completed(runs, "bmc.power", "DeployHost")[-1] == 2
        # the BMC was asked once to boot from disk: the retry read it back and left it
        assert bmc.count("PATCH", "/Systems/", body=b'"Hdd"') == 1, [
            e.body for e in bmc.log if e.method == "PATCH"
        ]
        assert bmc.count("POST", RESET) == 2, "one power-on (inspection), one reboot into the OS"


async def test_killed_temporal_server_mid_image_stream_one_image_write(stack_world: StackWorld) -> None:
    w = stack_world
    w.start_worker()
    w.start_worker()
    async with datacenter(w, hosts=1) as dc, FaultProxy(w.settings.boot_server_url) as images:
        host = through(dc, 0, images=images)
        images.add(Rule(Fault.HOLD_AFTER, path="/images/", times=1, hold_after_bytes=12 << 20))
        await apply(w.client, host, w.settings)

        async def writing() -> bool:
            if images.held != 1:
                return False
            deploy = [
                w2
                for w2 in await step_histories(w.client, host.ref.workflow_id)
                if w2.endswith("-DeployHost")
            ]
            if not deploy:
                return False
            desc = await w.client.get_workflow_handle(deploy[0]).describe()
            return any(
                p.activity_type.name == "agent.write_image" and p.HasField("heartbeat_details")
                for p in desc.raw_description.pending_activities
            )

        await until("the image write's first heartbeat", writing, timeout=300)
        w.stack.server.kill()
        w.stack.server.start()  # same PostgreSQL: nothing of the history is lost
        images.release()
        await until(
            "provisioned after the server's kill", lambda: provisioned_at_rest(w.client, host), timeout=240
        )
        runs = activity_runs(await step_histories(w.client, host.ref.workflow_id))
        assert_provisioned_once(runs, dc, 0)
        assert images.count("GET", "/images/") == 1, "the image was downloaded once"
        assert w.stack.server.starts >= 2


async def test_postgresql_fast_shutdown_during_cleaning_one_clean(stack_world: StackWorld) -> None:
    w = stack_world
    w.start_worker()
    w.start_worker()
    async with datacenter(w, hosts=1) as dc:
        host = dc.host(0)
        await apply(w.client, host, w.settings)

        async def cleaning() -> bool:
            histories = await step_histories(w.client, host.ref.workflow_id)
            return any(wid.endswith("-CleanHost") for wid in histories)

        await until("CleanHost to start", cleaning, timeout=300)
        w.stack.pg.stop_fast()

        async def outage_felt() -> bool:  # visibility reads PostgreSQL directly: it fails now
            try:
                [wf async for wf in w.client.list_workflows(f'HostNamespace="{w.ns}"', limit=1)]
            except Exception:
                return True
            return False

        await until("the server to fail on the database", outage_felt, timeout=60)
        w.stack.pg.start()
        await until(
            "provisioned after PostgreSQL's restart", lambda: provisioned_at_rest(w.client, host), timeout=300
        )
        runs = activity_runs(await step_histories(w.client, host.ref.workflow_id))
        assert_provisioned_once(runs, dc, 0)


async def test_worker_cut_off_past_the_heartbeat_timeout_power_on_retried_elsewhere(
    stack_world: StackWorld,
) -> None:
    w = stack_world
    host_port = w.stack.address.rsplit(":", 1)
    async with StallProxy(host_port[0], int(host_port[1])) as link, datacenter(w, hosts=1) as dc:
        assert dc.sushy is not None
        async with FaultProxy(dc.sushy.url) as bmc:
            # worker A reaches the server through the link that will be cut; alone at first, so it
            # takes registration and inspection's power-on, which the BMC applies and answers late
            a = w.start_worker(METALFLOW_TEMPORAL_ADDRESS=link.address)
            host = through(dc, 0, bmc=bmc)
            bmc.add(Rule(Fault.HOLD_RESPONSE, method="POST", path=RESET, times=1))
            await apply(w.client, host, w.settings)
            await until("inspection's power-on held at the BMC", lambda: _held(bmc), timeout=300)
            b = w.start_worker()
            link.stall()  # A's heartbeats and its result no longer arrive
            bmc.release()  # A's BMC call returns: A has a result it cannot deliver

            async def retried_by_b() -> bool:
                histories = await step_histories(w.client, host.ref.workflow_id)
                inspect = [wid for wid in histories if wid.endswith("-InspectHost")]
                # attempt 2, or a later one: a poll A had open at the server before the cut can
                # still be handed attempt 2, which then times out unseen (seen on a quiet machine)
                if any(
                    att >= 2 and ident.startswith(f"{b.pid}@")
                    for att, ident in started_by(histories[inspect[0]], "bmc.power")
                ):
                    return True  # done already
                desc = (await w.client.get_workflow_handle(inspect[0]).describe()).raw_description
                return any(
                    p.activity_type.name == "bmc.power"
                    and p.attempt >= 2
                    and p.last_worker_identity.startswith(f"{b.pid}@")
                    for p in desc.pending_activities
                )

            await until("worker B to retry the power-on", retried_by_b, timeout=120)
            link.resume()  # A's late result arrives now, and must change nothing
            await until("provisioned", lambda: provisioned_at_rest(w.client, host), timeout=300)
            assert a.alive(), "worker A survived the partition"

        histories = await step_histories(w.client, host.ref.workflow_id)
        runs = activity_runs(histories)
        assert_provisioned_once(runs, dc, 0)
        [inspect] = [e for wid, e in histories.items() if wid.endswith("-InspectHost")]
        power = [r for r in runs if r.name == "bmc.power" and r.workflow_id.endswith("InspectHost")]
        assert power[0].attempt >= 2 and power[0].outcome == "completed", power
        powers = started_by(inspect, "bmc.power")
        assert powers[0][0] >= 2 and powers[0][1].startswith(f"{b.pid}@"), powers
        # one completion recorded for it, B's: A's late one was refused by the server
        scheduled = {
            e.event_id
            for e in inspect
            if e.activity_task_scheduled_event_attributes.activity_type.name == "bmc.power"
        }
        done = [
            e for e in inspect if e.activity_task_completed_event_attributes.scheduled_event_id in scheduled
        ]
        assert len(done) == len(power)
        # at the BMC: one power-on (inspection) and one reboot into the OS (deploy); B read it on
        assert bmc.count("POST", RESET) == 2, [
            (e.method, e.path, e.body) for e in bmc.log if e.method == "POST"
        ]


async def _held(proxy: FaultProxy) -> bool:
    return proxy.held == 1
