"""Agent replies are proved with the boot's agent token and checked before a step acts on them
(metalflow/api/agent_proof.py, activities/agent_replies.py, workflows/inband.py).

Attacks: a forged reply, an altered one, one proved for another request (a replay), one from an
earlier boot, one with no proof; and, through whole provisionings, a rogue worker polling a
host's queue during inspection and during deploy: it gets no secret, its replies are refused and
recorded, and the host's own agent still finishes.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from history_scan import assert_no_secret_in_histories
from prometheus_client import REGISTRY
from pydantic import SecretStr
from temporalio import activity
from temporalio.client import Client
from temporalio.common import RawValue
from temporalio.testing import ActivityEnvironment
from temporalio.worker import Worker
from test_lifecycle import dc, wait_status  # noqa: F401  (the datacenter fixture)
from tests_support import record

from activities.agent.config import AgentConfig
from activities.agent.proof import proved_reply
from activities.agent_replies import verify_reply
from activities.boot import agent_tokens
from activities.boot.agent_tokens import Medium
from metalflow.api.agent import AGENT_INVENTORY, AGENT_WRITE_IMAGE, AgentReply, ReplyVerdict, VerifyReply
from metalflow.api.agent_proof import fingerprint, prove
from metalflow.api.models import CleaningMode, HardwareDetails, HostRef, InspectionMode
from metalflow.api.models import ProvisioningState as S
from metalflow.client import operations
from metalflow.runtime.converter import agent_data_converter
from metalflow.runtime.settings import Settings
from testbed.datacenter import Datacenter

HOST = HostRef(namespace="ns", name="h0")
FAKE_CPUS = 4096


def rejected(activity_type: str) -> float:
    value = REGISTRY.get_sample_value("metalflow_agent_replies_rejected_total", {"activity": activity_type})
    return value or 0.0


def check(reply: AgentReply, nonce: str, activity_type: str = AGENT_INVENTORY) -> ReplyVerdict:
    req = VerifyReply(host=HOST, activity=activity_type, nonce=nonce, reply=reply)
    verdict: ReplyVerdict = ActivityEnvironment().run(verify_reply, req)
    return verdict


def over_the_wire(reply: AgentReply) -> AgentReply:
    """As the workflow gets it: encoded by the agent's converter, decoded as plain JSON."""
    [payload] = agent_data_converter.payload_converter.to_payloads([reply])
    return AgentReply.model_validate(json.loads(payload.data))


def test_only_a_reply_proved_with_this_boots_token_for_this_request_is_accepted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("METALFLOW_BOOT_DIR", str(tmp_path))
    earlier = agent_tokens.issue(tmp_path, HOST.host_id, Medium.PXE)
    old_agent = AgentConfig(host_id=HOST.host_id, token=SecretStr(earlier.value), boot_server="http://b")
    hardware = HardwareDetails(hostname="h0", ram_mebibytes=2048)
    replayed = over_the_wire(proved_reply(old_agent, AGENT_INVENTORY, "n-1", hardware))
    assert check(replayed, "n-1").ok, "valid in its own boot"

    token = agent_tokens.issue(tmp_path, HOST.host_id, Medium.PXE)  # the host booted again
    agent = AgentConfig(host_id=HOST.host_id, token=SecretStr(token.value), boot_server="http://b")
    good = over_the_wire(proved_reply(agent, AGENT_INVENTORY, "n-2", hardware))
    assert good.token == token.fingerprint and token.value not in good.model_dump_json()
    assert check(good, "n-2") == ReplyVerdict(ok=True)
    assert HardwareDetails.model_validate(good.result) == hardware

    before = rejected(AGENT_INVENTORY)
    verdict = check(replayed, "n-2")  # an earlier boot's reply, sent again
    assert not verdict.ok and "not this boot's" in verdict.reason and not verdict.reboot
    verdict = check(good, "n-3")  # this boot's reply to another request
    assert not verdict.ok and "does not match" in verdict.reason
    assert not check(good, "n-2", "agent.clean").ok, "to another activity"
    forged = good.model_copy(update={"result": {**good.result, "cpu": {"count": FAKE_CPUS}}})
    assert not check(forged, "n-2").ok, "altered"
    guessed = good.model_copy(update={"proof": prove("a guess", b"anything")})
    assert not check(guessed, "n-2").ok
    verdict = check(AgentReply(result=good.result), "n-2")
    assert not verdict.ok and "no proof" in verdict.reason
    assert rejected(AGENT_INVENTORY) == before + 5  # and one under agent.clean

    # the boot's token handed out twice: nothing proved with it is trusted; boot again
    agent_tokens.hand_out(tmp_path, HOST.host_id, "10.0.0.5")
    agent_tokens.hand_out(tmp_path, HOST.host_id, "10.0.0.66")
    verdict = check(good, "n-2")
    assert not verdict.ok and "handed out twice" in verdict.reason and verdict.reboot
    agent_tokens.revoke(tmp_path, HOST.host_id)
    verdict = check(good, "n-2")
    assert not verdict.ok and verdict.reboot
    for v in (verdict.reason, check(replayed, "n-1").reason):
        assert token.value not in v and earlier.value not in v


