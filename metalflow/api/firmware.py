"""Firmware (BIOS) settings: metal3's HostFirmwareSettings and FirmwareSchema, as data.

The desired settings are checked against the BMC's own attribute registry (its FirmwareSchema)
before anything is written: an unknown name, a read-only or password attribute, a value outside
its enumeration, bounds or length is refused with every problem named at once. Pure, so the
step workflow runs the check itself and the CLI and the bridge can run it too.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from collections.abc import Mapping
from datetime import datetime
from enum import StrEnum

from pydantic import Field

from metalflow.api.model_base import Model


class AttributeType(StrEnum):
    """Redfish AttributeRegistry `Type` values, which metal3's SettingSchema keeps as they are."""

    ENUMERATION = "Enumeration"
    STRING = "String"
    INTEGER = "Integer"
    BOOLEAN = "Boolean"
    PASSWORD = "Password"


class SettingSchema(Model):
    """One attribute of metal3's FirmwareSchema (its JSON names are snake_case, as upstream's)."""

    attribute_type: AttributeType | None = Field(default=None, alias="attribute_type")
    allowable_values: list[str] = Field(default_factory=list, alias="allowable_values")
    lower_bound: int | None = Field(default=None, alias="lower_bound")
    upper_bound: int | None = Field(default=None, alias="upper_bound")
    min_length: int | None = Field(default=None, alias="min_length")
    max_length: int | None = Field(default=None, alias="max_length")
    read_only: bool = Field(default=False, alias="read_only")
    reset_required: bool = Field(default=False, alias="reset_required")
    unique: bool = Field(default=False, alias="unique")


class FirmwareSchema(Model):
    """metal3's FirmwareSchema spec: what the BMC's attribute registry says each setting accepts."""

    hardware_vendor: str = ""
    hardware_model: str = ""
    attributes: dict[str, SettingSchema] = Field(default_factory=dict, alias="schema")

    @property
    def name(self) -> str:
        """`schema-<digest>`: equal registries share one FirmwareSchema object, as in metal3."""
        body = json.dumps(self.model_dump(mode="json", by_alias=True), sort_keys=True)
        return "schema-" + hashlib.sha256(body.encode()).hexdigest()[:8]


class BIOSState(Model):
    """What the BMC reports: current and pending settings, and the registry they obey.
    Password attributes' values are never read into it."""

    settings: dict[str, str] = Field(default_factory=dict)
    pending: dict[str, str] = Field(default_factory=dict)
    schema_: FirmwareSchema = Field(default_factory=FirmwareSchema, alias="schema")
    registry: str = Field(default="", description="The Redfish AttributeRegistry id the BIOS names.")


class SchemaReference(Model):
    name: str
    namespace: str


class FirmwareSettingsStatus(Model):
    """metal3's HostFirmwareSettings status, as the host's status carries it."""

    schema_: SchemaReference | None = Field(default=None, alias="schema")
    settings: dict[str, str] = Field(default_factory=dict)
    last_updated: datetime | None = None


def desired_values(settings: Mapping[str, object]) -> dict[str, str]:
    """metal3's spec.settings is a map of IntOrString (YAML may also give booleans): as text."""
    out: dict[str, str] = {}
    for name, value in settings.items():
        if isinstance(value, bool):
            out[name] = "true" if value else "false"
        elif value is None:
            out[name] = ""
        else:
            out[name] = str(value)
    return out


def setting_problems(desired: Mapping[str, str], schema: FirmwareSchema) -> list[str]:
    """Every way `desired` breaks `schema`, one line each naming the setting and the fix."""
    problems: list[str] = []
    for name, value in sorted(desired.items()):
        entry = schema.attributes.get(name)
        if entry is None:
            close = difflib.get_close_matches(name, list(schema.attributes), n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            problems.append(f"{name}: not a setting this BMC has{hint}; remove it or fix its name")
            continue
        problem = _value_problem(value, entry)
        if problem:
            problems.append(f"{name}: {problem}")
    return problems


def _value_problem(value: str, entry: SettingSchema) -> str:
    kind = entry.attribute_type
    if entry.read_only:
        return "read-only on this BMC; remove it"
    if kind == AttributeType.PASSWORD:
        return "a password attribute; metalflow does not set passwords through settings, remove it"
    if kind == AttributeType.ENUMERATION and entry.allowable_values and value not in entry.allowable_values:
        return f"{value!r} is not allowed; use one of {', '.join(entry.allowable_values)}"
    if kind == AttributeType.BOOLEAN and value.lower() not in ("true", "false"):
        return f"{value!r} is not a boolean; write true or false"
    if kind == AttributeType.INTEGER:
        try:
            number = int(value)
        except ValueError:
            return f"{value!r} is not an integer"
        if entry.lower_bound is not None and number < entry.lower_bound:
            return f"{number} is below the minimum {entry.lower_bound}"
        if entry.upper_bound is not None and number > entry.upper_bound:
            return f"{number} is above the maximum {entry.upper_bound}"
    if kind == AttributeType.STRING:
        if entry.max_length is not None and len(value) > entry.max_length:
            return f"{len(value)} characters, more than the {entry.max_length} allowed"
        if entry.min_length is not None and len(value) < entry.min_length:
            return f"{len(value)} characters, fewer than the {entry.min_length} required"
    return ""


def typed_value(value: str, entry: SettingSchema | None) -> str | int | bool:
    """The JSON value a Redfish BIOS expects for a checked setting: integers and booleans typed."""
    kind = entry.attribute_type if entry else None
    if kind == AttributeType.INTEGER:
        return int(value)
    if kind == AttributeType.BOOLEAN:
        return value.lower() == "true"
    return value


def changes(desired: Mapping[str, str], current: Mapping[str, str], schema: FirmwareSchema) -> dict[str, str]:
    """The desired settings whose current value differs (a boolean compared case-blind)."""
    out: dict[str, str] = {}
    for name, value in desired.items():
        have = current.get(name)
        entry = schema.attributes.get(name)
        if entry is not None and entry.attribute_type == AttributeType.BOOLEAN and have is not None:
            if have.lower() == value.lower():
                continue
        elif have == value:
            continue
        out[name] = value
    return out


def hfs_conditions(
    desired: Mapping[str, str],
    settings: Mapping[str, str],
    schema: FirmwareSchema,
    problems: list[str],
    now: datetime,
    before: list[dict[str, object]] | None = None,
) -> list[dict[str, object]]:
    """metal3's HostFirmwareSettings conditions: `Valid` (the spec obeys the schema; its
    message lists what does not) and `ChangeDetected` (the spec differs from what the BMC
    reports). A condition keeps its lastTransitionTime while its status stays the same."""
    old = {str(c.get("type")): c for c in before or []}
    valid = not problems
    differs = bool(changes(desired, settings, schema))
    out: list[dict[str, object]] = []
    for kind, status, reason, message in (
        ("ChangeDetected", differs, "Success", ""),
        ("Valid", valid, "Success" if valid else "ConfigurationError", "; ".join(problems)),
    ):
        text = "True" if status else "False"
        since = old[kind]["lastTransitionTime"] if old.get(kind, {}).get("status") == text else None
        out.append(
            {
                "type": kind,
                "status": text,
                "reason": reason,
                "message": message,
                "lastTransitionTime": since or now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
        )
    return out
