"""Redfish BIOS settings through sushy: the current and pending attributes, the attribute
registry as metal3's FirmwareSchema, and a write to the pending set (`Bios/Settings`).

A Redfish BIOS applies a write at the next boot: the written values sit in the settings object
until then. Password attributes' values are never read out of the BMC.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sushy
from sushy import exceptions as sx

from metalflow.api.errors import ErrorName, permanent
from metalflow.api.firmware import AttributeType, BIOSState, FirmwareSchema, SettingSchema


def _text(value: object) -> str:
    """Attribute values as metal3 shows them: JSON booleans lower-case, everything else str()."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def schema_of(registry: Any, vendor: str, model: str) -> FirmwareSchema:
    """The registry's attributes as metal3's FirmwareSchema (hidden attributes included: the
    BMC accepts them, so a setting naming one is not unknown)."""
    entries: dict[str, SettingSchema] = {}
    for attr in registry.registry_entries.attributes or []:
        kind = str(attr.attribute_type or "")
        values = [str(v.get("ValueName", "")) for v in (attr.allowable_values or []) if isinstance(v, dict)]
        entries[attr.name] = SettingSchema(
            attribute_type=AttributeType(kind) if kind in AttributeType.__members__.values() else None,
            allowable_values=values,
            lower_bound=_int(attr.lower_bound),
            upper_bound=_int(attr.upper_bound),
            min_length=_int(attr.min_length),
            max_length=_int(attr.max_length),
            read_only=bool(attr.read_only or attr.immutable),
            reset_required=bool(attr.reset_required),
            unique=bool(attr.unique),
        )
    return FirmwareSchema(hardware_vendor=vendor, hardware_model=model, attributes=entries)


def _bios(system: Any, where: str) -> Any:
    try:
        return system.bios
    except sx.MissingAttributeError:
        raise permanent(
            ErrorName.BMC_UNSUPPORTED,
            f"{where} exposes no BIOS resource for this system; remove the HostFirmwareSettings' settings",
        ) from None


def read_bios(system: Any, where: str) -> BIOSState:
    """Current and pending settings and the schema they obey. Without a registry the schema
    lists the current attributes' names with no types: names are still checked."""
    bios = _bios(system, where)
    registry = None
    try:
        registry = bios.get_attribute_registry()
    except sx.SushyError:
        registry = None
    vendor, model = system.manufacturer or "", system.model or ""
    if registry is not None:
        schema = schema_of(registry, vendor, model)
    else:
        schema = FirmwareSchema(
            hardware_vendor=vendor,
            hardware_model=model,
            attributes={name: SettingSchema() for name in bios.attributes},
        )
    secret = {n for n, e in schema.attributes.items() if e.attribute_type == AttributeType.PASSWORD}
    try:
        pending = dict(bios.pending_attributes or {})
    except sx.SushyError:
        pending = {}
    return BIOSState(
        settings={k: _text(v) for k, v in (bios.attributes or {}).items() if k not in secret},
        pending={k: _text(v) for k, v in pending.items() if k not in secret},
        schema_=schema,
        registry=str(getattr(bios, "_attribute_registry", "") or ""),
    )


def apply_bios(system: Any, settings: Mapping[str, str | int | bool], where: str) -> None:
    """Write to the pending set, to apply at the next reset where the BMC lets one choose.
    A BMC's refusal (HTTP 400) is the operator's to fix: permanent, with the BMC's words."""
    bios = _bios(system, where)
    try:
        pending = dict(bios.pending_attributes or {})
    except (sx.SushyError, AttributeError):
        pending = {}
    if settings and all(name in pending and pending[name] == value for name, value in settings.items()):
        return  # already pending: a write retried after a crash writes nothing more
    apply_time = None
    try:
        if sushy.ApplyTime.ON_RESET in (bios.supported_apply_times or []):
            apply_time = sushy.ApplyTime.ON_RESET
    except (sx.SushyError, AttributeError):
        apply_time = None
    try:
        bios.set_attributes(dict(settings), apply_time=apply_time)
    except sx.BadRequestError as err:
        raise permanent(
            ErrorName.INVALID_FIRMWARE_SETTINGS,
            f"{where} refused the BIOS settings {', '.join(sorted(settings))}: {err.detail or err}",
        ) from None
