"""Following the live edge: manifest refreshes, the server's clock (DASH UTCTiming), new
segments, and the end of the broadcast."""

from __future__ import annotations

import asyncio
import email.utils
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from urllib.parse import urljoin

from instarec.clock import SYSTEM_CLOCK, Clock
from instarec.downloads import LiveActivity
from instarec.errors import (
    SERVER_UNREACHABLE,
    ManifestError,
    ManifestUnavailableError,
    NetworkError,
    UsageError,
)
from instarec.http import HttpClient
from instarec.manifest import (
    MAX_MANIFEST_BYTES,
    Addressing,
    Manifest,
    MediaSegment,
    Representation,
    UTCTiming,
    expand_segments,
    parse_datetime,
    parse_manifest,
)
from instarec.refresh import REFUSALS
from instarec.segments import SegmentRef
from instarec.selection import find_representation
from instarec.signing import SignedLocation
from instarec.timeline import Timeline, median_ticks
from instarec.units import format_span

log = logging.getLogger(__name__)

BROADCAST_ENDED_HEADER = "x-fb-video-broadcast-ended"


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One successful manifest refresh."""

    manifest: Manifest
    now: datetime  # the instant the manifest is evaluated at (server clock when known)
    ended: str | None  # why this refresh says the broadcast is over, or None


class ManifestSource:
    """Fetches and parses the manifest, following ``Location`` and tracking the server clock.

    The URL comes from the recording's :class:`SignedLocation`; once :meth:`when_refused` is
    called (the recording has started), a refused manifest asks whether a fresh signature is in
    place before it counts as unavailable.
    """

    def __init__(
        self, http: HttpClient, location: SignedLocation | str, clock: Clock = SYSTEM_CLOCK
    ) -> None:
        self._http = http
        self._location = (
            location if isinstance(location, SignedLocation) else SignedLocation(location)
        )
        self._clock = clock
        self._clock_offset: timedelta | None = None
        self._on_refused: Callable[[int, int], Awaitable[bool]] | None = None

    @property
    def url(self) -> str:
        return self._location.manifest_url

    @property
    def location(self) -> SignedLocation:
        return self._location

    def when_refused(self, renewed: Callable[[int, int], Awaitable[bool]]) -> None:
        """A manifest refused (401/403/410) under a signature generation asks ``renewed(
        generation, status)`` from now on; True: fetch it again, a fresh URL is in place."""
        self._on_refused = renewed

    async def fetch(self) -> Snapshot:
        while True:
            generation = self._location.generation
            try:
                response = await self._http.fetch_manifest(self.url, max_bytes=MAX_MANIFEST_BYTES)
                break
            except ManifestUnavailableError as exc:
                renewed = self._on_refused
                if renewed is None or exc.status not in REFUSALS:
                    raise
                if not await renewed(generation, exc.status):
                    raise
        manifest = parse_manifest(response.body, response.url)
        if manifest.location and manifest.location != self.url:
            log.debug("manifest moved to %s", manifest.location)
            self._location.moved(manifest.location)
        now = await self._server_now(manifest)
        ended: str | None = None
        if manifest.type == "static":
            ended = "the manifest became static"
        elif response.headers.get(BROADCAST_ENDED_HEADER):
            ended = "the server says the broadcast ended"
        return Snapshot(manifest, now, ended)

    async def _server_now(self, manifest: Manifest) -> datetime:
        # Re-sync at every refresh: cheap, and it keeps $Number$+@duration live edges right even
        # when the server clock runs at another rate than ours (simulated origins do).
        local = self._clock.now()
        for timing in manifest.utc_timing:
            if "direct" not in timing.scheme:
                # Relative references happen; resolve them like any URL of the document.
                timing = replace(timing, value=urljoin(manifest.url, timing.value))
            try:
                server = await server_time(self._http, timing)
            except (NetworkError, ManifestError, UsageError) as exc:
                log.debug("UTCTiming %s failed: %s", timing.scheme, exc)
                continue
            if server is not None:
                self._clock_offset = server - local
                break
        return local + self._clock_offset if self._clock_offset else local


# UTCTiming schemes read over HTTP; ntp, sntp and http-ntp are not (the local clock stands in).
_HTTP_TIMING = frozenset({"http-iso", "http-xsdate", "http-head"})
_TIMING_SCHEME = re.compile(r"urn:mpeg:dash:utc:([a-z-]+):\d{4}")
# A time server's answer is one date: more than this is not one.
_TIMING_BODY_LIMIT = 4096


async def server_time(http: HttpClient, timing: UTCTiming) -> datetime | None:
    """The time according to a DASH UTCTiming source, as an aware UTC datetime.

    Supports http-iso, http-xsdate, http-head and direct (any year suffix); None for other
    schemes. NetworkError when the source cannot be reached, ManifestError when it answers
    something that is not a date: callers fall back to the local clock.
    """
    match = _TIMING_SCHEME.fullmatch(timing.scheme.strip().lower())
    kind = match.group(1) if match else ""
    value = timing.value.strip()
    if kind == "direct":
        return parse_datetime(value)
    if kind not in _HTTP_TIMING:
        return None
    # A UTCTiming value may list several URLs separated by spaces: the first one is enough.
    url = value.split()[0]
    if kind == "http-head":
        response = await http.fetch_body(url, method="HEAD", quick=True)
        text = response.headers.get("Date", "")
        try:
            parsed = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError) as exc:
            raise ManifestError(f"the time server sent no usable Date header ({url})") from exc
        return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    response = await http.fetch_body(url, limit=_TIMING_BODY_LIMIT, quick=True)
    return parse_datetime(response.body.decode("ascii", errors="replace"))


def segment_key(segment: MediaSegment, rep: Representation) -> int:
    """The key that names a segment on disk and orders it: its $Time$ or its number."""
    if rep.addressing is Addressing.TIME_TIMELINE and segment.time is not None:
        return segment.time
    if segment.number is not None:
        return segment.number
    if segment.time is not None:
        return segment.time
    return 0


# Seconds between refreshes of a manifest without minimumUpdatePeriod (and no --poll-interval).
FALLBACK_POLL_INTERVAL = 2.0


@dataclass(frozen=True, slots=True)
class StopAfter:
    """``--stop-after``: when following the live edge ends, on the recording's clock."""

    at: float  # the recording clock's monotonic()
    seconds: float  # as asked, for the summary

    @property
    def reason(self) -> str:
        return f"stopped after {format_span(self.seconds)} (--stop-after)"


