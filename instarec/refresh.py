"""Expiring signed URLs in the middle of a recording, and ``--refresh-url-command``.

Every request of a recording goes through :meth:`Refresher.signed`, which signs its URL as the
recording's :class:`~instarec.signing.SignedLocation` says now. A request refused with 401, 403
or 410 is not taken for a missing segment at once: the manifest is asked too (one request for
all the refusals answered before it started), and when it still answers, the refusal was the
segment's own (some servers answer 403 for what they do not have). When the manifest is refused
as well, the URL has expired: with ``--refresh-url-command`` the command is run (once for every
request refused together), the manifest is fetched from the URL it prints, its representations
are matched to the recorded ones, and the location learns how the old addresses read under the
fresh signature; the refused requests are asked again. Without the option, or when the command
keeps failing, the recording ends with what it has (``ended``; ``failure`` says why).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Final, TypeVar
from urllib.parse import urlsplit

from instarec.clock import SYSTEM_CLOCK, Clock
from instarec.errors import (
    HttpStatusError,
    ManifestError,
    ManifestUnavailableError,
    NetworkError,
    UrlExpiredError,
    UsageError,
)
from instarec.http import HttpClient
from instarec.manifest import MAX_MANIFEST_BYTES, Manifest, Representation, parse_manifest
from instarec.options import DEFAULTS, Options
from instarec.selection import find_representation
from instarec.signing import SignedLocation

log = logging.getLogger(__name__)

_T = TypeVar("_T")

# What an expired signature answers (410 too: some CDNs say an expired link is gone).
REFUSALS: Final = frozenset({401, 403, 410})


class Verdict(enum.Enum):
    """What a request refused with one of ``REFUSALS`` is to do."""

    RETRY = "retry"  # signed afresh since it was sent: ask again
    ITS_OWN = "its own"  # the manifest still answers: the refusal is the resource's own answer
    ENDED = "ended"  # the URL expired and no fresh one came: the recording stops


@dataclass(frozen=True, slots=True)
class RefreshPolicy:
    command: str | None  # None: an expired URL ends the recording
    retries: int = DEFAULTS.refresh_url_retries
    retry_delay: float = DEFAULTS.refresh_retry_delay  # first pause; doubles at each retry
    timeout: float = DEFAULTS.refresh_timeout  # seconds the command may run

    @classmethod
    def from_options(cls, options: Options) -> RefreshPolicy:
        return cls(
            options.refresh_url_command,
            options.refresh_url_retries,
            options.refresh_retry_delay,
            options.refresh_timeout,
        )


class RefreshFailed(Exception):
    """One attempt at a fresh URL failed; the message says how."""


async def run_command(command: str) -> str:
    """Run ``command`` through the shell; the first line of its output, a fresh MPD URL.

    Cancelled (a timeout, Ctrl+C), it stops what the shell started too.
    """
    process = await asyncio.create_subprocess_shell(
        command,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=os.name == "posix",  # its own process group, killed as one
    )
    finished = False
    try:
        out, err = await process.communicate()
        finished = True
    finally:
        if not finished:
            _kill(process)
            await process.wait()
    if process.returncode != 0:
        said = err.decode(errors="replace").strip().splitlines()
        how = f"it exited with status {process.returncode}"
        raise RefreshFailed(f"{how}: {said[-1]}" if said else how)
    lines = out.decode(errors="replace").splitlines()
    url = lines[0].strip() if lines else ""
    if not url:
        raise RefreshFailed("it printed no URL")
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        raise RefreshFailed(f"it printed {url[:80]!r}, not an http(s) URL")
    return url


async def fresh_start_url(policy: RefreshPolicy, status: int) -> str:
    """A fresh MPD URL from ``policy.command`` when the one given is refused (``status``)
    before anything was fetched; UrlExpiredError when the command fails every time."""
    assert policy.command is not None
    expired = f"the MPD URL is refused (HTTP {status}): its signature has expired"
    log.info("%s; running --refresh-url-command for a fresh one", expired)
    attempts = policy.retries + 1
    failure = ""
    for attempt in range(attempts):
        if attempt:
            await asyncio.sleep(policy.retry_delay * 2 ** (attempt - 1))
        try:
            async with asyncio.timeout(policy.timeout):
                return await run_command(policy.command)
        except TimeoutError:
            failure = f"it did not finish within {policy.timeout:g} s"
        except RefreshFailed as exc:
            failure = str(exc)
        log.warning("--refresh-url-command (attempt %d/%d): %s", attempt + 1, attempts, failure)
    tries = "once" if attempts == 1 else f"{attempts} times"
    raise UrlExpiredError(f"{expired} and --refresh-url-command failed {tries} ({failure})")


def _kill(process: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        if os.name == "posix":
            os.killpg(process.pid, signal.SIGKILL)
        else:
            process.kill()


_GONE: Final = frozenset({404, 410})


def _same_path(a: str, b: str) -> bool:
    first, second = urlsplit(a), urlsplit(b)  # another host is another edge of the CDN
    return first.path == second.path


def same_resources(recorded: Sequence[Representation], manifest: Manifest) -> list[tuple[str, str]]:
    """(address under the old manifest, address under ``manifest``) pairs naming one resource
    each, for every recorded representation; RefreshFailed when one has no match there."""
    pairs: list[tuple[str, str]] = []
    for old in recorded:
        new = find_representation(manifest, old)
        if new is None:
            raise RefreshFailed(
                f"its manifest has no representation like {old.id!r} "
                f"({old.codecs or 'no codecs'}, {old.bandwidth or 0} bit/s)"
            )
        pairs.append((old.base_url, new.base_url))
        old_init, new_init = old.init_segment(), new.init_segment()
        if old_init is not None and new_init is not None:
            pairs.append((old_init.url, new_init.url))
        if old.template is not None and old.template.media and new.template and new.template.media:
            pairs.append((old.media_url(number=0, time=0), new.media_url(number=0, time=0)))
    return pairs


@dataclass(frozen=True, slots=True)
class _Check:
    """One look at the manifest, to tell an expired URL from a resource's own refusal."""

    started: float  # the recording clock's monotonic()
    generation: int
    answered: bool


