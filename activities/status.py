"""Publish a host's lifecycle status to its BareMetalHost (status subresource), and record what
the change means as Kubernetes Events on it (metalflow.api.events), as metal3 does.

Only a host started for a BareMetalHost calls it (workflows/host_publish.py); a script's host
has its workflow's Query, memo and search attributes, and its metrics come from its workflow.

Events are named for the host, reason and message: the same event again (a step retried into
the same error) is aggregated into the first one (count and lastTimestamp), as client-go's event
correlator does, so a host failing in a loop makes one event, not one per attempt. They are
recorded before the status is written (a retried publish can only add to a count, never lose
one) and on a best-effort basis: failing to record one is logged, not an error.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

from temporalio import activity

from metalflow.api.events import COMPONENT, REPORTING_CONTROLLER, HostEvent, host_events
from metalflow.api.host import STATUS_PUBLISH, StatusUpdate
from metalflow.api.kube_names import BMH_PLURAL, METAL3_GROUP, METAL3_VERSION
from metalflow.api.status import bmh_status
from metalflow.runtime.kube import api_client
from metalflow.runtime.settings import get_settings

__all__ = ["ACTIVITIES", "bmh_status", "publish_status"]


@activity.defn(name=STATUS_PUBLISH)
def publish_status(update: StatusUpdate) -> None:
    status = update.status
    activity.logger.info(
        "host %s/%s is %s (%s)%s",
        update.host.namespace,
        update.host.name,
        status.provisioning.state.value or "none",
        status.operational_status.value,
        f": {status.error_type.value}: {status.error_message}" if status.error_type else "",
    )
    settings = get_settings()
    if not settings.publish_status_to_kubernetes or status.deleted:
        return
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    with api_client(settings) as kube:
        api = client.CustomObjectsApi(kube)
        try:
            current: dict[str, Any] = api.get_namespaced_custom_object(  # type: ignore[assignment]
                METAL3_GROUP, METAL3_VERSION, update.host.namespace, BMH_PLURAL, update.host.name
            )
            for event in host_events(current.get("status") or {}, status):
                record_event(client.CoreV1Api(kube), current, event)
            api.patch_namespaced_custom_object_status(
                METAL3_GROUP,
                METAL3_VERSION,
                update.host.namespace,
                BMH_PLURAL,
                update.host.name,
                {"status": bmh_status(status)},
            )
        except ApiException as exc:
            if exc.status == 404:  # the object is gone: nothing left to report to
                activity.logger.info("BareMetalHost %s/%s is gone", update.host.namespace, update.host.name)
                return
            raise


def event_name(host: str, event: HostEvent) -> str:
    digest = hashlib.sha256(f"{event.reason}\0{event.message}".encode()).hexdigest()[:12]
    return f"{host}.{event.reason.lower()}.{digest}"


def record_event(core: Any, bmh: dict[str, Any], event: HostEvent) -> None:
    """Create EVENT on the BareMetalHost BMH, or count it again if it was recorded before."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    meta = bmh["metadata"]
    name, namespace = event_name(meta["name"], event), meta["namespace"]
    now = datetime.now(UTC)
    consumer = (bmh.get("spec") or {}).get("consumerRef")
    body = client.CoreV1Event(
        metadata=client.V1ObjectMeta(name=name, namespace=namespace),
        involved_object=client.V1ObjectReference(
            api_version=bmh["apiVersion"],
            kind=bmh["kind"],
            name=meta["name"],
            namespace=namespace,
            uid=meta["uid"],
        ),
        reason=event.reason,
        message=event.message[:1024],
        type=event.type,
        source=client.V1EventSource(component=COMPONENT),
        reporting_component=REPORTING_CONTROLLER,
        reporting_instance=COMPONENT,
        first_timestamp=now,
        last_timestamp=now,
        count=1,
        related=client.V1ObjectReference(
            api_version=consumer.get("apiVersion"),
            kind=consumer.get("kind"),
            name=consumer.get("name"),
            namespace=consumer.get("namespace"),
        )
        if consumer
        else None,
    )
    try:
        try:
            core.create_namespaced_event(namespace, body)
        except ApiException as exc:
            if exc.status != 409:
                raise
            seen = core.read_namespaced_event(name, namespace)
            patch = {"count": (seen.count or 1) + 1, "lastTimestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ")}
            core.patch_namespaced_event(name, namespace, patch)
    except ApiException as exc:
        activity.logger.warning(
            "could not record event %s on %s/%s: %s", event.reason, namespace, meta["name"], exc.reason
        )


ACTIVITIES = [publish_status]
