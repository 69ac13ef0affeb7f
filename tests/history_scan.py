"""The "no secret in history" check, made able to see payloads.

`WorkflowHistory.to_json()` writes every payload (workflow and activity inputs and results, memo,
search attributes, signal and update arguments, heartbeat and failure details) as base64, so a
substring check on it only sees plain string fields. This scanner walks every field of every
event by protobuf reflection, so no event type or nesting (failure causes, encoded attributes)
is skipped, and searches each Payload three ways: decoded with the project's data converter
(escaped newlines and quotes are gone there), as raw UTF-8, and for the secret's base64 forms.
"""

from __future__ import annotations

import base64
import functools
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import Message
from temporalio.api.common.v1 import Payload
from temporalio.api.enums.v1 import EventType
from temporalio.api.failure.v1 import Failure
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DefaultFailureConverter
from temporalio.service import RPCError, RPCStatusCode
from tests_support import step_histories

MIN_LINE = 8  # shorter lines of a multi-line secret ("runcmd:", "- a") would match innocently
FRAGMENT = 16  # a piece of a long line this size betrays it: PyYAML quotes a line cut to fit
NOT_SECRET = {"#cloud-config"}  # the header every cloud-config starts with; error messages name it
_PAYLOAD = Payload.DESCRIPTOR.full_name


@dataclass(frozen=True)
class Finding:
    """Where a secret was seen: the workflow, the event and the field path inside it."""

    workflow_id: str
    event_id: int
    event_type: str
    field: str
    secret: str

    def __str__(self) -> str:  # a test failure must not print the whole secret either
        return (
            f"{self.workflow_id} event {self.event_id} {self.event_type} {self.field}: {self.secret[:6]}..."
        )


def needles(*secrets: str) -> list[str]:
    """Each secret, and each line of a multi-line one (userData) long enough to be telling."""
    out: list[str] = []
    for secret in secrets:
        for candidate in (secret, *(line.strip() for line in secret.splitlines())):
            if len(candidate) >= MIN_LINE and candidate not in out and candidate not in NOT_SECRET:
                out.append(candidate)
    return out


