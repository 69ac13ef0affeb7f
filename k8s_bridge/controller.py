"""The bridge's watch loop: list, watch, and a de-duplicating work queue of BareMetalHost keys.

Why the kubernetes client's watch rather than kopf: the bridge keeps no state of its own
(Temporal has it), so kopf's per-handler progress annotations and diff-based handlers would
duplicate what the workflow already records. What remains is a list+watch with resync and
410 handling and a work queue, as controller-runtime does, in ~150 lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from kubernetes import client as k8s
from kubernetes import watch as k8s_watch
from kubernetes.client.exceptions import ApiException
from temporalio.client import Client

from k8s_bridge.reconcile import FINALIZER, Fingerprint, Plan, Related, fingerprint, reconcile
from metalflow.api.kube_names import (
    BMH_PLURAL,
    HFC_PLURAL,
    HFS_PLURAL,
    HUP_PLURAL,
    METAL3_GROUP,
    METAL3_VERSION,
)
from metalflow.api.models import (
    ErrorType,
    HostRef,
    HostStatus,
    OperationalStatus,
    ProvisioningState,
    ProvisionStatus,
)
from metalflow.api.status import bmh_status
from metalflow.client import operations
from metalflow.runtime import metrics
from metalflow.runtime.settings import Settings

log = logging.getLogger(__name__)

CRD_MISSING_RETRY_SECONDS = 30
# Blocking Kubernetes calls at once per controller: they are short, so a controller with many
# reconciles in flight (each mostly awaiting Temporal) needs no thread, nor connection, for each.
THREADS = 16


class Controller:
    """List + watch one kind of custom object and reconcile each with a pool of workers.

    Subclasses set the kind and implement `handle`. One object is never reconciled by two
    workers at once; an event arriving meanwhile queues it once more for afterwards.
    """

    group, version, plural = METAL3_GROUP, METAL3_VERSION, BMH_PLURAL
    finalizer = FINALIZER
    keeps_store = False  # mirror every object listed and watched (an informer's cache) in `store`

    def __init__(
        self,
        api_client: k8s.ApiClient,
        temporal: Client,
        settings: Settings,
        workers: int = 16,
        resync_seconds: int = 300,
    ) -> None:
        self._api = k8s.CustomObjectsApi(api_client)
        self._temporal = temporal
        self._settings = settings
        self._workers = workers
        self._resync = resync_seconds
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._latest: dict[str, dict[str, Any]] = {}
        self._queued: set[str] = set()
        self._active: set[str] = set()
        self._forced: set[str] = set()
        # What each object looked like after its last reconcile, so that the echo of our own
        # patch, status writes and other no-op events are skipped. Only a shortcut: a restarted
        # bridge starts empty and reconciles everything it lists.
        self._done: dict[str, Fingerprint] = {}
        self._executor = ThreadPoolExecutor(max_workers=min(workers, THREADS), thread_name_prefix=self.plural)
        self._stop = threading.Event()
        self._follow_ups: set[asyncio.Task[None]] = set()
        self._requeues: dict[str, asyncio.Task[None]] = {}
        self.reconciled = 0  # for tests and metrics
        self.store: dict[str, dict[str, Any]] = {}  # by "namespace/name", when keeps_store
        self.synced = False  # the store holds a full list (and the watch since), when keeps_store

    async def handle(self, obj: dict[str, Any]) -> Fingerprint:
        """Reconcile one object; return its fingerprint as it stands after our own patches."""
        raise NotImplementedError

    async def blocking(self, fn: Any, *args: Any) -> Any:
        """Run a blocking Kubernetes call on this controller's threads."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def requeue_after(self, obj: dict[str, Any], seconds: float) -> None:
        """Reconcile the object again later (fresh from the API server), e.g. to refresh status."""
        meta = obj["metadata"]
        ref = HostRef(namespace=meta.get("namespace", "default"), name=meta["name"])

        async def later() -> None:
            await asyncio.sleep(seconds)
            self._requeues.pop(ref.host_id, None)
            fresh = await self.blocking(self._get, ref)
            if fresh is not None:
                self._enqueue(fresh, force=True)

        previous = self._requeues.pop(ref.host_id, None)
        if previous is not None:
            previous.cancel()  # one pending look per object, the latest asked for
        self._requeues[ref.host_id] = self._spawn(later())

    def _spawn(self, coro: Any) -> asyncio.Task[None]:
        task = asyncio.create_task(coro)
        self._follow_ups.add(task)
        task.add_done_callback(self._follow_ups.discard)
        return task

    # ---- work queue ----

    def _observe(self, obj: dict[str, Any]) -> None:
        """A watched object as it now stands: into the store first (a reconcile it triggers
        elsewhere reads it from there), then onto the queue."""
        if self.keeps_store:
            self.store[_key(obj)] = obj
        self._enqueue(obj)

    def _enqueue(self, obj: dict[str, Any], force: bool = False) -> None:
        """Queue the object's key once; a key being reconciled is queued again when it is done."""
        meta = obj["metadata"]
        key = f"{meta.get('namespace', 'default')}/{meta['name']}"
        if force:
            self._forced.add(key)
        elif (
            key not in self._forced
            and key not in self._active
            and self._done.get(key) == fingerprint(obj, finalizer=self.finalizer)
        ):
            self._latest.pop(key, None)  # nothing the bridge acts on changed
            return
        self._latest[key] = obj
        if key not in self._queued and key not in self._active:
            self._queued.add(key)
            self._queue.put_nowait(key)
            metrics.BRIDGE_QUEUE_DEPTH.labels(self.plural).set(self._queue.qsize())

    async def _worker(self) -> None:
        while True:
            key = await self._queue.get()
            self._queued.discard(key)
            metrics.BRIDGE_QUEUE_DEPTH.labels(self.plural).set(self._queue.qsize())
            obj = self._latest.pop(key, None)
            if obj is None:
                continue
            started = time.monotonic()
            self._active.add(key)
            self._forced.discard(key)
            try:
                self._done[key] = await self.handle(obj)
                self.reconciled += 1
                metrics.BRIDGE_RECONCILES.labels(self.plural, "ok").inc()
                metrics.BRIDGE_RECONCILE_SECONDS.labels(self.plural).observe(time.monotonic() - started)
            except Exception:
                metrics.BRIDGE_RECONCILES.labels(self.plural, "error").inc()
                log.exception("reconciling %s %s failed; will retry", self.plural, key)
                self._done.pop(key, None)
                await asyncio.sleep(1)
                self._latest.setdefault(key, obj)
                self._forced.add(key)
            finally:
                self._active.discard(key)
                latest = self._latest.get(key)
                if (
                    latest is not None
                    and key not in self._forced
                    and self._done.get(key) == fingerprint(latest, finalizer=self.finalizer)
                ):
                    del self._latest[key]  # what arrived meanwhile was the echo of this reconcile
                if key in self._latest and key not in self._queued:
                    self._queued.add(key)
                    self._queue.put_nowait(key)

    def _get(self, ref: HostRef) -> dict[str, Any] | None:
        try:
            got: dict[str, Any] = self._api.get_namespaced_custom_object(  # type: ignore[assignment]
                self.group, self.version, ref.namespace, self.plural, ref.name
            )
            return got
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    # ---- list + watch ----

    def _list(self) -> tuple[list[dict[str, Any]], str]:
        body: dict[str, Any] = self._api.list_cluster_custom_object(self.group, self.version, self.plural)  # type: ignore[assignment]
        return body.get("items") or [], body["metadata"]["resourceVersion"]

    def _watch_thread(self, loop: asyncio.AbstractEventLoop, since: str, gone: threading.Event) -> str:
        """Stream events into the loop until the server ends the watch; return the last RV seen."""
        w = k8s_watch.Watch()
        rv = since
        try:
            for event in w.stream(
                self._api.list_cluster_custom_object,
                self.group,
                self.version,
                self.plural,
                resource_version=rv,
                timeout_seconds=self._resync,
                allow_watch_bookmarks=True,
            ):
                if self._stop.is_set():
                    w.stop()
                    break
                obj = event["object"]
                rv = obj.get("metadata", {}).get("resourceVersion", rv)
                if event["type"] in ("ADDED", "MODIFIED"):
                    loop.call_soon_threadsafe(self._observe, obj)
                elif event["type"] == "DELETED" and self.keeps_store:
                    loop.call_soon_threadsafe(self.store.pop, _key(obj), None)
        except ApiException as exc:
            if exc.status == 410:
                gone.set()
            else:
                raise
        return rv

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        workers = [asyncio.create_task(self._worker()) for _ in range(self._workers)]
        full = True  # reconcile every listed object in full, even one that looks unchanged
        try:
            while not self._stop.is_set():
                try:
                    items, rv = await asyncio.to_thread(self._list)
                except ApiException as exc:
                    if exc.status != 404:
                        raise
                    # The kind's CRD is not installed (yet): the other kinds keep working.
                    log.warning("%s.%s is not served; install k8s_bridge/crds/", self.plural, self.group)
                    await asyncio.sleep(CRD_MISSING_RETRY_SECONDS)
                    continue
                if self.keeps_store:
                    self.store = {_key(obj): obj for obj in items}
                    self.synced = True
                for obj in items:
                    self._enqueue(obj, force=full)
                # One watch per list, then list again. Ended by the server at its timeout (the
                # resync period): reconcile everything in full. Ended early (410 Gone, or the
                # API server dropping a watcher too slow to keep up, as under a burst):
                # reconcile only what changed meanwhile; forcing every object through describe
                # and queries then is what swamped Temporal ("query buffer is full").
                due = time.monotonic() + self._resync
                await self._in_daemon_thread(self._watch_thread, loop, rv, threading.Event())
                full = time.monotonic() >= due - 1
                if not full:
                    log.info("the watch of %s ended early; listing again", self.plural)
        finally:
            self._stop.set()
            for t in [*workers, *self._follow_ups]:
                t.cancel()
            self._executor.shutdown(wait=False, cancel_futures=True)

    @staticmethod
    async def _in_daemon_thread(fn: Any, *args: Any) -> Any:
        """Like asyncio.to_thread, but a blocked watch never holds up interpreter exit."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Any] = loop.create_future()

        def settle(result: Any, error: BaseException | None) -> None:
            if done.done():
                return
            if error is not None:
                done.set_exception(error)
            else:
                done.set_result(result)

        def target() -> None:
            try:
                result = fn(*args)
            except BaseException as exc:  # handed to the awaiting coroutine
                loop.call_soon_threadsafe(settle, None, exc)
            else:
                loop.call_soon_threadsafe(settle, result, None)

        threading.Thread(target=target, daemon=True, name="watch").start()
        return await done

    def stop(self) -> None:
        self._stop.set()


class Bridge(Controller):
    """BareMetalHosts (with their HostFirmwareSettings, ...) -> HostWorkflows.

    A new object costs one `start_workflow` and one patch, side by side: its related objects
    come from the RelatedWatch stores (a GET each only while those have not listed yet), and
    its finalizer, which every plan for it adds, need not wait for the start. Each API call
    before the start was latency in front of it and CPU taken from the servers on the way.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.related: dict[str, RelatedWatch] = {}  # by plural; each RelatedWatch adds itself

    async def handle(self, obj: dict[str, Any]) -> Fingerprint:
        meta = obj["metadata"]
        ref = HostRef(namespace=meta.get("namespace", "default"), name=meta["name"])
        hfs, hup, hfc = await asyncio.gather(
            *(self._same_name(plural, ref) for plural in (HFS_PLURAL, HUP_PLURAL, HFC_PLURAL))
        )
        related = Related(firmware_settings=hfs, update_policy=hup, firmware_components=hfc)
        finalizers = list(meta.get("finalizers") or [])
        early: asyncio.Future[str | None] | None = None
        if not meta.get("deletionTimestamp") and FINALIZER not in finalizers:
            early = asyncio.ensure_future(
                self.blocking(self._patch_metadata, obj, {"finalizers": [*finalizers, FINALIZER]})
            )
        try:
            plan = await reconcile(obj, self._temporal, self._settings, related)
        finally:
            rv = await early if early is not None else None
        # After the finalizer patch, the rest of the plan is made against the version it wrote.
        rest = dataclasses.replace(plan, add_finalizer=False) if rv else plan
        await self.blocking(self._apply_plan, obj, rest, rv)
        if "delete" in plan.signals:
            self._follow_up(obj)
        return fingerprint(obj, plan)

    def _follow_up(self, obj: dict[str, Any]) -> None:
        """Reconcile once more when the deprovisioning workflow ends, to release the finalizer."""
        meta = obj["metadata"]
        ref = HostRef(namespace=meta.get("namespace", "default"), name=meta["name"])

        async def wait_then_requeue() -> None:
            with contextlib.suppress(Exception):
                await operations.handle_for(self._temporal, ref).result()
            fresh = await self.blocking(self._get, ref)
            if fresh is not None:
                self._enqueue(fresh, force=True)

        self._spawn(wait_then_requeue())

    async def _same_name(self, plural: str, ref: HostRef) -> dict[str, Any] | None:
        """The host's object of another metal3 kind (same name), if any: from its watch's
        store once listed. A store lags by the watch's delay, like controller-runtime's cache:
        a change it had not seen yet reaches the host by the RelatedWatch's reconcile after."""
        watch = self.related.get(plural)
        if watch is not None and watch.synced:
            return watch.store.get(f"{ref.namespace}/{ref.name}")
        fetched: dict[str, Any] | None = await self.blocking(self._fetch_same_name, plural, ref)
        return fetched

    def _fetch_same_name(self, plural: str, ref: HostRef) -> dict[str, Any] | None:
        """GET the host's object of another metal3 kind; none when the kind's CRD is not installed."""
        try:
            got: dict[str, Any] = self._api.get_namespaced_custom_object(  # type: ignore[assignment]
                self.group, self.version, ref.namespace, plural, ref.name
            )
            return got
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    # ---- Kubernetes side effects ----

    def _patch_metadata(self, obj: dict[str, Any], metadata: dict[str, Any]) -> str | None:
        """Patch the object's metadata if it is still the version seen; the version written,
        or None when it was not (gone, or changed: a newer event is on its way)."""
        meta = obj["metadata"]
        try:
            got: dict[str, Any] = self._api.patch_namespaced_custom_object(  # type: ignore[assignment]
                self.group,
                self.version,
                meta.get("namespace", "default"),
                self.plural,
                meta["name"],
                {"metadata": {**metadata, "resourceVersion": meta.get("resourceVersion")}},
            )
        except ApiException as exc:
            if exc.status in (404, 409):
                return None
            raise
        return str(got["metadata"]["resourceVersion"])

    def _apply_plan(self, obj: dict[str, Any], plan: Plan, rv: str | None = None) -> None:
        """Make the plan's patches; RV: the object's version if the bridge has just written it."""
        meta = obj["metadata"]
        ns, name = meta.get("namespace", "default"), meta["name"]
        finalizers = list(meta.get("finalizers") or [])
        patch: dict[str, Any] = {}
        if plan.add_finalizer and FINALIZER not in finalizers:
            patch.setdefault("metadata", {})["finalizers"] = [*finalizers, FINALIZER]
        if plan.remove_finalizer and FINALIZER in finalizers:
            patch.setdefault("metadata", {})["finalizers"] = [f for f in finalizers if f != FINALIZER]
        if plan.remove_annotations:
            patch.setdefault("metadata", {})["annotations"] = dict.fromkeys(plan.remove_annotations)
        try:
            if patch:
                patch["metadata"]["resourceVersion"] = rv or meta.get("resourceVersion")
                self._api.patch_namespaced_custom_object(
                    self.group, self.version, ns, self.plural, name, patch
                )
            status = _plan_status(plan)
            if status is not None:
                self._api.patch_namespaced_custom_object_status(
                    self.group, self.version, ns, self.plural, name, {"status": status}
                )
        except ApiException as exc:
            if exc.status == 404:
                return
            if exc.status == 409:  # stale: a newer event for this object is on its way
                return
            raise


