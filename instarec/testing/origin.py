"""A simulated live DASH origin: an aiohttp server on 127.0.0.1 over real test media.

Usage in a test::

    clock = ManualClock()
    async with Origin(OriginConfig(shape="time", already_broadcast=60), clock=clock) as origin:
        ...fetch origin.manifest_url...
        clock.advance(10)            # ten virtual seconds later: more segments exist

Without a clock the origin runs a :class:`SpeedClock` at ``config.speed``. A clock created
without a start is set to ``config.already_broadcast`` when the origin starts.

What the server does (see :mod:`instarec.testing.mpd` for the timeline and the manifests):

* ``GET``/``HEAD`` of the manifest, init segments and media segments; single ``Range``
  requests (206 + Content-Range, 416 when unsatisfiable); everything else 404/405.
* Segment ``i`` exists once virtual time reaches its end and stays fetchable for ever
  (``retention=None``) or while it is among the last ``retention`` broadcast segments; gap
  indexes answer 404 for ever and are listed in the manifest as if they existed (or left out
  of it with ``gaps_listed=False``); segments past the end of the broadcast never exist.
* A live manifest is published once its first segment is complete (404 before, as no
  packager writes an MPD before it has a segment); an origin started earlier than that by
  ``already_broadcast`` starts at that moment instead.
* End of broadcast: generic shapes turn ``type="static"``; the instagram shape stays dynamic
  and adds ``x-fb-video-broadcast-ended: 1``; the manifest answers 404 from
  ``end_signal_manifest_404_after`` virtual seconds after the end (not the static shape).
* Instagram shape with ``signed=True``: every URL carries ``?oh=...&oe=...``; a request
  without it or with a wrong one gets 403.
* Expiring signed URLs, any shape (``token_rotation``): every URL carries ``?sig=...&exp=...``,
  a token that rotates every ``token_rotation`` virtual seconds and is refused
  (``token_expired_status``, 403) ``token_grace`` seconds after the next one is out. The
  manifest's segment addresses carry the token the manifest was asked with, as a CDN rewriting
  its manifests signs them (instarec resolves relative addresses by RFC 3986, under which a
  manifest URL's query is not inherited). ``GET /current-url`` answers the manifest URL signed
  with the current token, one line: what a refresh command would fetch.
* Packager habits, off by default: ``last_sample_duration_zero`` (nginx-rtmp: the last sample
  of every segment lasts 0, and segment 0 of a ``$Time$`` shape is named 0) and
  ``start_number_follows_window`` (Shaka Packager: a number_duration ``startNumber`` that
  moves with the window while the files keep their numbers).
* Faults (:class:`FaultConfig`): 503, 429 + Retry-After, TCP reset before or during the body,
  truncated body, slow first byte, per-request latency, and manifest failures, seeded per URL
  and attempt; every answer is kept in :attr:`Origin.request_log`.

Run ``python -m instarec.testing.origin --help`` for the command line.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import logging
import secrets
import socket
import struct
import sys
import time
import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal

from aiohttp import web
from lxml import etree

from instarec.mp4 import parse_init
from instarec.testing import fmp4
from instarec.testing.clock import Clock, ManualClock, SpeedClock
from instarec.testing.faults import Fault, FaultConfig, FaultPlan, RateLimit
from instarec.testing.media import LoopedMedia, MediaSpec, TestMedia, generate_media
from instarec.testing.mpd import (
    DASH_NS,
    EPOCH,
    SHAPES,
    Broadcast,
    TrackDescription,
    iso_time,
    render_manifest,
)
from instarec.testing.tokens import RotatingTokens, with_query

__all__ = [
    "EPOCH",
    "SHAPES",
    "Fault",
    "FaultConfig",
    "ManualClock",
    "Origin",
    "OriginConfig",
    "RequestRecord",
    "RequestStats",
    "SpeedClock",
    "main",
]

logger = logging.getLogger(__name__)

BROADCAST_ENDED_HEADER = "x-fb-video-broadcast-ended"
# Faults applied while the body is being sent (the others replace or delay the response).
_BODY_FAULTS = (Fault.TRUNCATE, Fault.RESET_MID_BODY)


@dataclass(frozen=True, slots=True)
class OriginConfig:
    """Everything that shapes one simulated broadcast. Times are virtual seconds."""

    shape: str = (
        "instagram"  # "instagram" | "time" | "number_timeline" | "number_duration" | "static"
    )
    broadcast_duration: float = 600.0  # rounded to whole segments
    already_broadcast: float = 0.0  # virtual time when the origin starts
    window: int = 5  # segments listed in a live manifest
    retention: int | None = None  # None: every past segment fetchable; N: only the last N
    gaps: frozenset[int] = frozenset()  # segment indexes that answer 404 for ever
    faults: FaultConfig = field(default_factory=FaultConfig)
    speed: float = 1.0  # SpeedClock speed; ignored when a clock is passed
    end_signal_manifest_404_after: float = 30.0
    # False imitates nginx-rtmp: no static type, no header, no 404: the manifest just freezes.
    signal_end: bool = True
    media: MediaSpec = field(default_factory=MediaSpec)
    signed: bool = True  # instagram only: require the signed query string
    start_number: int = 1  # $Number$ of segment 0 in the number shapes
    minimum_update_period: float = 2.0
    segment_cache: int = 32  # segments kept in memory (LRU)
    host: str = "127.0.0.1"
    port: int = 0  # 0: a free port
    # False: gaps are left out of the SegmentTimeline (a time jump) instead of listed and 404.
    gaps_listed: bool = True
    timeline_offset: float = 0.0  # seconds added to every media time (tfdt, $Time$, S@t)
    # MPD timescale of the generic shapes; None: each track's media timescale.
    timescale: int | None = None
    publish_frame_time: bool = True  # instagram: publishFrameTime and firstAvTimeMs present
    request_log_size: int = 100_000  # entries kept in Origin.request_log (oldest dropped)
    # True imitates nginx-rtmp: the last sample of every media segment lasts 0 in its trun
    # (tfdt unchanged), and in the $Time$ shapes segment 0 is named $Time$ 0 whatever its tfdt.
    last_sample_duration_zero: bool = False
    # True imitates Shaka Packager's --segment_template_constant_duration (number_duration
    # only): the live startNumber is the first listed segment's number, files keep theirs.
    start_number_follows_window: bool = False
    # Expiring signed URLs (see the module docstring): a new ?sig=&exp= token every this many
    # virtual seconds (None: none), refused with token_expired_status token_grace seconds
    # after the next one is out.
    token_rotation: float | None = None
    token_grace: float = 10.0
    token_expired_status: int = 403
    # Virtual seconds where a new Period begins (at the next segment boundary): its timeline
    # restarts at 0, its files (init included) live in their own directory; the "time" and
    # "number_timeline" shapes only. period_new_ids: its representation ids carry its number.
    period_starts: tuple[float, ...] = ()
    period_new_ids: bool = False
    # A DASH Role for tracks of the media, by track name: (("audio-de", "commentary"),).
    roles: tuple[tuple[str, str], ...] = ()
    # The media of every Period after the first (None: the first's). Another resolution is
    # another codec configuration (avcC): an encoder restarted with other settings.
    period_media: MediaSpec | None = None

    def __post_init__(self) -> None:
        if self.shape not in SHAPES:
            raise ValueError(f"unknown shape {self.shape!r}; expected one of {', '.join(SHAPES)}")
        if self.broadcast_duration <= 0:
            raise ValueError("broadcast_duration must be positive")
        if self.already_broadcast < 0:
            raise ValueError("already_broadcast must not be negative")
        if self.timeline_offset < 0:
            raise ValueError("timeline_offset must not be negative")
        if self.timescale is not None and self.timescale < 1:
            raise ValueError("timescale must be None or positive")
        if self.request_log_size < 0:
            raise ValueError("request_log_size must not be negative")
        if self.token_rotation is not None and self.token_rotation <= 0:
            raise ValueError("token_rotation must be None or positive")
        if self.token_grace < 0:
            raise ValueError("token_grace must not be negative")
        if self.token_expired_status not in (401, 403, 410):
            raise ValueError("token_expired_status must be 401, 403 or 410")
        if self.period_media is not None and not self.period_starts:
            raise ValueError("period_media needs period_starts")
        if self.shape == "number_duration" and self.media.segment_durations != "constant":
            raise ValueError(
                "the number_duration shape needs constant-duration media: "
                "media=MediaSpec(segment_durations='constant')"
            )
        # Accept any iterable of ints for gaps (a set, a list) but store a frozenset.
        object.__setattr__(self, "gaps", frozenset(int(g) for g in self.gaps))


@dataclass(frozen=True, slots=True)
class RequestStats:
    """A snapshot of what the origin answered.

    ``counts`` maps (method, kind, status) to a number of requests; kind is "manifest",
    "init", "media" or "other" (the /time endpoint, unknown paths); status 0 stands for a
    connection reset without response. ``bytes_served`` counts body bytes actually written
    (GET only; a truncated body counts what was sent). ``faults`` counts injected faults by
    :class:`Fault` value plus "manifest" for manifest failures.
    """

    counts: Mapping[tuple[str, str, int], int]
    bytes_served: int
    faults: Mapping[str, int]

    def count(
        self, method: str | None = None, kind: str | None = None, status: int | None = None
    ) -> int:
        """Requests matching every given criterion."""
        return sum(
            n
            for (m, k, s), n in self.counts.items()
            if (method is None or m == method)
            and (kind is None or k == kind)
            and (status is None or s == status)
        )

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One request the origin answered, in the order the answers were decided.

    ``status`` 0 is a connection reset before any response. ``fault`` is the :class:`Fault`
    value applied (a stall included), "manifest" for a ``manifest_failure``, or None.
    ``bytes_sent`` counts body bytes written (0 for HEAD; half the body for a truncation or a
    reset during the body); ``size`` is the size of the whole resource when there was one.
    ``virtual_time`` and ``real_time`` (``time.monotonic()``) are taken on arrival.
    """

    method: str
    kind: str  # "manifest" | "init" | "media" | "other"
    track: str | None  # "video" | "audio" for init and media
    index: int | None  # segment index for media (None: a name that is no segment)
    status: int
    fault: str | None
    bytes_sent: int
    size: int | None
    virtual_time: float
    real_time: float
    path: str
    range: str | None  # the Range header, if any

    @property
    def complete(self) -> bool:
        """A GET answered 200 with the whole body handed to the connection."""
        return (
            self.method == "GET"
            and self.status == 200
            and self.size is not None
            and self.bytes_sent == self.size
            and self.fault not in (Fault.TRUNCATE.value, Fault.RESET_MID_BODY.value)
        )


