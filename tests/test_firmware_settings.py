"""HostFirmwareSettings applied while preparing, through the real Temporal dev server and
sushy-emulator (its BIOS given a real BMC's pending-until-reboot semantics and registry checks
by testbed/sushy_bios.py): checked against the BMC's attribute registry before anything is
written, only differing settings written, applied by a boot, reported in status."""

from __future__ import annotations

from temporalio.client import Client
from tests_support import child_steps, record, wait_status
from tests_support import emulator_bios as bios
from tests_support import emulator_bios_writes as bios_writes

from metalflow.api.host import APPLY_FIRMWARE_SETTINGS, CLEAN_HOST
from metalflow.api.models import ErrorType, Host
from metalflow.api.models import ProvisioningState as S
from metalflow.client import operations
from metalflow.runtime.settings import Settings
from testbed.datacenter import Datacenter


async def test_settings_are_checked_against_the_bmc_registry_before_anything_is_written(
    client: Client, settings: Settings, dc: Datacenter
) -> None:
    before = bios(dc, 0)
    host = dc.host(
        0,
        firmware_settings={
            "ProcTurboMode": "Maybe",
            "NumCores": "12",
            "ProcTurbo": "Disabled",
            "L2Cache": "x" * 17,
        },
    )
    await operations.apply(client, host, settings)
    st = await wait_status(client, host.ref, lambda s: s.error_type is not None)
    assert st.error_type == ErrorType.PREPARATION and st.provisioning.state == S.PREPARING
    message = st.error_message
    assert "(InvalidFirmwareSettings)" in message and "4 invalid settings" in message, message
    assert "ProcTurboMode: 'Maybe' is not allowed; use one of Enabled, Disabled" in message
    assert "NumCores: read-only on this BMC" in message  # the registry's ReadOnly
    assert "ProcTurbo: not a setting this BMC has (did you mean ProcTurboMode?)" in message
    assert "L2Cache: 17 characters, more than the 16 allowed" in message
    # nothing written, and no disk cleaned: the check runs before CleanHost
    assert bios_writes(dc, 0) == [] and bios(dc, 0) == before and bios(dc, 0, pending=True) == {}
    steps = await child_steps(client, host.ref.workflow_id)
    assert APPLY_FIRMWARE_SETTINGS in steps and CLEAN_HOST not in steps, steps


async def test_settings_are_applied_at_preparing_by_a_boot_and_reported(
    client: Client, settings: Settings, dc: Datacenter
) -> None:
    wanted = {"ProcTurboMode": "Disabled", "QuietBoot": "false", "SerialNumber": "MF-0001"}
    changed: Host = dc.host(0, firmware_settings=wanted)
    already = dc.host(1, firmware_settings={"ProcTurboMode": "Enabled"})  # the BIOS's default: no write
    assert bios(dc, 0)["ProcTurboMode"] == "Enabled"
    for host in (changed, already):
        await operations.apply(client, host, settings)
    done = [
        await wait_status(client, h.ref, lambda s: s.provisioning.state == S.PROVISIONED or s.error_type)
        for h in (changed, already)
    ]
    for st in done:
        assert st.error_type is None, st.error_message
    # one write, of the three settings, typed as the registry says (QuietBoot a JSON boolean)
    assert bios_writes(dc, 0) == [
        {"ProcTurboMode": "Disabled", "QuietBoot": False, "SerialNumber": "MF-0001"}
    ]
    assert bios_writes(dc, 1) == []
    current = bios(dc, 0)
    assert {k: str(current[k]).lower() if k == "QuietBoot" else current[k] for k in wanted} == wanted
    assert bios(dc, 0, pending=True) == {}, "still pending"
    reported = done[0].firmware_settings
    assert reported is not None and reported.schema_ is not None
    assert {k: reported.settings[k] for k in wanted} == wanted
    assert reported.schema_.name.startswith("schema-") and reported.schema_.namespace == changed.ref.namespace
    assert "SysPassword" not in reported.settings  # a password attribute's value is never read out
    assert (
        done[1].firmware_settings is not None
        and done[1].firmware_settings.settings["ProcTurboMode"] == "Enabled"
    )
    # the settings step ran before cleaning, for both
    for host in (changed, already):
        steps = await child_steps(client, host.ref.workflow_id)
        assert steps.index(APPLY_FIRMWARE_SETTINGS) < steps.index(CLEAN_HOST), steps
    await record(client, changed.ref.workflow_id, "firmware-settings")
