"""sushy-emulator (sushy-tools) with its fake driver: real Redfish over HTTP, fake machines.

Basic auth is on (bcrypt htpasswd, as sushy-tools requires), so wrong passwords really fail.
bcrypt runs at its lowest cost: the emulator checks the hash on every request.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import bcrypt
import requests

from testbed.processes import Process, free_port, wait_for

# sushy-emulator with the UefiHttp boot target (testbed/sushy_uefihttp.py)
UEFI_HTTP_EMULATOR = [sys.executable, "-m", "testbed.sushy_uefihttp"]


@dataclass(frozen=True)
class FakeSystem:
    uuid: str
    name: str
    mac: str
    power_state: str = "Off"


@dataclass
class SushyEmulator:
    process: Process
    port: int
    username: str
    password: str = field(repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def system_url(self, uuid: str) -> str:
        return f"{self.url}/redfish/v1/Systems/{uuid}"

    def system_address(self, uuid: str) -> str:
        """The metal3 BMC address of one system."""
        return f"redfish+http://127.0.0.1:{self.port}/redfish/v1/Systems/{uuid}"

    def stop(self) -> None:
        self.process.stop()


def _executable() -> list[str]:
    beside = Path(sys.executable).parent / "sushy-emulator"
    found = str(beside) if beside.exists() else shutil.which("sushy-emulator")
    if not found:
        raise RuntimeError("sushy-emulator is missing: pip install sushy-tools")
    return [found]


def start_sushy(
    workdir: Path,
    systems: list[FakeSystem],
    username: str,
    password: str,
    port: int | None = None,
    feature_set: str = "full",
    notify_url: str | None = None,
) -> SushyEmulator:
    """Start the emulator; with `notify_url`, every system change is PUT there as JSON
    (sushy-tools' external notifier), so watchers see each power transition, however short."""
    fake = [
        {
            "uuid": s.uuid,
            "name": s.name,
            "power_state": s.power_state,
            "external_notifier": notify_url is not None,
            "nics": [{"mac": s.mac, "ip": "127.0.0.1"}],
        }
        for s in systems
    ]
    return _launch(
        workdir,
        [
            "SUSHY_EMULATOR_FAKE_DRIVER = True",
            f"SUSHY_EMULATOR_FAKE_SYSTEMS = {fake!r}",
            f"SUSHY_EMULATOR_FEATURE_SET = {feature_set!r}",
            "SUSHY_EMULATOR_VMEDIA_VERIFY_SSL = False",
            f"EXTERNAL_NOTIFICATION_URL = {notify_url or 'http://127.0.0.1:9'!r}",
        ],
        username,
        password,
        port,
        executable=UEFI_HTTP_EMULATOR,  # a UefiHttp boot target is kept as such, not made Pxe
    )


def start_sushy_libvirt(
    workdir: Path, username: str, password: str, uri: str, port: int | None = None
) -> SushyEmulator:
    """The emulator's libvirt driver: every libvirt domain is a Redfish System (the e2e test bed).
    SUSHY_EMULATOR_ALLOWED_INSTANCES stays unset: the test bed's libvirtd holds only its own VMs.
    BootSourceOverrideMode switches the domain's loader (the driver rewrites <loader>/<nvram>):
    UEFI is Debian's 2 MiB OVMF without secure boot, whose variables template
    (/usr/share/OVMF/OVMF_VARS.fd) is the driver's own default; libvirt puts the NVRAM copy in
    the test bed's /var/lib/libvirt. Legacy names SeaBIOS explicitly: libvirt refuses a ROM loader
    without a path. Run through testbed.sushy_uefihttp: the driver plus the UefiHttp boot target."""
    from testbed.vm import OVMF_CODE, SEABIOS

    loaders = {"UEFI": {"x86_64": str(OVMF_CODE)}, "Legacy": {"x86_64": str(SEABIOS)}}
    return _launch(
        workdir,
        [f"SUSHY_EMULATOR_LIBVIRT_URI = {uri!r}", f"SUSHY_EMULATOR_BOOT_LOADER_MAP = {loaders!r}"],
        username,
        password,
        port,
        executable=UEFI_HTTP_EMULATOR,
    )


def _launch(
    workdir: Path,
    driver_lines: list[str],
    username: str,
    password: str,
    port: int | None,
    executable: list[str] | None = None,
) -> SushyEmulator:
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    htpasswd = workdir / "htpasswd"
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
    htpasswd.write_text(f"{username}:{hashed}\n")
    htpasswd.chmod(0o600)
    config = workdir / "emulator.conf"
    config.write_text(
        "\n".join(
            [
                *driver_lines,
                f"SUSHY_EMULATOR_AUTH_FILE = {str(htpasswd)!r}",
                f"SUSHY_EMULATOR_STATE_DIR = {str(workdir / 'state')!r}",
                "",
            ]
        )
    )
    proc = Process(
        "sushy-emulator",
        [*(executable or _executable()), "--config", str(config), "-i", "127.0.0.1", "-p", str(port)],
        workdir / "sushy-emulator.log",
        env={"PYTHONPATH": str(Path(__file__).resolve().parents[1])} if executable else None,
    )
    emulator = SushyEmulator(proc, port, username, password)

    def ready() -> bool:
        proc.check_alive()
        try:
            r = requests.get(f"{emulator.url}/redfish/v1/Systems", auth=(username, password), timeout=1)
        except requests.RequestException:
            return False
        return r.status_code == 200

    try:
        wait_for(ready, 30, f"sushy-emulator on 127.0.0.1:{port}")
    except BaseException:
        proc.stop()
        raise
    return emulator
