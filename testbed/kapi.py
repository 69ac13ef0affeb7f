"""A Kubernetes API server for tests: kmock's scaffold plus the API semantics it lacks.

kmock (pinned) gives HTTP serving, Kubernetes URL parsing, discovery and Status errors. Its
own emulator merges JSON blindly; a controller needs more, so this layer keeps the store and
adds: server-set resourceVersion/uid/creationTimestamp/generation and 201 on create; 409 on a
stale resourceVersion or a duplicate; the /status subresource (spec and status isolated);
merge, strategic-merge and JSON patch by Content-Type (422 when a `test` op fails); list and
watch from a resourceVersion with timeoutSeconds, bookmarks and 410 once the event log has
moved past it; label selectors; finalizers with deletionTimestamp; Secret stringData.

    async with KubeAPIServer() as api:
        api.write_kubeconfig(tmp / "kubeconfig")   # for the official kubernetes client
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import collections
import copy
import itertools
import json
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs
import jsonpatch
import kmock
import yaml
from aiohttp import web

Key = tuple[str, str, str, str]  # (group/version, plural, namespace, name)


@dataclass(frozen=True)
class Kind:
    group_version: str
    plural: str
    kind: str
    namespaced: bool
    status: bool


KINDS = [
    Kind("v1", "secrets", "Secret", True, False),
    Kind("v1", "configmaps", "ConfigMap", True, False),
    Kind("v1", "namespaces", "Namespace", False, True),
    Kind("v1", "nodes", "Node", False, True),
    Kind("metal3.io/v1alpha1", "baremetalhosts", "BareMetalHost", True, True),
    Kind("metalflow.io/v1alpha1", "hostclaims", "HostClaim", True, True),
    Kind("metalflow.io/v1alpha1", "hostsets", "HostSet", True, True),
]


class APIError(Exception):
    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message

    def status(self) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Status",
            "metadata": {},
            "status": "Failure",
            "code": self.code,
            "reason": self.reason,
            "message": self.message,
        }


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _merge(target: Any, patch: Any) -> Any:
    """RFC 7386 merge patch (strategic merge is treated the same for custom resources)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = _merge(out.get(k), v)
    return out


_REQ = re.compile(r"^\s*([A-Za-z0-9./_-]+)\s*(==|=|!=)\s*([A-Za-z0-9._-]*)\s*$")
_SET = re.compile(r"^\s*([A-Za-z0-9./_-]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")


