"""Prometheus metrics for the worker and the bridge.

Two endpoints per process, both off unless configured:
- `METALFLOW_METRICS_ADDRESS` (prometheus_client): metalflow's own families below.
- `METALFLOW_SDK_METRICS_ADDRESS` (temporalio's Runtime with PrometheusConfig): the Temporal
  SDK's worker/client metrics (task latencies, slots, polls, RPC errors), served by the SDK core.

Host counts per state come from Temporal visibility on scrape (cached briefly): every replica
reports the same fleet-wide numbers, so aggregate with max(), not sum(). Step durations and
status publishes are recorded by each HostWorkflow through its metric meter
(workflows/host_metrics.py: once per operation, never on replay), so they are served on the
SDK's endpoint, with the buckets set here.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterator
from concurrent.futures import TimeoutError as FutureTimeout

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from temporalio.client import Client
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

from metalflow.api.host import HOST_WORKFLOW
from metalflow.api.host_metrics import STEP_BUCKETS, STEP_DURATION
from metalflow.api.models import ErrorType, ProvisioningState

log = logging.getLogger(__name__)

BRIDGE_RECONCILES = Counter(
    "metalflow_bridge_reconciles_total", "Reconciles by the bridge, by kind and result.", ["kind", "result"]
)
BRIDGE_RECONCILE_SECONDS = Histogram(
    "metalflow_bridge_reconcile_duration_seconds",
    "Time to reconcile one object (Temporal calls plus Kubernetes patches), by kind.",
    ["kind"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
UNKNOWN_MACHINE_BOOTS = Counter(
    "metalflow_boot_unknown_machine_total",
    "Network boots by SMBIOS UUID the boot server matched to no host (served a script that boots "
    "nothing), by reason: unknown, ambiguous (several hosts claim its encodings), malformed.",
    ["reason"],
)
AGENT_TOKEN_EVENTS = Counter(
    "metalflow_agent_token_security_events_total",
    "Security events about agent tokens at the boot server, by kind: refetched (a PXE host's "
    "script, and so its token, asked for a second time), missing, wrong, compromised or "
    "none-issued (a request for a host's secrets without its current token).",
    ["kind"],
)
AGENT_REPLIES_REJECTED = Counter(
    "metalflow_agent_replies_rejected_total",
    "Agent replies the control plane refused to act on (no valid proof of the host's current "
    "agent token: a rogue poller, an earlier boot's agent, a forgery), by agent activity.",
    ["activity"],
)
BRIDGE_QUEUE_DEPTH = Gauge(
    "metalflow_bridge_queue_depth", "Objects waiting to be reconciled, by kind.", ["kind"]
)


# ---- host counts from visibility ----


class HostCountCollector(Collector):
    """`metalflow_hosts{state}` and `metalflow_hosts_in_error{error_type}` from visibility counts."""

    def __init__(self, client: Client, loop: asyncio.AbstractEventLoop, cache_seconds: float = 10) -> None:
        self._client = client
        self._loop = loop
        self._cache_seconds = cache_seconds
        self._cached: tuple[float, dict[str, int], dict[str, int]] | None = None
        self._lock = threading.Lock()

    async def _count(self, extra: str) -> int:
        query = f'WorkflowType="{HOST_WORKFLOW}" AND ExecutionStatus="Running" AND {extra}'
        return (await self._client.count_workflows(query)).count

    async def _counts(self) -> tuple[dict[str, int], dict[str, int]]:
        states = [s.value for s in ProvisioningState if s != ProvisioningState.NONE]
        errors = [e.value for e in ErrorType]
        got = await asyncio.gather(
            *(self._count(f'HostState="{s}"') for s in states),
            *(self._count(f'ErrorType="{e}"') for e in errors),
        )
        return dict(zip(states, got[: len(states)], strict=True)), dict(
            zip(errors, got[len(states) :], strict=True)
        )

    def describe(self) -> Iterator[GaugeMetricFamily]:
        """The families without samples. Without describe(), REGISTRY.register() calls collect()
        to learn the names: on the event loop's own thread (serve() runs there), collect() then
        waits on a coroutine that loop cannot run, stalling the worker's start by its 20 s timeout."""
        yield _gauge("metalflow_hosts", "Running host workflows by lifecycle state", "state", {})
        yield _gauge(
            "metalflow_hosts_in_error", "Running host workflows by metal3 errorType", "error_type", {}
        )

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self._lock:
            now = time.monotonic()
            if self._cached is None or now - self._cached[0] > self._cache_seconds:
                future = asyncio.run_coroutine_threadsafe(self._counts(), self._loop)
                try:
                    by_state, by_error = future.result(timeout=20)
                    self._cached = (now, by_state, by_error)
                except (FutureTimeout, Exception) as err:  # a scrape must not fail on visibility
                    future.cancel()
                    log.warning("host counts from visibility failed: %s", err)
            if self._cached is None:
                return
            _, by_state, by_error = self._cached
        yield _gauge("metalflow_hosts", "Running host workflows by lifecycle state", "state", by_state)
        yield _gauge(
            "metalflow_hosts_in_error", "Running host workflows by metal3 errorType", "error_type", by_error
        )


# ---- endpoints ----


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not port.isdigit():
        raise ValueError(f"metrics address {address!r} must be HOST:PORT, e.g. 0.0.0.0:9464")
    return host or "0.0.0.0", int(port)


def sdk_runtime(address: str | None) -> Runtime | None:
    """A Temporal Runtime exporting SDK metrics on `address`; None keeps the default runtime."""
    if not address:
        return None
    _split(address)
    buckets = {STEP_DURATION: [float(b) for b in STEP_BUCKETS]}
    return Runtime(
        telemetry=TelemetryConfig(
            metrics=PrometheusConfig(bind_address=address, histogram_bucket_overrides=buckets)
        )
    )


def serve(address: str | None, host_counts: HostCountCollector | None = None) -> None:
    """Start the prometheus_client endpoint (a daemon thread) when an address is configured."""
    if not address:
        return
    if host_counts is not None:
        REGISTRY.register(host_counts)
    host, port = _split(address)
    start_http_server(port, addr=host)
    log.info("metrics on http://%s:%d/metrics", host, port)


def _gauge(name: str, what: str, label: str, counts: dict[str, int]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, f"{what} (Temporal visibility).", labels=[label])
    for value, n in counts.items():
        family.add_metric([value], n)
    return family