@dataclass(frozen=True, slots=True)
class LivePolicy:
    poll_interval: float | None  # None: the manifest's minimumUpdatePeriod, else the fallback
    live_end_timeout: float
    stop_after: StopAfter | None = None  # None: followed until the broadcast ends


class LiveFollower:
    """Refreshes the manifest until the broadcast ends, handing each refresh to ``on_snapshot``.

    When no new live segment is *recorded* for ``live_end_timeout`` seconds, and none listed
    is still waiting for its first request, the broadcast is considered over: some packagers
    never signal the end (nginx-rtmp, Shaka Packager), and a manifest whose numbers follow the
    clock lists new segments for ever, so what counts is media that exists.
    """

    def __init__(
        self,
        source: ManifestSource,
        policy: LivePolicy,
        on_snapshot: Callable[[Snapshot], object],
        activity: Callable[[], LiveActivity],
        stop: asyncio.Event,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._clock = clock
        self._source = source
        self._policy = policy
        self._on_snapshot = on_snapshot
        self._activity = activity
        self._stop = stop
        # Set when the broadcast was judged over because nothing new was recorded: then no
        # segment listed so far is still to come.
        self.idle = False
        # Set when the recording ended because the server answered nothing for the live end
        # timeout (a network or server outage), which says so.
        self.unreachable: str | None = None
        # Set when --stop-after ended the following: what is listed later is not wanted.
        self.left_early = False

    async def run(self, first: Snapshot) -> str:
        """Follow until the end; return the reason it ended."""
        snapshot = first
        last_new = self._clock.monotonic()
        last_ok = last_new
        seen = self._activity().recorded
        checked = last_new
        while True:
            self._on_snapshot(snapshot)
            activity = self._activity()
            # Alive while live segments keep being recorded, or while some listed before the
            # last check still wait for a download slot (a backlog). Numbers a clock-driven
            # manifest lists anew on every refresh are neither, once they answer 404.
            backlog = activity.oldest_waiting is not None and activity.oldest_waiting <= checked
            if activity.recorded != seen or backlog:
                seen = activity.recorded
                last_new = self._clock.monotonic()
            checked = self._clock.monotonic()
            if snapshot.ended:
                return snapshot.ended
            if (reason := self._stop_after()) is not None:
                return reason
            if self._clock.monotonic() - last_new > self._policy.live_end_timeout:
                self.idle = True
                return f"no new segment for {self._policy.live_end_timeout:g} s"
            interval = self._interval(snapshot.manifest)
            if await self._sleep(interval):
                return "stopped by the user"
            asked = self._clock.monotonic()
            refreshed = await self._refreshed(last_ok)
            if isinstance(refreshed, str):
                return refreshed
            snapshot, last_ok = refreshed, self._clock.monotonic()
            # A manifest that took long to come (its retries across an outage, a URL renewed)
            # told nothing meanwhile: that time is no sign of an ended broadcast (chaos seed
            # 195 ended as the server came back).
            if last_ok - asked > interval:
                last_new += last_ok - asked

    async def _refreshed(self, last_ok: float) -> Snapshot | str:
        """The next snapshot, or why the recording ends: the manifest gone or refused, the
        server silent past the live end timeout (since ``last_ok``), Ctrl+C."""
        while True:
            try:
                return await self._source.fetch()
            except ManifestUnavailableError as exc:
                # 404/410 is how many servers end a broadcast; 401/403 mid-recording is a
                # signed URL that expired, and no fresh one came (the source asked the
                # recording's refresher, which says why). Either way what is recorded is kept.
                log.debug("%s", exc)
                if exc.status in (404, 410):
                    return f"the manifest is gone (HTTP {exc.status})"
                return f"the manifest is no longer accessible (HTTP {exc.status})"
            except (NetworkError, ManifestError) as exc:
                # A refresh failing now and then is normal for live CDNs: keep what we have.
                log.warning("manifest refresh failed: %s", exc)
                if (reason := self._stop_after()) is not None:
                    return reason
                timeout = self._policy.live_end_timeout
                if self._clock.monotonic() - last_ok > timeout:
                    if isinstance(exc, ManifestError):
                        return f"the manifest failed for {timeout:g} s"
                    # Not the end of the broadcast: what it still sends is for a rerun.
                    self.unreachable = f"{SERVER_UNREACHABLE} for {timeout:g} s"
                    return self.unreachable
                if await self._sleep(self._interval(None)):
                    return "stopped by the user"

    def _interval(self, manifest: Manifest | None) -> float:
        if self._policy.poll_interval is not None:
            return self._policy.poll_interval
        if manifest is not None and manifest.minimum_update_period:
            return max(0.1, min(manifest.minimum_update_period, 30.0))
        return FALLBACK_POLL_INTERVAL

    def _stop_after(self) -> str | None:
        """The end reason once --stop-after's time has come, else None."""
        stop_after = self._policy.stop_after
        if stop_after is None or self._clock.monotonic() < stop_after.at:
            return None
        self.left_early = True
        return stop_after.reason

    async def _sleep(self, seconds: float) -> bool:
        """Sleep, waking early on stop; True when stopped."""
        stop_after = self._policy.stop_after
        if stop_after is not None:
            # Wake at the stop to take the listing of that moment, not a poll interval later.
            seconds = max(0.0, min(seconds, stop_after.at - self._clock.monotonic()))
        try:
            await asyncio.wait_for(self._stop.wait(), timeout=seconds)
        except TimeoutError:
            return False
        return True


def listed_segments(
    snapshot: Snapshot, reps: Sequence[Representation]
) -> list[tuple[Representation, list[MediaSegment]]]:
    """Each representation of ``reps`` as found again in ``snapshot``, with its listed segments."""
    result = []
    for wanted in reps:
        rep = find_representation(snapshot.manifest, wanted)
        if rep is None:
            log.warning("representation %s vanished from the manifest", wanted.id)
            continue
        result.append((rep, expand_segments(snapshot.manifest, rep, snapshot.now)))
    return result


@dataclass(frozen=True, slots=True)
class WindowUpdate:
    """What one refresh's listing of a track means, given what its timeline knew before."""

    # Numbers that scrolled out between two refreshes unseen, then the listed segments.
    refs: tuple[SegmentRef, ...]
    # The $Time$ where the previous listing ended, when this window starts past it unseen: a
    # chain must walk the media from there.
    hole_from: int | None
    floor: int | None  # the timeline's floor: the first listed key when it had none
    typical: int | None  # median listed duration in ticks (None: the listing gave none)
    listed_end: int | None  # end of the last listed $Time$ segment
    listed_max_number: int | None


def window_update(timeline: Timeline, segments: Sequence[MediaSegment]) -> WindowUpdate:
    """Compare a refresh's listing with what ``timeline`` knew; pure (nothing is changed)."""
    rep = timeline.rep
    keys = [segment_key(segment, rep) for segment in segments]
    refs = [
        SegmentRef(timeline.name, key, s.url, s.byte_range, s.start, s.duration, "live")
        for s, key in zip(segments, keys, strict=True)
    ]
    update = WindowUpdate(
        refs=(),
        hole_from=None,
        floor=timeline.floor if timeline.floor is not None or not keys else keys[0],
        typical=(
            median_ticks([s.duration for s in segments], timeline.timescale)
            if any(s.duration for s in segments)
            else timeline.typical
        ),
        listed_end=timeline.listed_end,
        listed_max_number=timeline.listed_max_number,
    )
    if not segments:
        return update
    if rep.addressing is Addressing.TIME_TIMELINE:
        previous_end = timeline.listed_end
        last = segments[-1]
        skipped = (
            previous_end is not None
            and previous_end < keys[0]
            and previous_end not in timeline.key_set
        )
        end = previous_end
        if last.time is not None and last.duration is not None:
            end = last.time + round(last.duration * timeline.timescale)
        return replace(
            update, refs=tuple(refs), hole_from=previous_end if skipped else None, listed_end=end
        )
    if rep.addressing in (Addressing.NUMBER_TIMELINE, Addressing.NUMBER_DURATION):
        previous = timeline.listed_max_number
        scrolled: list[SegmentRef] = []
        if previous is not None and keys[0] > previous + 1:
            scrolled = [timeline.number_ref(n, "live") for n in range(previous + 1, keys[0])]
        highest = keys[-1] if previous is None else max(keys[-1], previous)
        return replace(update, refs=(*scrolled, *refs), listed_max_number=highest)
    return replace(update, refs=tuple(refs))
