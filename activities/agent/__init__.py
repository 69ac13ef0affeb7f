"""The in-band agent's activities, bound to one AgentConfig (one host, its disks).

They run inside the deploy ramdisk, on the host's own task queue. Blocking I/O, so plain
methods the agent worker runs in its thread pool.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.agent import (
    boot_auth,
    cleaning,
    configdrive,
    deploy_methods,
    erase,
    image,
    inventory,
    softraid,
)
from activities.agent.config import AgentConfig
from activities.agent.devices import BlockDevice, list_devices
from activities.agent.hints import choose_root_device
from activities.agent.keepalive import keepalive
from activities.agent.logs import REDACTOR, drain_installed
from metalflow.api.agent import (
    AGENT_CLEAN,
    AGENT_CUSTOM_DEPLOY,
    AGENT_INVENTORY,
    AGENT_SOFTWARE_RAID,
    AGENT_WRITE_CONFIGDRIVE,
    AGENT_WRITE_IMAGE,
    CleanRequest,
    CleanResult,
    CustomDeployRequest,
    InventoryRequest,
    SoftwareRAIDRequest,
    SoftwareRAIDResult,
    WriteConfigDriveRequest,
    WriteImageRequest,
    WriteImageResult,
)
from metalflow.api.erase import EraseMethod, EraseSpec
from metalflow.api.errors import AGENT_TOKEN_REFUSED, ErrorName, permanent
from metalflow.api.metal3_fields import SoftwareRAIDVolume
from metalflow.api.models import HardwareDetails


class AgentActivities:
    def __init__(self, config: AgentConfig, on_token_refused: Callable[[], None] | None = None) -> None:
        self.config = config
        self._on_token_refused = on_token_refused

    @contextlib.contextmanager
    def _boot_server_call(self) -> Iterator[None]:
        """The boot server refused this boot's agent token: the agent stops serving (its worker
        shuts down), so the step's retry finds nobody on the queue and boots the host again, with
        a new token (workflows/inband.py)."""
        try:
            yield
        except ApplicationError as err:
            if err.type == AGENT_TOKEN_REFUSED and self._on_token_refused is not None:
                self._on_token_refused()
            raise

    def _device(self, name: str) -> BlockDevice:
        for dev in list_devices(self.config):
            if dev.name == name:
                return dev
        array = None if self.config.disks is not None else softraid.array_device(name, self.config.sys_root)
        if array is not None:
            return array
        raise permanent(ErrorName.NO_ROOT_DEVICE, f"device {name} is gone from {self.config.host_id}")

    @activity.defn(name=AGENT_INVENTORY)
    def inventory(self, req: InventoryRequest | None = None) -> HardwareDetails:
        """`req` carries the nonce the reply is proved with (activities/agent/proof.py)."""
        return inventory.collect(self.config)

    @activity.defn(name=AGENT_CLEAN)
    def clean(self, req: CleanRequest) -> CleanResult:
        if req.mode not in ("metadata", "disabled", "erase"):
            raise permanent(
                ErrorName.INVALID_SPEC, f"cleaning mode {req.mode!r} is not metadata, disabled or erase"
            )
        if req.mode == "disabled":
            return CleanResult()
        devices = list_devices(self.config)
        kept = self._kept_raid(devices, req) if self.config.disks is None else None
        if kept is not None:  # the arrays spec.raid asks for: what they hold is cleaned, not them
            devices = [d for d in devices if d not in kept.holders] + softraid.cleaned_parts(
                kept, self.config.sys_root
            )
        elif self.config.disks is None:  # any other software RAID is taken apart before its disks
            for member in softraid.stop_all(self.config.sys_root):
                activity.logger.info("software RAID member %s cleared", member)
        if req.mode == "erase":
            return self._erase(devices, req.erase or EraseSpec(method=EraseMethod.OVERWRITE))
        for dev in devices:
            cleaning.wipe_metadata(dev)
            activity.heartbeat({"cleaned": dev.name})
        return CleanResult(devices=[d.name for d in devices])

    def _kept_raid(self, devices: list[BlockDevice], req: CleanRequest) -> softraid.Layout | None:
        """metadata cleaning of a host whose running arrays are the ones spec.raid asks for."""
        if req.mode != "metadata" or not req.software_raid:
            return None
        try:
            layout = softraid.plan(devices, req.software_raid)
        except ApplicationError:
            return None  # cannot be built here: whatever runs is taken apart
        if softraid.matching(layout, softraid.arrays(self.config.sys_root)) is None:
            return None
        activity.logger.info("software RAID kept: its arrays and ESPs cleaned, not the disks under them")
        return layout

    def _erase(self, devices: list[BlockDevice], spec: EraseSpec) -> CleanResult:
        """Every disk planned (or a typed error, nothing erased), then erased and read back."""
        planned = erase.plan(devices, spec)
        records = []
        for item in planned:
            activity.logger.info("erasing %s with %s", item.device.name, item.method.value)
            record = erase.erase_disk(item, spec, _heartbeat_erase(item.device.name))
            activity.logger.info(
                "erased %s (serial %s) with %s: %d samples read back %s",
                record.device,
                record.serial,
                record.method.value,
                record.samples,
                record.verified,
            )
            records.append(record)
            activity.heartbeat({"cleaned": item.device.name})
        return CleanResult(
            devices=[d.name for d in devices],
            bytes_erased=sum(r.size_bytes for r in records if r.method == EraseMethod.OVERWRITE),
            erasure=records,
        )

    def _software_raid(self, volumes: list[SoftwareRAIDVolume]) -> tuple[softraid.Layout, SoftwareRAIDResult]:
        if self.config.disks is not None:
            raise permanent(
                ErrorName.RAID_CONFIG,
                "spec.raid.softwareRAIDVolumes: software RAID needs the host's own disks and the kernel's md "
                "driver; this agent runs on emulated file disks",
            )
        layout = softraid.plan(list_devices(self.config), volumes)
        arrays, built = softraid.ensure(layout, self.config.sys_root)
        for array in arrays:
            activity.logger.info(
                "software RAID %s: level %s over %s (%s)",
                array.device,
                array.level,
                ", ".join(array.members),
                "built" if built else "kept",
            )
        return layout, SoftwareRAIDResult(arrays=arrays, built=built)

    @activity.defn(name=AGENT_SOFTWARE_RAID)
    def software_raid(self, req: SoftwareRAIDRequest) -> SoftwareRAIDResult:
        """spec.raid.softwareRAIDVolumes while preparing: the arrays built (or kept when they match)."""
        with keepalive():
            return self._software_raid(req.volumes)[1]

    @activity.defn(name=AGENT_WRITE_IMAGE)
    def write_image(self, req: WriteImageRequest) -> WriteImageResult:
        with keepalive() as beat:
            return self._write_image(req, beat)

    def _write_image(self, req: WriteImageRequest, beat: Callable[[Any], None]) -> WriteImageResult:
        layout = None
        if req.software_raid:  # the root volume's array, built here if cleaning took it apart
            layout, raid = self._software_raid(req.software_raid)
            dev = softraid.array_device(raid.arrays[layout.plan.root].device, self.config.sys_root)
            assert dev is not None
        else:
            dev = choose_root_device(list_devices(self.config), req.root_device_hints)
        activity.logger.info("writing %s to %s", req.image.url, dev.name)
        with self._boot_server_call():
            written = image.write_image(
                req.image,
                dev,
                lambda n, total: beat({"device": dev.name, "bytes_written": n, "total": total}),
                compression=req.compression,
                headers=boot_auth.headers_for(self.config, req.image.url),
                verify=boot_auth.verify_for(self.config, req.image.url),
            )
        if layout is not None:
            copied = softraid.install_esp(dev, layout.holders)
            activity.logger.info(
                "the image's ESP (%d bytes) copied to %s", copied, ", ".join(h.name for h in layout.holders)
            )
        return WriteImageResult(
            device=dev.name,
            bytes_written=written.bytes_written,
            checksum=written.checksum,
            checksum_type=written.checksum_type.value,
        )

    @activity.defn(name=AGENT_CUSTOM_DEPLOY)
    def custom_deploy(self, req: CustomDeployRequest) -> WriteImageResult:
        """spec.customDeploy: the named method from the registry (deploy_methods.py)."""
        try:
            with keepalive():
                return deploy_methods.deploy_method(req.method)(self, req)
        finally:
            drain_installed()  # the host reboots into what it deployed next

    @activity.defn(name=AGENT_WRITE_CONFIGDRIVE)
    def write_configdrive(self, req: WriteConfigDriveRequest) -> None:
        dev = self._device(req.device)
        with self._boot_server_call():
            url = req.config_drive.url
            auth, verify = boot_auth.headers_for(self.config, url), boot_auth.verify_for(self.config, url)
            data = configdrive.fetch(req.config_drive, auth, verify)
        REDACTOR.add(configdrive.user_data(data))
        offset = configdrive.write(dev, data)
        activity.logger.info("config drive written to %s at offset %d", dev.name, offset)
        # the last in-band step of a deploy: the BMC reboots the host next, so its log goes now
        drain_installed()


def _heartbeat_erase(name: str) -> Callable[[int], None]:
    return lambda n: activity.heartbeat({"device": name, "bytes_erased": n})


def agent_activities(config: AgentConfig, on_token_refused: Callable[[], None] | None = None) -> list[Any]:
    acts = AgentActivities(config, on_token_refused)
    return [
        acts.inventory,
        acts.clean,
        acts.software_raid,
        acts.write_image,
        acts.custom_deploy,
        acts.write_configdrive,
    ]
