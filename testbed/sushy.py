"""sushy-emulator (sushy-tools) with its fake driver: real Redfish over HTTP, fake machines.

Basic auth is on (bcrypt htpasswd, as sushy-tools requires), so wrong passwords really fail.
bcrypt runs at its lowest cost: the emulator checks the hash on every request.

The fake driver applies a power change 1-11 whole seconds after it is asked for (a random
`randint(1, 11)` added to the current whole second), on the next read. `power_delay=(lo, hi)`
runs the same emulator with that draw made from lo..hi instead: still late, still random, only
shorter. The suite's emulated fleets use 1..2 (METALFLOW_TESTBED_POWER_DELAY, set in
tests/conftest.py): a host's lifecycle is a dozen power changes, each waited for.
"""

from __future__ import annotations

import os
import shutil
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import bcrypt
import requests

from testbed.processes import Process, free_port, wait_for
from testbed.tls import Issued

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
    tls: bool = False  # HTTPS with a certificate of the caller's CA (testbed/tls.py)

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def system_url(self, uuid: str) -> str:
        return f"{self.url}/redfish/v1/Systems/{uuid}"

    def system_address(self, uuid: str) -> str:
        """The metal3 BMC address of one system."""
        return f"redfish+{'https' if self.tls else 'http'}://127.0.0.1:{self.port}/redfish/v1/Systems/{uuid}"

    def stop(self) -> None:
        self.process.stop()


POWER_DELAY_ENV = "METALFLOW_TESTBED_POWER_DELAY"  # "LO-HI" seconds, e.g. "1-2"
POWER_DRAW_ENV = "METALFLOW_SUSHY_POWER_DRAW"  # the same, as testbed.sushy_uefihttp reads it
UPDATE_SECONDS_ENV = "METALFLOW_SUSHY_UPDATE_SECONDS"  # how long a SimpleUpdate's Task runs


def power_delay_from_env() -> tuple[int, int] | None:
    """METALFLOW_TESTBED_POWER_DELAY="LO-HI" as (LO, HI); None (the emulator's 1-11 s) if unset."""
    value = os.environ.get(POWER_DELAY_ENV, "")
    if not value:
        return None
    lo, sep, hi = value.partition("-")
    if not (sep and lo.isdigit() and hi.isdigit() and 1 <= int(lo) <= int(hi)):
        raise ValueError(
            f'{POWER_DELAY_ENV}={value!r}: want "LO-HI", whole seconds 1 <= LO <= HI, e.g. "1-2"'
        )
    return int(lo), int(hi)


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
    power_delay: tuple[int, int] | None = None,
    update_seconds: float | None = None,
    tls: Issued | None = None,
) -> SushyEmulator:
    """Start the emulator; with `notify_url`, every system change is PUT there as JSON
    (sushy-tools' external notifier), so watchers see each power transition, however short;
    `power_delay`: see the module doc; `update_seconds`: how long a SimpleUpdate's Task runs
    (testbed/sushy_tasks.py; 3 s if None); `tls`: serve HTTPS with that certificate (sushy-tools'
    own --ssl-certificate/--ssl-key)."""
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
        power_delay,
        executable=UEFI_HTTP_EMULATOR,  # a UefiHttp boot target is kept as such, not made Pxe
        update_seconds=update_seconds,
        tls=tls,
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
    power_delay: tuple[int, int] | None = None,
    executable: list[str] | None = None,
    update_seconds: float | None = None,
    tls: Issued | None = None,
) -> SushyEmulator:
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    env = {"PYTHONPATH": str(Path(__file__).resolve().parents[1])} if executable else {}
    if power_delay is not None:
        if not executable:
            raise ValueError("power_delay needs the test bed's emulator (executable=UEFI_HTTP_EMULATOR)")
        env[POWER_DRAW_ENV] = f"{power_delay[0]}-{power_delay[1]}"
    if update_seconds is not None:
        if not executable:
            raise ValueError("update_seconds needs the test bed's emulator (executable=UEFI_HTTP_EMULATOR)")
        env[UPDATE_SECONDS_ENV] = str(update_seconds)
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
    ssl = [] if tls is None else ["--ssl-certificate", str(tls.cert), "--ssl-key", str(tls.key)]
    proc = Process(
        "sushy-emulator",
        [*(executable or _executable()), "--config", str(config), "-i", "127.0.0.1", "-p", str(port), *ssl],
        workdir / "sushy-emulator.log",
        env=env,
    )
    emulator = SushyEmulator(proc, port, username, password, tls=tls is not None)

    def ready() -> bool:
        proc.check_alive()
        try:
            with warnings.catch_warnings():  # readiness only: the tests check the certificate
                warnings.simplefilter("ignore")
                r = requests.get(
                    f"{emulator.url}/redfish/v1/Systems", auth=(username, password), timeout=1, verify=False
                )
        except requests.RequestException:
            return False
        return r.status_code == 200

    try:
        wait_for(ready, 30, f"sushy-emulator on 127.0.0.1:{port}")
    except BaseException:
        proc.stop()
        raise
    return emulator
