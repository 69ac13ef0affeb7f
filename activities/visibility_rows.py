"""Visibility listings read lean: only the workflow id, status and the few search attributes asked for.

`Client.list_workflows` builds a full `WorkflowExecution` per row and decodes every search
attribute through the data converter; a fleet's progress lists every host of the namespace every
couple of seconds, so that decoding was most of the worker's CPU on big fleets (profiled with
`bench.fleet --profile`). Keyword search attributes are JSON strings on the wire (the SDK's own
encoding); the rows here decode only the named ones.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from temporalio.api.workflowservice.v1 import ListWorkflowExecutionsRequest
from temporalio.client import Client, WorkflowExecutionStatus

PAGE_SIZE = 1000


@dataclass(frozen=True)
class Row:
    workflow_id: str
    status: WorkflowExecutionStatus
    attrs: dict[str, str]


async def rows(client: Client, query: str, keys: Sequence[str]) -> AsyncIterator[Row]:
    """Every execution the query lists, page by page; attributes not set read as ""."""
    token = b""
    while True:
        page = await client.workflow_service.list_workflow_executions(
            ListWorkflowExecutionsRequest(
                namespace=client.namespace, query=query, page_size=PAGE_SIZE, next_page_token=token
            ),
            retry=True,
        )
        for e in page.executions:
            fields = e.search_attributes.indexed_fields
            yield Row(
                workflow_id=e.execution.workflow_id,
                status=WorkflowExecutionStatus(e.status),
                attrs={k: _keyword(fields[k].data) if k in fields else "" for k in keys},
            )
        token = page.next_page_token
        if not token:
            return


def _keyword(data: bytes) -> str:
    value = json.loads(data) if data else ""
    return value if isinstance(value, str) else ""
