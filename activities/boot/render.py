"""Render boot-network files from the package's jinja2 templates (StrictUndefined: no silent gaps)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined

_env = Environment(
    loader=PackageLoader("activities.boot", "templates"),
    undefined=StrictUndefined,
    keep_trailing_newline=True,
    autoescape=False,
)


def render(template: str, **values: Any) -> str:
    return _env.get_template(template).render(**values)


def write_atomically(path: Path, content: str) -> bool:
    """Replace `path` in one rename; return whether the content changed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and path.read_text() == content:
        return False
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(content)
    tmp.chmod(0o644)
    tmp.replace(path)
    return True


def mac_file_name(mac: str) -> str:
    """iPXE's ${mac:hexhyp}: 52-54-00-..."""
    return mac.lower().replace(":", "-")
