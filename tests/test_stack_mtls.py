"""mTLS at the real Temporal server (issue 27, item 2), on the stack (`make test-stack`):
temporal-server's frontend requires a client certificate from the control-plane CA or the agent
CA. A client without TLS, with TLS but no certificate, or with a certificate from another CA is
refused; the control plane (its settings), the agent identity and an operator's `temporal` CLI
with the control-plane certificate get in. The stock server cannot tell the two identities apart
per task queue (README, security model): agent tokens carry that weight.
"""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest
from fixtures.stack import StackWorld
from temporalio.client import Client, TLSConfig

from metalflow.runtime.settings import Settings
from metalflow.runtime.temporal import connect
from testbed.temporal import temporal_cli
from testbed.tls import TestCA

pytestmark = [pytest.mark.stack, pytest.mark.timeout(300)]


async def refused(address: str, tls: TLSConfig | bool) -> str:
    with pytest.raises(RuntimeError) as err:
        await asyncio.wait_for(Client.connect(address, tls=tls), 30)
    return str(err.value)


async def test_the_frontend_refuses_a_client_without_a_trusted_certificate(
    stack_world: StackWorld, tmp_path: Path
) -> None:
    w = stack_world
    pki = w.stack.pki
    assert pki is not None
    ca = pki.server_ca.read_bytes()
    address = w.stack.address
    # no TLS at all: the frontend speaks only TLS
    await refused(address, False)
    # TLS, the server verified, but no client certificate
    await refused(address, TLSConfig(server_root_ca_cert=ca, domain=pki.server_name))
    # a certificate from a CA the server does not trust (a machine minting its own)
    rogue = TestCA(tmp_path / "rogue", "rogue CA").issue("metalflow-agent", client=True)
    await refused(
        address,
        TLSConfig(
            server_root_ca_cert=ca,
            client_cert=rogue.cert.read_bytes(),
            client_private_key=rogue.key.read_bytes(),
            domain=pki.server_name,
        ),
    )
    # the control plane, from its settings (METALFLOW_TEMPORAL_TLS_*), and the agent identity
    assert Settings().temporal_tls_cert == pki.control_plane.cert
    control = await connect(Settings())
    assert [wf async for wf in control.list_workflows('WorkflowId = "none"')] == []
    agent = await Client.connect(address, tls=w.stack.agent_tls())
    await agent.service_client.check_health()

    # the operator's temporal CLI: refused without the certificate, served with it
    argv = [str(temporal_cli()), "workflow", "list", "--address", address, "--limit", "1"]
    bare = await asyncio.to_thread(subprocess.run, argv, capture_output=True, text=True, timeout=60)
    assert bare.returncode != 0
    good = await asyncio.to_thread(
        subprocess.run, [*argv, *pki.cli_args()], capture_output=True, text=True, timeout=60
    )
    assert good.returncode == 0, good.stderr