def _split_selector(selector: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in selector:
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    return [p for p in [*parts, cur] if p.strip()]


def selector_matches(selector: str, labels: dict[str, str]) -> bool:
    for term in _split_selector(selector):
        if m := _SET.match(term):
            key, op, values = m.group(1), m.group(2), {v.strip() for v in m.group(3).split(",")}
            ok = labels.get(key) in values if op == "in" else labels.get(key) not in values
        elif m := _REQ.match(term):
            key, op, value = m.groups()
            ok = labels.get(key) == value if op in ("=", "==") else labels.get(key) != value
        elif term.strip().startswith("!"):
            ok = term.strip()[1:] not in labels
        else:
            ok = term.strip() in labels
        if not ok:
            return False
    return True


class KubeAPIServer:
    def __init__(self, max_events: int = 10_000) -> None:
        self.handler = _Handler(api=self)
        self.objects: dict[Key, dict[str, Any]] = {}
        self.events: collections.deque[tuple[int, str, Kind, dict[str, Any]]] = collections.deque(
            maxlen=max_events
        )
        self.rv = 0
        self.changed = asyncio.Condition()
        self._server: kmock.Server | None = None
        for k in KINDS:
            info = kmock.ResourceInfo(
                kind=k.kind,
                namespaced=k.namespaced,
                subresources={"status"} if k.status else set(),
                verbs={"get", "list", "watch", "create", "update", "patch", "delete"},
            )
            self.handler.resources[f"{k.group_version}/{k.plural}"] = info

    @property
    def url(self) -> str:
        assert self._server is not None
        return str(self._server.url).rstrip("/")

    async def __aenter__(self) -> KubeAPIServer:
        await self.handler.__aenter__()
        self._server = kmock.Server(self.handler)
        await self._server.__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        if self._server is not None:
            await self._server.__aexit__(*exc)
        await self.handler.__aexit__(*exc)

    def write_kubeconfig(self, path: Path) -> Path:
        path.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "current-context": "test",
                    "clusters": [{"name": "test", "cluster": {"server": self.url}}],
                    "users": [{"name": "test", "user": {"token": "test-token"}}],
                    "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}],
                }
            )
        )
        return path

    def compact(self) -> None:
        """Forget the event log, as etcd compaction does: older watches get 410 Gone."""
        self.events.clear()

    # ---- storage ----

    def kind_of(self, group_version: str, plural: str) -> Kind:
        for k in KINDS:
            if k.group_version == group_version and k.plural == plural:
                return k
        raise APIError(404, "NotFound", f"the server could not find the resource {group_version}/{plural}")

    async def _record(self, kind: Kind, event: str, obj: dict[str, Any]) -> None:
        self.events.append((self.rv, event, kind, copy.deepcopy(obj)))
        async with self.changed:
            self.changed.notify_all()

    def _bump(self, obj: dict[str, Any]) -> None:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)

    @staticmethod
    def _normalize_secret(kind: Kind, obj: dict[str, Any]) -> None:
        if kind.plural == "secrets" and "stringData" in obj:
            data = obj.setdefault("data", {}) or {}
            for k, v in (obj.pop("stringData") or {}).items():
                data[k] = base64.b64encode(str(v).encode()).decode()
            obj["data"] = data

    async def create(self, kind: Kind, ns: str, body: dict[str, Any]) -> dict[str, Any]:
        meta = body.setdefault("metadata", {})
        name = meta.get("name") or (meta.get("generateName", "") + uuid.uuid4().hex[:5])
        if not name:
            raise APIError(422, "Invalid", "metadata.name: Required value")
        key = (kind.group_version, kind.plural, ns if kind.namespaced else "", name)
        if key in self.objects:
            raise APIError(409, "AlreadyExists", f'{kind.plural} "{name}" already exists')
        obj = copy.deepcopy(body)
        obj["apiVersion"], obj["kind"] = kind.group_version, kind.kind
        obj["metadata"].update(name=name, uid=str(uuid.uuid4()), creationTimestamp=_now(), generation=1)
        if kind.namespaced:
            obj["metadata"]["namespace"] = ns
        obj["metadata"].pop("deletionTimestamp", None)
        self._normalize_secret(kind, obj)
        self._bump(obj)
        self.objects[key] = obj
        await self._record(kind, "ADDED", obj)
        return obj

    def get(self, kind: Kind, ns: str, name: str) -> dict[str, Any]:
        key = (kind.group_version, kind.plural, ns if kind.namespaced else "", name)
        if key not in self.objects:
            raise APIError(404, "NotFound", f'{kind.plural} "{name}" not found')
        return self.objects[key]

    async def write(
        self,
        kind: Kind,
        ns: str,
        name: str,
        new: dict[str, Any],
        subresource: str | None,
        expected_rv: str | None,
    ) -> dict[str, Any]:
        """Replace an object (after a PUT or a computed PATCH), keeping server-owned fields."""
        old = self.get(kind, ns, name)
        if expected_rv and expected_rv != old["metadata"]["resourceVersion"]:
            raise APIError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {kind.plural} "{name}": '
                "the object has been modified; please apply your changes to the latest version",
            )
        obj = copy.deepcopy(old)
        if subresource == "status":
            obj["status"] = copy.deepcopy(new.get("status"))
        else:
            for field, value in new.items():
                if field not in ("metadata", "status", "apiVersion", "kind"):
                    obj[field] = copy.deepcopy(value)
            for field in [
                f for f in obj if f not in new and f not in ("metadata", "status", "apiVersion", "kind")
            ]:
                del obj[field]
            meta = new.get("metadata") or {}
            for field in ("labels", "annotations", "finalizers", "ownerReferences"):
                if field in meta:
                    obj["metadata"][field] = copy.deepcopy(meta[field])
                else:
                    obj["metadata"].pop(field, None)
            if not kind.status:  # no status subresource: status is ordinary data
                obj["status"] = copy.deepcopy(new.get("status", old.get("status")))
        self._normalize_secret(kind, obj)
        if subresource != "status" and obj.get("spec") != old.get("spec"):
            obj["metadata"]["generation"] = old["metadata"].get("generation", 1) + 1
        if obj == old:
            return old
        self._bump(obj)
        key = (kind.group_version, kind.plural, ns if kind.namespaced else "", name)
        if obj["metadata"].get("deletionTimestamp") and not obj["metadata"].get("finalizers"):
            del self.objects[key]
            await self._record(kind, "DELETED", obj)
            return obj
        self.objects[key] = obj
        await self._record(kind, "MODIFIED", obj)
        return obj

    async def delete(self, kind: Kind, ns: str, name: str) -> dict[str, Any]:
        obj = copy.deepcopy(self.get(kind, ns, name))
        key = (kind.group_version, kind.plural, ns if kind.namespaced else "", name)
        if obj["metadata"].get("finalizers"):
            if not obj["metadata"].get("deletionTimestamp"):
                obj["metadata"]["deletionTimestamp"] = _now()
                self._bump(obj)
                self.objects[key] = obj
                await self._record(kind, "MODIFIED", obj)
            return obj
        del self.objects[key]
        self._bump(obj)
        await self._record(kind, "DELETED", obj)
        return obj

    def list(self, kind: Kind, ns: str | None, selector: str) -> list[dict[str, Any]]:
        return [
            o
            for (gv, plural, ons, _), o in sorted(self.objects.items())
            if gv == kind.group_version
            and plural == kind.plural
            and (ns is None or ons == ns)
            and selector_matches(selector, o["metadata"].get("labels") or {})
        ]


