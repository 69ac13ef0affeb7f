"""Publish a host's lifecycle status to its BareMetalHost (status subresource).

Script-driven hosts have no BareMetalHost: then the workflow's Query, memo and search
attributes are the status, and this activity only logs the transition.
"""

from __future__ import annotations

from typing import Any

from temporalio import activity

from metalflow.api.host import STATUS_PUBLISH, StatusUpdate
from metalflow.api.kube_names import BMH_PLURAL, METAL3_GROUP, METAL3_VERSION
from metalflow.api.models import HostStatus
from metalflow.runtime import metrics
from metalflow.runtime.kube import api_client
from metalflow.runtime.settings import get_settings

# metalflow's own fields are not part of metal3's status schema.
_METALFLOW_ONLY = {"bmc_driver", "current_step", "paused", "detached", "deleted"}


def bmh_status(status: HostStatus) -> dict[str, Any]:
    """The metal3-shaped status document (camelCase, metal3 fields only)."""
    body = status.model_dump(mode="json", by_alias=True, exclude=_METALFLOW_ONLY, exclude_none=True)
    body["provisioning"].setdefault("state", status.provisioning.state.value)
    image = body["provisioning"].get("image") or {}
    if "ociAuth" in image:  # metal3's shape: the Secret's name, as in the spec
        image["ociAuthSecretName"] = image.pop("ociAuth")["name"]
    body.setdefault("errorType", "")
    body.setdefault("hardwareProfile", "unknown")  # required by metal3's schema
    return body


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
    metrics.observe_status(update.workflow_id, status)
    settings = get_settings()
    if not settings.publish_status_to_kubernetes or status.deleted:
        return
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    with api_client(settings) as kube:
        api = client.CustomObjectsApi(kube)
        try:
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


ACTIVITIES = [publish_status]
