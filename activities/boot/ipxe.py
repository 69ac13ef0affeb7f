"""The per-host iPXE script: kernel and ramdisk URLs plus what the agent needs to find Temporal.

Kernel arguments carry addresses, names and the task queue. The one secret, a PXE boot's agent
token, is not in the file: a placeholder is, which the boot server fills in for the first fetch
only (activities/boot/agent_tokens.py). A failed kernel or ramdisk download is retried from the
script's own label, not by fetching the script again (that would be a second fetch).
"""

from __future__ import annotations

from activities.boot.agent_tokens import PLACEHOLDER
from activities.boot.render import render
from metalflow.api.boot import Architecture, BootPurpose, architecture
from metalflow.api.models import HostRef
from metalflow.runtime.settings import Settings

# The commands the script may use (iPXE's documented command set, the subset we emit).
IPXE_COMMANDS = frozenset(
    {"kernel", "initrd", "boot", "echo", "sleep", "chain", "goto", "imgfree", "dhcp", "exit"}
)


# The boot server's HTTPS CA, where network-booted ramdisks fetch it (prepare_boot copies it there).
BOOT_CA = "boot-ca.pem"

# iPXE's own names for what a host enrolled without a MAC is known by at boot (issue 21): the
# NIC it is booting from (netX: the last opened one), and its SMBIOS UUID.
IPXE_BOOT_MAC = "${netX/mac:hexhyp}"
IPXE_UUID = "${uuid}"


def script(
    ref: HostRef,
    mac: str,
    purpose: BootPurpose,
    settings: Settings,
    arch: Architecture | None = None,
    system_uuid: str = "",
    token: bool = True,
) -> str:
    """The per-host script; with `system_uuid` (and `mac` empty) the one a MAC-less host gets by its
    UUID: BOOTIF names the NIC iPXE booted from, so inspection learns that MAC. `token`: the boot's
    agent token goes out with the script (False: a virtual-media host's, whose token is on its ISO)."""
    arch = arch or architecture(None)
    base_url = settings.boot_server_url.rstrip("/")
    if system_uuid and not mac:
        bootif, mac = IPXE_BOOT_MAC, f"uuid {system_uuid}"
    else:
        bootif = mac.replace(":", "-")
    return render(
        "host.ipxe.j2",
        purpose=purpose.value,
        host_id=ref.host_id,
        mac=mac,
        arch=arch.name,
        base_url=base_url,
        kernel=settings.kernel_name + arch.suffix,
        initrd=settings.initrd_name + arch.suffix,
        kernel_args=settings.kernel_args,
        temporal=settings.agent_temporal_address or settings.temporal_address,
        namespace=settings.temporal_namespace,
        tls=settings.agent_temporal_tls,
        tls_ca=settings.agent_temporal_tls_ca_url if settings.agent_temporal_tls else "",
        tls_server_name=settings.agent_temporal_tls_server_name if settings.agent_temporal_tls else "",
        task_queue=ref.agent_task_queue,
        bootif=bootif,
        token=PLACEHOLDER if token else "",
        agent_boot_server=settings.agent_boot_server,
        boot_ca=f"{base_url}/{BOOT_CA}" if settings.boot_server_ca else "",
    )


def check_syntax(text: str) -> list[str]:
    """Structural check of a script (no iPXE parser exists on Debian): problems found, if any."""
    lines = text.splitlines()
    problems = [] if lines and lines[0] == "#!ipxe" else ["the first line must be #!ipxe"]
    labels = {ln[1:].strip() for ln in lines if ln.startswith(":")}
    for n, line in enumerate(lines[1:], start=2):
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", ":")):
            continue
        for part in stripped.split("||"):
            words = part.split()
            if not words:
                problems.append(f"line {n}: empty command around ||")
                continue
            if words[0] not in IPXE_COMMANDS:
                problems.append(f"line {n}: unknown command {words[0]!r}")
            if words[0] == "goto" and (len(words) != 2 or words[1] not in labels):
                problems.append(f"line {n}: goto to an undefined label")
    return problems
