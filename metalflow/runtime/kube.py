"""The one way a metalflow process reaches a Kubernetes API server.

A kubeconfig file when `METALFLOW_KUBECONFIG` is set (scripts, tests, a worker outside the
cluster), the pod's service account otherwise; a kubeconfig held in a Secret (a workload
cluster for `kubeadm join`) is loaded from its text.
"""

from __future__ import annotations

from typing import Any

import yaml
from kubernetes import client as k8s
from kubernetes import config

from metalflow.runtime.settings import Settings, get_settings


def api_client(settings: Settings | None = None, connections: int | None = None) -> k8s.ApiClient:
    """A client for the management cluster (close it, or use it as a context manager).

    CONNECTIONS: how many requests the caller makes at once (its threads, plus one per watch it
    holds open). The client keeps that many TLS connections; its default (5 per CPU, 10 here) is
    smaller than the bridge's threads, and each request over it opens a connection, does a TLS
    handshake and throws it away ("Connection pool is full, discarding connection").
    """
    settings = settings or get_settings()
    configuration = k8s.Configuration()
    if settings.kubeconfig:
        config.load_kube_config(config_file=str(settings.kubeconfig), client_configuration=configuration)
    else:
        config.load_incluster_config(client_configuration=configuration)
    if connections is not None:
        configuration.connection_pool_maxsize = connections
    return k8s.ApiClient(configuration)


def api_client_from_kubeconfig(text: str) -> k8s.ApiClient:
    """A client for the cluster a kubeconfig document describes (e.g. from a Secret)."""
    loaded: dict[str, Any] = yaml.safe_load(text)
    return config.new_client_from_config_dict(loaded)
