"""`metalflow codec-server`: Temporal's remote codec endpoints (POST /encode, POST /decode), so the
Temporal UI (its "codec server" setting, or the server's `--ui-codec-endpoint`) and the `temporal`
CLI (`--codec-endpoint`) show sealed payloads decoded to an operator who holds the key file.

Run it where the key is: on the operator's own machine (the UI calls it from the browser), or
beside the UI behind the same sign-in. It listens on loopback unless told otherwise, and answers
cross-origin calls only from the UI origins it is given.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable

from aiohttp import web
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from temporalio.api.common.v1 import Payloads

from metalflow.runtime.payload_codec import EncryptionCodec, PayloadKeyError

log = logging.getLogger(__name__)

ALLOWED_HEADERS = "Content-Type, X-Namespace, Authorization"


def build_app(codec: EncryptionCodec, allow_origins: Iterable[str] = ()) -> web.Application:
    origins = frozenset(o.rstrip("/") for o in allow_origins)

    @web.middleware
    async def cors(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        origin = request.headers.get("Origin", "")
        if request.method == "OPTIONS":
            response: web.StreamResponse = web.Response(status=204 if origin in origins else 403)
        else:
            response = await handler(request)
        if origin in origins:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Allow-Credentials"] = "true"
            response.headers["Access-Control-Allow-Methods"] = "POST, OPTIONS"
            response.headers["Access-Control-Allow-Headers"] = ALLOWED_HEADERS
            response.headers["Vary"] = "Origin"
        return response

    async def convert(request: web.Request, decode: bool) -> web.Response:
        try:
            payloads = json_format.Parse(await request.text(), Payloads())
        except (json_format.ParseError, DecodeError) as err:
            raise web.HTTPBadRequest(
                text=f'body: not a JSON Payloads message ({err}); send {{"payloads": []}}'
            ) from None
        try:
            out = await (codec.decode if decode else codec.encode)(list(payloads.payloads))
        except PayloadKeyError as err:
            raise web.HTTPBadRequest(text=str(err)) from None
        body = json_format.MessageToJson(Payloads(payloads=out))
        return web.Response(text=body, content_type="application/json")

    async def encode(request: web.Request) -> web.Response:
        return await convert(request, decode=False)

    async def decode(request: web.Request) -> web.Response:
        return await convert(request, decode=True)

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "active_key": codec.active_key_id})

    app = web.Application(middlewares=[cors])
    app.router.add_post("/encode", encode)
    app.router.add_post("/decode", decode)
    app.router.add_get("/healthz", healthz)
    app.router.add_route("OPTIONS", "/{tail:.*}", healthz)  # answered by the middleware
    return app


async def serve(codec: EncryptionCodec, host: str, port: int, allow_origins: Iterable[str] = ()) -> None:
    runner = web.AppRunner(build_app(codec, allow_origins))
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    log.info("codec server on http://%s:%d (key %s)", host, port, codec.active_key_id)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
