"""HostFirmwareSettings checked against a FirmwareSchema before anything is written (pure)."""

from __future__ import annotations

from pathlib import Path

import pytest

from metalflow.api.bmh import ManifestError, firmware_settings_from_manifest
from metalflow.api.firmware import (
    AttributeType,
    FirmwareSchema,
    SettingSchema,
    changes,
    desired_values,
    setting_problems,
    typed_value,
)
from metalflow.api.models import HostSpec
from metalflow.api.validation import spec_problems
from metalflow.client.hostfile import load_hosts

# the shape of a real registry (sushy-tools' BIOS registry, metal3's example schema)
SCHEMA = FirmwareSchema(
    hardware_vendor="Sushy Emulator",
    attributes={
        "ProcTurboMode": SettingSchema(
            attribute_type=AttributeType.ENUMERATION, allowable_values=["Enabled", "Disabled"]
        ),
        "NumCores": SettingSchema(
            attribute_type=AttributeType.INTEGER, lower_bound=10, upper_bound=20, read_only=True
        ),
        "Cores": SettingSchema(attribute_type=AttributeType.INTEGER, lower_bound=1, upper_bound=64),
        "QuietBoot": SettingSchema(attribute_type=AttributeType.BOOLEAN),
        "SerialNumber": SettingSchema(attribute_type=AttributeType.STRING, max_length=16, min_length=2),
        "SysPassword": SettingSchema(attribute_type=AttributeType.PASSWORD),
    },
)


def test_valid_settings_have_no_problems() -> None:
    ok = {"ProcTurboMode": "Disabled", "Cores": "32", "QuietBoot": "False", "SerialNumber": "QPX1"}
    assert setting_problems(ok, SCHEMA) == []


def test_every_problem_is_named_with_its_fix() -> None:
    bad = {
        "ProcTurboMod": "Enabled",  # a typo: the close name is offered
        "NumCores": "12",
        "ProcTurboMode": "Maybe",
        "Cores": "65",
        "QuietBoot": "yes",
        "SerialNumber": "x" * 17,
        "SysPassword": "hunter2",
    }
    problems = setting_problems(bad, SCHEMA)
    assert len(problems) == len(bad), problems
    text = "\n".join(problems)
    assert "ProcTurboMod: not a setting this BMC has (did you mean ProcTurboMode?)" in text
    assert "NumCores: read-only on this BMC; remove it" in text
    assert "ProcTurboMode: 'Maybe' is not allowed; use one of Enabled, Disabled" in text
    assert "Cores: 65 is above the maximum 64" in text
    assert "QuietBoot: 'yes' is not a boolean; write true or false" in text
    assert "SerialNumber: 17 characters, more than the 16 allowed" in text
    assert "SysPassword: a password attribute" in text and "hunter2" not in text  # never echoed
    assert setting_problems({"Cores": "0"}, SCHEMA) == ["Cores: 0 is below the minimum 1"]
    assert setting_problems({"Cores": "many"}, SCHEMA) == ["Cores: 'many' is not an integer"]
    assert setting_problems({"SerialNumber": "x"}, SCHEMA) == [
        "SerialNumber: 1 characters, fewer than the 2 required"
    ]


def test_only_differing_settings_are_written_typed_as_the_registry_says() -> None:
    current = {"ProcTurboMode": "Enabled", "QuietBoot": "true", "Cores": "8"}
    desired = {"ProcTurboMode": "Enabled", "QuietBoot": "True", "Cores": "16"}
    assert changes(desired, current, SCHEMA) == {"Cores": "16"}  # a boolean compared case-blind
    assert typed_value("16", SCHEMA.attributes["Cores"]) == 16
    assert typed_value("False", SCHEMA.attributes["QuietBoot"]) is False
    assert typed_value("Disabled", SCHEMA.attributes["ProcTurboMode"]) == "Disabled"
    assert typed_value("x", None) == "x"


def test_schema_name_follows_its_content() -> None:
    same = FirmwareSchema.model_validate(SCHEMA.model_dump(by_alias=True))
    assert same.name == SCHEMA.name and SCHEMA.name.startswith("schema-")
    other = SCHEMA.model_copy(update={"hardware_model": "R650"})
    assert other.name != SCHEMA.name
    # metal3's snake_case JSON names
    assert "attribute_type" in SCHEMA.model_dump(by_alias=True)["schema"]["Cores"]


