"""BIOS settings in the test bed's sushy-emulator that behave like a real BMC's.

Installed by testbed.sushy_uefihttp's main() (the emulator the test bed runs).

sushy-tools 2.2 serves a BIOS attribute registry but gives its fake driver no BIOS, and its libvirt
driver applies a PATCH to Bios/Settings at once, unchecked. A real BMC checks the PATCH against its
registry, keeps the values pending (GET Bios/Settings shows them) and moves them into Bios.Attributes
at the next boot. metalflow's BIOS settings are tested against that, so this module adds it:

- `BiosFakeDriver` (the fake driver, emulated fleets): BIOS attributes and firmware versions
  (sushy-tools' libvirt defaults) kept in each system's persisted record, beside its power state.
- `PendingBiosLibvirtDriver` (VMs): pending attributes in the domain's persistent metadata.
- Both: `set_bios` stores pending values; they become current when the system really starts: a
  Reset On/ForceOn from Off, or ForceRestart/GracefulRestart/PowerCycle (PowerCycle is treated as
  ForceRestart; Nmi applies nothing). The fake driver applies a power change seconds late, on a
  later read: the BIOS values move in the same record update as that power-on.
- `install()`: the emulator instantiates the fake subclass; the Bios/Settings view checks a PATCH
  against the registry (400 with a Redfish error, nothing stored) and serves the pending values on
  GET; each BIOS PATCH and SimpleUpdate is logged (`metalflow-testbed: ...` on stderr, the
  emulator's log) so tests can count writes at the BMC.

Upstream code is subclassed and its views wrapped, never copied.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

import flask
from sushy_tools import error
from sushy_tools.emulator import api_utils
from sushy_tools.emulator import main as emulator
from sushy_tools.emulator.resources.systems import fakedriver, libvirtdriver

DEFAULT_BIOS_ATTRIBUTES: dict[str, str] = dict(libvirtdriver.LibvirtDriver.DEFAULT_BIOS_ATTRIBUTES)
DEFAULT_FIRMWARE_VERSIONS: dict[str, str] = dict(libvirtdriver.LibvirtDriver.DEFAULT_FIRMWARE_VERSIONS)

ON = ("On", "ForceOn")
RESTART = ("ForceRestart", "GracefulRestart")
POWER_CYCLE = "PowerCycle"

# The fake driver's system record: current and pending attributes, firmware versions.
BIOS_KEY, PENDING_KEY, VERSIONS_KEY = "bios_attributes", "bios_pending", "firmware_versions"

# libvirt domain metadata (a namespace of our own: libvirt keeps one element per namespace).
PENDING_NS = "http://metalflow.invalid/xmlns/testbed/bios-pending"
PENDING_PREFIX = "metalflow"

LOG_PREFIX = "metalflow-testbed"
_log = logging.getLogger(LOG_PREFIX)


def _log_to_stderr() -> None:
    """The emulator's own INFO lines are dropped (Flask's logger stays at WARNING), and werkzeug's
    request lines carry no body: these lines go straight to stderr, which is the emulator's log."""
    if not _log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(f"{LOG_PREFIX}: %(message)s"))
        _log.addHandler(handler)
        _log.setLevel(logging.INFO)
        _log.propagate = False


