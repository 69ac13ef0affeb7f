"""The boot server's join-report endpoint (activities/join_reports.py says why it exists).

    POST /join-report/<host id>    {"exitCode": N, "output": "..."} from the host's join script,
                                   `Authorization: Bearer <the join's report token>`

204 when kept; 401 without a bearer token or with one that is not the host's current join's;
400 for a body that is not a report; 413 past 64 KiB.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from aiohttp import web
from pydantic import ValidationError

from activities.join_reports import JoinReport, JoinReportStore, UnknownJoin

MAX_POST_BYTES = 64 << 10


def add_routes(app: web.Application, boot_dir: Path) -> JoinReportStore:
    store = JoinReportStore(boot_dir)

    async def post_report(request: web.Request) -> web.Response:
        host_id = request.match_info["host"]
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme != "Bearer" or not token:
            raise web.HTTPUnauthorized(text="give the join's report token: Authorization: Bearer <token>")
        body = await request.content.read(MAX_POST_BYTES + 1)
        if len(body) > MAX_POST_BYTES:
            raise web.HTTPRequestEntityTooLarge(max_size=MAX_POST_BYTES, actual_size=len(body))
        try:
            report = JoinReport.model_validate_json(body)
        except ValidationError as err:
            raise web.HTTPBadRequest(text=f"not a join report: {err.errors()[0]['msg']}") from None
        try:
            await asyncio.to_thread(store.save, host_id, token, report)
        except ValueError as err:  # a malformed host id
            raise web.HTTPBadRequest(text=str(err)) from None
        except UnknownJoin as err:
            raise web.HTTPUnauthorized(text=str(err)) from None
        return web.Response(status=204)

    app.router.add_post("/join-report/{host}", post_report)
    return store
