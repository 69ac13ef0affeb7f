"""`metalflow boot-server`: iPXE scripts, kernel/ramdisk, images and config drives over HTTP.

aiohttp's FileResponse streams files with Content-Length and Range support, which both the
image writer and firmware HTTP boot rely on.

A host's secrets (its config drive, its OCI image grant) are served only to a request that
carries the host's current agent token (activities/boot/agent_tokens.py); a PXE host's script
gets that token filled in for its first fetch only, and a second fetch is a security event.
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from temporalio.exceptions import ApplicationError

from activities.boot import agent_tokens, by_uuid
from activities.oci import grant_path, open_granted_blob
from metalflow.api.smbios import InvalidSystemUUID
from metalflow.runtime.metrics import AGENT_TOKEN_EVENTS, UNKNOWN_MACHINE_BOOTS
from worker.agent_logs import add_routes as add_agent_log_routes
from worker.join_reports import add_routes as add_join_report_routes

log = logging.getLogger(__name__)

OCI_CHUNK = 4 << 20

SUBDIRS = ("boot", "images", "configdrive")
STATIC = ("images",)  # served to anyone; boot/ and configdrive/ go through the handlers below
_HOST_ID_ARG = re.compile(r"\bmetalflow\.host_id=(\S+)")


def build_app(boot_dir: Path) -> web.Application:
    boot_dir = boot_dir.resolve()
    for sub in SUBDIRS:
        (boot_dir / sub).mkdir(parents=True, exist_ok=True)

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "boot_dir": str(boot_dir)})

    async def kernel_or_initrd(request: web.Request) -> web.StreamResponse:
        path = (boot_dir / request.match_info["name"]).resolve()
        if path.parent != boot_dir or not path.is_file():
            raise web.HTTPNotFound()
        return web.FileResponse(path)

    async def host_script(request: web.Request) -> web.StreamResponse:
        """boot/: a host's iPXE script, its agent token filled in for the first fetch only."""
        path = (boot_dir / "boot" / request.match_info["name"]).resolve()
        if path.parent != boot_dir / "boot" or not path.is_file():
            raise web.HTTPNotFound()
        if path.suffix != ".ipxe":
            return web.FileResponse(path)
        return _script_response(boot_dir, path.read_text(), request.remote or "?")

    async def config_drive(request: web.Request) -> web.StreamResponse:
        """A host's config drive (its userData): only for the host's current agent token."""
        host_id = request.match_info["host"]
        _authorize(boot_dir, host_id, request, "config drive")
        path = (boot_dir / "configdrive" / host_id / request.match_info["name"]).resolve()
        if path.parent.parent != boot_dir / "configdrive" or not path.is_file():
            raise web.HTTPNotFound()
        return web.FileResponse(path)

    async def oci_blob(request: web.Request) -> web.StreamResponse:
        """An oci:// image's layer, pulled from its registry with the credentials only this side reads.

        The grant (`activities/oci.py`, staged per deploy attempt) names one blob; only the host's
        current agent token opens it; the agent verifies its sha256 while writing it."""
        _authorize(boot_dir, request.match_info["host"], request, "OCI image grant")
        grant = grant_path(boot_dir, request.match_info["host"], request.match_info["name"])
        if grant is None or not grant.is_file():
            raise web.HTTPNotFound()
        try:
            upstream = await asyncio.to_thread(open_granted_blob, grant)
        except ApplicationError as err:  # typed, secret-free; the agent sees the status only
            status = 403 if err.type in ("OciAuthError", "SecretInvalid", "SecretNotFound") else 404
            if not err.non_retryable:
                status = 502
            raise _http_error(status, err.message) from None
        try:
            resp = web.StreamResponse()
            length = upstream.headers.get("Content-Length")
            if length:
                resp.content_length = int(length)
            resp.content_type = "application/octet-stream"
            await resp.prepare(request)
            while request.method != "HEAD" and (
                chunk := await asyncio.to_thread(upstream.raw.read, OCI_CHUNK)
            ):
                await resp.write(chunk)
            await resp.write_eof()
            return resp
        finally:
            upstream.close()

    async def script_by_uuid(request: web.Request) -> web.Response:
        """The per-host script of the host enrolled (without a MAC) with this SMBIOS UUID; any
        other UUID gets a script that says "unknown machine" and exits, so the firmware moves on
        to its next boot device. Never a ramdisk for a machine nobody enrolled."""
        requested = request.match_info["uuid"]
        peer = request.remote or "?"
        try:
            path, found_as, owners = by_uuid.lookup(boot_dir, requested)
        except InvalidSystemUUID:
            return _unknown_machine("malformed", requested, peer, "not a UUID")
        if path is None:
            reason = "ambiguous" if owners else "unknown"
            why = (
                f"claimed by several hosts through other byte orders: {', '.join(owners)}"
                if owners
                else ("no host is enrolled with this system UUID")
            )
            return _unknown_machine(reason, found_as, peer, why)
        if found_as != requested.lower():
            log.warning(
                "boot by UUID: %s (from %s) matched host %s registered as %s (the BMC and the "
                "firmware disagree on the UUID's byte order)",
                requested,
                peer,
                owners[0],
                found_as,
            )
        return _script_response(boot_dir, path.read_text(), peer)

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/by-uuid/{uuid}", script_by_uuid)
    app.router.add_get("/oci/{host}/{name}", oci_blob)
    app.router.add_get("/boot/{name}", host_script)
    app.router.add_get("/configdrive/{host}/{name}", config_drive)
    add_agent_log_routes(app, boot_dir)  # each host's agent log, per boot (worker/agent_logs.py)
    add_join_report_routes(app, boot_dir)  # why kubeadm join failed on a host (worker/join_reports.py)
    for sub in STATIC:
        app.router.add_static(f"/{sub}/", boot_dir / sub, show_index=False, follow_symlinks=False)
    app.router.add_get("/{name}", kernel_or_initrd)
    return app