def test_metal3_int_or_string_and_yaml_booleans_become_text() -> None:
    assert desired_values({"A": 5, "B": True, "C": "x"}) == {"A": "5", "B": "true", "C": "x"}
    spec = HostSpec.model_validate(
        {
            "bmc": {"address": "redfish://1.2.3.4/redfish/v1/Systems/1", "credentials": {"name": "c"}},
            "firmwareSettings": {"Cores": 16},
        }
    )
    assert spec.firmware_settings == {"Cores": "16"}


def _spec(address: str, settings: dict[str, str]) -> HostSpec:
    return HostSpec.model_validate(
        {"bmc": {"address": address, "credentials": {"name": "c"}}, "firmwareSettings": settings}
    )


def test_intake_refuses_passwords_and_drivers_without_bios() -> None:
    """Before the workflow starts (its input is history): no password ever rides in a setting."""
    problems = spec_problems(_spec("redfish://1.2.3.4/redfish/v1/Systems/1", {"SysPassword": "hunter2"}))
    assert problems == [
        "HostFirmwareSettings spec.settings.SysPassword: a password cannot be set as a setting "
        "(settings are kept in the workflow's history); remove it"
    ]
    problems = spec_problems(_spec("ipmi://1.2.3.4", {"ProcTurboMode": "Disabled"}))
    assert any("BMC driver ipmi has no BIOS settings" in p for p in problems), problems
    assert spec_problems(_spec("redfish://1.2.3.4/redfish/v1/Systems/1", {"ProcTurboMode": "Disabled"})) == []


def test_hostfile_takes_metal3s_host_firmware_settings(tmp_path: Path) -> None:
    hostfile = tmp_path / "hosts.yaml"
    hostfile.write_text(
        """
apiVersion: metal3.io/v1alpha1
kind: BareMetalHost
metadata: {name: worker-0, namespace: lab}
spec:
  online: true
  bmc: {address: "redfish://10.0.0.5/redfish/v1/Systems/1", credentialsName: worker-0-bmc}
---
apiVersion: metal3.io/v1alpha1
kind: HostFirmwareSettings
metadata: {name: worker-0, namespace: lab}
spec:
  settings:
    ProcTurboMode: Disabled
    NumCores: 16
"""
    )
    (host,) = load_hosts(hostfile, tmp_path / "secrets")
    assert host.spec.firmware_settings == {"ProcTurboMode": "Disabled", "NumCores": "16"}

    orphan = hostfile.read_text().replace(
        "kind: HostFirmwareSettings\nmetadata: {name: worker-0",
        "kind: HostFirmwareSettings\nmetadata: {name: worker-9",
    )
    hostfile.write_text(orphan)
    with pytest.raises(
        ManifestError, match="HostFirmwareSettings lab/worker-9 names no BareMetalHost in the file"
    ):
        load_hosts(hostfile, tmp_path / "secrets")


def test_host_firmware_settings_manifest_errors() -> None:
    with pytest.raises(ManifestError, match=r"has no metadata\.name"):
        firmware_settings_from_manifest({"kind": "HostFirmwareSettings", "metadata": {}, "spec": {}})
    with pytest.raises(ManifestError, match=r"spec\.settings\.X must be a string or an integer"):
        firmware_settings_from_manifest({"metadata": {"name": "h"}, "spec": {"settings": {"X": [1]}}})
    assert firmware_settings_from_manifest({"metadata": {"name": "h"}, "spec": {"settings": None}}) == (
        "default",
        "h",
        {},
    )