def stored_value(value: Any) -> str:
    """sushy-tools keeps every attribute as a string (QuietBoot's default is "true"): JSON booleans
    are stored the same way, not as Python's "True"."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def stored_attributes(attributes: Mapping[str, Any]) -> dict[str, str]:
    return {name: stored_value(value) for name, value in attributes.items()}


# --- the registry check ---------------------------------------------------------------------------


@functools.cache
def bios_registry() -> dict[str, Any]:
    """The attribute registry sushy-tools serves (its template has no Jinja in it: plain JSON)."""
    path = resources.files("sushy_tools.emulator") / "templates" / "bios_registry.json"
    registry: dict[str, Any] = json.loads(path.read_text())
    return registry


def registry_attributes(registry: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {a["AttributeName"]: a for a in registry["RegistryEntries"]["Attributes"]}


@dataclass(frozen=True)
class Problem:
    """One rejected attribute, as a Redfish Base message."""

    message_id: str  # e.g. "PropertyUnknown" (Base.1.0.<message_id>)
    message: str
    args: tuple[str, ...]
    attribute: str
    resolution: str

    def extended_info(self) -> dict[str, Any]:
        return {
            "@odata.type": "#Message.v1_0_0.Message",
            "MessageId": f"Base.1.0.{self.message_id}",
            "Message": self.message,
            "MessageArgs": list(self.args),
            "RelatedProperties": [f"#/Attributes/{self.attribute}"],
            "Severity": "Warning",
            "Resolution": self.resolution,
        }


# Redfish Base messages: %1, %2 are MessageArgs (the name alone, or the value and the name).
MESSAGES = {
    "PropertyUnknown": "The property %1 is not in the list of valid properties for the resource.",
    "PropertyNotWritable": "The property %1 is a read only property and cannot be assigned a value.",
    "PropertyValueNotInList": "The value %1 for the property %2 is not in the list of acceptable values.",
    "PropertyValueTypeError": (
        "The value %1 for the property %2 is of a different type than the property can accept."
    ),
    "PropertyValueFormatError": (
        "The value %1 for the property %2 is of a different format than the property can accept."
    ),
}


def _problem(kind: str, name: str, value: Any, resolution: str) -> Problem:
    template = MESSAGES[kind]
    args = (json.dumps(value), name) if "%2" in template else (name,)
    message = template
    for i, arg in enumerate(args, 1):
        message = message.replace(f"%{i}", arg)
    return Problem(kind, message, args, name, resolution)


def _check_one(name: str, value: Any, entry: Mapping[str, Any] | None) -> Problem | None:
    if entry is None:
        return _problem("PropertyUnknown", name, value, "Remove the unknown attribute.")
    if entry.get("ReadOnly") or entry.get("Immutable"):
        return _problem("PropertyNotWritable", name, value, "Remove the read-only attribute.")
    kind = entry.get("Type")
    wrong_type = _problem("PropertyValueTypeError", name, value, f"Give a {kind} value.")
    if kind == "Boolean":
        return None if isinstance(value, bool) else wrong_type
    if kind == "Integer":
        if not isinstance(value, int) or isinstance(value, bool):
            return wrong_type
        lo, hi = entry.get("LowerBound"), entry.get("UpperBound")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            return _problem("PropertyValueFormatError", name, value, f"Give an integer from {lo} to {hi}.")
        return None
    if not isinstance(value, str):
        return wrong_type
    if kind == "Enumeration":
        allowed = [v["ValueName"] for v in entry.get("Value", [])]
        if value not in allowed:
            return _problem("PropertyValueNotInList", name, value, f"Give one of {', '.join(allowed)}.")
        return None
    lo, hi = entry.get("MinLength"), entry.get("MaxLength")
    if (lo is not None and len(value) < lo) or (hi is not None and len(value) > hi):
        return _problem(
            "PropertyValueFormatError", name, value, f"Give a string of {lo or 0} to {hi} characters."
        )
    pattern = entry.get("ValueExpression")
    if pattern and not re.fullmatch(pattern, value):
        return _problem("PropertyValueFormatError", name, value, f"Give a value matching {pattern}.")
    return None


def check_attributes(attributes: Mapping[str, Any], registry: Mapping[str, Any]) -> list[Problem]:
    """What a BMC would refuse in a PATCH of these attributes: unknown or read-only names, values of
    the wrong JSON type, outside an enumeration, an integer's bounds or a string's length."""
    entries = registry_attributes(registry)
    found = (_check_one(name, value, entries.get(name)) for name, value in attributes.items())
    return [p for p in found if p is not None]


def redfish_error(problems: list[Problem]) -> dict[str, Any]:
    first = problems[0]
    message = first.message if len(problems) == 1 else "See @Message.ExtendedInfo for more information."
    return {
        "error": {
            "code": f"Base.1.0.{first.message_id}",
            "message": message,
            "@Message.ExtendedInfo": [p.extended_info() for p in problems],
        }
    }


def _error_response(status: int, code: str, message: str) -> flask.Response:
    body = {
        "error": {
            "code": f"Base.1.0.{code}",
            "message": message,
            "@Message.ExtendedInfo": [{"MessageId": f"Base.1.0.{code}", "Message": message}],
        }
    }
    return flask.Response(json.dumps(body, indent=2), status=status, content_type="application/json")


# --- the drivers ---------------------------------------------------------------------------------


class BiosFakeDriver(fakedriver.FakeDriver):  # type: ignore[misc]
    """The fake driver with BIOS attributes and firmware versions in each system's record."""

    def get_bios(self, identity: str) -> dict[str, str]:
        return dict(self._get(identity).get(BIOS_KEY) or DEFAULT_BIOS_ATTRIBUTES)

    def get_bios_pending(self, identity: str) -> dict[str, str]:
        return dict(self._get(identity).get(PENDING_KEY) or {})

    def set_bios(self, identity: str, attributes: Mapping[str, Any]) -> None:
        """Staged, not applied: see `_update`."""
        system = self._get(identity)
        pending = {**(system.get(PENDING_KEY) or {}), **stored_attributes(attributes)}
        self._update(system, **{PENDING_KEY: pending})

    def reset_bios(self, identity: str) -> None:
        self._update(identity, **{BIOS_KEY: None, PENDING_KEY: None})

    def get_versions(self, identity: str) -> dict[str, str]:
        return dict(self._get(identity).get(VERSIONS_KEY) or DEFAULT_FIRMWARE_VERSIONS)

    def set_versions(self, identity: str, firmware_versions: Mapping[str, Any]) -> None:
        system = self._get(identity)
        versions = {
            **(system.get(VERSIONS_KEY) or DEFAULT_FIRMWARE_VERSIONS),
            **stored_attributes(firmware_versions),
        }
        self._update(system, **{VERSIONS_KEY: versions})

    def reset_versions(self, identity: str) -> None:
        self._update(identity, **{VERSIONS_KEY: None})

    def set_power_state(self, identity: str, state: str) -> None:
        """PowerCycle (which the fake driver refuses) is a restart, as on a BMC: off, then on."""
        super().set_power_state(identity, "ForceRestart" if state == POWER_CYCLE else state)

    def _update(self, system: Any, **changes: Any) -> None:
        """The fake driver lands a delayed power change, on a read, as one update that clears
        `pending_power` and sets the resulting power state; when that is On (a power-on or a
        restart taking effect) the pending BIOS values become current in the same update, so no
        reader (nor the external notifier) sees the system On with the old values, or Off with
        the new ones."""
        if isinstance(system, dict) and "pending_power" in changes and changes["pending_power"] is None:
            pending = system.get(PENDING_KEY)
            if changes.get("power_state") == "On" and pending:
                changes[BIOS_KEY] = {**(system.get(BIOS_KEY) or DEFAULT_BIOS_ATTRIBUTES), **pending}
                changes[PENDING_KEY] = None
        super()._update(system, **changes)


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


