"""Claims and machine sets: choose hosts by labels and hardware, keep N alike hosts deployed.

Label selectors have Kubernetes semantics (matchLabels + matchExpressions with In, NotIn,
Exists, DoesNotExist), the same shape as CAPI/metal3's hostSelector. Hardware needs are
checked against the inspected HardwareDetails. Everything here is pure, so workflows use it.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field, model_validator

from metalflow.api.kube_names import METALFLOW_API_VERSION
from metalflow.api.models import (
    ConsumerRef,
    HardwareDetails,
    HostRef,
    ImageSpec,
    JoinSpec,
    Model,
    SecretRef,
)


class Operator(StrEnum):
    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"


class Requirement(Model):
    key: str
    operator: Operator
    values: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _values(self) -> Requirement:
        needs_values = self.operator in (Operator.IN, Operator.NOT_IN)
        if needs_values and not self.values:
            raise ValueError(f"matchExpressions[{self.key}]: operator {self.operator.value} needs values")
        if not needs_values and self.values:
            raise ValueError(f"matchExpressions[{self.key}]: operator {self.operator.value} takes no values")
        return self


class LabelSelector(Model):
    match_labels: dict[str, str] = Field(default_factory=dict)
    match_expressions: list[Requirement] = Field(default_factory=list)

    def matches(self, labels: dict[str, str]) -> bool:
        if any(labels.get(k) != v for k, v in self.match_labels.items()):
            return False
        for req in self.match_expressions:
            present = req.key in labels
            ok = {
                Operator.IN: present and labels.get(req.key) in req.values,
                Operator.NOT_IN: not present or labels.get(req.key) not in req.values,
                Operator.EXISTS: present,
                Operator.DOES_NOT_EXIST: not present,
            }[req.operator]
            if not ok:
                return False
        return True

    def describe(self) -> str:
        parts = [f"{k}={v}" for k, v in self.match_labels.items()]
        parts += [
            f"{r.key} {r.operator.value} {r.values}" if r.values else f"{r.key} {r.operator.value}"
            for r in self.match_expressions
        ]
        return ", ".join(parts) or "everything"


class HardwareNeeds(Model):
    min_cpus: int = Field(default=0, ge=0)
    min_ram_mebibytes: int = Field(default=0, ge=0)
    min_disk_gigabytes: int = Field(default=0, ge=0)
    min_nics: int = Field(default=0, ge=0)
    rotational: bool | None = None
    vendor: str | None = None
    model: str | None = None

    def misfit(self, hw: HardwareDetails | None) -> str | None:
        """Why `hw` does not fit (None when it does)."""
        if hw is None:
            return "not inspected"
        disks = [s for s in hw.storage if self.rotational is None or s.rotational == self.rotational]
        biggest = max((s.size_bytes for s in disks), default=0)
        checks = [
            (self.rotational is not None and not disks, "no disk of the wanted rotational kind"),
            (hw.cpu.count < self.min_cpus, f"{hw.cpu.count} CPUs < {self.min_cpus}"),
            (
                hw.ram_mebibytes < self.min_ram_mebibytes,
                f"{hw.ram_mebibytes} MiB RAM < {self.min_ram_mebibytes}",
            ),
            (
                biggest < self.min_disk_gigabytes << 30,
                f"largest fitting disk {biggest >> 30} GiB < {self.min_disk_gigabytes}",
            ),
            (len(hw.nics) < self.min_nics, f"{len(hw.nics)} NICs < {self.min_nics}"),
            (
                self.vendor is not None and self.vendor.lower() not in hw.system_vendor.manufacturer.lower(),
                f"vendor {hw.system_vendor.manufacturer!r}",
            ),
            (
                self.model is not None and self.model.lower() not in hw.system_vendor.product_name.lower(),
                f"model {hw.system_vendor.product_name!r}",
            ),
        ]
        return next((why for bad, why in checks if bad), None)


class ClaimSpec(Model):
    """Give me an available host like this, deploy this on it (and join this cluster)."""

    selector: LabelSelector = Field(default_factory=LabelSelector)
    hardware: HardwareNeeds = Field(default_factory=HardwareNeeds)
    image: ImageSpec
    user_data: SecretRef | None = None
    network_data: SecretRef | None = None
    join: JoinSpec | None = None


class Claim(Model):
    id: str = Field(min_length=1, max_length=200)
    namespace: str = "default"
    spec: ClaimSpec
    owner: str = Field(default="", description="What holds the claim, e.g. machineset/default/workers")
    kind: str = Field(
        default="Claim", description="The consumerRef kind put on the host: Claim, or a HostClaim object"
    )

    def consumer_ref(self) -> ConsumerRef:
        """The chosen host's consumerRef; its name is the claim id, which the pool checks."""
        return ConsumerRef(
            api_version=METALFLOW_API_VERSION, kind=self.kind, name=self.id, namespace=self.namespace
        )


class ClaimPhase(StrEnum):
    PENDING = "Pending"
    GRANTED = "Granted"
    RELEASED = "Released"


class ClaimStatus(Model):
    id: str
    phase: ClaimPhase
    host: HostRef | None = None
    reason: str = ""


class Candidate(Model):
    """What the allocator knows of one host when it chooses."""

    ref: HostRef
    labels: dict[str, str] = Field(default_factory=dict)
    hardware: HardwareDetails | None = None
    state: str = ""
    usable: bool = Field(description="available, OK, not paused/detached, not consumed by another")
    consumer: str = ""


def size_key(c: Candidate) -> tuple[int, int, int, str]:
    """Smallest host that fits first: fewest CPUs, then least RAM, then smallest disk, then name."""
    hw = c.hardware or HardwareDetails()
    return (hw.cpu.count, hw.ram_mebibytes, max((s.size_bytes for s in hw.storage), default=0), c.ref.host_id)


def choose(claim: Claim, candidates: list[Candidate], taken: set[str]) -> tuple[Candidate | None, str]:
    """The deterministic choice for one claim, or why there is none."""
    reasons: dict[str, int] = {}
    fits = []
    for c in candidates:
        if c.ref.namespace != claim.namespace:
            continue
        why = None
        if c.ref.host_id in taken or (c.consumer and c.consumer != claim.id):
            why = "already consumed"
        elif not c.usable:
            why = f"not usable ({c.state})"
        elif not claim.spec.selector.matches(c.labels):
            why = "labels do not match"
        else:
            why = claim.spec.hardware.misfit(c.hardware)
        if why is None:
            fits.append(c)
        else:
            reasons[why] = reasons.get(why, 0) + 1
    if fits:
        return min(fits, key=size_key), ""
    seen = sum(reasons.values())
    detail = "; ".join(f"{n}: {why}" for why, n in sorted(reasons.items(), key=lambda kv: -kv[1])[:4])
    return None, (
        f"no available host matches selector [{claim.spec.selector.describe()}] and the hardware needs "
        f"(checked {seen} hosts{': ' + detail if detail else ''})"
    )


class MachineSetSpec(Model):
    replicas: int = Field(ge=0)
    template: ClaimSpec
    max_unavailable: int = Field(default=1, ge=1)


class MachineSetStatus(Model):
    replicas: int = 0
    ready: int = 0
    hosts: list[HostRef] = Field(default_factory=list)
    pending: list[ClaimStatus] = Field(default_factory=list)
    replaced: int = 0
    image_url: str = ""
