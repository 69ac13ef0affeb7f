"""Publish what a BIOS read found to the host's HostFirmwareSettings status (settings, schema
reference, metal3's Valid and ChangeDetected conditions) and to a FirmwareSchema object, one per
distinct attribute registry in the host's namespace, as metal3 names them (`schema-<digest>`).

Script-driven hosts have no HostFirmwareSettings: then the host's status (a Query) carries the
settings and this activity only logs. A host whose HostFirmwareSettings was deleted meanwhile
is left alone.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from temporalio import activity

from metalflow.api.firmware import hfs_conditions
from metalflow.api.host import COMPONENTS_PUBLISH, FIRMWARE_PUBLISH, ComponentsReport, FirmwareReport
from metalflow.api.kube_names import (
    FIRMWARE_SCHEMA_KIND,
    FIRMWARE_SCHEMA_PLURAL,
    HFC_PLURAL,
    HFS_PLURAL,
    METAL3_API_VERSION,
    METAL3_GROUP,
    METAL3_VERSION,
)
from metalflow.runtime.kube import api_client
from metalflow.runtime.settings import get_settings


@activity.defn(name=FIRMWARE_PUBLISH)
def publish_firmware(report: FirmwareReport) -> None:
    ref = report.host
    activity.logger.info(
        "host %s/%s: BIOS reports %d settings (%s)%s",
        ref.namespace,
        ref.name,
        len(report.settings),
        report.schema_.name,
        f"; invalid: {'; '.join(report.problems)}" if report.problems else "",
    )
    settings = get_settings()
    if not settings.publish_status_to_kubernetes:
        return
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    schema = report.schema_
    with api_client(settings) as kube:
        api = client.CustomObjectsApi(kube)
        try:
            hfs: dict[str, Any] = api.get_namespaced_custom_object(  # type: ignore[assignment]
                METAL3_GROUP, METAL3_VERSION, ref.namespace, HFS_PLURAL, ref.name
            )
        except ApiException as exc:
            if exc.status == 404:
                activity.logger.info("HostFirmwareSettings %s/%s is gone", ref.namespace, ref.name)
                return
            raise
        body = {
            "apiVersion": METAL3_API_VERSION,
            "kind": FIRMWARE_SCHEMA_KIND,
            "metadata": {"name": schema.name, "namespace": ref.namespace},
            "spec": schema.model_dump(mode="json", by_alias=True, exclude_none=True),
        }
        try:
            api.create_namespaced_custom_object(
                METAL3_GROUP, METAL3_VERSION, ref.namespace, FIRMWARE_SCHEMA_PLURAL, body
            )
        except ApiException as exc:
            if exc.status != 409:  # the same registry's schema exists: its name is its content
                raise
        now = datetime.now(UTC)
        before = (hfs.get("status") or {}).get("conditions") or []
        status = {
            "schema": {"name": schema.name, "namespace": ref.namespace},
            "settings": report.settings,
            "lastUpdated": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "conditions": hfs_conditions(
                report.desired, report.settings, schema, report.problems, now, before
            ),
        }
        try:
            api.patch_namespaced_custom_object_status(
                METAL3_GROUP, METAL3_VERSION, ref.namespace, HFS_PLURAL, ref.name, {"status": status}
            )
        except ApiException as exc:
            if exc.status != 404:
                raise


@activity.defn(name=COMPONENTS_PUBLISH)
def publish_components(report: ComponentsReport) -> None:
    """The host's HostFirmwareComponents status: the updates applied and each component's
    initial, current and last flashed version (camelCase, as metal3 writes it)."""
    ref = report.host
    versions = ", ".join(f"{c.component} {c.current_version}" for c in report.status.components)
    activity.logger.info("host %s/%s: firmware %s", ref.namespace, ref.name, versions or "unknown")
    settings = get_settings()
    if not settings.publish_status_to_kubernetes:
        return
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    status = report.status.model_dump(mode="json", by_alias=True, exclude_none=True)
    status["conditions"] = [
        {"type": kind, "status": value, "reason": "Success", "message": "", "lastTransitionTime": now}
        for kind, value in (("ChangeDetected", "False"), ("Valid", "True"))
    ]
    for component in status.get("components", []):  # metal3 omits what is not known
        for key in ("currentVersion", "lastVersionFlashed"):
            if not component.get(key):
                component.pop(key, None)
    with api_client(settings) as kube:
        try:
            client.CustomObjectsApi(kube).patch_namespaced_custom_object_status(
                METAL3_GROUP, METAL3_VERSION, ref.namespace, HFC_PLURAL, ref.name, {"status": status}
            )
        except ApiException as exc:
            if exc.status != 404:  # no HostFirmwareComponents (any more): nothing to report to
                raise


ACTIVITIES = [publish_firmware, publish_components]
