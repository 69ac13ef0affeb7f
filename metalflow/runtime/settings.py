"""Process configuration from the environment (METALFLOW_*), one place for every entrypoint."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="METALFLOW_", env_file=".env", extra="ignore")

    temporal_address: str = "localhost:7233"
    temporal_namespace: str = "default"
    task_queue: str = "metalflow"
    temporal_tls_ca: Path | None = Field(
        default=None, description="PEM CA the Temporal frontend's certificate must chain to; set: TLS on"
    )
    temporal_tls_cert: Path | None = Field(
        default=None, description="PEM client certificate for mTLS to the frontend (with temporal_tls_key)"
    )
    temporal_tls_key: Path | None = Field(default=None, description="PEM private key of temporal_tls_cert")
    temporal_tls_server_name: str = Field(
        default="",
        description="The name the frontend's certificate is checked for; default: the address's host",
    )
    payload_keys_file: Path | None = Field(
        default=None,
        description="JSON key file ({active, keys}) that seals every control-plane payload in Temporal's "
        "history (AES-256-GCM); unset: payloads are plain JSON. `metalflow payload-key new` writes one.",
    )
    workflow_sandbox: bool = Field(
        default=True,
        description="Run workflow code in Temporal's sandbox, which refuses non-deterministic calls "
        "(the clock, I/O, random) at run time. Off: the same code runs unchecked, for a quarter less "
        "worker CPU (the sandbox compiles and runs a snippet per payload); the test suite and the "
        "replay tests always run with it on.",
    )
    state_dir: Path = Field(
        default=Path(".metalflow"), description="Local state: dev server DB, boot files, logs."
    )
    kubeconfig: Path | None = Field(
        default=None,
        description="Kubeconfig for Secrets and BareMetalHost status; in-cluster if unset.",
    )
    publish_status_to_kubernetes: bool = Field(
        default=False, description="Patch BareMetalHost.status; off for script-only hosts."
    )
    bmc_ca_bundle: Path | None = Field(
        default=None,
        description="PEM CA bundle that BMC certificates are verified against (https Redfish addresses "
        "without disableCertificateVerification); unset: the system's trust store.",
    )
    boot_server_url: str = "http://127.0.0.1:8088"
    boot_server_tls_url: str = Field(
        default="",
        description="The boot server's HTTPS address (`metalflow boot-server --tls-port`): ramdisk agents "
        "fetch a host's secrets (its config drive, its OCI image) there, checked against boot_server_ca; "
        "unset: over boot_server_url",
    )
    boot_server_ca: Path | None = Field(
        default=None,
        description="PEM of the CA that signed the boot server's HTTPS certificate: on each host's ISO, "
        "and at <boot_server_url>/boot-ca.pem for network-booted ramdisks",
    )
    boot_dir: Path = Field(default=Path(".metalflow/boot"), description="What the boot server serves.")
    dnsmasq_hosts_dir: Path | None = Field(
        default=None, description="dnsmasq dhcp-hostsdir; default <boot_dir>/dnsmasq/hosts"
    )
    dnsmasq_pid_file: Path | None = Field(default=None, description="SIGHUPped after host entries change")
    agent_temporal_address: str | None = Field(
        default=None, description="Temporal address as the ramdisk reaches it; default temporal_address"
    )
    agent_temporal_tls: bool = False
    agent_temporal_tls_ca_url: str = Field(
        default="", description="Where the ramdisk fetches the Temporal frontend's CA certificate (public)"
    )
    agent_temporal_tls_server_name: str = Field(
        default="", description="The name the ramdisk checks the frontend's certificate for"
    )
    deploy_iso: Path | None = Field(
        default=None,
        description="The base deploy ISO (built next to the ramdisk by `python -m testbed.ramdisk`) that "
        "each virtual-media host's ISO is made from; default <boot_dir>/deploy.iso (next to the kernel)",
    )
    vmedia_base_url: str = Field(
        default="",
        description="Where BMCs fetch per-host virtual-media ISOs (Ironic's external_http_url), when they "
        "reach the boot server by another address than the hosts do; default boot_server_url",
    )
    kernel_name: str = "vmlinuz"
    initrd_name: str = "initrd.img"
    kernel_args: str = "console=ttyS0,115200n8"
    ramdisk_boot_timeout_seconds: int = Field(
        default=600,
        gt=0,
        description="Schedule-to-start bound for in-band work: the ramdisk never booted.",
    )
    max_concurrent_provisioning: int = Field(
        default=20,
        gt=0,
        description="metal3's PROVISIONING_LIMIT: a namespace limiter's initial slot count.",
    )
    history_event_limit: int = Field(
        default=2000, gt=100, description="Continue-as-new once a host's history passes this."
    )
    power_check_interval_seconds: int = Field(
        default=300,
        ge=0,
        description="Read a resting host's power this often (Ironic's power sync); 0 turns it off.",
    )
    power_sync: Literal["per-host", "batched"] = Field(
        default="batched",
        description="Who reads a resting host's power: one PowerSyncWorkflow per shard of hosts in one "
        "activity a round (batched), or each host itself on a timer (per-host); hosts started after.",
    )
    max_cached_workflows: int = Field(
        default=1000,
        ge=0,
        description="Workflow runs the worker keeps in memory (its sticky cache): one it has not "
        "kept replays its whole history at its next task, e.g. every resting host's power check.",
    )
    metrics_address: str | None = Field(
        default=None,
        description="HOST:PORT for metalflow's Prometheus metrics (worker, bridge); unset: off.",
    )
    sdk_metrics_address: str | None = Field(
        default=None,
        description="HOST:PORT for the Temporal SDK's Prometheus metrics (worker, bridge); unset: off.",
    )

    @property
    def agent_boot_server(self) -> str:
        """Where a ramdisk's agent fetches the host's secrets with its token: HTTPS when configured."""
        return (self.boot_server_tls_url or self.boot_server_url).rstrip("/")


def get_settings() -> Settings:
    return Settings()
