"""Host-pool activities: what the allocator sees of hosts, and how it hands them out.

They talk to Temporal itself (visibility, queries, updates on host workflows) through the
worker's client, so the allocator workflow stays deterministic and the hosts stay the only
owners of their specs.
"""

from __future__ import annotations

import asyncio

from temporalio import activity
from temporalio.client import Client, WorkflowHandle
from temporalio.service import RPCError

from activities import kube
from metalflow.api.claims import Candidate, Claim, ClaimStatus
from metalflow.api.errors import ErrorName, permanent
from metalflow.api.host import HOST_WORKFLOW
from metalflow.api.models import (
    ConsumerRef,
    HostRef,
    HostSpec,
    HostStatus,
    OperationalStatus,
    ProvisioningState,
)
from metalflow.api.pools import (
    POOL_ASSIGN,
    POOL_CANDIDATES,
    POOL_CLAIM,
    POOL_RELEASE,
    POOL_STATUS,
    POOL_UNCLAIM,
    Assignment,
    HostHealth,
)
from metalflow.client import pools

CLAIM_KIND = "Claim"


def _handle(client: Client, ref: HostRef) -> WorkflowHandle[object, HostStatus]:
    return client.get_workflow_handle(ref.workflow_id, result_type=HostStatus)


async def look(client: Client, ref: HostRef) -> tuple[HostSpec, HostStatus]:
    h = _handle(client, ref)
    spec, status = await asyncio.gather(
        h.query("spec", result_type=HostSpec), h.query("status", result_type=HostStatus)
    )
    return spec, status


def _consumer(spec: HostSpec) -> str:
    """Whoever holds the host: a claim, or anything else that set consumerRef (e.g. CAPI)."""
    return spec.consumer_ref.name if spec.consumer_ref is not None else ""


async def running_hosts(client: Client, namespace: str) -> list[tuple[HostRef, HostSpec, HostStatus]]:
    """Every running host workflow of NAMESPACE with its spec and status (visibility, then queries)."""
    refs = [
        HostRef.from_workflow_id(wf.id)
        async for wf in client.list_workflows(
            f'WorkflowType="{HOST_WORKFLOW}" AND ExecutionStatus="Running" AND HostNamespace="{namespace}"'
        )
    ]
    looks = await asyncio.gather(*(look(client, r) for r in refs), return_exceptions=True)
    return [
        (ref, *look)
        for ref, look in zip(refs, looks, strict=True)
        if not isinstance(look, BaseException)  # ended between the listing and the query
    ]


@activity.defn(name=POOL_CANDIDATES)
async def candidates(namespace: str) -> list[Candidate]:
    out = []
    for ref, spec, status in await running_hosts(activity.client(), namespace):
        out.append(
            Candidate(
                ref=ref,
                labels=spec.labels,
                hardware=status.hardware,
                state=status.provisioning.state.value,
                usable=status.provisioning.state == ProvisioningState.AVAILABLE
                and status.operational_status == OperationalStatus.OK
                and not status.paused
                and not status.detached,
                consumer=_consumer(spec),
            )
        )
    return out


@activity.defn(name=POOL_ASSIGN)
async def assign(a: Assignment) -> None:
    """Put the claim's image (and userData, join) on the host, marking it consumed (consumerRef).

    A host the Kubernetes bridge manages gets them on its BareMetalHost, the source of truth
    there (as Cluster API's Metal3Machine controller does); the bridge carries them on.
    """
    assert a.spec is not None
    client = activity.client()
    consumer = a.consumer or ConsumerRef(kind=CLAIM_KIND, name=a.claim_id, namespace=a.host.namespace)
    uid = await kube.managed_uid(client, a.host)
    if uid:
        await asyncio.to_thread(kube.assign, a.host, uid, a.claim_id, a.spec, consumer)
        return
    spec, _ = await look(client, a.host)
    if spec.consumer_ref is not None and spec.consumer_ref.name != a.claim_id:
        raise permanent(
            ErrorName.INVALID_SPEC, f"{a.host.name} is already consumed by {spec.consumer_ref.name}"
        )
    new = spec.model_copy(
        update={
            "image": a.spec.image,
            "user_data": a.spec.user_data or spec.user_data,
            "network_data": a.spec.network_data or spec.network_data,
            "join": a.spec.join,
            "consumer_ref": consumer,
        }
    )
    await _handle(client, a.host).execute_update("update_spec", new)


@activity.defn(name=POOL_RELEASE)
async def release(a: Assignment) -> None:
    """Deprovision (cleaning per automatedCleaningMode) and free the host for other claims."""
    client = activity.client()
    try:
        uid = await kube.managed_uid(client, a.host)
        if uid:
            await asyncio.to_thread(kube.release, a.host, uid, a.claim_id)
            return
        spec, _ = await look(client, a.host)
    except RPCError:
        return  # the host is gone: nothing to release
    if spec.consumer_ref is None or spec.consumer_ref.name != a.claim_id:
        return
    new = spec.model_copy(update={"image": None, "join": None, "consumer_ref": None})
    await _handle(client, a.host).execute_update("update_spec", new)


@activity.defn(name=POOL_STATUS)
async def health(hosts: list[HostRef]) -> list[HostHealth]:
    client = activity.client()

    async def one(ref: HostRef) -> HostHealth:
        try:
            spec, st = await look(client, ref)
            uid = await kube.managed_uid(client, ref)
        except RPCError:
            return HostHealth(host=ref, state="", exists=False)
        wanted = spec.image.url if spec.image else ""
        if uid:  # what the BareMetalHost asks for now, even before the bridge has carried it on
            wanted = await asyncio.to_thread(kube.image_url, ref, uid, wanted)
        return HostHealth(
            host=ref,
            state=st.provisioning.state.value,
            error_type=st.error_type.value if st.error_type else "",
            image_url=st.provisioning.image.url if st.provisioning.image else "",
            spec_image_url=wanted,
        )

    return list(await asyncio.gather(*(one(r) for r in hosts)))


@activity.defn(name=POOL_CLAIM)
async def submit_claim(c: Claim) -> ClaimStatus:
    """A machine set's claim, sent to the namespace's allocator (started if need be)."""
    return await pools.claim(activity.client(), c, activity.info().task_queue)


@activity.defn(name=POOL_UNCLAIM)
async def withdraw_claim(a: Assignment) -> ClaimStatus:
    return await pools.release(activity.client(), a.host.namespace, a.claim_id, activity.info().task_queue)


ACTIVITIES = [candidates, assign, release, health, submit_claim, withdraw_claim]