@dataclass(frozen=True, slots=True)
class _Exchange:
    """What the origin knows about a request being answered."""

    method: str
    path: str
    kind: str
    track: str | None
    index: int | None
    virtual_time: float
    real_time: float
    range: str | None


class _Counters:
    def __init__(self) -> None:
        self.counts: collections.Counter[tuple[str, str, int]] = collections.Counter()
        self.faults: collections.Counter[str] = collections.Counter()
        self.bytes_served = 0

    def snapshot(self) -> RequestStats:
        return RequestStats(
            counts=types.MappingProxyType(dict(self.counts)),
            bytes_served=self.bytes_served,
            faults=types.MappingProxyType(dict(self.faults)),
        )


class _SegmentCache:
    """A small LRU of segment bytes: memory stays flat over long broadcasts.

    ``load(kind, i)`` makes the bytes as served, packager habits applied: the key can stay
    (kind, i) because one cache serves one origin, whose configuration never changes.
    """

    def __init__(self, load: Callable[[str, int], bytes], size: int) -> None:
        self._load = load
        self._size = max(size, 1)
        self._data: collections.OrderedDict[tuple[str, int], bytes] = collections.OrderedDict()

    def get(self, kind: str, i: int) -> bytes:
        key = (kind, i)
        data = self._data.get(key)
        if data is not None:
            self._data.move_to_end(key)
            return data
        data = self._load(kind, i)
        self._data[key] = data
        if len(self._data) > self._size:
            self._data.popitem(last=False)
        return data


