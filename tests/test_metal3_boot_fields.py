"""metal3 fields the boot path acts on (issue 16): `architecture` and `preprovisioningNetworkDataName`
(its virtual-media path: tests/test_vmedia.py).

The boot-prepare activity runs for real (ActivityEnvironment) and writes its files; the rendered
iPXE script and DHCP entry of an aarch64 host are read back. That dnsmasq then hands an aarch64
host's firmware the arm64 iPXE binary is shown by a real DHCP exchange in tests/test_boot.py.
Booting an aarch64 machine is not attempted (no such emulation in the test bed).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.boot import dnsmasq, ipxe, prepare_boot
from activities.configdrive import build_iso
from metalflow.api.bmc_address import BootMethod
from metalflow.api.boot import BootPrepareRequest, BootPurpose
from metalflow.api.models import HostRef
from metalflow.runtime.settings import Settings

MAC = "52:54:00:ab:cd:01"
REF = HostRef(namespace="rack-7", name="arm-0")


@pytest.fixture
def boot_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("METALFLOW_BOOT_DIR", str(tmp_path / "boot"))
    monkeypatch.setenv("METALFLOW_BOOT_SERVER_URL", "http://192.0.2.1:8088")
    return Settings()


def prepare(**fields: object) -> object:
    req = BootPrepareRequest(host=REF, boot_mac_address=MAC, purpose=BootPurpose.DEPLOY, **fields)  # type: ignore[arg-type]
    return ActivityEnvironment().run(prepare_boot, req)


def written(settings: Settings) -> tuple[str, str]:
    script = (settings.boot_dir / "boot" / "52-54-00-ab-cd-01.ipxe").read_text()
    entry = (dnsmasq.hosts_dir(settings) / REF.host_id).read_text().strip()
    return script, entry


@pytest.mark.parametrize("name", ["aarch64", "arm64"])
def test_aarch64_host_gets_the_aarch64_ramdisk_and_ipxe_binary(boot_settings: Settings, name: str) -> None:
    prepare(architecture=name)
    script, entry = written(boot_settings)
    assert ipxe.check_syntax(script) == []
    kernel = next(line for line in script.splitlines() if line.startswith("kernel "))
    initrd = next(line for line in script.splitlines() if line.startswith("initrd "))
    assert kernel.split()[1] == "http://192.0.2.1:8088/vmlinuz-aarch64"
    assert "initrd=initrd.img-aarch64" in kernel
    assert initrd.split()[1] == "http://192.0.2.1:8088/initrd.img-aarch64"
    assert entry == f"{MAC},arm-0"  # no tag: the firmware's client arch (11) picks the binary
    conf = dnsmasq.base_config(dnsmasq.BootNetwork("vs0", "192.0.2.50", "192.0.2.99"), boot_settings)
    assert "dhcp-match=set:arch-aarch64,option:client-arch,11" in conf.splitlines()
    assert "dhcp-boot=tag:!ipxe,tag:arch-aarch64,ipxe-arm64.efi" in conf.splitlines()
    assert "dhcp-boot=tag:!ipxe,tag:efi64,tag:!arch-aarch64,snponly.efi" in conf.splitlines()


@pytest.mark.parametrize("name", [None, "x86_64", "amd64"])
def test_x86_64_is_the_default_and_unchanged(boot_settings: Settings, name: str | None) -> None:
    prepare(architecture=name)
    script, entry = written(boot_settings)
    assert "http://192.0.2.1:8088/vmlinuz " in script and "initrd.img-" not in script
    assert entry == f"{MAC},arm-0"


def test_virtual_media_aarch64_host_gets_the_aarch64_iso(boot_settings: Settings) -> None:
    """Its own ISO is made from the aarch64 base (named like the aarch64 kernel), not the x86_64 one."""
    boot_settings.boot_dir.mkdir(parents=True)
    for suffix, marker in (("", b"X86-64-BASE-ISO"), ("-aarch64", b"AARCH64-BASE-ISO")):
        (boot_settings.boot_dir / f"deploy{suffix}.iso").write_bytes(build_iso({"metalflow/base": marker}))
    got = ActivityEnvironment().run(
        prepare_boot,
        BootPrepareRequest(
            host=REF,
            boot_mac_address=None,
            purpose=BootPurpose.INSPECT,
            boot_method=BootMethod.VIRTUAL_MEDIA,
            architecture="aarch64",
        ),
    )
    assert got.iso_url.startswith(f"http://192.0.2.1:8088/images/vmedia/{REF.host_id}/")
    made = (boot_settings.boot_dir / got.iso_url.split("/", 3)[3]).read_bytes()
    assert b"AARCH64-BASE-ISO" in made and b"X86-64-BASE-ISO" not in made


def test_unknown_architecture_is_a_clear_error_before_any_file(boot_settings: Settings) -> None:
    with pytest.raises(ApplicationError) as err:
        prepare(architecture="riscv64")
    assert err.value.non_retryable and err.value.type == "InvalidSpec"
    assert "spec.architecture 'riscv64'" in err.value.message and "aarch64, x86_64" in err.value.message
    assert not (boot_settings.boot_dir / "boot").exists()


def test_preprovisioning_network_data_is_refused_for_a_pxe_host(
    boot_settings: Settings,
) -> None:
    """Only a virtual-media host's own ISO carries it (tests/test_vmedia.py); a PXE-booted ramdisk
    takes DHCP, so the field is refused rather than ignored."""
    with pytest.raises(ApplicationError) as err:
        prepare(preprovisioning_network_data_name="arm-0-preprov-net")
    assert err.value.non_retryable and err.value.type == "PreprovisioningNetworkDataInvalid"
    assert "spec.preprovisioningNetworkDataName ('arm-0-preprov-net')" in err.value.message
    assert "virtualmedia://" in err.value.message and "remove the field" in err.value.message
    assert not (boot_settings.boot_dir / "boot").exists(), "nothing written for a host that cannot boot"