class PendingBiosLibvirtDriver(libvirtdriver.LibvirtDriver):  # type: ignore[misc]
    """The libvirt driver with PATCHed BIOS attributes pending until the domain starts. They are
    kept in the domain's persistent metadata (PENDING_NS), beside sushy-tools' own <sushy:bios>."""

    def _pending_element(self, identity: str) -> ET.Element | None:
        """Read from the inactive XML: domain.metadata() would have libvirt print an error on
        stderr (the emulator's log) each time there is nothing pending."""
        domain = self._get_domain(identity, readonly=True)
        tree = ET.fromstring(domain.XMLDesc(libvirtdriver.libvirt.VIR_DOMAIN_XML_INACTIVE))
        return tree.find(f"metadata/{{{PENDING_NS}}}pending")

    def _store_pending(self, identity: str, attributes: Mapping[str, str]) -> None:
        lv = libvirtdriver.libvirt
        xml = None
        if attributes:
            root = ET.Element("pending")
            for name, value in sorted(attributes.items()):
                ET.SubElement(root, "attribute", name=name, value=value)
            xml = ET.tostring(root, encoding="unicode")
        try:
            self._get_domain(identity).setMetadata(
                lv.VIR_DOMAIN_METADATA_ELEMENT,
                xml,
                PENDING_PREFIX if xml else None,
                PENDING_NS,
                lv.VIR_DOMAIN_AFFECT_CONFIG,
            )
        except lv.libvirtError as e:
            raise error.FishyError(f"Error storing pending BIOS attributes: {e}") from e

    def get_bios_pending(self, identity: str) -> dict[str, str]:
        pending = self._pending_element(identity)
        if pending is None:
            return {}
        return {e.get("name", ""): e.get("value", "") for e in pending if _local(e.tag) == "attribute"}

    def set_bios(self, identity: str, attributes: Mapping[str, Any]) -> None:
        """Staged in the metadata; `set_power_state` applies them when the domain starts."""
        self._store_pending(identity, {**self.get_bios_pending(identity), **stored_attributes(attributes)})

    def reset_bios(self, identity: str) -> None:
        super().reset_bios(identity)
        self._store_pending(identity, {})

    def apply_pending_bios(self, identity: str) -> None:
        pending = self.get_bios_pending(identity)
        if pending:
            super().set_bios(identity, pending)  # sushy-tools' own immediate write
            self._store_pending(identity, {})

    def set_power_state(self, identity: str, state: str) -> None:
        """Apply pending attributes when this call really starts the domain (On from off, or a
        restart of a running one), after libvirt did so: a failed start applies nothing."""
        state = "ForceRestart" if state == POWER_CYCLE else state
        active = bool(self._get_domain(identity).isActive())
        super().set_power_state(identity, state)
        if (state in ON and not active) or (state in RESTART and active):
            self.apply_pending_bios(identity)