def _parse_range(header: str, size: int) -> tuple[int, int] | Literal[False] | None:
    """A single ``bytes=`` range as (first, last) inclusive.

    Returns None when the header should be ignored (malformed, several ranges: serving the
    whole body is allowed) and False when it is unsatisfiable (416).
    """
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first_s, dash, last_s = spec.strip().partition("-")
    if not dash:
        return None
    try:
        if not first_s:  # suffix range: the last N bytes
            suffix = int(last_s)
            if suffix <= 0:
                return False
            return max(size - suffix, 0), size - 1
        first = int(first_s)
        last = int(last_s) if last_s else size - 1
    except ValueError:
        return None
    if first >= size:
        return False
    if first < 0 or last < first:
        return None
    return first, min(last, size - 1)


def _with_roles(
    tracks: list[TrackDescription], roles: tuple[tuple[str, str], ...]
) -> list[TrackDescription]:
    named = dict(roles)
    return [replace(track, role=named.get(track.kind)) for track in tracks]


def _describe_tracks(media: TestMedia, spec: MediaSpec, shape: str) -> list[TrackDescription]:
    tracks = []
    if media.video is not None:
        tracks.append(
            TrackDescription(
                kind="video",
                rep_id="live-md-v" if shape == "instagram" else "v1",
                timescale=media.video.timescale,
                codecs=media.video.codecs,
                bandwidth=media.video.bandwidth,
                width=spec.width,
                height=spec.height,
                fps=spec.fps,
            )
        )
    if media.audio is not None:
        tracks.append(
            TrackDescription(
                kind="audio",
                rep_id="live-md-a" if shape == "instagram" else "a1",
                timescale=media.audio.timescale,
                codecs=media.audio.codecs,
                bandwidth=media.audio.bandwidth,
                audio_rate=spec.audio_rate,
                lang=media.audio.lang,
            )
        )
    for track in media.extra:
        name = track.kind.split("-", 1)
        tracks.append(
            TrackDescription(
                kind=track.kind,
                rep_id=f"live-md-{track.kind}" if shape == "instagram" else track.kind,
                timescale=track.timescale,
                codecs=track.codecs,
                bandwidth=track.bandwidth,
                audio_rate=spec.audio_rate if name[0] == "audio" else None,
                lang=track.lang,
                plain_text=track.plain_text,
            )
        )
    return tracks


def segments_for_duration(media: TestMedia, duration: float) -> int:
    """How many looped segments make a broadcast of ``duration`` seconds.

    A segment counts when its middle falls before ``duration`` (so the length is rounded to
    whole segments, never less than one segment).
    """
    track = media.video if media.video is not None else media.audio
    if track is None or not track.segments:
        raise ValueError("the test media has no segments")
    durations = [s.d / track.timescale for s in track.segments]
    count = 0
    elapsed = 0.0
    while True:
        d = durations[count % len(durations)]
        if count > 0 and elapsed + d / 2 > duration:
            return count
        elapsed += d
        count += 1


