"""Small helpers shared by tests."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from temporalio.client import Client

HISTORIES = Path(__file__).parent / "histories"


def make_ca() -> bytes:
    """A self-signed cluster CA certificate (PEM), like kubeadm's ca.crt."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubernetes")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


async def record(client: Client, workflow_id: str, name: str) -> None:
    """Keep this run's histories (the host's and its steps') for the replay test, when asked to."""
    if not os.environ.get("METALFLOW_RECORD_HISTORIES"):
        return
    async for wf in client.list_workflows(f'WorkflowId STARTS_WITH "{workflow_id}"'):
        history = await client.get_workflow_handle(wf.id, run_id=wf.run_id).fetch_history()
        step = "" if wf.id == workflow_id else "-" + wf.id.rsplit("/", 1)[-1]
        doc = {"workflowId": wf.id, "history": json.loads(history.to_json())}
        (HISTORIES / f"{wf.workflow_type}-{name}{step}.json").write_text(json.dumps(doc))
