"""Resolve `SecretRef`s at call time, inside activities only.

Values never leave the activity that asked for them: they are not returned to workflows and
never logged. A missing or malformed secret is a permanent, typed error naming the ref and
the fix.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from metalflow.api.errors import ErrorName, permanent
from metalflow.api.models import SecretRef
from metalflow.runtime.settings import Settings, get_settings


@dataclass(frozen=True)
class ResolvedSecret:
    data: dict[str, str]
    version: str

    def require(self, key: str, ref: SecretRef) -> str:
        value = self.data.get(key)
        if value is None or value == "":
            raise permanent(
                ErrorName.SECRET_INVALID,
                f"{ref.describe()} has no non-empty key {key!r}; add it "
                f"(keys present: {sorted(self.data) or 'none'})",
            )
        return value

    def __repr__(self) -> str:  # never print values
        return f"ResolvedSecret(keys={sorted(self.data)}, version={self.version!r})"


def _from_file(ref: SecretRef) -> ResolvedSecret:
    assert ref.path is not None
    path = Path(ref.path)
    try:
        raw = path.read_text()
        stat = path.stat()
    except FileNotFoundError:
        raise permanent(
            ErrorName.SECRET_MISSING,
            f"secret file {path} for {ref.name!r} does not exist; create it with the needed keys",
        ) from None
    try:
        loaded = yaml.safe_load(raw) if raw.strip() else {}
    except yaml.YAMLError:
        raise permanent(
            ErrorName.SECRET_INVALID,
            f"secret file {path} is not YAML/JSON; write it as `key: value` lines",
        ) from None
    if not isinstance(loaded, dict):
        raise permanent(ErrorName.SECRET_INVALID, f"secret file {path} must hold a mapping of keys to values")
    # A Kubernetes-style Secret manifest is accepted as well.
    if loaded.get("kind") == "Secret":
        data = {k: base64.b64decode(v).decode() for k, v in (loaded.get("data") or {}).items()}
        data.update({k: str(v) for k, v in (loaded.get("stringData") or {}).items()})
    else:
        data = {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in loaded.items()}
    return ResolvedSecret(data=data, version=str(stat.st_mtime_ns))


def _from_kubernetes(ref: SecretRef, settings: Settings) -> ResolvedSecret:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    from metalflow.runtime.kube import api_client

    with api_client(settings) as api:
        try:
            secret = client.CoreV1Api(api).read_namespaced_secret(ref.name, ref.namespace)
        except ApiException as exc:
            if exc.status == 404:
                raise permanent(
                    ErrorName.SECRET_MISSING,
                    f"Secret {ref.namespace}/{ref.name} not found; create it "
                    "(kubectl create secret generic ...)",
                ) from None
            raise
    data = {k: base64.b64decode(v).decode() for k, v in (secret.data or {}).items()}
    return ResolvedSecret(
        data=data, version=(secret.metadata.resource_version if secret.metadata else None) or ""
    )


def secret_key(ref: SecretRef, key: str) -> str:
    """How an error names one key of a Secret."""
    return f"key {key!r} of {ref.describe()}"


def load_yaml(text: str, what: str) -> Any:
    """YAML held in a Secret (`what` names it, see `secret_key`), parsed. A malformed one is a
    typed error with the line number and never the content: PyYAML's message quotes the lines
    around the fault, which would carry them into the failure, the history and errorMessage."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        line = _error_line(err, text)
        at = f" (the parser stopped at line {line})" if line else ""
        # `from None`: the original error, quoted lines and all, is not chained into the failure
        raise permanent(ErrorName.SECRET_YAML, f"{what} is not valid YAML{at}; fix the Secret") from None


def _error_line(err: yaml.YAMLError, text: str) -> int | None:
    if isinstance(err, yaml.MarkedYAMLError):
        mark = err.problem_mark or err.context_mark
        return mark.line + 1 if mark is not None else None
    if isinstance(err, yaml.reader.ReaderError):  # a character YAML does not allow
        return text.count("\n", 0, err.position) + 1
    return None


def resolve(ref: SecretRef, settings: Settings | None = None) -> ResolvedSecret:
    """Read the secret behind `ref` (blocking I/O: call from a sync activity or a thread)."""
    if ref.path:
        return _from_file(ref)
    return _from_kubernetes(ref, settings or get_settings())