class Origin:
    """The simulated live origin; an async context manager that runs the HTTP server."""

    def __init__(
        self,
        config: OriginConfig | None = None,
        clock: Clock | None = None,
        *,
        media: TestMedia | None = None,
        cache_dir: Path | None = None,
    ) -> None:
        self.config = config or OriginConfig()
        self.clock: Clock = clock if clock is not None else SpeedClock(self.config.speed)
        self._test_media = media
        self._cache_dir = cache_dir
        self._journal = _RequestJournal(self.config.request_log_size)
        self._responder: _Responder | None = None
        self._runner: web.AppRunner | None = None
        self.base_url = ""
        rotation = self.config.token_rotation
        self._tokens = (
            RotatingTokens(secrets.token_bytes(16), rotation, self.config.token_grace)
            if rotation is not None
            else None
        )
        self.stream_id = str(10**15 + secrets.randbelow(9 * 10**15))
        self._broadcast: Broadcast | None = None
        self._cache: _SegmentCache | None = None
        self._tracks: dict[tuple[str, int], bytes] = {}  # inits by kind and Period

    # -- lifecycle ------------------------------------------------------------------------------

    async def __aenter__(self) -> Origin:
        cfg = self.config
        media = self._test_media
        if media is None:
            # ffmpeg (first run) or the cache read is blocking work: keep it off the loop.
            media = await asyncio.to_thread(generate_media, cfg.media, self._cache_dir)
            self._test_media = media
        count = segments_for_duration(media, cfg.broadcast_duration)
        looped = media.looped(count, cfg.timeline_offset)
        later = media
        if cfg.period_media is not None:
            later = await asyncio.to_thread(generate_media, cfg.period_media, self._cache_dir)
        self._broadcast = _broadcast(cfg, looped, media, self.stream_id, later)
        load = _zeroing_last_durations(looped, media) if cfg.last_sample_duration_zero else None
        load = load or looped.segment_bytes
        if later is not media:
            load = _later_periods_from(self._broadcast, load, later.looped(count))
        for kind, init in ((t.kind, t.init) for t in media.tracks()):
            self._tracks[kind, 0] = init
        for p in range(1, len(self._broadcast.periods.firsts)):
            for kind, init in ((t.kind, t.init) for t in later.tracks()):
                self._tracks[kind, p] = init
        self._cache = _SegmentCache(_restarting_periods(self._broadcast, load), cfg.segment_cache)

        app = web.Application()
        self._responder = _Responder(
            cfg,
            self.clock,
            self._broadcast,
            self._tracks,
            self._cache,
            self._journal,
            self.url,
            self.wall_time,
            self._tokens,
            lambda: self.manifest_url,
        )
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, cfg.host, cfg.port)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.base_url = f"http://{host}:{port}"
        # Never on air before the first manifest exists (see Broadcast.first_publication).
        self.clock.anchor(max(cfg.already_broadcast, self._broadcast.first_publication))
        logger.info("origin %s serving %s", cfg.shape, self.manifest_url)
        return self

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        # A subclass may look at every answer (the benchmarks time the archive's last one).
        assert self._responder is not None  # routed only once started
        return await self._responder.handle(request)

    async def __aexit__(self, *exc_info: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- read-only views for tests and benchmarks ----------------------------------------------

    @property
    def manifest_url(self) -> str:
        """The manifest's URL, signed with the current token when tokens rotate ('' before
        the origin starts)."""
        if self._broadcast is None:
            return ""
        b = self._broadcast
        return self.url(b.manifest_path, self._signed(b.signer.query("manifest")))

    def _signed(self, query: str) -> str:
        """``query`` with the token of now when tokens rotate."""
        if self._tokens is None:
            return query
        return with_query(query, self._tokens.query(self.clock.now()))

    @property
    def broadcast(self) -> Broadcast:
        if self._broadcast is None:
            raise RuntimeError("the origin is not started (use `async with Origin(...)`)")
        return self._broadcast

    @property
    def media(self) -> object:
        """The LoopedMedia behind the broadcast."""
        return self.broadcast.media

    @property
    def test_media(self) -> TestMedia | None:
        return self._test_media

    @property
    def stats(self) -> RequestStats:
        return self._journal.counters.snapshot()

    @property
    def request_log(self) -> list[RequestRecord]:
        """Every answered request, oldest first (at most ``config.request_log_size``)."""
        return list(self._journal.log)

    @property
    def request_log_dropped(self) -> int:
        """Entries dropped from the front of the request log to keep it within its size."""
        return self._journal.dropped

    @property
    def first_publication(self) -> float:
        """Virtual time from which the manifest exists (0 for the static shape)."""
        return self.broadcast.first_publication

    @property
    def now(self) -> float:
        return self.clock.now()

    @property
    def ended(self) -> bool:
        return self.broadcast.ended(self.clock.now())

    @property
    def segment_count(self) -> int:
        """Segments in the whole broadcast."""
        return self.broadcast.count

    @property
    def duration(self) -> float:
        """Virtual length of the broadcast (whole segments)."""
        return self.broadcast.duration

    @property
    def broadcast_start(self) -> datetime:
        """Wall-clock time of virtual 0 (the manifests' availabilityStartTime)."""
        return EPOCH

    @property
    def gaps(self) -> frozenset[int]:
        return self.broadcast.gaps

    def wall_time(self, virtual: float | None = None) -> datetime:
        """Wall-clock time the origin reports for virtual time ``virtual`` (default: now)."""
        return EPOCH + timedelta(seconds=self.clock.now() if virtual is None else virtual)

    def broadcast_segments(self, since: float | None = None) -> list[int]:
        """Indexes of the segments complete so far (gaps included: they were broadcast).

        With ``since``, only those that became complete after virtual time ``since``
        (end > since).
        """
        b = self.broadcast
        available = b.available_count(self.clock.now())
        first = 0 if since is None else b.available_count(since)
        return list(range(first, available))

    def listed_segments(self) -> list[int]:
        """Indexes the manifest lists right now."""
        return list(self.broadcast.listed(self.clock.now()))

    def retained_segments(self) -> list[int]:
        """Indexes fetchable right now (retention applied, gaps removed)."""
        b = self.broadcast
        now = self.clock.now()
        return [i for i in b.retained(now) if i not in b.gaps]

    def expected_frames(self, first_index: int, last_index: int) -> int:
        """Video frames in segments first_index..last_index inclusive, gaps excluded."""
        media = self.broadcast.media
        return sum(
            media.video_frames(i)
            for i in range(first_index, last_index + 1)
            if i not in self.broadcast.gaps
        )

    def segment_start(self, i: int) -> float:
        """Virtual start (seconds since broadcast start) of segment i."""
        return self.broadcast.starts[i]

    def segment_end(self, i: int) -> float:
        return self.broadcast.ends[i]

    def segment_key(self, kind: str, i: int) -> int:
        """$Time$ or $Number$ of segment i of track kind, as in URLs."""
        return self.broadcast.key(kind, i)

    def url(self, path: str, query: str = "") -> str:
        return f"{self.base_url}{path}{query}"

    def init_url(self, kind: str) -> str:
        b = self.broadcast
        return self.url(b.init_path(kind), self._signed(b.signer.query(b.track(kind).rep_id)))

    def segment_url(self, kind: str, i: int) -> str:
        b = self.broadcast
        return self.url(b.media_path(kind, i), self._signed(b.signer.query(b.track(kind).rep_id)))


class _RequestJournal:
    """What the origin answered: its counters and its request log."""

    def __init__(self, size: int) -> None:
        self.counters = _Counters()
        self.log: collections.deque[RequestRecord] = collections.deque(maxlen=size)
        self.dropped = 0  # entries pushed out of the log by newer ones

    def reply(
        self,
        exchange: _Exchange,
        response: web.StreamResponse,
        sent: int = 0,
        size: int | None = None,
        fault: str | None = None,
    ) -> web.StreamResponse:
        self.record(exchange, response.status, fault, sent, size)
        return response

    def record(
        self, exchange: _Exchange, status: int, fault: str | None, sent: int, size: int | None
    ) -> None:
        sent = 0 if exchange.method == "HEAD" else sent
        self.counters.counts[(exchange.method, exchange.kind, status)] += 1
        self.counters.bytes_served += sent
        log = self.log
        if log.maxlen is not None and log.maxlen == len(log):
            self.dropped += 1
        log.append(
            RequestRecord(
                method=exchange.method,
                kind=exchange.kind,
                track=exchange.track,
                index=exchange.index,
                status=status,
                fault=fault,
                bytes_sent=sent,
                size=size,
                virtual_time=exchange.virtual_time,
                real_time=exchange.real_time,
                path=exchange.path,
                range=exchange.range,
            )
        )


class _Responder:
    """Answers the origin's HTTP requests: routes, URL signatures, faults, byte ranges."""

    def __init__(
        self,
        config: OriginConfig,
        clock: Clock,
        broadcast: Broadcast,
        tracks: dict[tuple[str, int], bytes],
        cache: _SegmentCache,
        journal: _RequestJournal,
        url: Callable[..., str],
        wall_time: Callable[[], datetime],
        tokens: RotatingTokens | None,
        current_url: Callable[[], str],
    ) -> None:
        self._config = config
        self._clock = clock
        self._broadcast = broadcast
        self._tracks = tracks
        self._cache = cache
        self._journal = journal
        self._faults = FaultPlan(config.faults)
        rate = config.faults.rate_limit
        self._rate_limit = RateLimit(rate) if rate is not None else None
        self._url = url
        self._wall_time = wall_time
        self._tokens = tokens
        self._current_url = current_url

    async def handle(self, request: web.Request) -> web.StreamResponse:
        arrived_virtual, arrived_real = self._clock.now(), time.monotonic()
        faults = self._config.faults
        if faults.latency > 0:
            await asyncio.sleep(faults.latency)
        b = self._broadcast
        method = request.method
        path = request.path
        kind, track, index, period = _routed(b, path)
        exchange = _Exchange(
            method,
            path,
            kind,
            track,
            index,
            arrived_virtual,
            arrived_real,
            request.headers.get("Range"),
        )
        if faults.out_at(arrived_virtual):
            return self._outage(request, exchange)
        if path in _ENDPOINTS:
            text = iso_time(self._wall_time()) if path == "/time" else self._current_url() + "\n"
            return self._journal.reply(exchange, web.Response(text=text), len(text), len(text))
        if kind == "other":
            return self._journal.reply(exchange, web.Response(status=404, text="not found"))
        if method not in ("GET", "HEAD"):
            return self._journal.reply(
                exchange, web.Response(status=405, headers={"Allow": "GET, HEAD"})
            )
        scope = b.scope_of(kind, track)
        refused = _refused(b, self._tokens, request.query, scope, arrived_virtual)
        if refused is not None:
            status = self._config.token_expired_status if refused == "URL expired" else 403
            return self._journal.reply(exchange, web.Response(status=status, text=refused))
        if kind == "manifest":
            return await self._manifest(request, exchange)

        # Faults are drawn per (track, segment) rather than per path: the path holds the
        # random stream id, and the same seed must give the same faults on every origin.
        fault_key = f"{track}/{'init' if kind == 'init' else index if index is not None else path}"
        limited = self._rate_limited(exchange)
        if limited is not None:
            return limited
        fault, early = await self._draw_fault(request, exchange, fault_key)
        if early is not None:
            return early
        stalled = fault.value if fault is Fault.SLOW_FIRST_BYTE else None
        now = self._clock.now()
        assert track is not None
        if kind == "init":
            body = self._tracks[track, period]
        elif index is None or not b.fetchable(index, now):
            response = web.Response(status=404, text="no such segment")
            return self._journal.reply(exchange, response, fault=stalled)
        else:
            assert self._cache is not None
            body = self._cache.get(track, index)
        return await self._media_body(request, exchange, f"{track}/mp4", body, fault)

    def _outage(self, request: web.Request, exchange: _Exchange) -> web.StreamResponse:
        _reset(request)
        self._journal.record(exchange, 0, "outage", 0, None)
        return web.Response(status=500)  # never written: the transport is gone

    def _rate_limited(self, exchange: _Exchange) -> web.StreamResponse | None:
        if self._rate_limit is None or exchange.kind not in self._config.faults.kinds:
            return None
        if self._rate_limit.admit(time.monotonic()):
            return None
        self._journal.counters.faults["rate"] += 1
        headers = {"Retry-After": str(self._config.faults.retry_after)}
        return self._journal.reply(
            exchange, web.Response(status=429, headers=headers), fault="rate"
        )

    async def _draw_fault(
        self, request: web.Request, exchange: _Exchange, fault_key: str
    ) -> tuple[Fault | None, web.StreamResponse | None]:
        """The fault applied while sending the body, or the response that replaces it all."""
        verdict = self._faults.verdict(exchange.kind, exchange.method, fault_key)
        fault = verdict.fault
        if fault in _BODY_FAULTS and exchange.method == "HEAD":
            fault = None  # no body to cut short
        if fault is None:
            return None, None
        if fault not in _BODY_FAULTS:
            # Body faults are counted when applied: a 404 has nothing to cut short.
            self._journal.counters.faults[fault.value] += 1
        return fault, await self._early_fault(request, exchange, fault, verdict.stall)

    async def _manifest(self, request: web.Request, exchange: _Exchange) -> web.StreamResponse:
        b = self._broadcast
        if self._faults.manifest_fails():
            self._journal.counters.faults["manifest"] += 1
            status = self._config.faults.manifest_failure_status
            response = web.Response(status=status, text="try later")
            return self._journal.reply(exchange, response, fault="manifest")
        fault, early = await self._draw_fault(request, exchange, "manifest")
        if early is not None:
            return early
        stalled = fault.value if fault is Fault.SLOW_FIRST_BYTE else None
        now = self._clock.now()
        if (
            b.shape != "static"
            and self._config.signal_end
            and now >= b.duration + self._config.end_signal_manifest_404_after
        ):
            response = web.Response(status=404, text="broadcast over")
            return self._journal.reply(exchange, response, fault=stalled)
        if not b.published(now):
            # The packager has not written its first manifest yet: there is no file to serve.
            response = web.Response(status=404, text="not published yet")
            return self._journal.reply(exchange, response, fault=stalled)
        # Its segments are signed with the token it was asked with.
        token = "" if self._tokens is None else request.query_string
        body, ended_header = render_manifest(
            b,
            now,
            time_url=self._url("/time"),
            signal_end=self._config.signal_end,
            segment_query="&".join(p for p in token.split("&") if p.startswith(("sig=", "exp="))),
        )
        if self._config.start_number_follows_window and b.shape == "number_duration":
            body = _start_number_of_window(body, b, now)
        headers = {"Cache-Control": "no-cache"}
        if ended_header:
            headers[BROADCAST_ENDED_HEADER] = "1"
        return await self._send(
            request, exchange, 200, headers, "application/dash+xml", body, len(body), fault
        )

    async def _early_fault(
        self, request: web.Request, exchange: _Exchange, fault: Fault, stall: float
    ) -> web.StreamResponse | None:
        """Faults that replace the response; None for those applied while sending the body."""
        if fault is Fault.ERROR_503:
            response = web.Response(status=503, text="overloaded")
            return self._journal.reply(exchange, response, fault=fault.value)
        if fault is Fault.ERROR_429:
            headers = {"Retry-After": str(self._config.faults.retry_after)}
            response = web.Response(status=429, headers=headers)
            return self._journal.reply(exchange, response, fault=fault.value)
        if fault is Fault.RESET:
            _reset(request)
            self._journal.record(exchange, 0, fault.value, 0, None)
            return web.Response(status=500)  # never written: the transport is gone
        if fault is Fault.SLOW_FIRST_BYTE:
            await asyncio.sleep(stall)
        return None

    async def _media_body(
        self,
        request: web.Request,
        exchange: _Exchange,
        content_type: str,
        body: bytes,
        fault: Fault | None,
    ) -> web.StreamResponse:
        size = len(body)
        headers = {"Accept-Ranges": "bytes", "Cache-Control": "max-age=3600"}
        status = 200
        if exchange.range:
            parsed = _parse_range(exchange.range, size)
            if parsed is False:
                headers["Content-Range"] = f"bytes */{size}"
                return self._journal.reply(
                    exchange, web.Response(status=416, headers=headers), size=size
                )
            if parsed:
                first, last = parsed
                body = body[first : last + 1]
                headers["Content-Range"] = f"bytes {first}-{last}/{size}"
                status = 206
        return await self._send(request, exchange, status, headers, content_type, body, size, fault)

    async def _send(
        self,
        request: web.Request,
        exchange: _Exchange,
        status: int,
        headers: dict[str, str],
        content_type: str,
        body: bytes,
        size: int,
        fault: Fault | None,
    ) -> web.StreamResponse:
        """Answer with ``body`` (``size``: the whole resource), cut short by a body fault."""
        if exchange.method == "HEAD" or fault not in _BODY_FAULTS:
            # aiohttp sends the Content-Length of the body but not the body itself on HEAD.
            response = web.Response(status=status, body=body, headers=headers)
            response.content_type = content_type
            slow = fault.value if fault is Fault.SLOW_FIRST_BYTE else None
            return self._journal.reply(exchange, response, len(body), size, slow)
        assert fault is not None
        self._journal.counters.faults[fault.value] += 1
        stream = web.StreamResponse(status=status, headers=headers)
        stream.content_type = content_type
        stream.content_length = len(body)
        await stream.prepare(request)
        sent = body[: len(body) // 2]
        await stream.write(sent)
        self._journal.record(exchange, status, fault.value, len(sent), size)
        transport = request.transport
        if fault is Fault.TRUNCATE:
            if transport is not None:
                transport.close()
            return stream
        # Let the kernel take the bytes first, so the client reads them before the reset.
        # asyncio has no awaitable "write buffer empty" short of pausing the protocol, which
        # aiohttp owns; a short poll it is (the buffer is empty at once for bodies that fit the
        # socket buffer).
        while transport is not None and transport.get_write_buffer_size():
            if transport.is_closing():
                break
            await asyncio.sleep(0.001)
        _reset(request)
        return stream


def _refused(
    b: Broadcast,
    tokens: RotatingTokens | None,
    query: Mapping[str, str],
    scope: str,
    now: float,
) -> str | None:
    """Why a request's URL signature is refused ("URL expired" for an old token), or None."""
    if not b.signer.check(scope, query.get("oh"), query.get("oe")):
        return "URL signature mismatch"
    if tokens is not None and not tokens.valid(query.get("sig"), query.get("exp"), now):
        return "URL expired"
    return None


def _broadcast(
    cfg: OriginConfig, looped: LoopedMedia, media: TestMedia, stream_id: str, later: TestMedia
) -> Broadcast:
    if cfg.period_starts and any(track.plain_text for track in media.tracks()):
        # Their files are made with their times in them, which no Period restart rewrites.
        raise ValueError("WebVTT-file text tracks (plain_subtitles) have a single Period")
    signed = cfg.shape == "instagram" and cfg.signed
    # Expiry (oe) far in the real future, hex like the CDN's.
    expiry = format(int(time.time()) + 7 * 86400, "x")
    broadcast_class = _FirstNamedZero if cfg.last_sample_duration_zero else Broadcast
    return broadcast_class(
        looped,
        _with_roles(_describe_tracks(media, cfg.media, cfg.shape), cfg.roles),
        shape=cfg.shape,
        stream_id=stream_id,
        window=cfg.window,
        retention=cfg.retention,
        gaps=cfg.gaps,
        start_number=cfg.start_number,
        minimum_update_period=cfg.minimum_update_period,
        secret=secrets.token_bytes(16) if signed else None,
        expiry=expiry,
        gaps_listed=cfg.gaps_listed,
        timescale=cfg.timescale,
        publish_frame_time=cfg.publish_frame_time,
        periods=(cfg.period_starts, cfg.period_new_ids),
        later_tracks=_with_roles(
            _describe_tracks(later, cfg.period_media or cfg.media, cfg.shape), cfg.roles
        ),
    )


def _zeroing_last_durations(looped: LoopedMedia, media: TestMedia) -> Callable[[str, int], bytes]:
    """A segment loader giving the last sample of each segment duration 0 (nginx-rtmp).

    The rewrite runs once per cache miss. The trex default duration is passed for runs that
    carry no durations and no tfhd default (the test media's have a tfhd default).
    """
    defaults = {t.kind: parse_init(t.init).default_sample_duration for t in media.tracks()}

    def load(kind: str, i: int) -> bytes:
        return fmp4.zero_last_sample_duration(looped.segment_bytes(kind, i), defaults[kind])

    return load


_ENDPOINTS = ("/time", "/current-url")


def _routed(b: Broadcast, path: str) -> tuple[str, str | None, int | None, int]:
    """``Broadcast.route`` with an init's Period apart: the request log names segments by
    index, inits by none."""
    if path in _ENDPOINTS:
        return "other", None, None, 0
    kind, track, index = b.route(path)
    if kind == "init":
        return kind, track, None, index or 0
    return kind, track, index, 0


def _later_periods_from(
    b: Broadcast, load: Callable[[str, int], bytes], later: LoopedMedia
) -> Callable[[str, int], bytes]:
    """A segment loader taking the Periods after the first from ``later`` (same timing)."""

    def chosen(kind: str, i: int) -> bytes:
        return later.segment_bytes(kind, i) if b.periods.of(i) else load(kind, i)

    return chosen


def _restarting_periods(
    b: Broadcast, load: Callable[[str, int], bytes]
) -> Callable[[str, int], bytes]:
    """A segment loader whose tfdt restarts at 0 with each Period (an encoder restart)."""
    if not b.periods.several:
        return load

    def restarted(kind: str, i: int) -> bytes:
        data = load(kind, i)
        if not b.periods.of(i):
            return data
        return fmp4.rewrite_fragment(data, base_media_decode_time=b.media_time(kind, i)[0])

    return restarted


class _FirstNamedZero(Broadcast):
    """nginx-rtmp's naming: the first fragment of a ``$Time$`` stream is named 0.

    nginx-rtmp names the first fragment after the stream's first timestamp (the audio's 0)
    while its video tfdt is later (21 ms), and every later fragment after its own tfdt. So in
    the generic ``$Time$`` shapes segment 0 is ``$Time$`` 0 and its ``S`` runs from 0 to the next
    segment's time; its bytes keep the real tfdt. Without ``timeline_offset`` segment 0 starts
    at 0 anyway and nothing changes. The keys and the ``S`` entries both come from
    ``mpd_time``, so overriding it renames the segment everywhere (URL, route, manifest).
    """

    def mpd_time(self, kind: str, i: int) -> tuple[int, int]:
        t, d = super().mpd_time(kind, i)
        if i == 0 and self.shape in ("time", "static"):
            return 0, t + d
        return t, d


def _start_number_of_window(body: bytes, b: Broadcast, now: float) -> bytes:
    """The manifest with SegmentTemplate@startNumber set to its window's first number.

    Shaka Packager under ``--segment_template_constant_duration`` writes the number of its
    window's first segment there on every refresh, while the files keep their numbers and
    media times, availabilityStartTime stays the broadcast start and there is no
    presentationTimeOffset. Live manifests only: a static one (the end, with ``signal_end``)
    describes the whole presentation from the period start, so it keeps the broadcast's own
    startNumber (Shaka never turns static by itself, so it shows nothing else to imitate).
    """
    root = etree.fromstring(body)
    if root.get("type") != "dynamic":
        return body
    # number_duration numbers both tracks alike: one number for the whole window.
    first = b.key(b.reference, b.listed(now)[0])
    for template in root.iter(f"{{{DASH_NS}}}SegmentTemplate"):
        template.set("startNumber", str(first))
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)


def _reset(request: web.Request) -> None:
    """Drop the connection with a TCP RST (SO_LINGER 0): the client sees ECONNRESET."""
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


# -- command line ---------------------------------------------------------------------------------


def _gaps(text: str) -> frozenset[int]:
    """'3,7,10-12' -> {3, 7, 10, 11, 12}"""
    gaps: set[int] = set()
    for part in filter(None, (p.strip() for p in text.split(","))):
        first, _, last = part.partition("-")
        gaps.update(range(int(first), int(last or first) + 1))
    return frozenset(gaps)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m instarec.testing.origin",
        description="Serve a simulated live DASH broadcast on 127.0.0.1 until Ctrl+C.",
    )
    add = parser.add_argument
    add("--shape", choices=SHAPES, default="instagram")
    add("--duration", type=float, default=600.0, help="broadcast length, seconds (default 600)")
    add("--already", type=float, default=0.0, help="seconds already broadcast at start")
    add("--speed", type=float, default=1.0, help="virtual seconds per real second")
    add("--window", type=int, default=5, help="segments listed in the manifest")
    add("--retention", type=int, default=None, help="keep only the last N segments")
    add("--gaps", type=_gaps, default=frozenset(), help="segment indexes that 404, e.g. 3,7,10-12")
    add(
        "--gaps-omitted",
        action="store_true",
        help="leave the gaps out of the SegmentTimeline instead of listing them",
    )
    add(
        "--timeline-offset",
        type=float,
        default=0.0,
        help="seconds added to every media time (tfdt, $Time$, S@t), e.g. 1.4",
    )
    add(
        "--timescale",
        type=int,
        default=None,
        help="MPD timescale of the generic shapes, e.g. 90000 (default: the media's)",
    )
    add(
        "--no-publish-frame-time",
        action="store_true",
        help="instagram: omit publishFrameTime and firstAvTimeMs",
    )
    add("--end-404-after", type=float, default=30.0, help="manifest 404 this long after the end")
    add("--unsigned", action="store_true", help="instagram: do not require oh/oe")
    add("--start-number", type=int, default=1)
    add(
        "--last-sample-duration-zero",
        action="store_true",
        help="nginx-rtmp: the last sample of every segment lasts 0 in its trun; "
        "$Time$ shapes name segment 0 $Time$ 0",
    )
    add(
        "--start-number-follows-window",
        action="store_true",
        help="number_duration, as Shaka Packager: startNumber is the window's first number",
    )
    add(
        "--token-rotation",
        type=float,
        default=None,
        help="sign every URL with ?sig=&exp=, a new token every this many seconds "
        "(GET /current-url prints the manifest URL with the current one)",
    )
    add("--token-grace", type=float, default=10.0, help="seconds an old token still works")
    add("--token-expired-status", type=int, default=403, choices=(401, 403, 410))
    add("--host", default="127.0.0.1")
    add("--port", type=int, default=0, help="0 picks a free port")
    add("--media-duration", type=float, default=30.0, help="seconds of source media to encode")
    add(
        "--audio-languages",
        default="",
        help="comma-separated languages, one audio AdaptationSet each (tones 440, 660, 880 Hz...)",
    )
    add("--subtitles", default="", help="comma-separated languages of WebVTT-in-MP4 text tracks")
    add("--ttml-subtitles", default="", help="the same in TTML (stpp), right within one loop")
    add("--vtt-subtitles", default="", help="the same as WebVTT files (text/vtt, no init)")
    add(
        "--constant", action="store_true", help="constant 2 s segments (implied by number_duration)"
    )
    add("--no-audio", action="store_true")
    add("--no-video", action="store_true")
    add("--cache-dir", type=Path, default=None, help="test media cache directory")
    faults = parser.add_argument_group("faults (probabilities per media request)")
    faults.add_argument("--seed", type=int, default=0)
    faults.add_argument("--p503", type=float, default=0.0)
    faults.add_argument("--p429", type=float, default=0.0)
    faults.add_argument("--retry-after", type=int, default=1)
    faults.add_argument("--preset", type=float, default=0.0, help="connection reset")
    faults.add_argument("--ptruncate", type=float, default=0.0)
    faults.add_argument("--pslow", type=float, default=0.0, help="slow first byte")
    faults.add_argument("--preset-mid-body", type=float, default=0.0, help="reset during the body")
    faults.add_argument("--slow-delay", type=float, default=2.0)
    faults.add_argument(
        "--slow-delay-max", type=float, default=None, help="stalls last --slow-delay to this"
    )
    faults.add_argument(
        "--manifest-faults",
        action="store_true",
        help="give manifest requests the same faults as media requests",
    )
    faults.add_argument("--latency", type=float, default=0.0, help="real seconds per request")
    faults.add_argument(
        "--rate-limit", type=float, default=None, help="media requests served per second (429)"
    )
    faults.add_argument("--manifest-failure", type=float, default=0.0)
    faults.add_argument(
        "--outage",
        type=_outage,
        action="append",
        default=[],
        metavar="START:END",
        help="every request is reset from START to END (virtual seconds); repeatable",
    )
    add("-v", "--verbose", action="store_true")
    return parser


