"""The only module that talks HTTP.

One ``aiohttp.ClientSession`` per :class:`HttpClient`, shared by every request of a recording.
Transient failures (5xx, 429, timeouts, connection resets, truncated bodies) are retried with
exponential backoff and jitter, honouring ``Retry-After``; final answers (404/410 on a segment,
401/403/404/410 on the manifest) are not. aiohttp and OS errors are translated into the
project's errors here (``errors.py``), so no caller has to know about aiohttp.

This module knows nothing about DASH: byte ranges and UTCTiming elements are read through their
attributes only.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC
from http.cookies import Morsel
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import TYPE_CHECKING, Final, Literal, Protocol, Self, TypeVar

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from instarec import __version__
from instarec.cookies import Cookie, load_cookies_file
from instarec.errors import (
    HttpStatusError,
    ManifestError,
    ManifestUnavailableError,
    NetworkError,
    SegmentMissing,
    UsageError,
)
from instarec.options import DEFAULTS
from instarec.pacing import PaceSettings, ServerPace

if TYPE_CHECKING:
    from instarec.manifest import ByteRange

log = logging.getLogger(__name__)

_T = TypeVar("_T")

CHUNK_SIZE: Final = 64 * 1024
HTTP_PROXY_SCHEMES: Final = frozenset({"http", "https"})
SOCKS_PROXY_SCHEMES: Final = frozenset({"socks4", "socks4a", "socks5", "socks5h"})
# Statuses worth asking again: the server is overloaded or briefly broken.
_RETRY_STATUSES: Final = frozenset({408, 425, 429, 500, 502, 503, 504})
_PUSHBACK_STATUSES: Final = frozenset({429, 503})
_GONE_STATUSES: Final = frozenset({404, 410})
_DENIED_STATUSES: Final = frozenset({401, 403})
# HEAD is not implemented by some origins; a 1-byte GET answers the same question.
_HEAD_UNSUPPORTED: Final = frozenset({405, 501})
_CONTENT_RANGE_RE: Final = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently transient failures are retried.

    ``retries`` counts retries, so a request is attempted at most ``retries + 1`` times.
    """

    retries: int = DEFAULTS.download_retries
    base_delay: float = DEFAULTS.download_retry_delay
    max_delay: float = 30.0
    jitter: float = 0.25

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number ``attempt`` (0 for the first retry).

        Exponential backoff capped at ``max_delay``, spread by ±``jitter`` (a fraction) so
        parallel downloads that failed together do not all come back at the same instant. A
        server's ``Retry-After`` wins when it asks for longer, up to ``max_delay``: a live
        recording cannot sleep for an hour without losing the window.
        """
        backoff = min(self.max_delay, self.base_delay * (2.0 ** max(0, attempt)))
        spread = random.uniform(1.0 - self.jitter, 1.0 + self.jitter)
        wait = min(self.max_delay, backoff * spread)
        if retry_after is not None:
            wait = max(wait, min(retry_after, self.max_delay))
        return max(0.0, wait)


@dataclass(frozen=True, slots=True)
class HttpConfig:
    headers: tuple[tuple[str, str], ...] = ()
    user_agent: str | None = None
    proxy: str | None = None
    cookies_file: Path | None = None
    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    retry: RetryPolicy = RetryPolicy()
    probe_retries: int = DEFAULTS.check_url_retries
    max_connections: int = 100
    concurrency: int = DEFAULTS.concurrency  # the ceiling of the adaptive download limit


class BodySink(Protocol):
    """Where a download's body goes (``store.SegmentWriter``)."""

    def write(self, chunk: bytes) -> None: ...

    def restart(self) -> None:
        """Drop what was written: the body starts over."""
        ...


@dataclass(frozen=True, slots=True)
class TextResponse:
    url: str  # final URL after redirects, query string kept
    status: int
    headers: Mapping[str, str]  # case-insensitive
    body: bytes


@dataclass(frozen=True, slots=True)
class HttpStatsSnapshot:
    requests: Mapping[tuple[str, int], int]  # (method, status) -> count
    transport_errors: Mapping[str, int]  # error kind -> count (no status was received)
    bytes_downloaded: int
    retries: int

    @property
    def total_requests(self) -> int:
        return sum(self.requests.values())


