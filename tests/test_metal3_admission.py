# ruff: noqa: E501  (a table of manifests: one line per upstream case reads best)
"""metal3's admission verdict on metal3's own material (issue 16).

Every manifest here is written for this test; each names the upstream file (and commit) whose
field set or rule it exercises. Sources:
  BMO  = metal3-io/baremetal-operator @ 02aa5059e3482f9dc3b5115c3a45cec4b000ae16
  DOCS = metal3-io/metal3-docs        @ c610a1f789fdabf6bdf95471d1769f4b045443d6
  DEV  = metal3-io/metal3-dev-env     @ ac77fc9218022cf88be286f0c971dec10d7ea4a0
Rules: BMO internal/webhooks/metal3.io/v1alpha1/baremetalhost_validation.go (webhook) and
BMO config/base/crds/bases/metal3.io_baremetalhosts.yaml (CRD schema: enums, required, patterns).

Accepted hosts must be accepted and lose no field (the normalized spec `metalflow validate`
prints holds every field the manifest set, with the same value); rejected ones are rejected
with metal3's reason and the field named. BMC address forms are tests/test_bmc_address.py's.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from metalflow.api.bmh import FIRMWARE_REFUSED, admit


def bmh(spec: Any, name: str = "host-0", namespace: str = "my-cluster", **meta: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "metal3.io/v1alpha1",
        "kind": "BareMetalHost",
        "metadata": {"name": name, "namespace": namespace, **meta},
    }
    if spec is not None:
        obj["spec"] = yaml.safe_load(spec) if isinstance(spec, str) else spec
    return obj


IPMI = "bmc: {address: 'ipmi://192.0.2.13', credentialsName: host-0-bmc}"
REDFISH = "bmc: {address: 'redfish://192.0.2.13/redfish/v1/Systems/1', credentialsName: host-0-bmc}"
VMEDIA = "bmc: {address: 'redfish-virtualmedia+http://192.0.2.1:8000/redfish/v1/Systems/vm-01', credentialsName: bml-01}"
IMAGE = "image: {url: 'http://192.0.2.150/jammy.img', checksum: 'http://192.0.2.150/SHA256SUMS', checksumType: auto}"

# ---- hosts metal3 accepts: (upstream source, manifest) ----
ACCEPTED: dict[str, tuple[str, dict[str, Any]]] = {
    "oci image by tag with root device hints": (
        "DOCS docs/user-guide/src/bmo/provisioning.md (OCI images, short form with a tag)",
        bmh(
            f"online: true\nbootMACAddress: '80:c1:6e:7a:e8:10'\n{IPMI}\n"
            "image: {url: 'oci://registry.example.com/project/myimage:1.2.3'}\n"
            "rootDeviceHints: {wwn: '0x55cd2e415652abcd'}\nuserData: {name: host-0-userdata}"
        ),
    ),
    "oci image pinned by digest with registry credentials": (
        "DOCS docs/user-guide/src/bmo/provisioning.md (OCI images, digest form) + BMO image.ociAuthSecretName",
        bmh(
            f"online: true\n{IPMI}\n"
            "image: {url: 'oci://registry.example.com/project/myimage@sha256:" + "0" * 64 + "', "
            "ociAuthSecretName: registry-pull}"
        ),
    ),
    "ipmi host without MAC": ("BMO examples/example-host.yaml", bmh(f"online: true\n{IPMI}")),
    "externally provisioned with consumerRef": (
        "BMO examples/demo-hosts.yaml (demo-externally-provisioned)",
        bmh(f"online: false\n{IPMI}\nconsumerRef: {{name: worker-a, namespace: machines}}"),
    ),
    "provisioning host with userData and md5 checksum URL": (
        "BMO examples/demo-hosts.yaml (demo-provisioning)",
        bmh(
            f"online: true\n{IPMI}\nbootMACAddress: '00:c6:14:04:61:b2'\n"
            "userData: {name: worker-user-data}\n"
            "image: {url: 'http://192.0.2.1/images/os.qcow2', checksum: 'http://192.0.2.1/images/os.qcow2.md5sum'}"
        ),
    ),
    "libvirt host with MAC and md5 digest": (
        "BMO examples/worker-0.yaml",
        bmh(
            "online: true\nbmc: {address: 'libvirt://192.0.2.1:6233/', credentialsName: worker-0-bmc}\n"
            "bootMACAddress: '00:1a:74:74:e5:cb'\n"
            "image: {url: 'http://192.0.2.1/images/os.qcow2', checksum: '97830b21ed272a3d854615beb54cf004'}"
        ),
    ),
    "networkInterfaces with attachments": (
        "BMO config/samples/metal3.io_v1alpha1_baremetalhost.yaml (without its `foo: bar` placeholder)",
        bmh(
            f"online: true\n{REDFISH}\nnetworkInterfaces:\n"
            "- {name: ens3f0, hostNetworkAttachment: {name: mgmt-access-config}}\n"
            "- {macAddress: '00:11:22:33:44:55', switchPort: {switchID: 'aa:bb:cc:dd:ee:ff', portID: Eth1/3}}"
        ),
    ),
    "virtual media with hardwareProfile and bootMode": (
        "DOCS docs/user-guide/examples/bmh-01-provision.yaml, hack/quick-start/bmh-01.yaml",
        bmh(
            f"online: true\nbootMACAddress: '00:60:2f:31:81:01'\nbootMode: UEFI\nhardwareProfile: libvirt\n{VMEDIA}\n"
            "image: {checksumType: sha256, checksum: 'http://192.0.2.1/SHA256SUMS', format: qcow2, url: 'http://192.0.2.1/jammy.img'}"
        ),
    ),
    "raw image, wwn hint, userData": (
        "DOCS docs/user-guide/src/bmo/provisioning.md",
        bmh(
            f"online: true\nbootMACAddress: '80:c1:6e:7a:e8:10'\n{IPMI}\n"
            "image: {url: 'http://192.0.2.150/jammy.img', checksum: 'http://192.0.2.150/SHA256SUMS', checksumType: auto, format: raw}\n"
            "rootDeviceHints: {wwn: '0x55cd2e415652abcd'}\nuserData: {name: host-0-userdata}"
        ),
    ),
    "live ISO without checksum": (
        "DOCS docs/user-guide/src/bmo/live-iso.md",
        bmh(
            "online: true\nbootMACAddress: '80:c1:6e:7a:e8:10'\n"
            "bmc: {address: 'redfish-virtualmedia://192.0.2.1:8000/redfish/v1/Systems/1', credentialsName: iso-bmc}\n"
            "image: {url: 'http://192.0.2.4/image.iso', format: live-iso}"
        ),
    ),
    "networkData": (
        "DOCS docs/user-guide/src/bmo/instance_customization.md",
        bmh(
            f"online: true\nbootMACAddress: '80:c1:6e:7a:e8:10'\n{IPMI}\n{IMAGE}\nnetworkData: {{name: host-0-networkdata}}"
        ),
    ),
    "preprovisioningNetworkDataName": (
        "DOCS docs/user-guide/src/bmo/advanced_instance_customization.md",
        bmh(
            "online: true\nbootMACAddress: '80:c1:6e:7a:e8:10'\n"
            "bmc: {address: 'redfish-virtualmedia://192.0.2.13', credentialsName: host-0-bmc}\n"
            "preprovisioningNetworkDataName: host-0-preprov-networkdata"
        ),
    ),
    "externallyProvisioned": (
        "DOCS docs/user-guide/src/bmo/externally_provisioned.md",
        bmh(f"online: true\nbootMACAddress: '80:c1:6e:7a:e8:10'\n{IPMI}\nexternallyProvisioned: true"),
    ),
    "automatedCleaningMode": (
        "DOCS docs/user-guide/src/bmo/automated_cleaning.md",
        bmh(
            "automatedCleaningMode: disabled\nbootMACAddress: '00:8a:b6:8e:ac:b8'\n"
            "bmc: {address: 'ipmi://192.0.2.1:6230', credentialsName: node-bmc}\nonline: true"
        ),
    ),
    "hardware RAID by count (redfish)": (
        "DOCS docs/user-guide/src/bmo/raid.md (volume1)",
        bmh(
            f"online: true\n{REDFISH}\nraid: {{hardwareRAIDVolumes: [{{name: volume1, level: '5', numberOfPhysicalDisks: 3, sizeGibibytes: 350}}]}}"
        ),
    ),
    "hardware RAID on named disks with controller": (
        "DOCS docs/user-guide/src/bmo/raid.md (volume2)",
        bmh(
            f"online: true\n{REDFISH}\nraid:\n  hardwareRAIDVolumes:\n"
            "  - {name: volume2, level: '0', controller: RAID.Integrated.1-1, physicalDisks: [d5, d6, d7]}"
        ),
    ),
    "empty hardware RAID list on ipmi (clears RAID)": (
        "DOCS docs/user-guide/src/bmo/raid.md (hardwareRAIDVolumes: [])",
        bmh(f"online: true\n{IPMI}\nraid: {{hardwareRAIDVolumes: []}}"),
    ),
    "software RAID": (
        "DOCS docs/user-guide/src/bmo/raid.md (softwareRAIDVolumes)",
        bmh(
            f"online: true\n{IPMI}\nraid:\n  softwareRAIDVolumes:\n  - {{level: '1', sizeGibibytes: 10}}\n  - {{level: '0'}}"
        ),
    ),
    "software RAID on named disks": (
        "DOCS docs/user-guide/src/bmo/raid.md (physicalDisks by serialNumber)",
        bmh(
            f"online: true\n{IPMI}\nraid: {{softwareRAIDVolumes: [{{level: '1', physicalDisks: [{{serialNumber: abcd}}, {{serialNumber: fake}}]}}]}}"
        ),
    ),
    "legacy boot with deviceName hint": (
        "DEV PoCs/kamaji/metal3/bmh-template.yaml (placeholders filled)",
        bmh(
            "online: true\nbmc: {address: 'redfish-virtualmedia+http://192.0.2.1:8000/redfish/v1/Systems/n1', credentialsName: n1}\n"
            "bootMACAddress: '52:54:00:aa:bb:01'\nbootMode: legacy\nrootDeviceHints: {deviceName: /dev/vda}",
            labels={"bmh-name": "n1"},
        ),
    ),
    "inspection disabled by annotation, hardware details given": (
        "DOCS docs/user-guide/src/bmo/external_inspection.md",
        bmh(
            f"online: true\nbootMACAddress: '00:b7:8b:bb:3d:f6'\n{IPMI}",
            annotations={
                "inspect.metal3.io": "disabled",
                "inspect.metal3.io/hardwaredetails": '{"ramMebibytes": 4096}',
            },
        ),
    ),
    "every kept field at once": (
        "BMO apis/metal3.io/v1alpha1/baremetalhost_types.go (BareMetalHostSpec)",
        bmh(
            f"online: true\n{REDFISH}\nbootMACAddress: '52:54:00:aa:bb:02'\n"
            "inspectionMode: fast\ndisablePowerOff: true\narchitecture: aarch64\nhardwareProfile: unknown\n"
            "customDeploy: {method: install_coreos}\n"
            "taints: [{key: dedicated, value: storage, effect: NoSchedule}]\n"
            "description: rack 4\nimage: {url: 'http://192.0.2.1/os.vmdk', checksum: '"
            + "a" * 64
            + "', format: vmdk}"
        ),
    ),
    "vdi image": (
        "BMO CRD enum image.format",
        bmh(
            f"online: true\n{IPMI}\nimage: {{url: 'http://192.0.2.1/os.vdi', checksum: '{'b' * 64}', format: vdi}}"
        ),
    ),
    "inspectionMode agent": (
        "BMO CRD enum inspectionMode",
        bmh(f"online: true\n{IPMI}\ninspectionMode: agent"),
    ),
    "reboot annotation with soft mode": (
        "BMO webhook validateRebootAnnotation",
        bmh(f"online: true\n{IPMI}", annotations={"reboot.metal3.io/me": '{"mode": "soft"}'}),
    ),
}


def assert_kept(given: Any, kept: Any, path: str = "spec") -> None:
    """Every field the manifest set is in the normalized spec with the same value."""
    if isinstance(given, dict):
        assert isinstance(kept, dict), f"{path} became {kept!r}"
        for key, value in given.items():
            assert key in kept, f"{path}.{key} was dropped (normalized spec: {sorted(kept)})"
            assert_kept(value, kept[key], f"{path}.{key}")
    elif isinstance(given, list):
        assert isinstance(kept, list) and len(kept) == len(given), f"{path}: {given!r} became {kept!r}"
        for i, (a, b) in enumerate(zip(given, kept, strict=True)):
            assert_kept(a, b, f"{path}[{i}]")
    else:
        assert given == kept, f"{path}: {given!r} became {kept!r}"


@pytest.mark.parametrize(("source", "obj"), ACCEPTED.values(), ids=ACCEPTED.keys())
def test_metal3_accepts_and_metalflow_keeps_every_field(source: str, obj: dict[str, Any]) -> None:
    verdict = admit(obj)
    assert verdict.accepted, f"{source}: rejected: {verdict.reasons}"
    assert verdict.host is not None
    assert_kept(obj["spec"], verdict.as_dict()["spec"])


# ---- hosts metal3 rejects: (rule's source, manifest, fragments of metal3's reason incl. the field) ----
REJECTED: dict[str, tuple[str, dict[str, Any], tuple[str, ...]]] = {
    "firmware": (
        "BMO webhook validateHost (Firmware)",
        bmh(f"online: true\n{IPMI}\nfirmware: {{virtualizationEnabled: true}}"),
        ("spec.firmware", FIRMWARE_REFUSED),
    ),
    "libvirt without MAC": (
        "BMO webhook validateBMCAccess (NeedsMAC)",
        bmh("online: true\nbmc: {address: 'libvirt://192.0.2.1:6233/', credentialsName: b}"),
        ("spec.bootMACAddress", "BMC driver libvirt requires a BootMACAddress value"),
    ),
    "inspection disabled without MAC (virtual media)": (
        "BMO webhook validateBMCAccess (InspectionDisabled)",
        bmh(f"online: true\n{VMEDIA}\ninspectionMode: disabled"),
        ("spec.bootMACAddress", "requires a BootMACAddress value"),
    ),
    "inspection disabled by annotation without MAC": (
        "BMO webhook validateBMCAccess (InspectionDisabled via annotation)",
        bmh(f"online: true\n{IPMI}", annotations={"inspect.metal3.io": "disabled"}),
        ("spec.bootMACAddress", "BMC driver ipmi requires a BootMACAddress value"),
    ),
    "secure boot on ipmi": (
        "BMO webhook validateBMCAccess (SupportsSecureBoot)",
        bmh(f"online: true\n{IPMI}\nbootMode: UEFISecureBoot"),
        ("spec.bootMode", "BMC driver ipmi does not support secure boot"),
    ),
    "hardware RAID on ipmi": (
        "BMO webhook validateBMCAccess (RAIDInterface no-raid)",
        bmh(f"online: true\n{IPMI}\nraid: {{hardwareRAIDVolumes: [{{level: '1'}}]}}"),
        ("spec.raid", "BMC driver ipmi does not support configuring RAID"),
    ),
    "invalid hardware RAID level": (
        "BMO CRD enum hardwareRAIDVolumes[].level",
        bmh(f"online: true\n{REDFISH}\nraid: {{hardwareRAIDVolumes: [{{level: '7'}}]}}"),
        ("spec.raid.hardwareRAIDVolumes.0.level", "'1+0'"),
    ),
    "invalid software RAID level": (
        "BMO CRD enum softwareRAIDVolumes[].level",
        bmh(f"online: true\n{IPMI}\nraid: {{softwareRAIDVolumes: [{{level: '5'}}]}}"),
        ("spec.raid.softwareRAIDVolumes.0.level",),
    ),
    "hardware and software RAID together": (
        "BMO webhook validateRAID",
        bmh(
            f"online: true\n{REDFISH}\nraid: {{hardwareRAIDVolumes: [{{level: '1'}}], softwareRAIDVolumes: [{{level: '1'}}]}}"
        ),
        ("spec.raid", "hardwareRAIDVolumes and softwareRAIDVolumes can not be set at the same time"),
    ),
    "physicalDisks without controller": (
        "BMO webhook validateRAID",
        bmh(
            f"online: true\n{REDFISH}\nraid: {{hardwareRAIDVolumes: [{{level: '1', physicalDisks: [a, b]}}]}}"
        ),
        ("spec.raid.hardwareRAIDVolumes[0]", "'physicalDisks' specified without 'controller'"),
    ),
    "numberOfPhysicalDisks disagrees": (
        "BMO webhook validateRAID",
        bmh(
            f"online: true\n{REDFISH}\nraid: {{hardwareRAIDVolumes: [{{level: '1', controller: c, numberOfPhysicalDisks: 3, physicalDisks: [a, b]}}]}}"
        ),
        ("'numberOfPhysicalDisks'[3] and number of 'physicalDisks'[2] is not same for volume 0",),
    ),
    "two software root volumes": (
        "BMO webhook validateRAID",
        bmh(
            f"online: true\n{IPMI}\nraid: {{softwareRAIDVolumes: [{{level: '1', rootVolume: true}}, {{level: '1', rootVolume: true}}]}}"
        ),
        ("softwareRAIDVolumes[*].rootVolume can only be set once",),
    ),
    "software root volume not RAID-1": (
        "BMO webhook validateRAID",
        bmh(f"online: true\n{IPMI}\nraid: {{softwareRAIDVolumes: [{{level: '0', rootVolume: true}}]}}"),
        ("softwareRAIDVolumes[0] with rootVolume set must use RAID level 1",),
    ),
    "software root volume and rootDeviceHints": (
        "BMO webhook validateRAID",
        bmh(
            f"online: true\n{IPMI}\nrootDeviceHints: {{wwn: x}}\nraid: {{softwareRAIDVolumes: [{{level: '1', rootVolume: true}}]}}"
        ),
        ("rootVolume and rootDeviceHints can not be set at the same time",),
    ),
    "three software RAID volumes": (
        "BMO CRD maxItems softwareRAIDVolumes",
        bmh(
            f"online: true\n{IPMI}\nraid: {{softwareRAIDVolumes: [{{level: '1'}}, {{level: '1'}}, {{level: '0'}}]}}"
        ),
        ("spec.raid.softwareRAIDVolumes",),
    ),
    "deviceName not under /dev": (
        "BMO webhook validateRootDeviceHints",
        bmh(f"online: true\n{IPMI}\nrootDeviceHints: {{deviceName: sda}}"),
        ("spec.rootDeviceHints.deviceName", 'must be a /dev/ path, not "sda"'),
    ),
    "deviceName too deep": (
        "BMO webhook validateRootDeviceHints",
        bmh(f"online: true\n{IPMI}\nrootDeviceHints: {{deviceName: /dev/disk/by-id/x}}"),
        ("must be path in /dev/ or /dev/disk/by-path/",),
    ),
    "fast inspection on ipmi": (
        "BMO webhook validateInspectionMode",
        bmh(f"online: true\n{IPMI}\ninspectionMode: fast"),
        ("spec.inspectionMode", "BMC driver ipmi does not support fast (out-of-band) inspection"),
    ),
    "unknown inspectionMode": (
        "BMO CRD enum inspectionMode",
        bmh(f"online: true\n{IPMI}\ninspectionMode: sometimes"),
        ("spec.inspectionMode", "'disabled'"),
    ),
    "annotation contradicts inspectionMode": (
        "BMO webhook validateInspectionMode",
        bmh(
            f"online: true\n{IPMI}\nbootMACAddress: '52:54:00:00:00:09'\ninspectionMode: agent",
            annotations={"inspect.metal3.io": "disabled"},
        ),
        ("inspect.metal3.io annotation and inspectionMode field have contradicting values",),
    ),
    "bad inspect annotation": (
        "BMO webhook validateInspectAnnotation",
        bmh(f"online: true\n{IPMI}", annotations={"inspect.metal3.io": "later"}),
        ('allowed are "disabled" or ""',),
    ),
    "hardware details with inspection on": (
        "BMO webhook validateHwdDetailsAnnotation",
        bmh(f"online: true\n{IPMI}", annotations={"inspect.metal3.io/hardwaredetails": "{}"}),
        ("when hardware details are provided, inspection must be disabled",),
    ),
    "bad reboot mode": (
        "BMO webhook validateRebootAnnotation",
        bmh(f"online: true\n{IPMI}", annotations={"reboot.metal3.io": '{"mode": "warm"}'}),
        ('invalid mode in the reboot.metal3.io annotation, allowed are "hard", "soft" or ""',),
    ),
    "disablePowerOff while offline": (
        "BMO webhook validatePowerStatus",
        bmh(f"online: false\n{IPMI}\ndisablePowerOff: true"),
        (
            "spec.disablePowerOff",
            "node can't simultaneously have online set to false and have power off disabled",
        ),
    ),
    "networkInterface without selector": (
        "BMO webhook validateNetworkInterfaces",
        bmh(f"online: true\n{IPMI}\nnetworkInterfaces: [{{hostNetworkAttachment: {{name: a}}}}]"),
        ("spec.networkInterfaces[0]: must specify either name or macAddress",),
    ),
    "networkInterface with name and MAC": (
        "BMO webhook validateNetworkInterfaces",
        bmh(f"online: true\n{IPMI}\nnetworkInterfaces: [{{name: eth0, macAddress: '00:11:22:33:44:55'}}]"),
        ("name and macAddress are mutually exclusive",),
    ),
    "duplicate networkInterface": (
        "BMO webhook validateNetworkInterfaces",
        bmh(f"online: true\n{IPMI}\nnetworkInterfaces: [{{name: eth0}}, {{name: ETH0}}]"),
        ('networkInterfaces[1]: duplicate interface selector for "ETH0"',),
    ),
    "cross-namespace userData": (
        "BMO webhook validateCrossNamespaceSecretReferences",
        bmh(f"online: true\n{IPMI}\nuserData: {{name: ud, namespace: other}}"),
        ("spec.userData: cross-namespace Secret references are not allowed",),
    ),
    "UUID name": (
        "BMO webhook validateBMHName",
        bmh(f"online: true\n{IPMI}", name="6e0ffd0f-7f5b-4d9b-a0b6-0a3f8c9d1e21"),
        ("metadata.name", "cannot be a UUID"),
    ),
    "online missing": ("BMO CRD required [online]", bmh(IPMI), ("spec.online", "Required value")),
    "bmc without address": (
        "BMO CRD bmc required [address, credentialsName]",
        bmh("online: true\nbmc: {credentialsName: b}"),
        ("spec.bmc.address", "Required value"),
    ),
    "image format vhd": (
        "BMO CRD enum image.format",
        bmh(
            f"online: true\n{IPMI}\nimage: {{url: 'http://192.0.2.1/os.vhd', checksum: '{'c' * 64}', format: vhd}}"
        ),
        ("spec.image.format", "'vmdk'"),
    ),
    "taint without effect": (
        "BMO CRD taints[] required [effect, key]",
        bmh(f"online: true\n{IPMI}\ntaints: [{{key: dedicated}}]"),
        ("spec.taints.0.effect", "Field required"),
    ),
    "customDeploy without method": (
        "BMO CRD customDeploy required [method]",
        bmh(f"online: true\n{IPMI}\ncustomDeploy: {{}}"),
        ("spec.customDeploy.method",),
    ),
    "bad MAC in networkInterfaces": (
        "BMO CRD pattern networkInterfaces[].macAddress",
        bmh(f"online: true\n{IPMI}\nnetworkInterfaces: [{{macAddress: 'zz:11:22:33:44:55'}}]"),
        ("spec.networkInterfaces.0.macAddress",),
    ),
    "upstream sample's placeholder field": (
        "BMO config/samples/metal3.io_v1alpha1_baremetalhost.yaml (`foo: bar`: kubectl's strict field validation refuses it)",
        bmh(f"online: true\n{IPMI}\nfoo: bar"),
        ("spec.foo", "Extra inputs"),
    ),
    "spec placeholder": (
        "DOCS docs/user-guide/src/bmo/external_inspection.md (`spec: ...`)",
        {**bmh(None), "spec": "..."},
        ("spec must be a mapping", "'...'"),
    ),
    "bmc placeholder": (
        "metalflow: typed error, not a crash",
        bmh({"online": True, "bmc": "..."}),
        ("spec.bmc must be a mapping",),
    ),
}


@pytest.mark.parametrize(("source", "obj", "fragments"), REJECTED.values(), ids=REJECTED.keys())
def test_metal3_rejects_with_its_reason(source: str, obj: dict[str, Any], fragments: tuple[str, ...]) -> None:
    verdict = admit(obj)
    assert not verdict.accepted, f"{source}: accepted, metal3 rejects it"
    reason = "; ".join(verdict.reasons)
    for fragment in fragments:
        assert fragment in reason, f"{source}: {fragment!r} not in {reason!r}"


@pytest.mark.parametrize(
    "obj",
    [
        bmh(None, name="demo-discovered"),
        bmh("online: true", name="no-bmc"),
        bmh("online: true\nbootMACAddress: '52:54:00:00:00:07'"),
    ],
    ids=["no spec (BMO examples/demo-hosts.yaml demo-discovered)", "no bmc", "MAC but no bmc"],
)
def test_host_without_bmc_is_accepted_and_waits(obj: dict[str, Any]) -> None:
    """metal3 accepts it and shows it unmanaged/discovered; metalflow waits for spec.bmc."""
    verdict = admit(obj)
    assert verdict.accepted and verdict.host is None
    assert "spec.bmc" in verdict.waiting and "waits" in verdict.waiting


def test_null_lists_from_go_clients_read_as_empty() -> None:
    """The temporal CLI (and kubectl) write an empty list as null: an update round-tripped
    through them must still validate (found by tests/test_cli.py)."""
    from metalflow.api.models import HostSpec

    spec = HostSpec.model_validate(
        {
            "bmc": {"address": "ipmi://192.0.2.13", "credentials": {"name": "b"}},
            "taints": None,
            "networkInterfaces": None,
            "raid": {"hardwareRAIDVolumes": [{"level": "1", "physicalDisks": None}]},
        }
    )
    assert spec.taints == [] and spec.network_interfaces == []
    assert spec.raid is not None and spec.raid.hardware_raid_volumes is not None
    assert spec.raid.hardware_raid_volumes[0].physical_disks == []