def _outage(text: str) -> tuple[float, float]:
    start, sep, end = text.partition(":")
    try:
        outage = (float(start), float(end))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected START:END in seconds, got {text!r}") from None
    if not sep or not 0 <= outage[0] < outage[1]:
        raise argparse.ArgumentTypeError(f"expected START:END with START < END, got {text!r}")
    return outage


def _languages(text: str) -> tuple[str, ...]:
    return tuple(lang.strip() for lang in text.split(",") if lang.strip())


def config_from_args(args: argparse.Namespace) -> OriginConfig:
    constant = args.constant or args.shape == "number_duration"
    media = MediaSpec(
        duration=args.media_duration,
        segment_durations="constant" if constant else "variable",
        video=not args.no_video,
        audio=not args.no_audio,
        audio_languages=_languages(args.audio_languages),
        subtitles=_languages(args.subtitles),
        ttml_subtitles=_languages(args.ttml_subtitles),
        plain_subtitles=_languages(args.vtt_subtitles),
    )
    faults = FaultConfig(
        seed=args.seed,
        error_503=args.p503,
        error_429=args.p429,
        retry_after=args.retry_after,
        reset=args.preset,
        truncate=args.ptruncate,
        slow_first_byte=args.pslow,
        slow_first_byte_delay=args.slow_delay,
        slow_first_byte_max=args.slow_delay_max,
        reset_mid_body=args.preset_mid_body,
        kinds=frozenset({"media", "init", *(["manifest"] if args.manifest_faults else [])}),
        latency=args.latency,
        outages=tuple(args.outage),
        manifest_failure=args.manifest_failure,
        rate_limit=args.rate_limit,
    )
    return OriginConfig(
        shape=args.shape,
        broadcast_duration=args.duration,
        already_broadcast=args.already,
        window=args.window,
        retention=args.retention,
        gaps=args.gaps,
        faults=faults,
        speed=args.speed,
        end_signal_manifest_404_after=args.end_404_after,
        media=media,
        signed=not args.unsigned,
        start_number=args.start_number,
        host=args.host,
        port=args.port,
        gaps_listed=not args.gaps_omitted,
        timeline_offset=args.timeline_offset,
        timescale=args.timescale,
        publish_frame_time=not args.no_publish_frame_time,
        last_sample_duration_zero=args.last_sample_duration_zero,
        start_number_follows_window=args.start_number_follows_window,
        token_rotation=args.token_rotation,
        token_grace=args.token_grace,
        token_expired_status=args.token_expired_status,
    )


async def _serve(config: OriginConfig, cache_dir: Path | None) -> None:
    async with Origin(config, cache_dir=cache_dir) as origin:
        print(origin.manifest_url, flush=True)
        print(
            f"{config.shape} broadcast of {origin.segment_count} segments "
            f"({origin.duration:.1f} s) at {config.speed}x, "
            f"now at {origin.now:.1f} s; Ctrl+C to stop",
            file=sys.stderr,
            flush=True,
        )
        announced_end = False
        while True:
            await asyncio.sleep(1.0)
            if origin.ended and not announced_end:
                announced_end = True
                print("broadcast ended", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING)
    try:
        config = config_from_args(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(_serve(config, args.cache_dir))
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
