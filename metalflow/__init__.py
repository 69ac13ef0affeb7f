"""metalflow: bare-metal provisioning on Temporal.

Layers, top to bottom: `metalflow.cli`; `worker`, `k8s_bridge`; `workflows`, `activities`;
`metalflow.client`; `metalflow.runtime`; `metalflow.api` (pure). Imports point down only.
"""

__version__ = "0.1.0"
