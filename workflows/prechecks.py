"""Checks of the spec against what inspection found, before cleaning or deploying touches a disk.

Hints that match no disk, or networkData naming a NIC the host lacks, would otherwise fail late:
after cleaning wiped the disks, or after the image was written. Both are typed, non-retryable
failures naming the field and the fix.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ApplicationError

from metalflow.api.configdrive import NETWORK_DATA_CHECK, NetworkDataCheck
from metalflow.api.errors import ErrorName
from metalflow.api.host import StepInput
from metalflow.api.root_device import inventory_problem
from metalflow.api.software_raid import inventory_problem as software_raid_problem
from workflows import patches
from workflows.options import LOCAL_RETRY

# New checks: histories from before them replay without (patched() is False there).
HINTS_PRECHECK_PATCH = "root-device-hints-precheck"
NETWORK_DATA_PRECHECK_PATCH = "network-data-mac-precheck"
SOFTWARE_RAID_PATCH = "software-raid-agent"


def check_root_device_hints(step: StepInput) -> None:
    """Raise when spec.rootDeviceHints match none of the disks inspection reported."""
    disks = step.hardware.storage if step.hardware else []
    problem = inventory_problem(step.spec.root_device_hints, disks)
    if problem and patches.patched(HINTS_PRECHECK_PATCH):
        raise ApplicationError(problem, type=ErrorName.NO_ROOT_DEVICE.value, non_retryable=True)


def check_software_raid(step: StepInput) -> None:
    """Raise when spec.raid.softwareRAIDVolumes cannot be built on the inspected disks."""
    raid = step.spec.raid
    volumes = raid.software_raid_volumes if raid else None
    if not volumes:
        return
    problem = software_raid_problem(volumes, step.hardware.storage if step.hardware else [])
    if problem and patches.patched(SOFTWARE_RAID_PATCH):
        raise ApplicationError(
            problem + " (no disk was touched)", type=ErrorName.RAID_CONFIG.value, non_retryable=True
        )


async def check_network_data(step: StepInput) -> None:
    """An activity (networkData is a Secret: only activities read it) checks its links' MACs."""
    nics = step.hardware.nics if step.hardware else []
    macs = [n.mac for n in nics if n.mac]
    if step.spec.network_data is None or not macs or not patches.patched(NETWORK_DATA_PRECHECK_PATCH):
        return
    await workflow.execute_activity(
        NETWORK_DATA_CHECK,
        NetworkDataCheck(host=step.ref, network_data=step.spec.network_data, macs=macs),
        start_to_close_timeout=timedelta(minutes=1),
        retry_policy=LOCAL_RETRY,
        summary="networkData's NICs are this host's",
    )
