"""What a joining host says when `kubeadm join` fails there, kept where the join step reads it.

The join happens on the host (cloud-init runs it from the user-data DeployHost wrote); without
word from the host, all the control plane sees of a failed join is a Node that never comes. So
the rendered user-data runs kubeadm through a small script (templates/metalflow-kubeadm-join.py)
that, when kubeadm fails, POSTs its exit status and output to the boot server
(`POST /join-report/<host id>`, worker/join_reports.py) with a token made for this join; the
join step's wait (`kubeadm.wait_node`) fails with kubeadm's own reason.

Files, under the boot directory the control-plane worker and the boot server share (as they
share iPXE scripts and config drives): `join-reports/<host id>/token.sha256` (the expected
token's digest: the token itself is only in the host's user-data Secret) and `report.json`.
`expect()` replaces both for each new join, so a report is always about the current one.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
from pathlib import Path

from pydantic import Field

from metalflow.api.models import Model

REPORT_DIR = "join-reports"
MAX_OUTPUT = 16 << 10  # the tail of kubeadm's output the host sends (and is kept)
# <namespace>.<name> of Kubernetes names
HOST_ID = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
# kubeadm's bootstrap token (id.secret): never kept, whatever the host sends
BOOTSTRAP_TOKEN = re.compile(r"\b[a-z0-9]{6}\.[a-z0-9]{16}\b")


class JoinReport(Model):
    exit_code: int
    output: str = Field(default="", max_length=MAX_OUTPUT)


class UnknownJoin(LookupError):
    """No join of this host is waiting for a report (none prepared, or an old token)."""


class JoinReportStore:
    def __init__(self, boot_dir: Path) -> None:
        self.root = Path(boot_dir) / REPORT_DIR

    def host_dir(self, host_id: str) -> Path:
        if not HOST_ID.match(host_id) or ".." in host_id:
            raise ValueError(f"host id {host_id!r} is not <namespace>.<name>")
        return self.root / host_id

    def expect(self, host_id: str) -> str:
        """A new join of HOST_ID: its report token (for the user-data); earlier reports go."""
        token = secrets.token_urlsafe(32)
        d = self.host_dir(host_id)
        d.mkdir(parents=True, exist_ok=True)
        (d / "report.json").unlink(missing_ok=True)
        _write(d / "token.sha256", hashlib.sha256(token.encode()).hexdigest())
        return token

    def save(self, host_id: str, token: str, report: JoinReport) -> None:
        """Keep REPORT if TOKEN is the current join's; else UnknownJoin."""
        d = self.host_dir(host_id)
        try:
            expected = (d / "token.sha256").read_text().strip()
        except FileNotFoundError:
            raise UnknownJoin(f"no join of {host_id} is waiting for a report") from None
        if not hmac.compare_digest(expected, hashlib.sha256(token.encode()).hexdigest()):
            raise UnknownJoin(f"not the report token of {host_id}'s current join")
        clean = BOOTSTRAP_TOKEN.sub("<bootstrap token>", _printable(report.output))
        _write(d / "report.json", report.model_copy(update={"output": clean}).model_dump_json(by_alias=True))

    def read(self, host_id: str) -> JoinReport | None:
        try:
            return JoinReport.model_validate(json.loads((self.host_dir(host_id) / "report.json").read_text()))
        except FileNotFoundError:
            return None


def reason(output: str) -> str:
    """kubeadm's own words for why it failed: its `error ...` line (`error execution phase
    preflight: couldn't validate the identity of the API Server: ...`) and the `[ERROR ...]`
    lines of a failed preflight; else the last lines it printed."""
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    picked = [ln for ln in lines if ln.startswith("[ERROR") or ln.lower().startswith("error")]
    text = "; ".join(picked or lines[-3:]) or "kubeadm printed nothing"
    return text if len(text) <= 1500 else text[:1500] + " ..."


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() or c in "\n\t" else "?" for c in text)


def _write(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    tmp.replace(path)