@dataclass(slots=True)
class HttpStats:
    """Live counters of one client; read them through :meth:`snapshot`."""

    requests: Counter[tuple[str, int]] = field(default_factory=Counter)
    transport_errors: Counter[str] = field(default_factory=Counter)
    bytes_downloaded: int = 0
    retries: int = 0

    def snapshot(self) -> HttpStatsSnapshot:
        return HttpStatsSnapshot(
            requests=MappingProxyType(dict(self.requests)),
            transport_errors=MappingProxyType(dict(self.transport_errors)),
            bytes_downloaded=self.bytes_downloaded,
            retries=self.retries,
        )


class _Retryable(Exception):
    """One attempt failed in a way another attempt may not: internal to this module."""

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        max_retries: int | None = None,
        pushback: bool = False,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after
        self.max_retries = max_retries  # tighter than the policy for failures unlikely to pass
        # The server said it bears no more (429, 503, a connection reset before any answer).
        self.pushback = pushback


def _to_url(url: str) -> URL:
    """Parse and validate an absolute http(s) URL; UsageError otherwise."""
    try:
        # Keep the URL byte for byte when it is already encoded: signed CDN URLs may be
        # rejected if their query is re-quoted.
        if url.isascii() and url.isprintable() and " " not in url:
            parsed = URL(url, encoded=True)
        else:
            parsed = URL(url)
    except (ValueError, TypeError) as exc:
        raise UsageError(f"invalid URL {url!r}: {exc}") from exc
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise UsageError(f"invalid URL {url!r}: expected an absolute http:// or https:// URL")
    return parsed


def _describe_host(url: URL) -> str:
    return f"{url.host}:{url.port}" if url.port is not None else str(url.host)


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP date), else None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


