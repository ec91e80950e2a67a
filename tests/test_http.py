"""HttpClient against a real aiohttp server on 127.0.0.1 (no mocks of aiohttp)."""

from __future__ import annotations

import asyncio
import email.utils
import os
import socket
import struct
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from instarec.errors import (
    HttpStatusError,
    ManifestError,
    ManifestUnavailableError,
    NetworkError,
    SegmentMissing,
    StorageError,
    UsageError,
)
from instarec.http import (
    HttpClient,
    HttpConfig,
    RetryPolicy,
    parse_retry_after,
)
from instarec.live import server_time
from instarec.manifest import MAX_MANIFEST_BYTES, ByteRange, UTCTiming
from instarec.store import write_file

Handler = Callable[[web.Request, int], Awaitable[web.StreamResponse]]

FAST = RetryPolicy(retries=3, base_delay=0.01, max_delay=0.05, jitter=0.25)


@dataclass
class Server:
    base: str
    routes: dict[str, Handler] = field(default_factory=dict)
    hits: Counter[tuple[str, str]] = field(default_factory=Counter)
    requests: list[web.Request] = field(default_factory=list)

    def url(self, path: str) -> str:
        return self.base + path

    def route(self, path: str, handler: Handler) -> str:
        self.routes[path] = handler
        return self.url(path)

    def count(self, path: str, method: str = "GET") -> int:
        return self.hits[(method, path)]


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    state = Server(base="")

    async def dispatch(request: web.Request) -> web.StreamResponse:
        state.hits[(request.method, request.path)] += 1
        state.requests.append(request)
        handler = state.routes.get(request.path)
        if handler is None:
            raise web.HTTPNotFound()
        return await handler(request, state.hits[(request.method, request.path)])

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", dispatch)
    runner = web.AppRunner(app, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    state.base = f"http://{host}:{port}"
    try:
        yield state
    finally:
        await runner.cleanup()


def client(**kwargs: object) -> HttpClient:
    kwargs.setdefault("retry", FAST)
    return HttpClient(HttpConfig(**kwargs))  # type: ignore[arg-type]


def body_of(size: int) -> bytes:
    return bytes(i % 251 for i in range(size))


def ok(data: bytes, **headers: str) -> Handler:
    async def handler(request: web.Request, n: int) -> web.StreamResponse:
        return web.Response(body=data, headers=headers)

    return handler


async def fetch_to(http: HttpClient, url: str, dest: Path, **options: Any) -> int:
    """A download into a file, as the recorder makes one: through the store's writer."""
    async with write_file(dest) as sink:
        return await http.download(url, sink, **options)


def files_in(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir())


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- retry policy


def test_delay_grows_exponentially_and_is_capped() -> None:
    policy = RetryPolicy(base_delay=1.0, max_delay=10.0, jitter=0.0)
    assert [policy.delay(i) for i in range(6)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_delay_jitter_stays_within_bounds_and_varies() -> None:
    policy = RetryPolicy(base_delay=1.0, max_delay=100.0, jitter=0.25)
    delays = [policy.delay(2) for _ in range(200)]
    assert all(3.0 <= d <= 5.0 for d in delays)
    assert len(set(delays)) > 100


def test_delay_honours_retry_after_up_to_max_delay() -> None:
    policy = RetryPolicy(base_delay=0.01, max_delay=30.0, jitter=0.0)
    assert policy.delay(0, retry_after=7.0) == 7.0
    assert policy.delay(0, retry_after=3600.0) == 30.0


def test_parse_retry_after_seconds_and_http_date() -> None:
    assert parse_retry_after("120") == 120.0
    now = time.time()
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert parse_retry_after(date, now=now) == pytest.approx(30.0, abs=1.0)
    assert parse_retry_after("garbage") is None
    assert parse_retry_after(None) is None


# ---------------------------------------------------------------- download


async def test_download_retries_503_then_succeeds(server: Server, tmp_path: Path) -> None:
    data = body_of(5000)

    async def flaky(request: web.Request, n: int) -> web.StreamResponse:
        if n <= 2:
            return web.Response(status=503)
        return web.Response(body=data)

    url = server.route("/seg", flaky)
    dest = tmp_path / "seg.m4s"
    async with client() as http:
        size = await fetch_to(http, url, dest)
        stats = http.stats.snapshot()
    assert size == len(data)
    assert dest.read_bytes() == data
    assert server.count("/seg") == 3
    assert stats.retries == 2
    assert stats.requests[("GET", 503)] == 2
    assert stats.requests[("GET", 200)] == 1
    assert stats.bytes_downloaded == len(data)


async def test_429_waits_for_retry_after(server: Server, tmp_path: Path) -> None:
    async def limited(request: web.Request, n: int) -> web.StreamResponse:
        if n == 1:
            return web.Response(status=429, headers={"Retry-After": "1"})
        return web.Response(body=b"ok")

    url = server.route("/seg", limited)
    policy = RetryPolicy(retries=2, base_delay=0.01, max_delay=5.0)
    async with client(retry=policy) as http:
        started = time.monotonic()
        await fetch_to(http, url, tmp_path / "a")
        elapsed = time.monotonic() - started
    assert server.count("/seg") == 2
    assert elapsed >= 0.95


async def test_gives_up_after_retries_with_network_error(server: Server, tmp_path: Path) -> None:
    async def broken(request: web.Request, n: int) -> web.StreamResponse:
        return web.Response(status=500)

    url = server.route("/seg", broken)
    dest = tmp_path / "seg"
    async with client(retry=RetryPolicy(retries=2, base_delay=0.01)) as http:
        with pytest.raises(NetworkError, match="HTTP 500") as info:
            await fetch_to(http, url, dest)
    assert not isinstance(info.value, SegmentMissing)
    assert server.count("/seg") == 3
    assert not dest.exists()
    assert files_in(tmp_path) == []


async def test_404_is_segment_missing_without_retry(server: Server, tmp_path: Path) -> None:
    async def gone(request: web.Request, n: int) -> web.StreamResponse:
        return web.Response(status=404)

    url = server.route("/seg", gone)
    async with client() as http:
        with pytest.raises(SegmentMissing) as info:
            await fetch_to(http, url, tmp_path / "seg")
    assert info.value.status == 404
    assert server.count("/seg") == 1
    assert files_in(tmp_path) == []


async def test_410_is_segment_missing(server: Server, tmp_path: Path) -> None:
    async def gone(request: web.Request, n: int) -> web.StreamResponse:
        return web.Response(status=410)

    url = server.route("/seg", gone)
    async with client() as http:
        with pytest.raises(SegmentMissing):
            await fetch_to(http, url, tmp_path / "seg")
    assert server.count("/seg") == 1
    assert files_in(tmp_path) == []


async def test_connection_reset_mid_body_is_retried(server: Server, tmp_path: Path) -> None:
    data = body_of(200_000)

    async def resetting(request: web.Request, n: int) -> web.StreamResponse:
        if n == 1:
            resp = web.StreamResponse(headers={"Content-Length": str(len(data))})
            await resp.prepare(request)
            await resp.write(data[:70_000])
            await asyncio.sleep(0.05)
            transport = request.transport
            assert transport is not None
            sock = transport.get_extra_info("socket")
            # SO_LINGER 0: close() sends a RST instead of a FIN.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
            return resp
        return web.Response(body=data)

    url = server.route("/seg", resetting)
    dest = tmp_path / "seg"
    async with client() as http:
        assert await fetch_to(http, url, dest) == len(data)
        stats = http.stats.snapshot()
    assert dest.read_bytes() == data
    assert server.count("/seg") == 2
    assert stats.retries == 1


async def test_truncated_body_is_retried(server: Server, tmp_path: Path) -> None:
    data = body_of(50_000)

    async def truncating(request: web.Request, n: int) -> web.StreamResponse:
        if n == 1:
            resp = web.StreamResponse(headers={"Content-Length": str(len(data) + 1000)})
            await resp.prepare(request)
            await resp.write(data)
            await asyncio.sleep(0.05)
            assert request.transport is not None
            request.transport.close()
            return resp
        return web.Response(body=data)

    url = server.route("/seg", truncating)
    dest = tmp_path / "seg"
    restarts: list[int] = []
    chunks: list[bytes] = []
    async with client() as http:
        size = await fetch_to(
            http, url, dest, on_chunk=chunks.append, on_restart=lambda: restarts.append(len(chunks))
        )
    assert size == len(data)
    assert dest.read_bytes() == data
    assert server.count("/seg") == 2
    # The caller was told to start over, and the chunks after that are exactly the body.
    assert len(restarts) == 1
    assert b"".join(chunks[restarts[0] :]) == data


async def test_truncated_body_exhausts_retries(server: Server, tmp_path: Path) -> None:
    async def truncating(request: web.Request, n: int) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Length": "1000"})
        await resp.prepare(request)
        await resp.write(b"x" * 10)
        assert request.transport is not None
        request.transport.close()
        return resp

    url = server.route("/seg", truncating)
    dest = tmp_path / "seg"
    async with client(retry=RetryPolicy(retries=1, base_delay=0.01)) as http:
        with pytest.raises(NetworkError):
            await fetch_to(http, url, dest)
    assert server.count("/seg") == 2
    assert files_in(tmp_path) == []


async def range_handler(data: bytes, request: web.Request) -> web.StreamResponse:
    header = request.headers.get("Range")
    if header is None:
        return web.Response(body=data)
    first_s, last_s = header.removeprefix("bytes=").split("-")
    first = int(first_s)
    last = int(last_s) if last_s else len(data) - 1
    return web.Response(
        status=206,
        body=data[first : last + 1],
        headers={"Content-Range": f"bytes {first}-{last}/{len(data)}"},
    )


async def test_range_download(server: Server, tmp_path: Path) -> None:
    data = body_of(10_000)
    url = server.route("/file", lambda request, n: range_handler(data, request))
    async with client() as http:
        dest = tmp_path / "part1"
        assert await fetch_to(http, url, dest, byte_range=ByteRange(100, 1099)) == 1000
        assert dest.read_bytes() == data[100:1100]
        tail = await http.fetch_body(url, byte_range=ByteRange(9000, None))
        assert tail.body == data[9000:]
    assert [r.headers.get("Range") for r in server.requests] == ["bytes=100-1099", "bytes=9000-"]


async def test_range_ignored_by_server_is_an_error(server: Server, tmp_path: Path) -> None:
    url = server.route("/file", ok(body_of(3000)))
    dest = tmp_path / "x"
    async with client() as http:
        with pytest.raises(HttpStatusError, match="ignored the Range"):
            await fetch_to(http, url, dest, byte_range=ByteRange(10, 19))
    assert not dest.exists()


async def test_wrong_content_range_is_retried(server: Server, tmp_path: Path) -> None:
    data = body_of(3000)

    async def wrong_then_right(request: web.Request, n: int) -> web.StreamResponse:
        if n == 1:
            return web.Response(
                status=206, body=data[0:10], headers={"Content-Range": "bytes 0-9/3000"}
            )
        return await range_handler(data, request)

    url = server.route("/file", wrong_then_right)
    async with client() as http:
        answer = await http.fetch_body(url, byte_range=ByteRange(10, 19))
        assert answer.body == data[10:20]
    assert server.count("/file") == 2


async def test_on_chunk_sees_every_chunk_in_order(server: Server, tmp_path: Path) -> None:
    data = body_of(600_000)
    url = server.route("/big", ok(data))
    chunks: list[bytes] = []
    async with client() as http:
        await fetch_to(http, url, tmp_path / "big", on_chunk=chunks.append)
    assert len(chunks) > 1
    # Pieces come as they arrive, bounded by the stream's read buffer (flow control pauses
    # reading past twice its 64 KiB limit): memory stays flat whatever the body size.
    assert all(len(c) <= 256 * 1024 for c in chunks)
    assert b"".join(chunks) == data


async def test_download_sends_identity_encoding(server: Server, tmp_path: Path) -> None:
    url = server.route("/seg", ok(b"abc"))
    async with client() as http:
        await fetch_to(http, url, tmp_path / "s")
    assert server.requests[0].headers["Accept-Encoding"] == "identity"


async def test_cancellation_deletes_part_file(server: Server, tmp_path: Path) -> None:
    async def stalling(request: web.Request, n: int) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Length": "100000"})
        await resp.prepare(request)
        await resp.write(b"x" * 1000)
        await asyncio.sleep(30)
        return resp

    url = server.route("/seg", stalling)
    dest = tmp_path / "seg"
    part = tmp_path / "seg.part"
    got_bytes = asyncio.Event()
    async with client() as http:
        task = asyncio.create_task(
            fetch_to(http, url, dest, on_chunk=lambda chunk: got_bytes.set())
        )
        await asyncio.wait_for(got_bytes.wait(), 5)
        assert part.exists()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert not part.exists()
    assert not dest.exists()


async def test_read_timeout_is_retried_then_network_error(server: Server, tmp_path: Path) -> None:
    async def stalling(request: web.Request, n: int) -> web.StreamResponse:
        await asyncio.sleep(5)
        return web.Response(body=b"late")

    url = server.route("/slow", stalling)
    async with client(read_timeout=0.2, retry=RetryPolicy(retries=1, base_delay=0.01)) as http:
        with pytest.raises(NetworkError, match="timed out"):
            await fetch_to(http, url, tmp_path / "s")
    assert server.count("/slow") == 2


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
async def test_disk_full_is_storage_error_without_retry(server: Server, tmp_path: Path) -> None:
    url = server.route("/seg", ok(body_of(100_000)))
    dest = tmp_path / "seg"
    # The .part path points at /dev/full: every write fails with ENOSPC.
    (tmp_path / "seg.part").symlink_to("/dev/full")
    async with client() as http:
        with pytest.raises(StorageError, match="disk full"):
            await fetch_to(http, url, dest)
    assert server.count("/seg") == 1
    assert not dest.exists()
    assert not (tmp_path / "seg.part").is_symlink()


# ---------------------------------------------------------------- probe


async def test_probe_head(server: Server) -> None:
    url = server.route("/seg", ok(b"body"))
    async with client() as http:
        assert await http.probe(url) is True
        assert await http.probe(server.url("/nothing")) is False
    assert server.count("/seg", "HEAD") == 1
    assert server.count("/seg", "GET") == 0


async def test_probe_falls_back_to_range_get_on_405(server: Server) -> None:
    data = body_of(1000)

    async def no_head(request: web.Request, n: int) -> web.StreamResponse:
        if request.method == "HEAD":
            return web.Response(status=405)
        return await range_handler(data, request)

    url = server.route("/seg", no_head)
    async with client() as http:
        assert await http.probe(url) is True
        assert await http.probe(url) is True
    assert server.count("/seg", "HEAD") == 1  # the second probe remembers HEAD is refused
    assert server.count("/seg", "GET") == 2
    gets = [r for r in server.requests if r.method == "GET"]
    assert all(r.headers["Range"] == "bytes=0-0" for r in gets)


async def test_probe_forbidden_is_false_and_5xx_is_retried(server: Server) -> None:
    async def forbidden(request: web.Request, n: int) -> web.StreamResponse:
        return web.Response(status=403)

    async def flaky(request: web.Request, n: int) -> web.StreamResponse:
        return web.Response(status=502 if n == 1 else 200)

    async def down(request: web.Request, n: int) -> web.StreamResponse:
        return web.Response(status=503)

    forbidden_url = server.route("/forbidden", forbidden)
    flaky_url = server.route("/flaky", flaky)
    down_url = server.route("/down", down)
    async with client(probe_retries=2) as http:
        assert await http.probe(forbidden_url) is False
        assert await http.probe(flaky_url) is True
        with pytest.raises(NetworkError):
            await http.probe(down_url)
    assert server.count("/forbidden", "HEAD") == 1
    assert server.count("/flaky", "HEAD") == 2
    assert server.count("/down", "HEAD") == 3


# ---------------------------------------------------------------- manifest


async def test_manifest_follows_redirect_and_exposes_headers(server: Server) -> None:
    async def redirect(request: web.Request, n: int) -> web.StreamResponse:
        # A raw Location: web.HTTPFound would normalise the query itself.
        location = server.url("/live/manifest.mpd?sig=abc%2Fdef&x=1")
        return web.Response(status=302, headers={"Location": location})

    server.route("/start.mpd", redirect)
    server.route("/live/manifest.mpd", ok(b"<MPD/>", **{"X-FB-Video-Broadcast-Ended": "1"}))
    async with client() as http:
        resp = await http.fetch_manifest(server.url("/start.mpd"), max_bytes=MAX_MANIFEST_BYTES)
    assert resp.status == 200
    assert resp.body == b"<MPD/>"
    assert resp.url == server.url("/live/manifest.mpd?sig=abc%2Fdef&x=1")
    assert resp.headers["x-fb-video-broadcast-ended"] == "1"


@pytest.mark.parametrize(
    ("status", "words"),
    [(403, "access denied"), (401, "access denied"), (404, "gone"), (410, "gone")],
)
async def test_manifest_unavailable(server: Server, status: int, words: str) -> None:
    async def refuse(request: web.Request, n: int) -> web.StreamResponse:
        return web.Response(status=status)

    url = server.route("/m.mpd", refuse)
    async with client() as http:
        with pytest.raises(ManifestUnavailableError, match=words) as info:
            await http.fetch_manifest(url, max_bytes=MAX_MANIFEST_BYTES)
    assert info.value.status == status
    assert f"HTTP {status}" in str(info.value)
    assert server.count("/m.mpd") == 1


async def test_manifest_retries_503(server: Server) -> None:
    async def flaky(request: web.Request, n: int) -> web.StreamResponse:
        if n == 1:
            return web.Response(status=503, headers={"Retry-After": "0"})
        return web.Response(body=b"<MPD/>")

    url = server.route("/m.mpd", flaky)
    async with client() as http:
        assert (await http.fetch_manifest(url, max_bytes=MAX_MANIFEST_BYTES)).body == b"<MPD/>"
    assert server.count("/m.mpd") == 2


async def test_manifest_size_is_capped(server: Server) -> None:
    async def chunked(request: web.Request, n: int) -> web.StreamResponse:
        resp = web.StreamResponse()  # no Content-Length: the cap must hold while streaming
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for _ in range(10):
            await resp.write(b"x" * 1000)
        await resp.write_eof()
        return resp

    url = server.route("/huge", chunked)
    small = server.route("/big", ok(b"x" * 5000))
    async with client() as http:
        with pytest.raises(ManifestError):
            await http.fetch_manifest(url, max_bytes=4000)
        with pytest.raises(ManifestError):
            await http.fetch_manifest(small, max_bytes=4000)
        assert len((await http.fetch_manifest(small, max_bytes=5000)).body) == 5000


# ---------------------------------------------------------------- connection errors


async def test_dns_failure_names_the_host(tmp_path: Path) -> None:
    async with client(retry=RetryPolicy(retries=1, base_delay=0.01)) as http:
        with pytest.raises(NetworkError, match=r"cannot resolve host 'no-such-host\.invalid'"):
            await fetch_to(http, "http://no-such-host.invalid/seg", tmp_path / "s")
        assert http.stats.snapshot().transport_errors["dns"] == 2


async def test_connection_refused_names_host_and_port() -> None:
    port = closed_port()
    async with client(retry=RetryPolicy(retries=1, base_delay=0.01)) as http:
        with pytest.raises(NetworkError, match=f"connection refused by 127.0.0.1:{port}"):
            await http.fetch_manifest(
                f"http://127.0.0.1:{port}/m.mpd", max_bytes=MAX_MANIFEST_BYTES
            )
        assert http.stats.snapshot().retries == 1


@pytest.mark.parametrize("url", ["example.com/a.mpd", "ftp://example.com/a", "http:///a", ""])
async def test_invalid_url_is_usage_error(url: str) -> None:
    async with client() as http:
        with pytest.raises(UsageError):
            await http.fetch_manifest(url, max_bytes=MAX_MANIFEST_BYTES)


# ---------------------------------------------------------------- headers, cookies, proxy


async def test_default_user_agent_and_custom_headers(server: Server) -> None:
    url = server.route("/m.mpd", ok(b"<MPD/>"))
    async with client() as http:
        await http.fetch_manifest(url, max_bytes=MAX_MANIFEST_BYTES)
    async with client(
        headers=(("Referer", "https://www.instagram.com/"),), user_agent="UA/1"
    ) as http:
        await http.fetch_manifest(url, max_bytes=MAX_MANIFEST_BYTES)
    first, second = server.requests
    assert first.headers["User-Agent"].startswith("instarec/")
    assert second.headers["User-Agent"] == "UA/1"
    assert second.headers["Referer"] == "https://www.instagram.com/"


async def test_cookies_file_is_sent(server: Server, tmp_path: Path) -> None:
    cookies = tmp_path / "cookies.txt"
    expires = int(time.time()) + 3600
    cookies.write_text(
        "# Netscape HTTP Cookie File\n"
        f"127.0.0.1\tFALSE\t/\tFALSE\t{expires}\tsessionid\tabc123\n"
        "127.0.0.1\tFALSE\t/\tFALSE\t0\tcsrftoken\txyz\n"
        "127.0.0.1\tFALSE\t/\tFALSE\t1000\told\tgone\n"
        "127.0.0.1\tFALSE\t/private\tFALSE\t0\telsewhere\tno\n"
    )
    url = server.route("/m.mpd", ok(b"<MPD/>"))
    async with client(cookies_file=cookies) as http:
        await http.fetch_manifest(url, max_bytes=MAX_MANIFEST_BYTES)
    assert dict(server.requests[0].cookies) == {"sessionid": "abc123", "csrftoken": "xyz"}


def test_missing_or_invalid_cookies_file_is_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="not found"):
        HttpClient(HttpConfig(cookies_file=tmp_path / "absent.txt"))
    bad = tmp_path / "bad.txt"
    bad.write_text("this is not a cookies file\n")
    with pytest.raises(UsageError, match="invalid cookies file"):
        HttpClient(HttpConfig(cookies_file=bad))


def test_unsupported_proxy_scheme_is_usage_error() -> None:
    with pytest.raises(UsageError, match="proxy"):
        HttpClient(HttpConfig(proxy="ftp://proxy:21"))


async def test_http_proxy_receives_the_request(server: Server) -> None:
    origin = server.route("/m.mpd", ok(b"<MPD/>"))
    seen: list[str] = []

    # A minimal forward proxy: plain-HTTP requests arrive in absolute form.
    async def proxy_handler(request: web.Request) -> web.StreamResponse:
        seen.append(str(request.url))
        return web.Response(body=b"<MPD from proxy/>")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", proxy_handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        async with client(proxy=f"http://{host}:{port}") as http:
            resp = await http.fetch_manifest(origin, max_bytes=MAX_MANIFEST_BYTES)
    finally:
        await runner.cleanup()
    assert resp.body == b"<MPD from proxy/>"
    assert len(seen) == 1
    assert server.count("/m.mpd") == 0


# ---------------------------------------------------------------- server time


async def test_server_time_schemes(server: Server) -> None:
    when = datetime(2024, 5, 6, 7, 8, 9, 123000, tzinfo=UTC)
    server.route("/iso", ok(b"2024-05-06T07:08:09.123Z"))
    server.route("/xs", ok(b"2024-05-06T09:08:09.123456789+02:00\n"))

    async def dated(request: web.Request, n: int) -> web.StreamResponse:
        return web.Response(headers={"Date": "Mon, 06 May 2024 07:08:09 GMT"})

    server.route("/head", dated)
    async with client() as http:
        iso = await server_time(
            http, UTCTiming("urn:mpeg:dash:utc:http-iso:2014", server.url("/iso"))
        )
        xs = await server_time(
            http, UTCTiming("urn:mpeg:dash:utc:http-xsdate:2014", server.url("/xs"))
        )
        head = await server_time(
            http, UTCTiming("urn:mpeg:dash:utc:http-head:2014", server.url("/head"))
        )
        direct = await server_time(
            http, UTCTiming("urn:mpeg:dash:utc:direct:2014", "2024-05-06T07:08:09Z")
        )
        ntp = await server_time(http, UTCTiming("urn:mpeg:dash:utc:ntp:2014", "pool.ntp.org"))
    assert iso == when
    assert xs is not None and abs(xs - when) < timedelta(milliseconds=1)
    assert head == when.replace(microsecond=0)
    assert direct == when.replace(microsecond=0)
    assert ntp is None
    assert server.count("/head", "HEAD") == 1


async def test_server_time_garbage_is_an_error(server: Server) -> None:
    url = server.route("/iso", ok(b"<html>nope</html>"))
    async with client() as http:
        with pytest.raises(ManifestError, match="invalid date-time"):
            await server_time(http, UTCTiming("urn:mpeg:dash:utc:http-iso:2014", url))


@dataclass
class Socks5Proxy:
    """A SOCKS5 proxy (no authentication, CONNECT only) on 127.0.0.1, for one test."""

    port: int = 0
    # (host, port) of every CONNECT, as the client named them.
    connects: list[tuple[str, int]] = field(default_factory=list)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            version, methods = await reader.readexactly(2)
            await reader.readexactly(methods)
            writer.write(bytes([5, 0]))  # no authentication
            _, command, _, address_type = await reader.readexactly(4)
            if address_type == 3:  # a host name: the client left resolving to the proxy
                host = (await reader.readexactly((await reader.readexactly(1))[0])).decode()
            elif address_type == 1:
                host = socket.inet_ntoa(await reader.readexactly(4))
            else:
                writer.close()
                return
            port = int.from_bytes(await reader.readexactly(2), "big")
            if version != 5 or command != 1:
                writer.close()
                return
            self.connects.append((host, port))
            upstream_reader, upstream_writer = await asyncio.open_connection(host, port)
            writer.write(bytes([5, 0, 0, 1, 0, 0, 0, 0, 0, 0]))

            async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
                while chunk := await src.read(65536):
                    dst.write(chunk)
                    await dst.drain()
                dst.close()

            await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()


async def test_requests_go_through_a_socks_proxy(server: Server, tmp_path: Path) -> None:
    data = body_of(100_000)
    url = server.route("/seg", ok(data))
    proxy = Socks5Proxy()
    listener = await asyncio.start_server(proxy.handle, "127.0.0.1", 0)
    proxy.port = listener.sockets[0].getsockname()[1]
    try:
        async with client(proxy=f"socks5://127.0.0.1:{proxy.port}") as http:
            size = await fetch_to(http, url, tmp_path / "seg")
            manifest = await http.fetch_manifest(url, max_bytes=MAX_MANIFEST_BYTES)
    finally:
        listener.close()
        await listener.wait_closed()
    assert size == len(data)
    assert (tmp_path / "seg").read_bytes() == data
    assert manifest.body == data
    server_port = int(server.base.rsplit(":", 1)[1])
    # Both requests crossed the proxy, which resolved the host itself (socks5 with rdns).
    assert proxy.connects and all(c == ("127.0.0.1", server_port) for c in proxy.connects)
    assert server.count("/seg") == 2


async def test_socks_proxy_without_the_extra_is_usage_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # None in sys.modules makes the import fail as if the package were not installed.
    monkeypatch.setitem(sys.modules, "aiohttp_socks", None)
    with pytest.raises(UsageError, match="socks"):
        async with client(proxy="socks5://127.0.0.1:1080"):
            pass
