"""`metalflow boot-server`: iPXE scripts, kernel/ramdisk, images and config drives over HTTP.

aiohttp's FileResponse streams files with Content-Length and Range support, which both the
image writer and firmware HTTP boot rely on.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from aiohttp import web

SUBDIRS = ("boot", "images", "configdrive")


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

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    for sub in SUBDIRS:
        app.router.add_static(f"/{sub}/", boot_dir / sub, show_index=False, follow_symlinks=False)
    app.router.add_get("/{name}", kernel_or_initrd)
    return app


async def start_boot_server(host: str, port: int, boot_dir: Path) -> web.AppRunner:
    runner = web.AppRunner(build_app(boot_dir), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


async def serve(host: str, port: int, boot_dir: Path) -> None:
    runner = await start_boot_server(host, port, boot_dir)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