class HttpClient:
    """``async with HttpClient(config) as http: ...`` — one session for a whole recording."""

    def __init__(self, config: HttpConfig | None = None) -> None:
        self._config = config if config is not None else HttpConfig()
        self.stats = HttpStats()
        self.pace = ServerPace(PaceSettings(ceiling=self._config.concurrency))
        self._session: aiohttp.ClientSession | None = None
        self._proxy: str | None = None
        # Hosts that answered a HEAD with 405/501: their probes go straight to a Range GET.
        self._no_head_hosts: set[str] = set()
        # Validate user input up front so the CLI fails before any network work.
        self._socks_proxy: str | None = None
        proxy = self._config.proxy
        if proxy:
            scheme = URL(proxy).scheme.lower()
            if scheme in HTTP_PROXY_SCHEMES:
                self._proxy = proxy
            elif scheme in SOCKS_PROXY_SCHEMES:
                self._socks_proxy = proxy
            else:
                raise UsageError(
                    f"unsupported proxy {proxy!r}: use http://, https://, socks4:// or socks5://"
                )
        self._cookies: tuple[Cookie, ...] = ()
        if self._config.cookies_file is not None:
            self._cookies = load_cookies_file(self._config.cookies_file)

    @property
    def config(self) -> HttpConfig:
        return self._config

    async def __aenter__(self) -> Self:
        self._session = _open_session(self._config, self._socks_proxy, self._cookies)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("HttpClient used outside 'async with'")
        return self._session

    # ------------------------------------------------------------------ public API

    async def fetch_manifest(self, url: str, *, max_bytes: int) -> TextResponse:
        """GET the manifest (redirects followed), retrying transient failures.

        401/403/404/410 raise ManifestUnavailableError (no retry); a body over ``max_bytes``
        raises ManifestError: whatever it is, it is not an MPD.
        """
        target = _to_url(url)

        async def attempt() -> TextResponse:
            async with self._request("GET", target) as resp:
                body = await _manifest_body(resp, target, max_bytes)
                self.stats.bytes_downloaded += len(body)
                return TextResponse(
                    url=str(resp.url),
                    status=resp.status,
                    headers=CIMultiDictProxy(CIMultiDict(resp.headers)),
                    body=body,
                )

        return await self._retrying(attempt, target, self._config.retry.retries)

    async def probe(self, url: str, *, refusals: bool = False) -> bool:
        """Does the resource exist? True on 2xx, False on 401/403/404/410.

        HEAD first; on 405/501 a ``Range: bytes=0-0`` GET. Transient failures are retried
        ``probe_retries`` times, then NetworkError. ``refusals``: 401/403/410 raise
        HttpStatusError instead (an expired signature answers so).
        """
        target = _to_url(url)

        async def attempt() -> bool:
            host = target.host or ""
            if host not in self._no_head_hosts:
                async with self._request("HEAD", target) as resp:
                    if resp.status not in _HEAD_UNSUPPORTED:
                        return _probe_answer(resp, target, refusals)
                self._no_head_hosts.add(host)
                log.debug("%s does not support HEAD: probing with a Range GET", host)
            async with self._request("GET", target, headers={"Range": "bytes=0-0"}) as resp:
                answer = _probe_answer(resp, target, refusals)
                if resp.status != 206:
                    # The server ignored the Range: drop the connection instead of reading a
                    # whole segment just to learn that it exists.
                    resp.close()
                return answer

        return await self._retrying(attempt, target, self._config.probe_retries, paced="probe")

    async def download(
        self,
        url: str,
        sink: BodySink,
        *,
        byte_range: ByteRange | None = None,
        on_chunk: Callable[[bytes], None] | None = None,
        on_restart: Callable[[], None] | None = None,
    ) -> int:
        """Stream ``url`` (or ``byte_range`` of it) into ``sink``; return the size in bytes.

        The body is checked against Content-Length (and Content-Range); a retry calls
        ``sink.restart()`` first, so the sink holds exactly one whole body when this returns.
        ``on_chunk`` sees each chunk as it arrives, from the first byte again after a retry;
        ``on_restart`` is called before each retry so a caller accumulating chunks (to read a
        moof early) can start over.
        """
        target = _to_url(url)
        attempts = 0

        async def attempt() -> int:
            nonlocal attempts
            attempts += 1
            if attempts > 1:
                sink.restart()
                if on_restart is not None:
                    on_restart()
            return await self._download_once(target, sink, byte_range, on_chunk)

        return await self._retrying(attempt, target, self._config.retry.retries, paced="download")

    async def fetch_body(
        self,
        url: str,
        *,
        method: str = "GET",
        byte_range: ByteRange | None = None,
        limit: int | None = None,
        quick: bool = False,
    ) -> TextResponse:
        """A small body in memory (``limit`` bytes at most): timing servers, short answers.

        A final error status raises HttpStatusError (SegmentMissing for 404/410); ``quick``
        retries as few times as a probe does.
        """
        target = _to_url(url)

        async def attempt() -> TextResponse:
            headers = _range_headers(byte_range)
            async with self._request(method, target, headers=headers) as resp:
                _raise_for_status(resp, target, segment=True)
                expected = _expected_length(resp, byte_range)
                body = bytearray()
                if method != "HEAD":
                    async for chunk in resp.content.iter_chunked(CHUNK_SIZE):
                        body += chunk
                        if limit is not None and len(body) >= limit:
                            del body[limit:]
                            expected = None
                            break
                self.stats.bytes_downloaded += len(body)
                if method != "HEAD" and expected is not None and len(body) != expected:
                    raise _Retryable(f"truncated body: received {len(body)} of {expected} bytes")
                return TextResponse(
                    url=str(resp.url),
                    status=resp.status,
                    headers=CIMultiDictProxy(CIMultiDict(resp.headers)),
                    body=bytes(body),
                )

        retries = self._config.probe_retries if quick else self._config.retry.retries
        return await self._retrying(attempt, target, retries)

    # ------------------------------------------------------------------ internals

    def _request(
        self, method: str, url: URL, *, headers: Mapping[str, str] | None = None
    ) -> _CountedRequest:
        return _CountedRequest(self, method, url, headers)

    async def _download_once(
        self,
        target: URL,
        sink: BodySink,
        byte_range: ByteRange | None,
        on_chunk: Callable[[bytes], None] | None,
    ) -> int:
        headers = _range_headers(byte_range)
        # Identity encoding: the bytes on disk are the media, and Content-Length counts them.
        headers["Accept-Encoding"] = "identity"
        async with self._request("GET", target, headers=headers) as resp:
            _raise_for_status(resp, target, segment=True)
            expected = _expected_length(resp, byte_range)
            received = 0
            # Whatever has arrived, as it arrives: a caller watching the first bytes (the $Time$
            # chain reads the moof) must not wait for a full chunk. The stream's own buffer
            # keeps each piece bounded, so memory stays flat.
            chunks = (
                resp.content.iter_any()
                if on_chunk is not None
                else resp.content.iter_chunked(CHUNK_SIZE)
            )
            async for chunk in chunks:
                sink.write(chunk)
                received += len(chunk)
                self.stats.bytes_downloaded += len(chunk)
                if on_chunk is not None:
                    on_chunk(chunk)
            if expected is not None and received != expected:
                raise _Retryable(f"truncated body: received {received} of {expected} bytes")
        return received

    async def _retrying(
        self,
        attempt: Callable[[], Awaitable[_T]],
        target: URL,
        retries: int,
        *,
        paced: Literal["download", "probe"] | None = None,
    ) -> _T:
        """Run ``attempt`` until it succeeds, fails for good, or ``retries`` retries are spent.

        ``paced``: a media request, started when ``pace`` allows and reported to it.
        """
        policy = self._config.retry
        tries = 0
        while True:
            try:
                if paced:
                    return await _reported(self.pace, attempt, urgent=paced == "download")
                return await attempt()
            except _Retryable as exc:
                failure = exc
            if tries >= min(
                retries, failure.max_retries if failure.max_retries is not None else retries
            ):
                raise NetworkError(
                    f"{failure.message} (gave up after {tries + 1} attempts): {_short(target)}"
                ) from failure.__cause__ or failure
            wait = policy.delay(tries, failure.retry_after)
            tries += 1
            self.stats.retries += 1
            message = f"{failure.message}; retry {tries}/{retries} in {wait:.2f}s"
            log.debug("%s: %s", _short(target), message)
            await asyncio.sleep(wait)