def test_hfs_conditions_as_metal3_reports_them() -> None:
    from datetime import UTC, datetime

    from metalflow.api.firmware import hfs_conditions

    t0, t1 = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC)
    bad = hfs_conditions({"Cores": "65"}, {"Cores": "8"}, SCHEMA, ["Cores: 65 is above the maximum 64"], t0)
    by = {c["type"]: c for c in bad}
    assert by["Valid"] == {
        "type": "Valid",
        "status": "False",
        "reason": "ConfigurationError",
        "message": "Cores: 65 is above the maximum 64",
        "lastTransitionTime": "2026-01-01T00:00:00Z",
    }
    assert by["ChangeDetected"]["status"] == "True"
    # fixed and applied: both flip (new transition time); unchanged ones keep theirs
    good = hfs_conditions({"Cores": "16"}, {"Cores": "16"}, SCHEMA, [], t1, before=bad)
    by = {c["type"]: c for c in good}
    assert by["Valid"]["status"] == "True" and by["Valid"]["reason"] == "Success"
    assert by["ChangeDetected"]["status"] == "False"
    assert by["Valid"]["lastTransitionTime"] == "2026-01-02T00:00:00Z"
    again = hfs_conditions(
        {"Cores": "16"}, {"Cores": "16"}, SCHEMA, [], datetime(2026, 1, 3, tzinfo=UTC), good
    )
    assert [c["lastTransitionTime"] for c in again] == [c["lastTransitionTime"] for c in good]


def test_hostfile_takes_metal3s_host_update_policy(tmp_path: Path) -> None:
    from metalflow.api.models import UpdatePolicyMode

    hostfile = tmp_path / "hosts.yaml"
    host = """
apiVersion: metal3.io/v1alpha1
kind: BareMetalHost
metadata: {name: worker-0}
spec:
  online: true
  bmc: {address: "redfish://10.0.0.5/redfish/v1/Systems/1", credentialsName: worker-0-bmc}
"""
    hostfile.write_text(
        host + "---\napiVersion: metal3.io/v1alpha1\nkind: HostUpdatePolicy\n"
        "metadata: {name: worker-0}\nspec: {firmwareSettings: onReboot, firmwareUpdates: onReboot}\n"
    )
    (parsed,) = load_hosts(hostfile, tmp_path / "secrets")
    assert parsed.spec.update_policy is not None
    assert parsed.spec.update_policy.firmware_settings == UpdatePolicyMode.ON_REBOOT
    hostfile.write_text(
        host + "---\napiVersion: metal3.io/v1alpha1\nkind: HostUpdatePolicy\n"
        "metadata: {name: worker-0}\nspec: {firmwareSettings: always}\n"
    )
    with pytest.raises(
        ManifestError, match=r"HostUpdatePolicy default/worker-0 is invalid: spec\.firmwareSettings"
    ):
        load_hosts(hostfile, tmp_path / "secrets")
    # metal3 keeps these in objects of their own: on a BareMetalHost they are unknown fields
    hostfile.write_text(host + "  updatePolicy: {firmwareSettings: onReboot}\n")
    with pytest.raises(
        ManifestError, match=r"spec\.updatePolicy: unknown field; it goes in a HostUpdatePolicy"
    ):
        load_hosts(hostfile, tmp_path / "secrets")


def test_upstreams_sample_host_firmware_settings_is_refused_with_the_form_to_write() -> None:
    """baremetal-operator's config/samples HostFirmwareSettings lists one-entry maps, which its
    own CRD (a map of IntOrString) refuses; the error says how to write it."""
    sample = {
        "apiVersion": "metal3.io/v1alpha1",
        "kind": "HostFirmwareSettings",
        "metadata": {"name": "hostfirmwaresettings-sample"},
        "spec": {"settings": [{"ProcVirtualization": "Enabled"}, {"SRIOV": "Enabled"}]},
    }
    with pytest.raises(
        ManifestError, match=r"write it as one map, e\.g\. `settings: \{ProcVirtualization: Enabled\}`"
    ):
        firmware_settings_from_manifest(sample)
    sample["spec"]["settings"] = {
        "ProcVirtualization": "Enabled",
        "SRIOV": "Enabled",
        "NetworkBootRetryCount": "20",
    }
    assert firmware_settings_from_manifest(sample)[2]["NetworkBootRetryCount"] == "20"


