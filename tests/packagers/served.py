"""The test server: a packager's output directory served over HTTP, every request logged."""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

# -- the served directory ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    status: int
    at: float  # seconds since the server started


@dataclass(slots=True)
class RequestLog:
    requests: list[Request] = field(default_factory=list)


@contextlib.asynccontextmanager
async def served_directory(
    directory: Path, on_first_manifest: Callable[[], None], manifest_path: str
) -> AsyncIterator[tuple[str, RequestLog]]:
    """Serve ``directory`` on a free port; yield its base URL and the log of every request.

    ``on_first_manifest`` runs when the manifest is first asked for: the instant the recorder
    joins, when the harness notes what the packager still has on disk.
    """
    log = RequestLog()
    joined = False
    started = time.monotonic()

    @web.middleware
    async def note_join(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        nonlocal joined
        if request.path == manifest_path and not joined:
            joined = True
            on_first_manifest()
        return await handler(request)

    async def logged(request: web.Request, response: web.StreamResponse) -> None:
        # At prepare time the status is final: a static file response finds out only then
        # that the file is missing (404).
        at = time.monotonic() - started
        log.requests.append(Request(request.method, request.path, response.status, at))

    app = web.Application(middlewares=[note_join])
    app.on_response_prepare.append(logged)
    app.router.add_static("/", directory)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    # Bound here, port 0: a port picked first and bound later may be taken meanwhile by a
    # case running beside this one.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    site = web.SockSite(runner, sock)
    await site.start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", log
    finally:
        await runner.cleanup()
        sock.close()