async def _reported(pace: ServerPace, attempt: Callable[[], Awaitable[_T]], *, urgent: bool) -> _T:
    """One media request, started when ``pace`` allows, its answer reported to it."""
    await pace.start(urgent=urgent)
    try:
        result = await attempt()
    except _Retryable as failure:
        pace.note(pushback=failure.pushback, retry_after=failure.retry_after)
        raise
    except SegmentMissing:
        pace.note(pushback=False)  # a clean answer, if not the one wanted
        raise
    pace.note(pushback=False)
    return result


class _CountedRequest:
    """``async with`` around one aiohttp request: counts it and translates transport errors."""

    __slots__ = ("_client", "_headers", "_method", "_resp", "_url")

    def __init__(
        self, client: HttpClient, method: str, url: URL, headers: Mapping[str, str] | None
    ) -> None:
        self._client = client
        self._method = method
        self._url = url
        self._headers = headers
        self._resp: aiohttp.ClientResponse | None = None

    async def __aenter__(self) -> aiohttp.ClientResponse:
        client = self._client
        try:
            resp = await client.session.request(
                self._method,
                self._url,
                headers=self._headers,
                proxy=client._proxy,
                allow_redirects=True,
            )
        except BaseException as exc:
            translated = _translate(exc, self._url, client.stats)
            if translated is exc:
                raise
            raise translated from exc
        self._resp = resp
        client.stats.requests[(self._method, resp.status)] += 1
        return resp

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._resp is not None:
            self._resp.release()
        if exc is not None and not isinstance(exc, asyncio.CancelledError):
            translated = _translate(exc, self._url, self._client.stats)
            if translated is not exc:
                raise translated from exc