class Refresher:
    """The signed location of one recording and what a refused request does (see the module)."""

    def __init__(
        self,
        http: HttpClient,
        location: SignedLocation,
        policy: RefreshPolicy,
        recorded: Callable[[], Sequence[Representation]],
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.location = location
        self.ended = asyncio.Event()
        self.failure: str | None = None  # why the recording ended, once ``ended`` is set
        self._http = http
        self._policy = policy
        self._recorded = recorded
        self._clock = clock
        self._renewing = asyncio.Lock()
        self._checking = asyncio.Lock()
        self._last_check: _Check | None = None

    async def signed(self, request: Callable[[str], Awaitable[_T]], url: str) -> _T:
        """``request(url)``, signed as now, asked again under a fresh signature if refused for
        an expired one; UrlExpiredError when none came, the refusal itself when it is the
        resource's own."""
        while True:
            generation = self.location.generation
            try:
                return await request(self.location.sign(url))
            except HttpStatusError as exc:
                if exc.status not in REFUSALS:
                    raise
                verdict = await self.refused(generation, exc.status, self._clock.monotonic())
                if verdict is Verdict.ENDED:
                    raise UrlExpiredError(self.failure or str(exc)) from exc
                if verdict is Verdict.ITS_OWN:
                    raise

    async def manifest_refused(self, generation: int, status: int) -> bool:
        """The manifest, fetched under ``generation``, was refused: whether to fetch it again."""
        return await self.refused(generation, status, None) is Verdict.RETRY

    async def refused(self, generation: int, status: int, answered_at: float | None) -> Verdict:
        """A request signed under ``generation`` was refused with ``status`` at ``answered_at``
        (None: the manifest itself was)."""
        if generation < self.location.generation:
            return Verdict.RETRY
        if self.ended.is_set():
            return Verdict.ENDED
        if answered_at is not None and await self._manifest_answers(answered_at, generation):
            return Verdict.ITS_OWN
        return Verdict.RETRY if await self._renew(generation, status) else Verdict.ENDED

    async def _manifest_answers(self, answered_at: float, generation: int) -> bool:
        """Whether the manifest answers under signature ``generation``, asked after
        ``answered_at`` (refusals answered before a look that is under way share it)."""
        async with self._checking:
            if generation < self.location.generation or self.ended.is_set():
                return False  # renewed or ended while this waited: nothing left to tell
            last = self._last_check
            if last is not None and last.started >= answered_at and last.generation == generation:
                return last.answered
            started = self._clock.monotonic()
            try:
                await self._http.fetch_manifest(
                    self.location.manifest_url, max_bytes=MAX_MANIFEST_BYTES
                )
                answered = True
            except ManifestUnavailableError as exc:
                answered = exc.status not in REFUSALS
            except (NetworkError, ManifestError) as exc:
                # Nothing tells an expiry then: the refusal counts as the resource's own, as it
                # did before signatures were looked at.
                log.debug("the manifest did not answer while checking a refusal: %s", exc)
                answered = True
            self._last_check = _Check(started, generation, answered)
            return answered

    async def _renew(self, generation: int, status: int) -> bool:
        """A fresh signature, once for all the requests refused under ``generation``."""
        async with self._renewing:
            if generation < self.location.generation:
                return True
            if self.ended.is_set():
                return False
            expired = f"the signed URL expired (HTTP {status})"
            if self._policy.command is None:
                return self._end(expired)
            log.info("%s: running --refresh-url-command for a fresh one", expired)
            attempts = self._policy.retries + 1
            failure = ""
            for attempt in range(attempts):
                if attempt:
                    await asyncio.sleep(self._policy.retry_delay * 2 ** (attempt - 1))
                try:
                    fresh, pairs = await self._fresh_location(self._policy.command)
                except RefreshFailed as exc:
                    failure = str(exc)
                    log.warning(
                        "--refresh-url-command (attempt %d/%d): %s", attempt + 1, attempts, exc
                    )
                    continue
                self.location.renew(fresh, pairs)
                log.info(
                    "recording goes on with a fresh URL (signature %d)", self.location.generation
                )
                return True
            tries = "once" if attempts == 1 else f"{attempts} times"
            return self._end(f"{expired} and --refresh-url-command failed {tries} ({failure})")

    async def _fresh_location(self, command: str) -> tuple[str, list[tuple[str, str]]]:
        limit = self._policy.timeout
        try:
            async with asyncio.timeout(limit):
                url = await run_command(command)
        except TimeoutError:
            raise RefreshFailed(f"it did not finish within {limit:g} s") from None
        try:
            response = await self._http.fetch_manifest(url, max_bytes=MAX_MANIFEST_BYTES)
            manifest = parse_manifest(response.body, response.url)
        except ManifestUnavailableError as exc:
            if exc.status in _GONE and _same_path(url, self.location.manifest_url):
                # The broadcast ended and its manifest went (as Instagram's does), while its
                # segments are still served: the fresh URL's token signs them all the same.
                log.info(
                    "the fresh URL's manifest is gone (HTTP %d): the broadcast ended", exc.status
                )
                return url, []
            raise RefreshFailed(f"the URL it printed answers HTTP {exc.status}") from exc
        except (NetworkError, ManifestError, UsageError) as exc:
            raise RefreshFailed(f"the URL it printed gives no manifest: {exc}") from exc
        return url, same_resources(self._recorded(), manifest)

    def _end(self, failure: str) -> bool:
        log.error("%s: the recording stops", failure)
        self.failure = failure
        self.ended.set()
        return False