@attrs.define(kw_only=True)
class _Handler(kmock.KubernetesScaffold):  # type: ignore[misc]
    api: Any = None

    async def _handle(self, request: kmock.Request) -> web.StreamResponse:
        res = request.resource
        if res is None or not res.plural or res.group is None or res.version is None:
            return await super()._handle(request)  # discovery: kmock's scaffold
        api: KubeAPIServer = self.api
        gv = f"{res.group}/{res.version}" if res.group else res.version
        try:
            kind = api.kind_of(gv, res.plural)
            return await self._serve(api, kind, request)
        except APIError as err:
            return web.json_response(err.status(), status=err.code)

    async def _serve(self, api: KubeAPIServer, kind: Kind, request: kmock.Request) -> web.StreamResponse:
        method = str(request.method.value).upper()
        ns = request.namespace or ""
        name = request.name
        params = request.params
        if method == "GET" and params.get("watch") in ("true", "1"):
            return await self._watch(api, kind, request)
        if method == "GET" and name is None:
            items = api.list(kind, request.namespace, params.get("labelSelector", ""))
            return web.json_response(
                {
                    "apiVersion": kind.group_version,
                    "kind": f"{kind.kind}List",
                    "metadata": {"resourceVersion": str(api.rv)},
                    "items": items,
                }
            )
        if method == "GET" and name is not None:
            return web.json_response(api.get(kind, ns, name))
        if method == "POST":
            return web.json_response(
                await api.create(kind, ns, json.loads(request.body or b"{}")), status=201
            )
        assert name is not None
        if method == "DELETE":
            return web.json_response(await api.delete(kind, ns, name))
        body = json.loads(request.body or b"{}")
        if method == "PUT":
            rv = (body.get("metadata") or {}).get("resourceVersion")
            return web.json_response(await api.write(kind, ns, name, body, request.subresource, rv))
        if method == "PATCH":
            current = copy.deepcopy(api.get(kind, ns, name))
            ctype = request.headers.get("Content-Type", "").split(";")[0].strip()
            if ctype == "application/json-patch+json":
                try:
                    patched = jsonpatch.apply_patch(current, body)
                except jsonpatch.JsonPatchTestFailed as err:
                    raise APIError(422, "Invalid", f"the JSON patch test failed: {err}") from None
                except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as err:
                    raise APIError(422, "Invalid", f"the JSON patch cannot apply: {err}") from None
                rv = None
            elif ctype in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
                patched = _merge(current, body)
                rv = (body.get("metadata") or {}).get("resourceVersion")
            else:
                raise APIError(415, "UnsupportedMediaType", f"unsupported patch type {ctype!r}")
            return web.json_response(await api.write(kind, ns, name, patched, request.subresource, rv))
        raise APIError(405, "MethodNotAllowed", f"{method} is not supported")

    async def _watch(self, api: KubeAPIServer, kind: Kind, request: kmock.Request) -> web.StreamResponse:
        params = request.params
        selector = params.get("labelSelector", "")
        timeout = float(params.get("timeoutSeconds") or 1800)
        bookmarks = params.get("allowWatchBookmarks") in ("true", "1")
        since = int(params.get("resourceVersion") or 0)
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        raw = request._raw_request
        assert raw is not None
        await resp.prepare(raw)

        async def send(event: str, obj: dict[str, Any]) -> None:
            await resp.write(json.dumps({"type": event, "object": obj}).encode() + b"\n")

        def wanted(k: Kind, obj: dict[str, Any]) -> bool:
            return (
                k == kind
                and (request.namespace is None or obj["metadata"].get("namespace") == request.namespace)
                and (request.name is None or obj["metadata"]["name"] == request.name)
                and selector_matches(selector, obj["metadata"].get("labels") or {})
            )

        if since == 0:  # no RV: the current state first, as ADDED events
            for obj in api.list(kind, request.namespace, selector):
                await send("ADDED", obj)
            since = api.rv
        elif since < api.rv and (not api.events or api.events[0][0] > since + 1):
            await send("ERROR", APIError(410, "Expired", f"too old resource version: {since}").status())
            return resp
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        last_bookmark = loop.time()
        while True:
            # The log is in resourceVersion order: start after `since` instead of scanning it all.
            start = bisect.bisect_right(api.events, since, key=lambda e: e[0])
            for rv, event, k, obj in list(itertools.islice(api.events, start, None)):
                if wanted(k, obj):
                    await send(event, obj)
                since = max(since, rv)
            left = deadline - loop.time()
            if left <= 0:
                break
            if bookmarks and loop.time() - last_bookmark > 1:
                await send(
                    "BOOKMARK",
                    {
                        "kind": kind.kind,
                        "apiVersion": kind.group_version,
                        "metadata": {"resourceVersion": str(api.rv)},
                    },
                )
                last_bookmark = loop.time()
            if api.rv > since:
                continue
            async with api.changed:
                try:
                    await asyncio.wait_for(api.changed.wait(), timeout=min(left, 1.0))
                except TimeoutError:
                    pass
        return resp


async def serve_forever(kubeconfig: Path, max_events: int) -> None:
    """Serve until killed; the kubeconfig appears (atomically) once the server listens."""
    async with KubeAPIServer(max_events=max_events) as api:
        api.write_kubeconfig(kubeconfig.with_suffix(".tmp")).rename(kubeconfig)
        await asyncio.Event().wait()


if __name__ == "__main__":  # a test API server in its own process, for benchmarks
    import sys

    asyncio.run(serve_forever(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 10_000))