# --- the views -----------------------------------------------------------------------------------


def _system_uuid(identity: str) -> str | None:
    try:
        return str(emulator.app.systems.uuid(identity))
    except error.AliasAccessError as exc:
        return str(exc)
    except Exception:  # the wrapped view reports it as sushy-tools does
        return None


def _bios_settings(view: Callable[..., Any]) -> Callable[..., Any]:
    """Bios/Settings: GET shows the pending attributes only; a PATCH is logged (its Attributes
    object, or the whole body if it has none; refused ones too), checked against the registry
    (400, nothing stored, if a BMC would refuse it) and then handed to sushy-tools' view, whose
    `set_bios` call the drivers above keep pending."""

    @functools.wraps(view)
    def handler(identity: str) -> Any:
        app = emulator.app
        if app.feature_set != "full" or api_utils.instance_denied(identity=identity):
            return view(identity)  # sushy-tools' own refusal
        pending_of = getattr(app.systems, "get_bios_pending", None)
        if flask.request.method == "GET":
            response = view(identity)
            if (
                pending_of is not None
                and isinstance(response, flask.Response)
                and response.status_code == 200
            ):
                body = response.get_json()
                body["Attributes"] = pending_of(identity)
                response.set_data(json.dumps(body, indent=4, sort_keys=True))
            return response
        uuid = app.systems.uuid(identity)  # an unknown system or an alias: sushy-tools' error handler
        body = flask.request.get_json(silent=True)
        logged = body.get("Attributes", body) if isinstance(body, dict) else body
        _log.info("BIOS PATCH %s %s", uuid, json.dumps(logged, sort_keys=True, separators=(",", ":")))
        if not isinstance(body, dict):
            return _error_response(400, "MalformedJSON", "The request body is not a JSON object.")
        attributes = body.get("Attributes")
        if not isinstance(attributes, dict):
            return _error_response(400, "PropertyMissing", "The property Attributes is a required property.")
        problems = check_attributes(attributes, bios_registry())
        if problems:
            return flask.Response(
                json.dumps(redfish_error(problems), indent=2), status=400, content_type="application/json"
            )
        return view(identity)

    return handler


def _simple_update(view: Callable[..., Any]) -> Callable[..., Any]:
    """UpdateService.SimpleUpdate, logged once per target system before sushy-tools handles it."""

    @functools.wraps(view)
    def handler(*args: Any, **kwargs: Any) -> Any:
        body = flask.request.get_json(silent=True) or {}
        targets = body.get("Targets") if isinstance(body, dict) else None
        for target in targets if isinstance(targets, list) else []:
            uuid = _system_uuid(str(target).rstrip("/").rsplit("/", 1)[-1])
            if uuid:
                _log.info("SimpleUpdate %s %s", uuid, body.get("ImageURI"))
        return view(*args, **kwargs)

    return handler


SETTINGS_VIEW = "bios_settings"
SIMPLE_UPDATE_VIEW = "UpdateService.update_service_simple_update"
_installed = False


def install() -> None:
    """Make the emulator instantiate BiosFakeDriver and wrap its views (once, before it serves).
    The libvirt subclass is taken in by testbed.sushy_uefihttp's driver, which derives from it."""
    global _installed
    if _installed:
        return
    _installed = True
    _log_to_stderr()
    fakedriver.FakeDriver = BiosFakeDriver  # what the emulator's `systems` instantiates
    views = emulator.app.view_functions
    views[SETTINGS_VIEW] = _bios_settings(views[SETTINGS_VIEW])
    views[SIMPLE_UPDATE_VIEW] = _simple_update(views[SIMPLE_UPDATE_VIEW])
