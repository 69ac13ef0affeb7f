"""What a finished step leaves in a host's status (pure: the HostWorkflow calls it once per
step result, in its workflow task)."""

from __future__ import annotations

from metalflow.api.host import StepResult
from metalflow.api.models import CredentialsStatus, HostSpec, HostStatus
from metalflow.api.models import ProvisioningState as S


def apply_result(status: HostStatus, spec: HostSpec, state: S, result: StepResult) -> None:
    status.powered_on = result.powered_on
    if state == S.REGISTERING:
        creds = CredentialsStatus(
            credentials=spec.bmc.credentials,
            credentials_version=result.credentials_version,
        )
        status.good_credentials = creds
        status.tried_credentials = creds
        status.bmc_driver = result.bmc_driver
        if result.system_uuid:
            status.system_uuid = result.system_uuid
    elif state == S.INSPECTING and result.hardware is not None:
        status.hardware = result.hardware
    elif state == S.PROVISIONING:
        status.provisioning.image = result.image
        status.provisioning.image_digest = result.image_digest
        status.provisioning.root_device_hints = spec.root_device_hints
        status.provisioning.boot_mode = spec.boot_mode
    elif state == S.DEPROVISIONING:
        status.node = None  # drained and deleted before the disk was cleaned
        status.provisioning.image = None
        status.provisioning.image_digest = ""
        status.provisioning.root_device_hints = None
    if result.erasure:  # cleaning with spec.erase, preparing or deprovisioning
        status.erasure = result.erasure
    if result.firmware_settings is not None:  # servicing: what the BIOS has now
        status.firmware_settings = result.firmware_settings