def _base64_forms(needle: str) -> list[str]:
    """The characters of base64(needle) that depend on the needle's bits alone, at each of the
    three byte alignments it can have inside a longer encoded value."""
    raw = needle.encode()
    forms = []
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + raw).decode()
        start, end = -(-8 * shift // 6), 8 * (shift + len(raw)) // 6
        if end - start >= MIN_LINE:
            forms.append(encoded[start:end])
    return forms


@functools.cache
def _probes(needle: str) -> tuple[str, ...]:
    """What betrays a needle: itself, its base64 forms, and (one line only) every FRAGMENT-long
    piece of it, for messages that quote a long line cut short around the fault."""
    pieces = []
    if "\n" not in needle:
        pieces = [needle[i : i + FRAGMENT] for i in range(len(needle) - FRAGMENT + 1)]
    return (needle, *_base64_forms(needle), *pieces)


def _first_hit(texts: Iterable[tuple[str, str]], needle: str) -> str | None:
    """The path of the first text that betrays `needle`."""
    return next((path for path, text in texts if any(probe in text for probe in _probes(needle))), None)


def _leaves(value: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """(path, text) for every string of a decoded payload, keys included."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, bytes | bytearray):
        yield path, bytes(value).decode("utf-8", "replace")
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield f"{path}.{key}", str(key)
            yield from _leaves(item, f"{path}.{key}")
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            yield from _leaves(item, f"{path}[{i}]")
    elif value is not None:  # a number, a protobuf message (binary/protobuf payloads)
        yield path, str(value)


def find_in_value(value: Any, secrets: Sequence[str]) -> list[tuple[str, str]]:
    """(path, secret) for each secret in any string of a plain value (a status, a decoded payload)."""
    texts = list(_leaves(value))
    found = []
    for needle in needles(*secrets):
        path = _first_hit(texts, needle)
        if path is not None:
            found.append((path or "$", needle))
    return found


def _payload_texts(payload: Payload) -> Iterator[tuple[str, str]]:
    try:
        decoded = pydantic_data_converter.payload_converter.from_payload(payload)
    except Exception:  # undecodable (an unknown encoding): still scanned raw below
        decoded = None
    yield from ((f"#{p}" if p else "", text) for p, text in _leaves(decoded))
    yield "(raw)", payload.data.decode("utf-8", "replace")
    for key, value in payload.metadata.items():
        yield f"(metadata {key})", value.decode("utf-8", "replace")


def _fields(msg: Message, path: str) -> Iterator[tuple[str, Any]]:
    """(path, value) for every set field, lists and maps unrolled, Payloads not descended into."""
    for field, value in msg.ListFields():
        name = f"{path}.{field.name}" if path else field.name
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            items: Iterable[tuple[str, Any]] = ((f"{name}[{k!r}]", v) for k, v in value.items())
        elif field.is_repeated:
            items = ((f"{name}[{i}]", v) for i, v in enumerate(value))
        else:
            items = [(name, value)]
        for item_path, item in items:
            if isinstance(item, Message) and item.DESCRIPTOR.full_name != _PAYLOAD:
                yield from _fields(item, item_path)
            else:
                yield item_path, item


def payloads_in(msg: Message) -> Iterator[tuple[str, Payload]]:
    """(field path, payload) for every Payload anywhere in a protobuf message."""
    for path, value in _fields(msg, ""):
        if isinstance(value, Payload):
            yield path, value


def scan_message(msg: Message, secrets: Sequence[str]) -> list[tuple[str, str]]:
    """(field path, secret) for each secret anywhere in a protobuf message (an event, a Failure)."""
    wanted = needles(*secrets)
    found: dict[str, str] = {}
    for path, value in _fields(msg, ""):
        if isinstance(value, Payload):
            texts = [(path + sub, text) for sub, text in _payload_texts(value)]
        elif isinstance(value, bytes):
            texts = [(path, value.decode("utf-8", "replace"))]
        elif isinstance(value, str):
            texts = [(path, value)]
        else:
            continue
        for needle in wanted:
            where = None if needle in found else _first_hit(texts, needle)
            if where is not None:
                found[needle] = where
    return [(where, needle) for needle, where in found.items()]


def failure_of(err: BaseException, *, encode_common_attributes: bool = False) -> Failure:
    """The Failure Temporal records for `err` raised by an activity: what reaches the history
    (and the host's errorMessage) without running a workflow."""
    converter = (
        DefaultFailureConverter(encode_common_attributes=True)
        if encode_common_attributes
        else pydantic_data_converter.failure_converter
    )
    failure = Failure()
    converter.to_failure(err, pydantic_data_converter.payload_converter, failure)
    return failure


def scan_events(workflow_id: str, events: Iterable[HistoryEvent], secrets: Sequence[str]) -> list[Finding]:
    return [
        Finding(workflow_id, e.event_id, EventType.Name(e.event_type), where, needle)
        for e in events
        for where, needle in scan_message(e, secrets)
    ]


def scan_histories(histories: Mapping[str, Iterable[HistoryEvent]], secrets: Sequence[str]) -> list[Finding]:
    return [f for wid, events in histories.items() for f in scan_events(wid, events, secrets)]


async def histories_of(client: Client, *prefixes: str) -> dict[str, list[HistoryEvent]]:
    """Every run of every workflow whose id starts with one of `prefixes` (visibility), and every
    step child a host's own events name (no visibility lag), keyed `id` or `id@run` for older runs."""
    out: dict[str, list[HistoryEvent]] = {}
    for prefix in prefixes:
        try:
            out.update(await step_histories(client, prefix))
        except RPCError as err:
            if err.status != RPCStatusCode.NOT_FOUND:  # a prefix only, no workflow of that id
                raise
        async for wf in client.list_workflows(f'WorkflowId STARTS_WITH "{prefix}"'):
            handle = client.get_workflow_handle(wf.id, run_id=wf.run_id)
            events = [e async for e in handle.fetch_history_events()]
            if wf.id not in out:
                out[wf.id] = events
            elif out[wf.id][:1] != events[:1]:  # another run than the one already read
                out[f"{wf.id}@{wf.run_id}"] = events
    return out


async def assert_no_secret_in_histories(
    client: Client, secrets: Sequence[str], *prefixes: str, at_least: int = 1
) -> dict[str, list[HistoryEvent]]:
    """Fail naming the event and field of every secret found; return what was scanned."""
    histories = await histories_of(client, *prefixes)
    assert len(histories) >= at_least, f"only {len(histories)} histories under {prefixes}"
    findings = scan_histories(histories, secrets)
    assert not findings, "secret in history:\n" + "\n".join(map(str, findings))
    return histories


def assert_no_secret_in(value: Any, secrets: Sequence[str], what: str) -> None:
    """For what is not a history: a status, an error message, a CLI's output."""
    plain = json.loads(value.model_dump_json()) if hasattr(value, "model_dump_json") else value
    found = find_in_value(plain, secrets)
    assert not found, f"secret in {what}: " + ", ".join(f"{p}: {s[:6]}..." for p, s in found)