def _translate(exc: BaseException, url: URL, stats: HttpStats) -> BaseException:
    """Map an aiohttp/OS error to a project error or _Retryable; anything else unchanged."""
    host = _describe_host(url)
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        stats.transport_errors["dns"] += 1
        # A wrong host name does not start resolving a few seconds later: retry once only (a
        # live refresh loop keeps trying anyway).
        return _Retryable(f"cannot resolve host {url.host!r}", max_retries=1)
    if isinstance(exc, (aiohttp.ClientConnectorCertificateError, aiohttp.ClientSSLError)):
        stats.transport_errors["tls"] += 1
        return NetworkError(f"TLS error with {host}: {exc}")
    if isinstance(exc, aiohttp.ClientProxyConnectionError):
        stats.transport_errors["proxy"] += 1
        return _Retryable(f"cannot connect to the proxy: {exc.os_error.strerror or exc}")
    if isinstance(exc, aiohttp.ClientConnectorError):
        port = exc.port
        if isinstance(exc.os_error, ConnectionRefusedError):
            stats.transport_errors["refused"] += 1
            return _Retryable(f"connection refused by {url.host}:{port}", max_retries=2)
        stats.transport_errors["connect"] += 1
        return _Retryable(f"cannot connect to {url.host}:{port}: {exc.os_error.strerror or exc}")
    if isinstance(exc, aiohttp.ClientHttpProxyError):
        stats.transport_errors["proxy"] += 1
        return NetworkError(f"the proxy refused the request (HTTP {exc.status})")
    if isinstance(exc, aiohttp.TooManyRedirects):
        stats.transport_errors["redirects"] += 1
        return NetworkError(f"too many redirects from {host}")
    if isinstance(exc, (aiohttp.InvalidURL, aiohttp.NonHttpUrlClientError)):
        return UsageError(f"invalid URL {str(url)!r}: {exc}")
    if isinstance(exc, TimeoutError):  # aiohttp's timeouts subclass asyncio.TimeoutError
        stats.transport_errors["timeout"] += 1
        return _Retryable(f"timed out talking to {host}")
    if isinstance(exc, aiohttp.ClientPayloadError):
        stats.transport_errors["payload"] += 1
        return _Retryable(f"incomplete response body from {host}")
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        stats.transport_errors["disconnected"] += 1
        return _Retryable(f"{host} closed the connection", pushback=True)
    if isinstance(exc, (aiohttp.ClientConnectionError, ConnectionError)):
        stats.transport_errors["connection"] += 1
        return _Retryable(
            f"connection to {host} failed: {exc or type(exc).__name__}", pushback=True
        )
    if isinstance(exc, aiohttp.ClientResponseError):
        # A malformed HTTP response: another attempt may hit a healthy server.
        stats.transport_errors["protocol"] += 1
        return _Retryable(f"bad response from {host}: {exc.message}")
    return exc


def _short(url: URL) -> str:
    """The URL without its query: signed query strings are long and secret-ish."""
    return str(url.with_query(None).with_fragment(None))


def _open_session(
    cfg: HttpConfig, socks_proxy: str | None, cookies: tuple[Cookie, ...]
) -> aiohttp.ClientSession:
    connector: aiohttp.BaseConnector
    if socks_proxy is not None:
        try:
            from aiohttp_socks import ProxyConnector
        except ImportError as exc:
            raise UsageError(
                "SOCKS proxies need the 'socks' extra: pip install 'instarec[socks]'"
            ) from exc
        try:
            connector = ProxyConnector.from_url(socks_proxy, limit=cfg.max_connections, rdns=True)
        except ValueError as exc:
            raise UsageError(f"invalid proxy {socks_proxy!r}: {exc}") from exc
    else:
        connector = aiohttp.TCPConnector(limit=cfg.max_connections)
    timeout = aiohttp.ClientTimeout(
        total=None,
        connect=cfg.connect_timeout,
        sock_connect=cfg.connect_timeout,
        # Per read, not per request: a long segment on a slow link must not time out while
        # bytes keep arriving, but a stalled socket must.
        sock_read=cfg.read_timeout,
    )
    headers = CIMultiDict[str]()
    headers["User-Agent"] = cfg.user_agent or f"instarec/{__version__}"
    for name, value in cfg.headers:
        headers[name] = value  # -H replaces a default of the same name (User-Agent too)
    return aiohttp.ClientSession(
        connector=connector,
        timeout=timeout,
        headers=headers,
        cookie_jar=_cookie_jar(cookies),
        # Follow Location exactly as sent: re-quoting a signed query can break its signature.
        requote_redirect_url=False,
    )


def _cookie_jar(cookies: tuple[Cookie, ...]) -> aiohttp.CookieJar:
    # unsafe: cookies the user supplied for an IP-address host are meant to be sent;
    # quote_cookie off: send values exactly as the browser did.
    jar = aiohttp.CookieJar(unsafe=True, quote_cookie=False)
    for c in cookies:
        morsel: Morsel[str] = Morsel()
        morsel.set(c.name, c.value, c.value)
        morsel["path"] = c.path
        if not c.host_only:
            morsel["domain"] = c.domain
        if c.secure:
            morsel["secure"] = True
        scheme = "https" if c.secure else "http"
        jar.update_cookies({c.name: morsel}, URL.build(scheme=scheme, host=c.domain))
    return jar


