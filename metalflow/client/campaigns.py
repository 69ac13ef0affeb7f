"""Client-side API for servicing campaigns (CLI, scripts, tests): start, read, steer."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError
from temporalio.client import Client, WorkflowHandle
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDConflictPolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

from metalflow.api.bmh import ManifestError
from metalflow.api.campaign import (
    CAMPAIGN_WORKFLOW,
    STATUS_QUERY,
    Campaign,
    CampaignPhase,
    CampaignStatus,
    campaign_workflow_id,
)
from metalflow.api.search_attributes import CAMPAIGN_PHASE

KIND, API_VERSION = "Campaign", "metalflow.io/v1alpha1"


def campaign_from_manifest(doc: object, source: str = "campaign") -> Campaign:
    """A `metalflow.io/v1alpha1` Campaign document, or a ManifestError naming the field."""
    if not isinstance(doc, dict) or doc.get("kind") != KIND:
        raise ManifestError(f"{source}: expected kind {KIND} ({API_VERSION})")
    meta = doc.get("metadata") or {}
    try:
        return Campaign.model_validate(
            {"name": meta.get("name"), "namespace": meta.get("namespace", "default"), "spec": doc.get("spec")}
        )
    except ValidationError as err:
        where = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'metadata'}: {e['msg']}" for e in err.errors()
        )
        raise ManifestError(f"{source}: {where}") from None


def load_campaign(path: Path) -> Campaign:
    return campaign_from_manifest(yaml.safe_load(path.read_text()), str(path))


async def apply(
    client: Client, campaign: Campaign, task_queue: str, memo: dict[str, str] | None = None
) -> WorkflowHandle[object, CampaignStatus]:
    """Start the campaign; one of that name already running is an error, not a second run. The
    bridge keeps the Campaign object's uid in the memo."""
    try:
        return await client.start_workflow(
            CAMPAIGN_WORKFLOW,
            campaign,
            id=campaign.workflow_id,
            task_queue=task_queue,
            result_type=CampaignStatus,
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
            static_summary=f"campaign {campaign.namespace}/{campaign.name}",
            static_details=campaign.spec.model_dump_json(by_alias=True, exclude_defaults=True),
            memo=memo,
            search_attributes=TypedSearchAttributes(
                [SearchAttributePair(CAMPAIGN_PHASE, CampaignPhase.CHECKING.value)]
            ),
        )
    except WorkflowAlreadyStartedError:
        raise ManifestError(
            f"campaign {campaign.namespace}/{campaign.name} is running: abort it first, or give this one "
            "another name"
        ) from None


def handle(client: Client, namespace: str, name: str) -> WorkflowHandle[object, CampaignStatus]:
    return client.get_workflow_handle(campaign_workflow_id(namespace, name), result_type=CampaignStatus)


async def status(client: Client, namespace: str, name: str) -> CampaignStatus:
    return await handle(client, namespace, name).query(STATUS_QUERY, result_type=CampaignStatus)


async def signal(client: Client, namespace: str, name: str, what: str) -> None:
    """pause, resume or abort."""
    await handle(client, namespace, name).signal(what)
