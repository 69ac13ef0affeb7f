"""Host selection and machine sets: selectors, hardware fit, race-free grants, replacement."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from temporalio.client import Client

from metalflow.api.claims import (
    Candidate,
    Claim,
    ClaimPhase,
    ClaimSpec,
    HardwareNeeds,
    LabelSelector,
    MachineSetSpec,
    choose,
)
from metalflow.api.models import (
    CPU,
    NIC,
    BMCDetails,
    CleaningMode,
    HardwareDetails,
    HostRef,
    SecretRef,
    Storage,
)
from metalflow.api.models import ProvisioningState as S
from metalflow.client import operations, pools
from metalflow.runtime.settings import Settings
from testbed.datacenter import Datacenter, write_secret
from worker.control import build_worker

GIB = 1 << 30


def hw(cpus: int, ram: int, disk_gib: int, nics: int = 1, rotational: bool = False) -> HardwareDetails:
    return HardwareDetails(
        cpu=CPU(count=cpus),
        ram_mebibytes=ram,
        nics=[NIC(mac=f"52:54:00:00:00:{i:02x}") for i in range(nics)],
        storage=[Storage(name="/dev/sda", size_bytes=disk_gib * GIB, rotational=rotational)],
    )


def cand(
    name: str, labels: dict[str, str], hardware: HardwareDetails, usable: bool = True, consumer: str = ""
) -> Candidate:
    return Candidate(
        ref=HostRef(name=name),
        labels=labels,
        hardware=hardware,
        state="available",
        usable=usable,
        consumer=consumer,
    )


def claim(cid: str, **spec: Any) -> Claim:
    image = {"url": "http://x/os.img", "checksum": "a" * 64}
    return Claim(id=cid, spec=ClaimSpec.model_validate({"image": image, **spec}))


def test_selector_semantics_are_kubernetes_label_selectors() -> None:
    sel = LabelSelector.model_validate(
        {
            "matchLabels": {"role": "worker"},
            "matchExpressions": [
                {"key": "rack", "operator": "In", "values": ["r1", "r2"]},
                {"key": "zone", "operator": "NotIn", "values": ["z9"]},
                {"key": "ssd", "operator": "Exists"},
                {"key": "broken", "operator": "DoesNotExist"},
            ],
        }
    )
    assert sel.matches({"role": "worker", "rack": "r1", "ssd": ""})
    assert not sel.matches({"role": "worker", "rack": "r3", "ssd": ""})
    assert not sel.matches({"role": "worker", "rack": "r1", "ssd": "", "zone": "z9"})
    assert not sel.matches({"role": "worker", "rack": "r1"})
    assert not sel.matches({"role": "worker", "rack": "r1", "ssd": "", "broken": "yes"})
    with pytest.raises(ValidationError, match="needs values"):
        LabelSelector.model_validate({"matchExpressions": [{"key": "a", "operator": "In"}]})


def test_smallest_fitting_usable_unconsumed_host_is_chosen() -> None:
    pool = [
        cand("big", {"role": "worker"}, hw(64, 512_000, 2000)),
        cand("small", {"role": "worker"}, hw(8, 32_000, 500)),
        cand("tiny", {"role": "worker"}, hw(2, 4_000, 100)),
        cand("broken", {"role": "worker"}, hw(8, 32_000, 500), usable=False),
        cand("taken", {"role": "worker"}, hw(8, 32_000, 500), consumer="someone"),
        cand("gpu", {"role": "gpu"}, hw(8, 32_000, 500)),
    ]
    c = claim(
        "c1", selector={"matchLabels": {"role": "worker"}}, hardware={"minCpus": 4, "minRamMebibytes": 16_000}
    )
    chosen, _ = choose(c, pool, taken=set())
    assert chosen is not None and chosen.ref.name == "small"
    chosen, _ = choose(c, pool, taken={"default.small"})
    assert chosen is not None and chosen.ref.name == "big"
    hdd = claim("c2", hardware={"rotational": True, "minDiskGigabytes": 100})
    chosen, why = choose(hdd, pool, taken=set())
    assert (
        chosen is None
        and "no available host matches" in why
        and "no disk of the wanted rotational kind" in why
    )
    assert HardwareNeeds(min_nics=2).misfit(hw(1, 1, 1)) == "1 NICs < 2"


@pytest.fixture
def many(settings: Settings, ns: str) -> Callable[[int], Datacenter]:
    return lambda n: Datacenter(settings, hosts=n, prefix="pool", image_mib=4, namespace=ns)


async def bring_available(
    client: Client,
    settings: Settings,
    dc: Datacenter,
    labels: Callable[[int], dict[str, str]],
    tmp_path: Path | None = None,
) -> None:
    """Register and inspect every host (no image: they rest in available)."""
    for i in range(len(dc.systems)):
        host = dc.host(i, image=None, automated_cleaning_mode=CleaningMode.DISABLED, labels=labels(i))
        if tmp_path is not None:  # a Secret per host, so one host's BMC can be broken alone
            path = tmp_path / f"bmc-{i}.yaml"
            write_secret(path, {"username": "admin", "password": dc.password})
            host = host.model_copy(
                update={
                    "spec": host.spec.model_copy(
                        update={
                            "bmc": BMCDetails(
                                address=host.spec.bmc.address,
                                credentials=SecretRef(name=f"bmc-{i}", path=str(path)),
                            )
                        }
                    )
                }
            )
        await operations.apply(client, host, settings)
    deadline = asyncio.get_running_loop().time() + 300
    while True:
        states = [(await operations.status(client, dc.host(i).ref)) for i in range(len(dc.systems))]
        assert all(s.error_type is None for s in states), [s.error_message for s in states if s.error_type]
        if all(s.provisioning.state == S.AVAILABLE for s in states):
            return
        assert asyncio.get_running_loop().time() < deadline, [s.provisioning.state for s in states]
        await asyncio.sleep(0.5)


async def test_twenty_concurrent_claims_over_sixteen_hosts(
    client: Client, settings: Settings, many: Any
) -> None:
    # Twice the dev server's ten in-flight Updates per workflow, four more claims than hosts: the
    # allocator serialises them all the same, so more hosts add time, not proof.
    async with many(16) as dc:
        with ThreadPoolExecutor(max_workers=64) as executor:
            async with build_worker(client, settings, executor):
                await bring_available(client, settings, dc, lambda i: {"role": "worker", "rack": f"r{i % 4}"})
                spec = {
                    "selector": {"matchLabels": {"role": "worker"}},
                    "image": dc.image_spec().model_dump(by_alias=True),
                }
                claims = [
                    Claim(id=f"c{i:02d}", namespace=dc.namespace, spec=ClaimSpec.model_validate(spec))
                    for i in range(20)
                ]
                await asyncio.gather(*(pools.claim(client, c, settings.task_queue) for c in claims))
                # every claim has been through an allocation round: granted, or pending with a reason
                deadline = asyncio.get_running_loop().time() + 120
                while True:
                    results = sorted(await pools.claims(client, dc.namespace), key=lambda r: r.id)
                    if all(r.phase == ClaimPhase.GRANTED or r.reason for r in results):
                        break
                    assert asyncio.get_running_loop().time() < deadline, results
                    await asyncio.sleep(0.5)
                granted = [r for r in results if r.phase == ClaimPhase.GRANTED]
                pending = [r for r in results if r.phase == ClaimPhase.PENDING]
                assert len(granted) == 16 and len(pending) == 4
                hosts = [r.host.host_id for r in granted if r.host]
                assert len(set(hosts)) == 16, "a host was granted twice"
                assert all("no available host matches" in r.reason for r in pending)
                # consumerRef is set on every chosen host
                for r in granted[:5]:
                    assert r.host is not None
                    spec_now = await operations.spec(client, r.host)
                    assert spec_now.consumer_ref and spec_now.consumer_ref.name == r.id
                # a selector that matches nothing waits, saying why
                nothing = Claim(
                    id="gpu",
                    namespace=dc.namespace,
                    spec=ClaimSpec.model_validate({**spec, "selector": {"matchLabels": {"role": "gpu"}}}),
                )
                st = await pools.claim(client, nothing, settings.task_queue)
                assert st.phase == ClaimPhase.PENDING and "role=gpu" in st.reason
                # asking again is idempotent
                again = await pools.claim(client, claims[0], settings.task_queue)
                assert again.host == results[0].host


async def test_machine_set_replaces_a_failed_host_and_scales_down(
    client: Client, settings: Settings, many: Any, tmp_path: Path
) -> None:
    async with many(3) as dc:
        with ThreadPoolExecutor(max_workers=32) as executor:
            async with build_worker(client, settings, executor):
                await bring_available(client, settings, dc, lambda i: {"role": "worker"}, tmp_path)
                template = ClaimSpec.model_validate(
                    {
                        "selector": {"matchLabels": {"role": "worker"}},
                        "image": dc.image_spec().model_dump(by_alias=True),
                    }
                )
                spec = MachineSetSpec(replicas=2, template=template)
                await pools.apply_machineset(client, dc.namespace, "workers", spec, settings.task_queue)

                async def until(pred: Callable[[Any], bool], what: str) -> Any:
                    deadline = asyncio.get_running_loop().time() + 300
                    while True:
                        st = await pools.machineset_status(client, dc.namespace, "workers")
                        if pred(st):
                            return st
                        assert asyncio.get_running_loop().time() < deadline, f"{what}: {st}"
                        await asyncio.sleep(0.5)

                st = await until(lambda s: s.ready == 2, "two members provisioned")
                members = {h.name for h in st.hosts}
                # break one member's BMC credentials, then reboot it: a power management error
                victim = sorted(members)[0]
                index = int(victim.rsplit("-", 1)[1])
                write_secret(tmp_path / f"bmc-{index}.yaml", {"username": "admin", "password": "wrong"})
                await operations.signal(client, HostRef(namespace=dc.namespace, name=victim), "reboot")
                st = await until(lambda s: s.replaced == 1 and s.ready == 2, "the failed member replaced")
                assert victim not in {h.name for h in st.hosts}
                assert len({h.name for h in st.hosts}) == 2
                failed = await operations.status(client, HostRef(namespace=dc.namespace, name=victim))
                # power management error at first; once released, its deprovisioning fails the same way
                assert failed.error_type is not None and "BMCAuthError" in failed.error_message
                # scale down: the newest member is released back to available
                await pools.apply_machineset(
                    client,
                    dc.namespace,
                    "workers",
                    spec.model_copy(update={"replicas": 1}),
                    settings.task_queue,
                )
                before = {h.name for h in st.hosts}
                st = await until(lambda s: len(s.hosts) == 1, "scaled down to one")
                released = before - {h.name for h in st.hosts}
                assert len(released) == 1
                deadline = asyncio.get_running_loop().time() + 240
                for name in released:
                    while (
                        hs := await operations.status(client, HostRef(namespace=dc.namespace, name=name))
                    ).provisioning.state != S.AVAILABLE:
                        assert asyncio.get_running_loop().time() < deadline, hs.provisioning.state
                        await asyncio.sleep(0.5)
                    assert (
                        await operations.spec(client, HostRef(namespace=dc.namespace, name=name))
                    ).consumer_ref is None