def _range_headers(byte_range: ByteRange | None) -> dict[str, str]:
    return {"Range": byte_range.header()} if byte_range is not None else {}


def _expected_length(resp: aiohttp.ClientResponse, byte_range: ByteRange | None) -> int | None:
    """Body length the response promises; _Retryable if it does not match the request."""
    encoded = resp.headers.get("Content-Encoding", "identity").lower() != "identity"
    length = None if encoded else resp.content_length
    if byte_range is None:
        return length
    if resp.status != 206:
        if byte_range.first == 0 and byte_range.last is None:
            return length  # an open range from 0 is the whole body anyway
        # Accepting a 200 here would store the whole file as if it were the range.
        raise HttpStatusError(
            f"the server ignored the Range request ({byte_range.header()}) for "
            f"{_describe_host(resp.url)}",
            resp.status,
            str(resp.url),
        )
    match = _CONTENT_RANGE_RE.match(resp.headers.get("Content-Range", ""))
    if match is None:
        raise _Retryable("206 response without a valid Content-Range")
    first, last = int(match.group(1)), int(match.group(2))
    if first != byte_range.first or (byte_range.last is not None and last > byte_range.last):
        raise _Retryable(
            f"Content-Range {first}-{last} does not match the requested {byte_range.header()}"
        )
    span = last - first + 1
    if length is not None and length != span:
        raise _Retryable(f"Content-Length {length} does not match Content-Range {first}-{last}")
    return span


def _check_length(resp: aiohttp.ClientResponse, received: int) -> None:
    encoded = resp.headers.get("Content-Encoding", "identity").lower() != "identity"
    expected = resp.content_length
    if not encoded and expected is not None and expected != received:
        raise _Retryable(f"truncated body: received {received} of {expected} bytes")


def _raise_for_status(resp: aiohttp.ClientResponse, target: URL, *, segment: bool = False) -> None:
    status = resp.status
    if 200 <= status < 300:
        return
    if status in _RETRY_STATUSES or status >= 500:
        raise _Retryable(
            f"HTTP {status}",
            retry_after=parse_retry_after(resp.headers.get("Retry-After")),
            pushback=status in _PUSHBACK_STATUSES,
        )
    if segment and status in _GONE_STATUSES:
        raise SegmentMissing(f"segment not found (HTTP {status}): {target}", status, str(target))
    if status in _DENIED_STATUSES:
        raise HttpStatusError(
            f"access denied (HTTP {status}) by {_describe_host(target)}: signed URLs expire",
            status,
            str(target),
        )
    raise HttpStatusError(f"HTTP {status} from {_describe_host(target)}", status, str(target))


def _probe_answer(resp: aiohttp.ClientResponse, target: URL, refusals: bool) -> bool:
    status = resp.status
    if 200 <= status < 300:
        return True
    if refusals and (status in _DENIED_STATUSES or status == 410):
        raise HttpStatusError(f"HTTP {status} from {_describe_host(target)}", status, str(target))
    if status in _GONE_STATUSES or status in _DENIED_STATUSES:
        return False
    _raise_for_status(resp, target)
    return False  # unreachable: _raise_for_status raised for every other status


async def _manifest_body(resp: aiohttp.ClientResponse, target: URL, max_bytes: int) -> bytes:
    """The manifest's bytes; a final status or an oversized body is an error, not retried."""
    status = resp.status
    if status in _DENIED_STATUSES:
        raise ManifestUnavailableError(
            f"access denied (HTTP {status}): signed URLs expire — copy a fresh "
            "manifest URL from the browser",
            status,
        )
    if status in _GONE_STATUSES:
        raise ManifestUnavailableError(
            f"the manifest is gone (HTTP {status}): the broadcast has probably "
            "ended, or the URL is wrong",
            status,
        )
    _raise_for_status(resp, target)
    if resp.content_length is not None and resp.content_length > max_bytes:
        raise ManifestError(
            f"the manifest is too large ({resp.content_length} bytes, limit "
            f"{max_bytes}): this URL does not serve a DASH manifest"
        )
    body = bytearray()
    async for chunk in resp.content.iter_chunked(CHUNK_SIZE):
        body += chunk
        if len(body) > max_bytes:
            raise ManifestError(
                f"the manifest is larger than {max_bytes} bytes: this URL does "
                "not serve a DASH manifest"
            )
    _check_length(resp, len(body))
    return bytes(body)
