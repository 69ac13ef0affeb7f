"""Payload converters: pydantic JSON, with what the ramdisk exchanges marked to travel unsealed
when the control plane seals history (metalflow.runtime.payload_codec): the agent has no key.
Imported by the agent, so nothing here needs `cryptography`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from temporalio.api.common.v1 import Payload
from temporalio.contrib.pydantic import PydanticPayloadConverter
from temporalio.converter import DataConverter

from metalflow.api.agent import AGENT_WIRE_MODELS

PLAINTEXT_MARK = "metalflow-plaintext"
# By name, not identity: the workflow sandbox imports its own copies of the model classes.
_AGENT_WIRE = frozenset(f"{m.__module__}.{m.__qualname__}" for m in AGENT_WIRE_MODELS)


def _mark(payload: Payload) -> Payload:
    payload.metadata[PLAINTEXT_MARK] = b"agent"
    return payload


class ControlPlanePayloadConverter(PydanticPayloadConverter):
    """Pydantic JSON; what goes to the agent (its requests, and its results when a control-plane
    test or replay re-encodes them) is marked so the codec leaves it unsealed."""

    def to_payloads(self, values: Sequence[Any]) -> list[Payload]:
        payloads = super().to_payloads(values)
        for value, payload in zip(values, payloads, strict=True):
            cls = type(value)
            if f"{cls.__module__}.{cls.__qualname__}" in _AGENT_WIRE:
                _mark(payload)
        return payloads


class AgentPayloadConverter(PydanticPayloadConverter):
    """The ramdisk's converter: everything it sends (results, heartbeats) is marked unsealed."""

    def to_payloads(self, values: Sequence[Any]) -> list[Payload]:
        return [_mark(p) for p in super().to_payloads(values)]


agent_data_converter = DataConverter(payload_converter_class=AgentPayloadConverter)
