"""The QEMU test bed: one VM as the bare-metal server ("metal3-dev-env on one laptop").

A network namespace holds a bridge, dnsmasq and libvirtd (so the VM's tap is created inside
it). That libvirtd also has a private mount namespace in which /etc/libvirt, /run/libvirt,
/var/lib/libvirt, /var/log/libvirt and /var/cache/libvirt are directories of this test bed: its
configuration, domains, sockets and logs are its own, several test beds run side by side, and
nothing of this machine's libvirt is read or left behind. A forwarder makes the Temporal dev
server and the boot server on this host's loopback reachable at the namespace's own address.
Nothing is sent outside loopback and the namespace.
The VM boots the self-contained deploy ramdisk (testbed/ramdisk.py: Debian's kernel and modules,
the agent and its Python inside) over PXE; nothing is mounted from this host. The older busybox
ramdisk whose agent's Python and code come read-only from this host over virtio-9p survives as a
developer loop only (METALFLOW_E2E_RAMDISK=9p, refused under CI: never what `make e2e` boots).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape

from metalflow.api.boot import ARCHITECTURES
from testbed.processes import Process, wait_for

# libvirt's system-mode directories, each bound to one of the test bed's inside libvirtd's namespace
LIBVIRT_DIRS = {
    "etc": "/etc/libvirt",
    "run": "/run/libvirt",
    "lib": "/var/lib/libvirt",
    "log": "/var/log/libvirt",
    "cache": "/var/cache/libvirt",
}
LIBVIRT_ROOT = Path("/run/metalflow-libvirt")  # short: a unix socket path holds 107 bytes at most
# QEMU as root without a security driver or cgroups (no AppArmor/SELinux/systemd here; cgroups are
# machine-wide, so two test beds' "qemu-1-vm" would collide); console and logs go to files.
QEMU_CONF = """# the metalflow test bed's own libvirt (testbed/vm.py)
user = "root"
group = "root"
security_driver = "none"
dynamic_ownership = 0
remember_owner = 0
stdio_handler = "file"
cgroup_controllers = [ ]
"""
NET_ADDRESS = "192.0.2.1"  # TEST-NET-1, only ever inside the namespace this test bed creates
NET_PREFIX = 24
NET6_ADDRESS = "fd00:6d66::1"
REPO = Path(__file__).resolve().parents[1]  # the checkout: testbed/ is never installed
RAMDISK_BUILD = REPO / "ramdisk" / "build.sh"
DEV_LOOP = "9p"  # METALFLOW_E2E_RAMDISK value for the 9p developer loop
# quiet: the kernel's own messages at 115200 baud on two consoles cost boot time; the init's and
# the agent's lines still go to both (ramdisk/init: say, to_consoles)
SELF_CONTAINED_KERNEL_ARGS = "console=tty0 console=ttyS0,115200n8 quiet"
# Debian's ovmf: the 2 MiB build without secure boot runs on the i440fx machine ("pc") SeaBIOS
# uses (only the secure-boot builds need q35 with SMM). These are the paths sushy-emulator's
# libvirt driver writes when it switches a domain to UEFI (testbed/sushy.py), so a domain keeps
# the same firmware whichever of the two defined it.
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS.fd")
SEABIOS = Path("/usr/share/seabios/bios-256k.bin")
FIRMWARES = ("bios", "uefi")
# The TFTP root dnsmasq serves: Debian's ipxe package, holding the binaries dnsmasq.conf.j2 names
# for x86_64 (BIOS: undionly.kpxe; UEFI: snponly.efi, also fetched over HTTP by UEFI HTTP boot).
IPXE_DIR = Path("/usr/lib/ipxe")
IPXE_FILES = (ARCHITECTURES["x86_64"].bios_ipxe or "undionly.kpxe", ARCHITECTURES["x86_64"].uefi_ipxe)


def dev_loop_ramdisk() -> bool:
    """The 9p developer loop asked for (refused under CI: `make e2e` boots the real ramdisk)."""
    asked = os.environ.get("METALFLOW_E2E_RAMDISK") == DEV_LOOP
    if asked and os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        raise VMTestBedUnavailable("METALFLOW_E2E_RAMDISK=9p is a developer loop; CI boots the real ramdisk")
    return asked


def ramdisk_boot_budget() -> int:
    """Seconds from power-on to the agent polling that the e2e allows (schedule-to-start): two TCG
    VMs on this loaded machine took 195-211 s with either ramdisk; three (two on OVMF, whose
    snponly.efi fetches the 66 MiB initrd through the firmware's NIC driver) at load 17-20 took
    ~2.5 min from power-on to the kernel and over 7 min to polling."""
    return 900


class VMTestBedUnavailable(RuntimeError):
    """This machine cannot run the VM test bed; the message says what is missing."""


def missing_requirements(kernel_root: Path | None) -> list[str]:
    """What this machine lacks for the test bed (empty when it can run it); KERNEL_ROOT is
    testbed.kernel.cached_kernel()'s answer."""
    missing = []
    if os.geteuid() != 0:
        missing.append("root (network namespaces, libvirtd)")
    dev_loop = dev_loop_ramdisk()
    if dev_loop and not Path("/lib").is_symlink():
        missing.append("a merged-/usr host (the 9p ramdisk mounts /usr and links /lib to it)")
    if not Path("/dev/net/tun").exists():
        missing.append("/dev/net/tun")
    tools = ["libvirtd", "virsh", "qemu-system-x86_64", "dnsmasq", "ip", "syslinux", "mcopy", "sfdisk"]
    tools += ["grub-mkstandalone"]  # the marker image's BOOTX64.EFI
    for path in (OVMF_CODE, OVMF_VARS, *(IPXE_DIR / f for f in IPXE_FILES)):
        if not path.exists():
            missing.append(f"{path} (scripts/e2e-deps.sh installs ovmf and ipxe)")
    tools += ["busybox"] if dev_loop else ["mmdebstrap", "zstd", "lz4", "cpio"]  # the ramdisk's build
    for tool in tools:
        if not (shutil.which(tool) or Path("/usr/sbin", tool).exists()):
            missing.append(tool)
    if kernel_root is None or not list(kernel_root.glob("boot/vmlinuz-*")):
        missing.append("a Debian kernel in the build cache (scripts/e2e-deps.sh: python -m testbed.kernel)")
    try:
        import libvirt  # noqa: F401
    except ImportError:
        missing.append("libvirt-python (pip install -e '.[e2e]')")
    return missing


def kvm_usable() -> bool:
    """TCG unless METALFLOW_E2E_ACCEL=kvm: on these machines /dev/kvm opens but nested KVM
    stops the guest in its firmware with an emulation failure, while TCG boots it reliably."""
    return os.environ.get("METALFLOW_E2E_ACCEL") == "kvm" and os.access("/dev/kvm", os.R_OK | os.W_OK)


def _run(*argv: str, ns: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    cmd = ["ip", "netns", "exec", ns, *argv] if ns else list(argv)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {done.stderr.strip()}")
    return done


@dataclass
class Namespace:
    """A network namespace with one bridge carrying the boot network."""

    name: str
    bridge: str = "mfbr0"

    def create(self) -> None:
        try:
            _run("ip", "netns", "add", self.name)
        except (RuntimeError, FileNotFoundError) as err:
            raise VMTestBedUnavailable(f"cannot create a network namespace: {err}") from None
        _run("ip", "link", "set", "lo", "up", ns=self.name)
        _run("ip", "link", "add", self.bridge, "type", "bridge", ns=self.name)
        _run("ip", "addr", "add", f"{NET_ADDRESS}/{NET_PREFIX}", "dev", self.bridge, ns=self.name)
        _run("ip", "addr", "add", f"{NET6_ADDRESS}/64", "dev", self.bridge, "nodad", ns=self.name)
        _run("ip", "link", "set", self.bridge, "up", ns=self.name)

    def delete(self) -> None:
        _run("ip", "netns", "del", self.name, check=False)

    def exec_argv(self, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]


def virsh(uri: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return _run("virsh", "-q", "-c", uri, *args, check=check)


def libvirt_root(ns: Namespace) -> Path:
    return LIBVIRT_ROOT / ns.name


def libvirt_uri(ns: Namespace) -> str:
    """The test bed's libvirtd, reached through its own socket (not this machine's)."""
    return f"qemu:///system?socket={libvirt_root(ns) / 'run' / 'libvirt-sock'}"


def start_libvirtd(ns: Namespace, workdir: Path) -> Process:
    """libvirtd inside the network namespace, so QEMU and its tap devices are there too, and in a
    private mount namespace over the test bed's own libvirt directories (LIBVIRT_DIRS)."""
    root = libvirt_root(ns)
    binds = []
    for sub, target in LIBVIRT_DIRS.items():
        (root / sub).mkdir(parents=True, exist_ok=True)
        binds.append(f"mkdir -p {target} && mount --bind {root / sub} {target}")
    (root / "etc" / "qemu.conf").write_text(QEMU_CONF)
    script = " && ".join([*binds, "exec libvirtd --pid-file /run/libvirt/libvirtd.pid"])
    argv = ns.exec_argv("unshare", "--mount", "--propagation", "private", "sh", "-c", script)
    proc = Process("libvirtd", argv, workdir / "libvirtd.log")
    uri = libvirt_uri(ns)

    def up() -> bool:
        proc.check_alive()
        return _run("virsh", "-c", uri, "version", check=False).returncode == 0

    try:
        wait_for(up, 60, "libvirtd", interval=0.3)
    except BaseException:
        proc.stop()
        raise
    return proc


@dataclass(frozen=True)
class Share:
    """A host directory the VM mounts read-only over virtio-9p at the same path."""

    tag: str
    path: Path


def agent_shares() -> list[Share]:
    """What the ramdisk needs to run `metalflow agent`: /usr (libraries, sgdisk, wipefs), this
    interpreter's installation, and the checkout with its venv."""
    cands = {Path("/usr"), Path(sys.base_prefix).resolve(), REPO, Path(sys.prefix).resolve()}
    chosen = sorted(p for p in cands if not any(c != p and c in p.parents for c in cands))
    return [Share(f"mf{i}", p) for i, p in enumerate(chosen)]


def agent_kernel_args(shares: list[Share]) -> str:
    agent = Path(sys.prefix) / "bin" / "metalflow"
    mounts = ",".join(f"{s.tag}:{s.path}" for s in shares)
    return f"console=ttyS0,115200n8 metalflow.9p={mounts} metalflow.agent={agent}"


DISK_BUSES = ("virtio", "sata", "nvme")


@dataclass(frozen=True)
class ExtraDisk:
    """One more disk of the VM, on the bus a server's would sit on: virtio-blk, SATA behind an
    AHCI controller, or an NVMe controller (QEMU's `nvme` device, given on QEMU's command line:
    this libvirt (9.0) has no NVMe disk bus)."""

    bus: str
    path: Path
    size_bytes: int
    serial: str
    rotational: bool = False  # SATA only: libvirt's rotation_rate makes Linux see a spinning disk

    def __post_init__(self) -> None:
        if self.bus not in DISK_BUSES:
            raise ValueError(f"ExtraDisk.bus {self.bus!r}: use one of {', '.join(DISK_BUSES)}")


def _extra_disks_xml(disks: list[ExtraDisk]) -> tuple[str, str]:
    """(<devices> entries, <qemu:commandline>) for the extra disks."""
    devices, args = [], []
    names = {"virtio": iter("bcdefgh"), "sata": iter("abcdefgh")}
    for i, d in enumerate(disks):
        src = escape(str(d.path))
        if d.bus == "nvme":
            args += [
                "-drive",
                f"file={d.path},if=none,id=nvme{i},format=raw",
                "-device",
                # a slot libvirt does not hand out (it fills pci.0 from slot 2 up): QEMU places
                # command-line devices before libvirt's, and an unplaced one takes slot 2
                # bootindex: the firmware tries it after libvirt's boot devices (bootindex 1, 2...), as a
                # server's firmware tries its disks in turn; OVMF boots only what bootorder lists
                f"nvme,drive=nvme{i},serial={d.serial},bus=pci.0,addr={0x1F - i:#x},bootindex={8 + i}",
            ]
            continue
        target = f"vd{next(names['virtio'])}" if d.bus == "virtio" else f"sd{next(names['sata'])}"
        rate = " rotation_rate='7200'" if d.rotational else (" rotation_rate='1'" if d.bus == "sata" else "")
        devices.append(
            f"<disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='{src}'/>"
            f"<target dev='{target}' bus='{d.bus}'{rate}/><serial>{escape(d.serial)}</serial></disk>"
        )
    qemu = "".join(f"<qemu:arg value='{escape(a)}'/>" for a in args)
    return "\n    ".join(devices), (f"<qemu:commandline>{qemu}</qemu:commandline>" if args else "")


@dataclass
class Domain:
    """The VM playing the bare-metal server."""

    name: str
    mac: str
    disk: Path
    disk_bytes: int
    console_log: Path
    shares: list[Share]
    bridge: str
    libvirt_uri: str
    memory_mib: int = 1024  # the self-contained ramdisk lives in RAM (about 280 MiB unpacked)
    uuid: str = field(default_factory=lambda: str(uuid.uuid4()))
    firmware: str = "bios"  # "bios" (SeaBIOS) | "uefi" (OVMF, NVRAM of its own)
    nic_rom: bool = True  # False: the firmware's own NIC driver (OVMF's VirtioNetDxe), not iPXE's ROM
    extra_disks: list[ExtraDisk] = field(default_factory=list)  # after the first (virtio) disk
    disk_serial: str = ""  # the first disk's serial (virtio-blk's /sys/block/vda/serial)
    extra_macs: list[str] = field(default_factory=list)  # more NICs on the bridge (no boot ROM)

    def __post_init__(self) -> None:
        if self.firmware not in FIRMWARES:
            raise ValueError(f"Domain.firmware {self.firmware!r}: use one of {', '.join(FIRMWARES)}")

    @property
    def nvram(self) -> Path:
        """The domain's UEFI variables, in the test bed's /var/lib/libvirt as libvirtd sees it
        (libvirt copies OVMF_VARS there on first start; `undefine --nvram` deletes it)."""
        return Path(LIBVIRT_DIRS["lib"]) / "qemu" / "nvram" / f"{self.name}_VARS.fd"

    def _os_xml(self) -> str:
        machine = "<type arch='x86_64' machine='pc'>hvm</type>"
        if self.firmware == "uefi":
            return (
                f"<os>{machine}<loader readonly='yes' secure='no' type='pflash'>{OVMF_CODE}</loader>"
                f"<nvram template='{OVMF_VARS}'>{self.nvram}</nvram><boot dev='hd'/></os>"
            )
        return f"<os>{machine}<boot dev='hd'/></os>"

    def xml(self, kvm: bool) -> str:
        fs = "".join(
            f"<filesystem type='mount' accessmode='passthrough'><source dir='{escape(str(s.path))}'/>"
            f"<target dir='{s.tag}'/><readonly/></filesystem>"
            for s in self.shares
        )
        extra, qemu_args = _extra_disks_xml(self.extra_disks)
        serial = f"<serial>{escape(self.disk_serial)}</serial>" if self.disk_serial else ""
        nics = "".join(
            f"<interface type='bridge'><mac address='{mac}'/><source bridge='{self.bridge}'/>"
            "<model type='virtio'/><rom enabled='no'/></interface>"
            for mac in self.extra_macs
        )
        return f"""<domain type='{"kvm" if kvm else "qemu"}' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
  <name>{self.name}</name>
  <uuid>{self.uuid}</uuid>
  <memory unit='MiB'>{self.memory_mib}</memory>
  <vcpu>1</vcpu>
  {self._os_xml()}
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff><on_reboot>restart</on_reboot><on_crash>destroy</on_crash>
  <devices>
    <emulator>{shutil.which("qemu-system-x86_64")}</emulator>
    <disk type='file' device='disk'><driver name='qemu' type='raw'/>
      <source file='{escape(str(self.disk))}'/><target dev='vda' bus='virtio'/>{serial}</disk>
    {extra}
    <interface type='bridge'><mac address='{self.mac}'/><source bridge='{self.bridge}'/>
      <model type='virtio'/>{"" if self.nic_rom else "<rom enabled='no'/>"}</interface>
    {nics}
    {fs}
    <serial type='file'><source path='{escape(str(self.console_log))}' append='on'/>
      <target port='0'/></serial>
    <memballoon model='none'/>
  </devices>
  {qemu_args}
</domain>
"""

    def define(self, kvm: bool) -> None:
        self.disk.parent.mkdir(parents=True, exist_ok=True)
        with self.disk.open("wb") as f:
            os.truncate(f.fileno(), self.disk_bytes)
        for disk in self.extra_disks:
            with disk.path.open("wb") as f:
                os.truncate(f.fileno(), disk.size_bytes)
        self.console_log.parent.mkdir(parents=True, exist_ok=True)
        self.console_log.touch()
        with tempfile.NamedTemporaryFile("w", suffix=".xml") as f:
            f.write(self.xml(kvm))
            f.flush()
            self.virsh("define", f.name)

    def virsh(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """virsh against the test bed's libvirtd, which holds this domain."""
        return virsh(self.libvirt_uri, *args, check=check)

    def undefine(self) -> None:
        self.virsh("destroy", self.name, check=False)
        self.virsh("undefine", "--nvram", self.name, check=False)

    def console(self) -> str:
        return self.console_log.read_text(errors="replace") if self.console_log.exists() else ""


def build_deploy_ramdisk(kernel_root: Path, boot_dir: Path) -> Path | None:
    """vmlinuz + initrd.img (+ deploy.iso) into the boot server's directory: the self-contained
    ramdisk (built or taken from the cache; a directory holding its manifest is returned), or the
    9p developer loop's."""
    if not dev_loop_ramdisk():
        from testbed.ramdisk import build_ramdisk, install_into

        ramdisk = build_ramdisk(kernel_root)
        install_into(ramdisk, boot_dir)
        # its manifest (for the size line) kept with the test bed: the cache keeps the newest few
        # builds only, and another checkout's build may prune this entry while the test runs
        kept = boot_dir.parent / "ramdisk" / ramdisk.name
        kept.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ramdisk / "manifest.json", kept / "manifest.json")
        return kept
    subprocess.run(
        ["bash", str(RAMDISK_BUILD), "--vm", str(boot_dir), str(kernel_root)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return None


class ConsoleClock:
    """When each text first appeared on each domain's serial console (wall-clock seconds): a
    thread reads the console logs while the test runs."""

    def __init__(self, domains: list[Domain], texts: list[str]) -> None:
        self.domains, self.texts = domains, texts
        self.seen: dict[tuple[str, str], float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            self._scan()

    def _scan(self) -> None:
        for dom in self.domains:
            console = dom.console()
            for text in self.texts:
                if (dom.name, text) not in self.seen and text in console:
                    self.seen[(dom.name, text)] = time.time()

    def __enter__(self) -> ConsoleClock:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._scan()  # a text that appeared since the thread's last look (the test just waited for it)


def _alive_and(proc: Process, condition: Callable[[], bool]) -> bool:
    proc.check_alive()
    return condition()


def mac_for(seed: str) -> str:
    h = hashlib.sha256(seed.encode()).digest()
    return "52:54:00:" + ":".join(f"{b:02x}" for b in h[:3])


@dataclass
class VMTestBed:
    """Namespace + libvirtd + dnsmasq + forwarder + boot server + sushy-emulator (libvirt).

    `settings` must already point the boot server URL and the agent's Temporal address at
    NET_ADDRESS (ports of the loopback servers, which the forwarder exposes there)."""

    workdir: Path
    kernel_root: Path
    boot_port: int
    temporal_port: int
    password: str = field(default_factory=lambda: uuid.uuid4().hex, repr=False)
    ns: Namespace = field(default_factory=lambda: Namespace(f"mf-e2e-{uuid.uuid4().hex[:6]}"))
    kvm: bool = field(default_factory=kvm_usable)
    domains: list[Domain] = field(default_factory=list)
    procs: list[Process] = field(default_factory=list)
    sushy_port: int = 0
    ramdisk: Path | None = None  # the self-contained ramdisk: its manifest's directory (None: 9p loop)

    @property
    def accel(self) -> str:
        return "KVM" if self.kvm else "TCG"

    @property
    def boot_dir(self) -> Path:
        return self.workdir / "boot"

    @property
    def dnsmasq_pid_file(self) -> Path:
        return self.workdir / "dnsmasq.pid"

    def start(self, dnsmasq_conf: str) -> None:
        """Everything but the domains; on failure, whatever started is stopped again."""
        from testbed.sushy import start_sushy_libvirt

        try:
            self.ns.create()
            self.procs.append(start_libvirtd(self.ns, self.workdir))
            self.define_image_pool()
            conf = self.workdir / "dnsmasq.conf"
            conf.write_text(dnsmasq_conf)
            dnsmasq = Process(
                "dnsmasq",
                self.ns.exec_argv("dnsmasq", "--keep-in-foreground", "--log-facility=-", "-C", str(conf)),
                self.workdir / "dnsmasq.log",
            )
            self.procs.append(dnsmasq)
            wait_for(lambda: _alive_and(dnsmasq, self.dnsmasq_pid_file.exists), 20, "dnsmasq")
            fwd = Process(
                "nsforward",
                [
                    sys.executable,
                    "-m",
                    "testbed.nsforward",
                    self.ns.name,
                    f"{NET_ADDRESS}:{self.boot_port}=127.0.0.1:{self.boot_port}",
                    f"{NET_ADDRESS}:{self.temporal_port}=127.0.0.1:{self.temporal_port}",
                ],
                self.workdir / "nsforward.log",
            )
            self.procs.append(fwd)
            wait_for(
                lambda: _alive_and(fwd, lambda: "forwarding" in fwd.log_path.read_text()), 20, "forwarder"
            )
            sushy = start_sushy_libvirt(
                self.workdir / "sushy", "admin", self.password, uri=libvirt_uri(self.ns)
            )
            self.procs.append(sushy.process)
            self.sushy_port = sushy.port
        except BaseException:
            self.stop()
            raise

    def define_image_pool(self) -> None:
        """libvirt's `default` directory pool: where sushy-emulator's libvirt driver uploads a
        virtual-media image it fetched before attaching it as the domain's CD-ROM."""
        pool = self.workdir / "pool"
        pool.mkdir(parents=True, exist_ok=True)
        uri = libvirt_uri(self.ns)
        virsh(uri, "pool-define-as", "default", "dir", "--target", str(pool))
        virsh(uri, "pool-start", "default")

    def cdrom_sources(self, dom: Domain) -> list[str]:
        """The images attached to the domain's CD-ROMs (its persistent definition)."""
        xml = ET.fromstring(dom.virsh("dumpxml", "--inactive", dom.name).stdout)
        return [
            (d.find("source").get("file") or "") if d.find("source") is not None else ""  # type: ignore[union-attr]
            for d in xml.findall("devices/disk")
            if d.get("device") == "cdrom"
        ]

    def add_domain(
        self,
        name: str,
        disk_bytes: int = 2 << 30,
        firmware: str = "bios",
        nic_rom: bool = True,
        extra_disks: list[tuple[str, int, bool]] | None = None,
        nics: int = 1,
        memory_mib: int = 1024,
    ) -> Domain:
        """A VM; `extra_disks` are (bus, size, rotational) after its first virtio disk, with serials
        MF<name hash><index> and files beside the first disk."""
        tag = hashlib.sha256(name.encode()).hexdigest()[:6].upper()
        extras = [
            ExtraDisk(bus, self.workdir / "disks" / f"{name}-{i + 1}-{bus}.img", size, f"MF{tag}{i + 1}", rot)
            for i, (bus, size, rot) in enumerate(extra_disks or [])
        ]
        dom = Domain(
            extra_disks=extras,
            disk_serial=f"MF{tag}0",
            memory_mib=memory_mib,
            extra_macs=[mac_for(f"{self.ns.name}/{name}/{i}") for i in range(1, nics)],
            firmware=firmware,
            nic_rom=nic_rom,
            name=name,
            mac=mac_for(f"{self.ns.name}/{name}"),
            disk=self.workdir / "disks" / f"{name}.img",
            disk_bytes=disk_bytes,
            console_log=self.workdir / "console" / f"{name}.log",
            shares=agent_shares() if dev_loop_ramdisk() else [],
            bridge=self.ns.bridge,
            libvirt_uri=libvirt_uri(self.ns),
        )
        self.domains.append(dom)
        dom.define(self.kvm)
        return dom

    def ipmi_address(self, dom: Domain) -> str:
        """Start virtualbmc for `dom` (same credentials as the Redfish BMC); its IPMI address."""
        from testbed.vbmc import start_vbmc

        proc, port = start_vbmc(self.workdir, dom.name, "admin", self.password, libvirt_uri(self.ns))
        self.procs.append(proc)
        wait_for(lambda: _alive_and(proc, lambda: "virtualbmc for" in proc.log_path.read_text()), 30, "vbmc")
        return f"ipmi://127.0.0.1:{port}"

    def forward(self, port: int) -> str:
        """Expose a test's server on 127.0.0.1:PORT to the VMs at NET_ADDRESS:PORT (one more
        forwarder, stopped with the bed); returns that address."""
        fwd = Process(
            f"nsforward-{port}",
            [
                sys.executable,
                "-m",
                "testbed.nsforward",
                self.ns.name,
                f"{NET_ADDRESS}:{port}=127.0.0.1:{port}",
            ],
            self.workdir / f"nsforward-{port}.log",
        )
        self.procs.append(fwd)
        wait_for(lambda: _alive_and(fwd, lambda: "forwarding" in fwd.log_path.read_text()), 20, "forwarder")
        return f"{NET_ADDRESS}:{port}"

    def redfish_address(self, dom: Domain) -> str:
        return f"redfish+http://127.0.0.1:{self.sushy_port}/redfish/v1/Systems/{dom.uuid}"

    def residue(self) -> list[str]:
        """What of this test bed is still on the machine after `stop()` (empty when clean)."""
        left = [f"network namespace {self.ns.name}"] if Path(f"/run/netns/{self.ns.name}").exists() else []
        left += [f"{p.name} (pid {p.pid})" for p in self.procs if p.alive()]
        if libvirt_root(self.ns).exists():
            left.append(f"libvirt directories {libvirt_root(self.ns)}")
        disks = [str(d.disk).encode() for d in self.domains]
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            with contextlib.suppress(OSError):
                args = cmdline.read_bytes().split(b"\0")
                if any(disk in a for disk in disks for a in args):  # this test bed's QEMU, no other's
                    left.append(f"QEMU process {cmdline.parent.name}")
        return left

    def stop(self) -> None:
        """Domains destroyed and undefined, processes stopped by PID, namespace deleted."""
        for dom in self.domains:
            with contextlib.suppress(Exception):
                dom.undefine()
        for proc in reversed(self.procs):
            with contextlib.suppress(Exception):
                proc.stop()
        self.ns.delete()
        shutil.rmtree(libvirt_root(self.ns), ignore_errors=True)