def test_metal3_schema_rules_on_upstreams_sample_schema() -> None:
    """The attributes of baremetal-operator's sample FirmwareSchema, checked as metal3 does."""
    schema = FirmwareSchema(
        hardware_vendor="VendorA",
        hardware_model="ModelT",
        attributes={
            "ProcVirtualization": SettingSchema(
                attribute_type=AttributeType.ENUMERATION, allowable_values=["Enabled", "Disabled"]
            ),
            "ProcCPUCores": SettingSchema(
                attribute_type=AttributeType.INTEGER, lower_bound=1, upper_bound=100, read_only=True
            ),
            "SRIOV": SettingSchema(allowable_values=["Enabled", "Disabled"]),  # no type: allowed, as metal3
            "SystemModelName": SettingSchema(
                attribute_type=AttributeType.STRING, max_length=40, min_length=0, read_only=True
            ),
            "SerialNumber": SettingSchema(attribute_type=AttributeType.STRING, max_length=16, min_length=0),
        },
    )
    assert (
        setting_problems(
            {"ProcVirtualization": "Enabled", "SRIOV": "anything", "SerialNumber": "22654891"}, schema
        )
        == []
    )
    problems = setting_problems(
        {"ProcCPUCores": "50", "SystemModelName": "x", "ProcVirtualization": "On"}, schema
    )
    assert [p.split(":")[0] for p in problems] == ["ProcCPUCores", "ProcVirtualization", "SystemModelName"]


def test_firmware_components_keep_their_first_version_and_last_flash() -> None:
    from datetime import UTC, datetime

    from metalflow.api.firmware_components import (
        FirmwareComponentsStatus,
        FirmwareComponentStatus,
        FirmwareUpdate,
        merged_components,
    )

    t = datetime(2026, 1, 1, tzinfo=UTC)
    first = FirmwareComponentsStatus(
        components=[
            FirmwareComponentStatus(
                component="bios",
                initial_version="1.0",
                current_version="1.1",
                last_version_flashed="1.1",
                updated_at=t,
            ),
            FirmwareComponentStatus(component="bmc", initial_version="5.0", current_version="5.0"),
        ]
    )
    second = FirmwareComponentsStatus(
        components=[
            FirmwareComponentStatus(component="bios", initial_version="1.1", current_version="1.1"),
            FirmwareComponentStatus(
                component="bmc", initial_version="5.0", current_version="5.1", last_version_flashed="5.1"
            ),
        ]
    )
    merged = {c.component: c for c in merged_components(first, second).components}
    assert (
        merged["bios"].initial_version,
        merged["bios"].last_version_flashed,
        merged["bios"].updated_at,
    ) == ("1.0", "1.1", t)
    assert (merged["bmc"].initial_version, merged["bmc"].current_version) == ("5.0", "5.1")
    with pytest.raises(ValueError, match="must be bios, bmc or nic:<id>"):
        FirmwareUpdate(component="cpld", url="http://x/y")
    with pytest.raises(ValueError, match="must be an http"):
        FirmwareUpdate(component="bios", url="file:///tmp/x")


def test_host_firmware_components_as_metal3_writes_them_and_upstreams_sample() -> None:
    from metalflow.api.bmh import firmware_updates_from_manifest

    ok = {
        "kind": "HostFirmwareComponents",
        "metadata": {"name": "worker-0", "namespace": "lab"},
        "spec": {"updates": [{"component": "bios", "url": "https://myurl.with.firmware.for.bios"}]},
    }
    ns, name, updates = firmware_updates_from_manifest(ok)
    assert (ns, name, [(u.component, u.url) for u in updates]) == (
        "lab",
        "worker-0",
        [("bios", "https://myurl.with.firmware.for.bios")],
    )
    # baremetal-operator's config/samples writes `name:` (its CRD says `component`) and no metadata.name
    sample = {
        "kind": "HostFirmwareComponents",
        "metadata": {"name": "worker-0"},
        "spec": {"updates": [{"name": "bios", "url": "https://myurl.with.firmware.for.bios"}]},
    }
    with pytest.raises(
        ManifestError, match=r"spec\.updates\[0\] has `name`, which is not a field .* write `component: bios`"
    ):
        firmware_updates_from_manifest(sample)
    with pytest.raises(ManifestError, match=r"a HostFirmwareComponents has no metadata\.name"):
        firmware_updates_from_manifest({"metadata": {"namespace": "x"}, "spec": {"updates": []}})
    bad = {"metadata": {"name": "w"}, "spec": {"updates": [{"component": "cpld", "url": "https://x/y"}]}}
    with pytest.raises(
        ManifestError, match=r"spec\.updates\[0\]: component 'cpld' must be bios, bmc or nic:<id>"
    ):
        firmware_updates_from_manifest(bad)