def _script_response(boot_dir: Path, text: str, peer: str) -> web.Response:
    """A per-host script as served: with the boot's agent token for the first fetch; any later
    fetch gets a script that boots nothing, and the token is compromised (no secret is served
    for it; the host's next boot gets a new one)."""
    if agent_tokens.PLACEHOLDER not in text:
        return web.Response(text=text, content_type="text/plain")
    found = _HOST_ID_ARG.search(text)
    host_id = found.group(1) if found else ""
    token = agent_tokens.hand_out(boot_dir, host_id, peer) if host_id else None
    if token is not None:
        log.info("boot: %s's script (agent token %s) served to %s", host_id, token.fingerprint, peer)
        return web.Response(
            text=text.replace(agent_tokens.PLACEHOLDER, token.value), content_type="text/plain"
        )
    AGENT_TOKEN_EVENTS.labels("refetched").inc()
    first = agent_tokens.first_fetch(boot_dir, host_id) or "nobody"
    log.warning(
        "SECURITY: %s's iPXE script asked for again by %s (first served: %s): its agent token is "
        "compromised, no secret is served for it; the host's next boot gets a new one",
        host_id,
        peer,
        first,
    )
    script = (
        f"#!ipxe\necho metalflow: the agent token of this boot of {host_id} was already handed out "
        "(security event, see the boot server's log); booting nothing\nexit 1\n"
    )
    return web.Response(text=script, content_type="text/plain")


def _authorize(boot_dir: Path, host_id: str, request: web.Request, what: str) -> None:
    """The request carries `host_id`'s current, uncompromised agent token, or it is refused."""
    try:
        verdict = agent_tokens.check(boot_dir, host_id, request.headers.get("Authorization"))
    except ValueError:
        raise web.HTTPNotFound() from None
    if verdict == agent_tokens.Verdict.OK:
        return
    AGENT_TOKEN_EVENTS.labels(verdict.value).inc()
    peer = request.remote or "?"
    log.warning("SECURITY: %s of %s refused to %s: agent token %s", what, host_id, peer, verdict.value)
    reasons = {
        agent_tokens.Verdict.MISSING: "no agent token (Authorization: Bearer) was presented",
        agent_tokens.Verdict.WRONG: "the agent token is not this host's current boot's",
        agent_tokens.Verdict.NONE_ISSUED: "the host is not booted into the deploy ramdisk",
        agent_tokens.Verdict.COMPROMISED: "this boot's agent token was handed out twice (security "
        "event); the host's next boot gets a new one",
    }
    text = f"{what} of {host_id} refused: {reasons[verdict]}"
    if verdict == agent_tokens.Verdict.MISSING:
        raise web.HTTPUnauthorized(text=text, headers={"WWW-Authenticate": "Bearer"})
    raise web.HTTPForbidden(text=text)


def _unknown_machine(reason: str, requested: str, peer: str, why: str) -> web.Response:
    UNKNOWN_MACHINE_BOOTS.labels(reason).inc()
    log.warning(
        "boot by UUID: unknown machine %r from %s (%s): served a script that boots nothing",
        requested,
        peer,
        why,
    )
    shown = requested if reason != "malformed" else "(malformed)"
    script = (
        f"#!ipxe\necho metalflow: unknown machine {shown} on ${{netX/mac}}: {why}; booting nothing\nexit 1\n"
    )
    return web.Response(text=script, content_type="text/plain")


def _http_error(status: int, message: str) -> web.HTTPException:
    kinds: dict[int, type[web.HTTPException]] = {
        403: web.HTTPForbidden,
        404: web.HTTPNotFound,
        502: web.HTTPBadGateway,
    }
    return kinds[status](text=message)


@dataclass(frozen=True)
class BootServerTLS:
    """HTTPS on a second port, where ramdisk agents fetch the host's secrets with its token
    (settings.boot_server_tls_url); firmware keeps plain HTTP (Debian's iPXE has no HTTPS)."""

    port: int
    cert: Path
    key: Path

    def context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            ctx.load_cert_chain(self.cert, self.key)
        except (OSError, ssl.SSLError) as err:
            raise ValueError(
                f"--tls-cert {self.cert} / --tls-key {self.key}: cannot load them ({err}); give the boot "
                "server's PEM certificate and its key"
            ) from None
        return ctx


async def start_boot_server(
    host: str, port: int, boot_dir: Path, tls: BootServerTLS | None = None
) -> web.AppRunner:
    context = tls.context() if tls is not None else None  # checked before anything listens
    runner = web.AppRunner(build_app(boot_dir), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    if tls is not None:
        await web.TCPSite(runner, host, tls.port, ssl_context=context).start()
    return runner


async def serve(host: str, port: int, boot_dir: Path, tls: BootServerTLS | None = None) -> None:
    runner = await start_boot_server(host, port, boot_dir, tls)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