class Rogue:
    """Something on the provisioning network polling a host's queue: it answers the first task
    it gets with a forged reply (a fake inventory or write, proved with a guess) or with garbage,
    then stops."""

    def __init__(self, client: Client, task_queue: str, boot_dir: Path, host_id: str, garbage: bool) -> None:
        self.seen: list[tuple[str, bytes]] = []
        self.tokens: list[str] = []  # the boot's token when it got the task (for the test to look for)
        self.answered = asyncio.Event()
        self.boot_dir, self.host_id = boot_dir, host_id

        @activity.defn(dynamic=True)
        async def forge(args: Sequence[RawValue]) -> Any:
            if self.answered.is_set():  # only the first; later ones fail (the real agent retries)
                raise RuntimeError("the rogue answers once")
            name = activity.info().activity_type
            self.seen.append((name, b"".join(a.payload.data for a in args)))
            current = agent_tokens.current(self.boot_dir, self.host_id)
            self.tokens += [current.value] if current else []
            result = (
                {"cpu": {"count": FAKE_CPUS}}
                if name == AGENT_INVENTORY
                else {"device": "/dev/sda", "bytesWritten": 1, "checksum": "0" * 64, "checksumType": "sha256"}
            )
            self.answered.set()
            if garbage:  # not even a reply: must not wedge the workflow, only be refused
                return ["not", "an", "agent", "reply"]
            return {
                "result": result,
                "proof": prove("a guess", b"forged"),
                "token": fingerprint(current.value) if current else "",  # the fingerprint is no secret
            }

        self.worker = Worker(client, task_queue=task_queue, activities=[forge], max_concurrent_activities=1)


async def test_a_rogue_poller_during_inspection_and_deploy_gets_no_secret_and_is_refused(
    client: Client,
    settings: Settings,
    dc: Datacenter,  # noqa: F811
) -> None:
    # host 0: the rogue takes the inspection's inventory; host 1 (inspection and cleaning
    # disabled): its first agent work is the deploy's image write, which the rogue takes
    inspected = dc.host(0)
    deployed = dc.host(
        1, inspection_mode=InspectionMode.DISABLED, automated_cleaning_mode=CleaningMode.DISABLED
    )
    rogues, gates = [], []
    for host, emu in zip((inspected, deployed), dc.emulated, strict=True):
        gate = asyncio.Event()  # the host's own agent waits: the queue is the rogue's alone
        emu.agent_gate = gate
        gates.append(gate)
        garbage = host is deployed
        rogues.append(Rogue(client, host.ref.agent_task_queue, settings.boot_dir, host.ref.host_id, garbage))
    before = (rejected(AGENT_INVENTORY), rejected(AGENT_WRITE_IMAGE))
    runs = [asyncio.create_task(r.worker.run()) for r in rogues]
    try:
        for host in (inspected, deployed):
            await operations.apply(client, host, settings)
        for rogue, gate in zip(rogues, gates, strict=True):
            await asyncio.wait_for(rogue.answered.wait(), 120)
            await rogue.worker.shutdown()
            gate.set()  # now the host's own agent polls
    finally:
        for rogue, run in zip(rogues, runs, strict=True):
            if not run.done():
                await rogue.worker.shutdown()
    assert [name for name, _ in rogues[0].seen] == [AGENT_INVENTORY]
    assert [name for name, _ in rogues[1].seen] == [AGENT_WRITE_IMAGE]

    cases = ((inspected, AGENT_INVENTORY, "does not match"), (deployed, AGENT_WRITE_IMAGE, "no proof"))
    for host, expected, why in cases:
        st = await wait_status(
            client, host.ref, lambda s: s.provisioning.state == S.PROVISIONED or s.error_type
        )
        assert st.error_type is None, st.error_message
        [event] = st.security_events
        assert event.activity == expected and why in event.reason
        assert event.step.startswith(host.ref.workflow_id)
    # the host's own agent did the work: the inventory is the real one, the image is on the disk
    st = await operations.status(client, inspected.ref)
    assert st.hardware is not None and st.hardware.cpu.count == os.cpu_count() != FAKE_CPUS
    assert dc.image is not None
    with dc.emulated[1].disk_path.open("rb") as f:
        assert f.read(dc.image.size) == dc.image.path.read_bytes()
    assert (rejected(AGENT_INVENTORY), rejected(AGENT_WRITE_IMAGE)) == (before[0] + 1, before[1] + 1)
    # what the rogue received: no secret (the BMC password, any token); the write names a public image
    for rogue in rogues:
        assert rogue.tokens, "the host was in a ramdisk boot"
        for _, data in rogue.seen:
            assert dc.password.encode() not in data and b"Bearer" not in data
            assert not any(t.encode() in data for t in rogue.tokens)
    for host, name in ((inspected, "agent-reply-refused-inspect"), (deployed, "agent-reply-refused-deploy")):
        await assert_no_secret_in_histories(client, [dc.password], host.ref.workflow_id, at_least=3)
        await record(client, host.ref.workflow_id, name)
