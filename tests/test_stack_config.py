"""The test bed's production-shaped stack (testbed/stack.py) runs what docker-compose.yml describes:
the same Temporal port, namespace, task queue, search attributes (names and types), METALFLOW_*
variables, database plugin, user, database and schema names. Offline: nothing is started."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from metalflow.runtime.settings import Settings
from testbed.stack import StackConfig, render_server_config

COMPOSE = Path(__file__).resolve().parent.parent / "docker-compose.yml"


def compose() -> dict[str, Any]:
    services: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())["services"]
    return services


def setup_command() -> str:
    return " ".join(compose()["temporal-setup"]["command"])


def test_temporal_address_namespace_and_task_queue_match_compose() -> None:
    cfg, svc = StackConfig(), compose()
    env = svc["worker"]["environment"]
    host, port = env["METALFLOW_TEMPORAL_ADDRESS"].rsplit(":", 1)
    assert host == "temporal" and int(port) == cfg.frontend_port
    published = {int(p.split(":")[-1]) for p in svc["temporal"]["ports"]}
    assert published == {cfg.frontend_port}
    assert env["METALFLOW_TEMPORAL_NAMESPACE"] == cfg.namespace
    assert env["METALFLOW_TASK_QUEUE"] == cfg.task_queue
    assert Settings().task_queue == cfg.task_queue, "the workers' default task queue is the stack's"
    # the setup job registers the attributes in the namespace the workers use (no flag: default)
    named = re.findall(r"--namespace[ =](\S+)", setup_command())
    assert named == [cfg.namespace] if named else cfg.namespace == "default"
    assert f"--address temporal:{cfg.frontend_port}" in setup_command()


def test_search_attributes_match_compose_names_and_types() -> None:
    command = setup_command()
    loop = re.search(r"for sa in ([^;]+);", command)
    assert loop, command
    types = set(re.findall(r"--type (\w+)", command))
    assert types == {"Keyword"}, command
    assert {(name, "Keyword") for name in loop.group(1).split()} == set(StackConfig().search_attributes)


def test_every_metalflow_variable_of_compose_is_given_to_the_stack_workers(tmp_path: Path) -> None:
    cfg = StackConfig()
    env = cfg.worker_env("127.0.0.1:7233", "http://127.0.0.1:8088", tmp_path / "boot", tmp_path / "state")
    for name in ("worker", "boot-server"):
        compose_env = {k for k in compose()[name]["environment"] if k.startswith("METALFLOW_")}
        assert compose_env == set(env), f"compose service {name}: {compose_env ^ set(env)}"
    known = {f"METALFLOW_{f.upper()}" for f in Settings.model_fields}
    assert set(env) <= known


def test_database_plugin_user_and_names_match_compose() -> None:
    cfg, svc = StackConfig(), compose()
    temporal = svc["temporal"]["environment"]
    assert temporal["DB"] == cfg.sql_plugin
    assert temporal["POSTGRES_USER"] == svc["postgresql"]["environment"]["POSTGRES_USER"] == cfg.db_user
    assert (
        temporal["POSTGRES_PWD"] == svc["postgresql"]["environment"]["POSTGRES_PASSWORD"] == cfg.db_password
    )
    assert temporal["DBNAME"] == cfg.database
    assert temporal["VISIBILITY_DBNAME"] == cfg.visibility_database
    # auto-setup applies postgresql/v12/{temporal,visibility} for postgres12: the stack's schemas
    assert cfg.sql_plugin == "postgres12"
    assert (cfg.schema, cfg.visibility_schema) == ("postgresql/v12/temporal", "postgresql/v12/visibility")


def test_rendered_server_config_uses_the_stack_settings(tmp_path: Path) -> None:
    cfg = StackConfig()
    ports = {
        "frontend": 7233,
        "frontend-http": 7243,
        **{f"{n}-membership": 6933 + i for i, n in enumerate(("frontend", "history", "matching", "worker"))},
        "history": 7234,
        "matching": 7235,
        "worker": 7239,
    }
    rendered = render_server_config(cfg, "127.0.0.1:5432", ports, tmp_path / "dc.yaml")
    persistence = rendered["persistence"]
    stores = persistence["datastores"]
    assert stores[persistence["defaultStore"]]["sql"]["databaseName"] == cfg.database
    assert stores[persistence["visibilityStore"]]["sql"]["databaseName"] == cfg.visibility_database
    for store in stores.values():
        assert store["sql"]["pluginName"] == cfg.sql_plugin
        assert store["sql"]["user"] == cfg.db_user
        assert store["sql"]["connectAddr"] == "127.0.0.1:5432"
    assert rendered["services"]["frontend"]["rpc"]["grpcPort"] == cfg.frontend_port
    # loopback only
    assert {s["rpc"]["bindOnIP"] for s in rendered["services"].values()} == {"127.0.0.1"}