def _plan_status(plan: Plan) -> dict[str, Any] | None:
    """The whole metal3-shaped status for a host the bridge did not start (never `errorType: ""`)."""
    if plan.status_error is not None:
        return bmh_status(
            HostStatus(
                operational_status=OperationalStatus.ERROR,
                error_type=ErrorType.REGISTRATION,
                error_message=plan.status_error,
            )
        )
    if plan.waiting_for_bmc is not None:
        return bmh_status(
            HostStatus(
                operational_status=OperationalStatus.DISCOVERED,
                provisioning=ProvisionStatus(state=ProvisioningState.UNMANAGED),
            )
        )
    return None


class RelatedWatch(Controller):
    """Changes to a kind metal3 keeps beside a BareMetalHost (HostFirmwareSettings,
    HostUpdatePolicy) -> a reconcile of the BareMetalHost of the same name, which reads them
    (Bridge.handle). Status writes leave the spec's fingerprint alone: no echo."""

    finalizer = ""
    keeps_store = True  # the bridge reads the related objects from here, not by a GET each

    def __init__(self, api_client: k8s.ApiClient, bridge: Bridge, plural: str, **kwargs: Any) -> None:
        self.plural = plural  # before the base class names its threads after it
        super().__init__(api_client, bridge._temporal, bridge._settings, **kwargs)
        self._bridge = bridge
        bridge.related[plural] = self

    async def handle(self, obj: dict[str, Any]) -> Fingerprint:
        meta = obj["metadata"]
        ref = HostRef(namespace=meta.get("namespace", "default"), name=meta["name"])
        host = await self._bridge.blocking(self._bridge._get, ref)
        if host is not None:
            self._bridge._enqueue(host, force=True)
        return fingerprint(obj, finalizer=self.finalizer)


def _key(obj: dict[str, Any]) -> str:
    meta = obj["metadata"]
    return f"{meta.get('namespace', 'default')}/{meta['name']}"
