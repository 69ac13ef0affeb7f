"""kill -9: the control-plane worker in every lifecycle step, and the Temporal dev server once.

The worker runs as `metalflow worker` in its own process, the dev server on a SQLite file of
this test's own. Each kill happens at a moment the test pins by condition, never by timer:
a BMC call held in flight by the fault proxy (registering, inspecting), the clean step just
started, the image stream held half-way after the writer's first heartbeat (then the dev
server dies too and comes back on the same file), the agent's retried config-drive download
held. The host still reaches provisioned, and the event histories show that nothing
destructive ran twice: one clean, one image write (first attempt), one config drive, one
power-on and one reboot at the BMC; the drive's URL answers 404 once it is written.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from fixtures.crash import Plant, until
from temporalio.client import Client
from tests_support import activity_results, activity_runs, at_rest, step_histories, workflow_workers

from metalflow.api.configdrive import ConfigDriveStaged
from metalflow.api.models import BMCDetails, HostStatus
from metalflow.api.models import ProvisioningState as S
from metalflow.client.operations import apply, status
from metalflow.runtime.settings import Settings
from testbed.datacenter import Datacenter
from testbed.faultproxy import Fault, FaultProxy, Rule
from testbed.images import MARKER

RESET = "/Actions/ComputerSystem.Reset"


async def test_killed_worker_and_dev_server_neither_stop_nor_repeat_provisioning(
    world: tuple[Plant, Client, Datacenter, FaultProxy, FaultProxy],
) -> None:
    plant, client, dc, bmc, images = world
    assert dc.image is not None
    host = dc.host(0)
    address = f"redfish+http://127.0.0.1:{bmc.port}/redfish/v1/Systems/{dc.systems[0].uuid}"
    image = dc.image_spec().model_copy(update={"url": f"{images.url}/images/{dc.image.path.name}"})
    spec = host.spec.model_copy(
        update={"bmc": BMCDetails(address=address, credentials=dc.credentials), "image": image}
    )
    host = host.model_copy(update={"spec": spec})
    # pin the first BMC read (registration) and the image stream
    bmc.add(Rule(Fault.HOLD_RESPONSE, method="GET", path="/Systems/", times=1))
    images.add(Rule(Fault.HOLD_AFTER, path="/images/", times=1, hold_after_bytes=12 << 20))
    await apply(client, host, Settings())

    async def held(proxy: FaultProxy, n: int) -> bool:
        return proxy.held == n

    async def crash_worker_while_held(proxy: FaultProxy, arm_next: Rule | None = None) -> None:
        await until("a call held in flight", lambda: held(proxy, 1))
        plant.kill_worker()
        plant.start_worker()
        proxy.release()
        if arm_next is not None:  # armed before the event loop runs again: nothing slips past
            proxy.add(arm_next)
        await until("the held call to be let go", lambda: held(proxy, 0))

    # 1) registering: bmc.validate is in flight, the BMC has answered, the worker dies
    await crash_worker_while_held(bmc, Rule(Fault.HOLD_RESPONSE, method="POST", path=RESET, times=1))
    # 2) inspecting: the power-on reached the BMC (the ramdisk boots), its answer did not
    await crash_worker_while_held(bmc)
    bmc.clear()

    # 3) preparing: the clean step has just started, and no control-plane activity is in flight
    #    (in-band work runs in the host's agent and outlives the worker). A status.publish lost
    #    with the worker is retried only after its 30 s start-to-close timeout: a kill that
    #    happened to land on one made this test 30 s slower, at random, and proved no more.
    async def clean_started_with_only_agent_work_in_flight() -> bool:
        histories = await step_histories(client, host.ref.workflow_id)
        if not any(wid.endswith("-CleanHost") for wid in histories):
            return False
        for wid in histories:
            desc = (await client.get_workflow_handle(wid).describe()).raw_description
            if any(not p.activity_type.name.startswith("agent.") for p in desc.pending_activities):
                return False
        return True

    await until(
        "CleanHost to start, no worker-side activity in flight", clean_started_with_only_agent_work_in_flight
    )
    plant.kill_worker()
    plant.start_worker()

    # 4) provisioning, mid-write: the writer has heartbeated and the stream is held; the
    #    worker and the dev server die, the server comes back on the same SQLite file
    async def writing() -> bool:
        if images.held != 1:
            return False
        deploy = [w for w in await step_histories(client, host.ref.workflow_id) if w.endswith("-DeployHost")]
        if not deploy:
            return False
        desc = await client.get_workflow_handle(deploy[0]).describe()
        return any(
            p.activity_type.name == "agent.write_image" and p.HasField("heartbeat_details")
            for p in desc.raw_description.pending_activities
        )

    await until("the image write's first heartbeat", writing)
    plant.kill_worker()
    plant.kill_server()
    plant.start_server()
    plant.start_worker()
    images.release()
    # the agent's first config-drive download fails (it retries), the second is held
    images.add(Rule(Fault.UNAVAILABLE, method="GET", path="/configdrive/", times=1))
    images.add(Rule(Fault.HOLD_RESPONSE, method="GET", path="/configdrive/", times=1))

    # 5) provisioning, the config drive staged and being fetched by the agent's retry: the
    #    worker dies; the attempt's drive must still be there, and go once it is written
    await crash_worker_while_held(images)

    async def provisioned() -> bool:
        st: HostStatus = await status(client, host.ref)
        assert st.error_type is None, st.error_message
        return st.provisioning.state == S.PROVISIONED

    async def provisioned_at_rest() -> bool:
        # the query may answer before the transition's workflow task (and its status.publish)
        # is in the history: wait until the host workflow has nothing in flight
        return await provisioned() and await at_rest(client, host.ref.workflow_id)

    await until("provisioned and at rest after the crashes", provisioned_at_rest, timeout=180)

    # the histories (read back from the restarted server) tell what ran, and how often
    histories = await step_histories(client, host.ref.workflow_id)
    runs = activity_runs(histories)

    def ran(name: str, step: str = "") -> list[int]:
        return [
            r.attempt
            for r in runs
            if r.name == name and r.workflow_id.endswith(step) and r.outcome == "completed"
        ]

    assert all(r.outcome == "completed" for r in runs), [r for r in runs if r.outcome != "completed"]
    assert ran("bmc.validate") == [2], "the validate call lost with the worker was retried once"
    assert 2 in ran("bmc.power", "InspectHost"), "the lost power-on was retried"
    assert ran("agent.inventory") == [1]
    assert ran("agent.clean") == [1], "the disks were cleaned exactly once"
    assert ran("agent.write_image") == [1], "the image was written once, by its first attempt"
    assert ran("configdrive.stage") == [1], "one config drive for the deploy attempt"
    assert ran("agent.write_configdrive") == [2], "the agent's retry found the attempt's drive"
    assert ran("configdrive.remove") == [1]
    assert images.count("GET", "/configdrive/") == 2
    [drive] = activity_results(
        await step_histories(client, host.ref.workflow_id), "configdrive.stage", ConfigDriveStaged
    )
    assert not (dc.settings.boot_dir / urlsplit(drive.url).path.lstrip("/")).exists(), "the drive is gone"
    # at the BMC: one power-on (inspection) and one reboot into the OS (deploy), no more
    assert bmc.count("POST", RESET) == 2, [(e.method, e.path) for e in bmc.log if e.method == "POST"]
    assert images.count("GET", "/images/") == 1, "the image was downloaded once"
    emu = dc.emulated[0]
    assert [b.target for b in emu.boots] == ["Pxe", "Hdd"], emu.boots
    with emu.disk_path.open("rb") as f:
        disk = f.read(dc.image.size)
        f.seek((8 << 30) - (64 << 20) + 0x8000)  # the config drive, in the disk's last 64 MiB
        pvd = f.read(80)
    assert disk.startswith(MARKER) and disk == dc.image.path.read_bytes()
    assert pvd[1:6] == b"CD001" and pvd[40:48] == b"config-2"
    # ... and by more than one worker process: the work outlived the processes it started on
    # (how many took part varies: a worker killed while it is still starting runs nothing)
    assert len(workflow_workers(histories)) >= 2, workflow_workers(histories)
