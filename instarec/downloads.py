"""Segment downloads: a bounded pool of workers feeding the ``SegmentStore``.

Producers (the live follower, past recovery) submit ``SegmentRef``s; the pool downloads each
key once (a second request for a key in flight shares the first), in priority order (chain steps
first, then broadcast order), answers a chain step's ``inspect`` as soon as its first moof
arrives, and asks again, lowest first, for segments that answered "not yet".
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from instarec.clock import SYSTEM_CLOCK, Clock
from instarec.errors import NetworkError, SegmentMissing, UnsupportedStreamError, UrlExpiredError
from instarec.http import HttpClient
from instarec.mp4 import FragmentInfo, Mp4Error, moof_end, parse_fragment, parse_init
from instarec.options import Options
from instarec.refresh import Refresher
from instarec.segments import RefOrigin, SegmentRef
from instarec.selection import plain_text
from instarec.store import SegmentStore, TrackPlace
from instarec.timeline import Timeline
from instarec.unanswered import Unanswered

log = logging.getLogger(__name__)


# How many times a segment answering 404 with nothing later on disk is asked again (a few
# seconds apart: half a minute or more) before it counts as never published. Only the lowest
# such key of a track is asked again (servers publish in order): the keys above it wait.
NOT_YET_RETRIES = 15


@dataclass(frozen=True, slots=True)
class LiveActivity:
    """What the live follower needs to tell a live broadcast from one that has ended."""

    recorded: int  # live segments recorded so far
    # When the oldest listed live segment still queued and not yet asked for once was queued
    # (the recording clock's monotonic()), None when there is none: a backlog, not the end of
    # the broadcast.
    oldest_waiting: float | None


@dataclass(frozen=True, slots=True)
class DownloadStats:
    """The download pool's counters at one moment (the progress display reads these)."""

    downloaded: int  # segments committed
    missing: int  # segments journalled missing
    bytes: int  # bytes of committed segments
    recorded_seconds: Mapping[RefOrigin, float]  # media seconds recorded, on the clock track
    queued: Mapping[RefOrigin, int]  # jobs waiting or running
    newest_recorded_end: float | None  # where the newest recorded segment ends (seconds)


@dataclass(slots=True)
class _Queued:
    # (urgent first, then by broadcast time, then by key: numbers under a timeline all carry
    # the period's start, and their number orders them); the sequence keeps equal ones FIFO.
    priority: tuple[int, float, int]
    sequence: int

    def __lt__(self, other: _Queued) -> bool:
        return (self.priority, self.sequence) < (other.priority, other.sequence)


@dataclass(slots=True)
class DownloadJob(_Queued):
    ref: SegmentRef
    # Answered with the segment's timing: from its first moof as soon as that arrives, or from
    # the whole body when ``whole`` (segments of several moofs).
    first_fragment: asyncio.Future[FragmentInfo | None] | None = None
    whole: bool = False
    retries: int = 0  # times asked again after a "not yet" 404
    unanswered: int = 0  # times asked again after no answer at all (see Unanswered)

    @property
    def listed_and_untried(self) -> bool:
        """A live segment the listing queued and nobody asked for yet (a backlog, when old)."""
        return self.ref.origin == "live" and self.first_fragment is None and not self.retries


@dataclass(slots=True)
class StopJob(_Queued):
    """Tells the worker that takes it to stop: the downloads in flight end, none starts."""


class _FirstMoof:
    """Collects a download's first bytes and resolves a future once the first moof is whole.

    This is what lets the $Time$ chain take its next step while the body still streams in.
    """

    def __init__(
        self,
        future: asyncio.Future[FragmentInfo | None],
        default: int | None,
        on_info: Callable[[FragmentInfo], None],
    ) -> None:
        self._future = future
        self._default = default
        self._on_info = on_info
        self._buffer = bytearray()

    def restart(self) -> None:
        """A retry starts the body over: forget the bytes of the failed attempt."""
        self._buffer = bytearray()

    def feed(self, chunk: bytes) -> None:
        if self._future.done():
            return
        self._buffer += chunk
        try:
            end = moof_end(self._buffer)
            if end is None:
                return
            info = parse_fragment(self._buffer[:end], default_sample_duration=self._default)
        except Mp4Error:
            return  # the full parse after the download decides
        self._on_info(info)
        self._future.set_result(info)
        self._buffer = bytearray()


@dataclass(slots=True)
class _PastSpacing:
    """--past-segment-delay between the starts of one worker's past downloads (a server
    throttling a client sees each connection's pace). Chain steps are exempt: a chain already
    waits a whole round trip between two steps."""

    delay: float
    clock: Clock
    last_start: float = -math.inf

    async def wait(self) -> None:
        wait = self.last_start + self.delay - self.clock.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        self.last_start = self.clock.monotonic()


class NotYetPublished:
    """Segments that answered 404 with nothing later on disk: maybe not published yet (a live
    edge computed from a clock runs ahead of the packager).

    One is missing once a later segment is on disk and it still answers 404; one that never
    appears while nothing later does is no loss: the broadcast ended before it. Servers publish
    in order, so while a key is not there no key above it is: only the lowest waiting key of a
    track is asked again (a segment's length later), and the keys above it wait for it. A
    clock-driven manifest that goes on listing numbers after a silent end thus costs one
    request per track and segment length, not one per listed number for half a minute each
    (with a few stalls those filled every download slot and kept the new numbers waiting: a
    backlog that held off the end of the recording for ever).
    """

    def __init__(self, ask_again: Callable[[SegmentRef, int], None]) -> None:
        self._ask_again = ask_again  # queues a ref with its count of re-asks so far
        self._waiting: dict[str, dict[int, tuple[SegmentRef, int]]] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._stopped = False

    def add(self, ref: SegmentRef, retries: int) -> None:
        waiting = self._waiting.setdefault(ref.track, {})
        if self._stopped:
            return
        if retries >= NOT_YET_RETRIES:
            above = [key for key in waiting if key > ref.key]
            for key in above:
                del waiting[key]
            log.debug(
                "%s segment %d never appeared; not asking again (nor for the %d listed after it)",
                ref.track,
                ref.key,
                len(above),
            )
            return
        waiting[ref.key] = (ref, retries)
        delay = min(5.0, max(0.5, ref.duration or 2.0))
        if self._schedule(ref.track, delay):
            log.debug(
                "%s segment %d not there yet; asking again in %.1f s", ref.track, ref.key, delay
            )

    def recorded(self, track: str, key: int, newest: bool) -> None:
        """Segment ``key`` is on disk: the waiting keys below it are asked again now (a 404
        then means missing); when it is the newest, the next waiting one may be out too."""
        waiting = self._waiting.get(track)
        if not waiting:
            return
        for lower in sorted(k for k in waiting if k < key):
            ref, retries = waiting.pop(lower)
            self._ask_again(ref, retries + 1)
        if waiting and newest:
            self._schedule(track, 0.0)

    def stop(self) -> None:
        """The broadcast is over: keys that answered "not yet" are not asked again."""
        self._stopped = True
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        dropped = sum(len(waiting) for waiting in self._waiting.values())
        self._waiting.clear()
        if dropped:
            log.debug("%d segments listed after the last one published are not asked", dropped)

    def _schedule(self, track: str, delay: float) -> bool:
        """Ask the lowest waiting key of ``track`` again in ``delay`` s, unless due sooner."""
        loop = asyncio.get_running_loop()
        timer = self._timers.get(track)
        if timer is not None and not timer.cancelled():
            if timer.when() <= loop.time() + delay:
                return False
            timer.cancel()
        self._timers[track] = loop.call_later(delay, self._ask_lowest_again, track)
        return True

    def _ask_lowest_again(self, track: str) -> None:
        self._timers.pop(track, None)
        waiting = self._waiting.get(track)
        if waiting and not self._stopped:
            ref, retries = waiting.pop(min(waiting))
            self._ask_again(ref, retries + 1)


# ---------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Tally:
    """The download pool's running counts (``DownloadStats`` is a snapshot of them)."""

    downloaded: int = 0
    missing: int = 0
    bytes: int = 0
    live_recorded: int = 0  # live segments recorded so far (the live follower's pulse)
    recorded_seconds: dict[RefOrigin, float] = field(
        default_factory=lambda: {"archive": 0.0, "live": 0.0}
    )
    queued: dict[RefOrigin, int] = field(default_factory=lambda: {"archive": 0, "live": 0})
    newest_recorded_end: float | None = None

    def recorded(
        self,
        ref: SegmentRef,
        size: int,
        clock_track: bool,
        start: float,
        duration: float | None,
    ) -> None:
        self.downloaded += 1
        self.bytes += size
        if ref.origin == "live":
            self.live_recorded += 1
        if clock_track:
            # Durations are counted on one track so that video and audio are not added up.
            self.recorded_seconds[ref.origin] += duration or 0.0
            end = start + (duration or 0.0)
            if self.newest_recorded_end is None or end > self.newest_recorded_end:
                self.newest_recorded_end = end

    def stats(self) -> DownloadStats:
        return DownloadStats(
            downloaded=self.downloaded,
            missing=self.missing,
            bytes=self.bytes,
            recorded_seconds=dict(self.recorded_seconds),
            queued=dict(self.queued),
            newest_recorded_end=self.newest_recorded_end,
        )


class Downloads:
    """The download pool of one recording and its counters (read by the progress display)."""

    def __init__(
        self,
        options: Options,
        http: HttpClient,
        store: SegmentStore,
        timelines: Mapping[str, Timeline],
        signing: Refresher,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._clock = clock
        self.options = options
        self.http = http
        self.signing = signing
        self.store = store
        self.timelines = timelines
        self._queue: asyncio.PriorityQueue[DownloadJob | StopJob] = asyncio.PriorityQueue()
        self._in_flight: dict[tuple[str, int], asyncio.Future[FragmentInfo | None]] = {}
        self._sequence = itertools.count()
        self._tally = _Tally()
        self._untried_live: dict[int, float] = {}  # job sequence -> when it was queued
        # Per track, the highest key on disk: a 404 for a lower key proves it missing (servers
        # publish in order); a 404 with nothing later on disk may be a segment not out yet.
        self._newest_key: dict[str, int] = {}
        self._not_yet = NotYetPublished(lambda ref, retries: self._queue_job(ref, retries=retries))
        self._unanswered = Unanswered(lambda ref, rounds: self._queue_job(ref, unanswered=rounds))
        self.clock_track: str = "video" if "video" in timelines else "audio"

    def stats(self) -> DownloadStats:
        return self._tally.stats()

    def stop_asking_again(self) -> None:
        """The broadcast is over: segments that answered "not yet" are not asked again."""
        self._not_yet.stop()

    async def join(self) -> None:
        """Wait until every queued download is done (and every re-ask queued meanwhile), the
        segments that got no answer asked a last time."""
        await self._queue.join()
        while self._unanswered.last_call():
            await self._queue.join()

    def submit(self, ref: SegmentRef) -> None:
        """Queue ``ref`` in broadcast order."""
        self._queue_job(ref)

    async def inspect(self, ref: SegmentRef, *, whole: bool = False) -> FragmentInfo | None:
        """Download ``ref`` ahead of the queue; its timing once its first moof (``whole``: its
        body) arrived, None when the server has no such segment, NetworkError when it gave no
        answer after its retries (the caller decides what that means; nothing is journalled)."""
        answer: asyncio.Future[FragmentInfo | None] = asyncio.get_running_loop().create_future()
        self._queue_job(ref, first_fragment=answer, urgent=True, whole=whole)
        return await answer

    def _queue_job(
        self,
        ref: SegmentRef,
        *,
        first_fragment: asyncio.Future[FragmentInfo | None] | None = None,
        urgent: bool = False,
        whole: bool = False,
        retries: int = 0,
        unanswered: int = 0,
    ) -> None:
        priority = (0 if urgent else 1, ref.start, ref.key)
        job = DownloadJob(
            priority, next(self._sequence), ref, first_fragment, whole, retries, unanswered
        )
        self._queue.put_nowait(job)
        self._tally.queued[ref.origin] += 1
        if job.listed_and_untried:
            self._untried_live[job.sequence] = self._clock.monotonic()

    def server_answered(self) -> None:
        """The server answered a request: the segments that got no answer are asked now."""
        self._unanswered.answered()

    def live_activity(self) -> LiveActivity:
        oldest = next(iter(self._untried_live.values()), None)
        return LiveActivity(self._tally.live_recorded, oldest)

    async def record_missing(self, ref: SegmentRef) -> None:
        """A segment the server should have and did not give, even when asked again."""
        self._tally.missing += 1
        await self.store.record_missing(ref.track, ref.key, start=ref.start, duration=ref.duration)

    async def full_info(self, track: str, key: int) -> FragmentInfo | None:
        """The timing of a segment's whole body: waits for its download if it is in flight."""
        running = self._in_flight.get((track, key))
        if running is not None:
            try:
                return await asyncio.shield(running)
            except NetworkError:
                return None
        if not self.store.has(track, key):
            return None
        timeline = self.timelines[track]
        default = timeline.init.default_sample_duration if timeline.init else None
        return _parse_file(self.store.segment_path(track, key), default)

    async def worker(self) -> None:
        spacing = _PastSpacing(self.options.past_segment_delay, self._clock)
        while True:
            # A slot first, then the job: while the server bears fewer downloads at once than
            # there are workers, the jobs go to the workers holding a slot, most urgent first.
            async with self.http.pace.download_slot():
                job = await self._queue.get()
                if isinstance(job, StopJob):
                    self._queue.task_done()
                    return
                self._untried_live.pop(job.sequence, None)
                try:
                    if _paced(job, self.options.past_segment_delay, self.store):
                        await spacing.wait()
                    await self._run_job(job)
                finally:
                    self._tally.queued[job.ref.origin] -= 1
                    self._queue.task_done()

    async def drain(self, workers: Sequence[asyncio.Task[None]], grace: float) -> None:
        """Let the downloads in flight finish (bounded), start no other: what Ctrl+C asks."""
        for _ in workers:
            self._queue.put_nowait(StopJob((-1, 0.0, 0), next(self._sequence)))
        await asyncio.wait(workers, timeout=grace)

    async def _run_job(self, job: DownloadJob) -> None:
        ref = job.ref
        slot = (ref.track, ref.key)
        running = self._in_flight.get(slot)
        future = job.first_fragment
        if running is not None:
            # A chain step asked for a segment already on its way: share that download.
            try:
                info = await asyncio.shield(running)
            except NetworkError as exc:
                if future is not None and not future.done():
                    future.set_exception(exc)
                return
            if future is not None and not future.done():
                future.set_result(info)
            return
        done: asyncio.Future[FragmentInfo | None] = asyncio.get_running_loop().create_future()
        self._in_flight[slot] = done
        newest_before = self._newest_key.get(ref.track)
        try:
            info = await self._fetch(
                ref, future, whole=job.whole, newest_before=newest_before, retries=job.retries
            )
            done.set_result(info)
            self._unanswered.answered()
        except NetworkError as exc:
            # An expired URL is no fault of the segment's: a rerun with a fresh one fetches it.
            expired = isinstance(exc, UrlExpiredError)
            if not expired:
                log.warning("%s segment %d failed after retries: %s", ref.track, ref.key, exc)
            done.set_exception(exc)
            done.exception()  # shared downloads re-raise it; nobody else needs to look
            if future is not None and not future.done():
                future.set_exception(exc)  # a chain step asks again before it calls it lost
            elif not expired and not self._unanswered.add(ref, job.unanswered):
                await self.record_missing(ref)
        finally:
            if not done.done():
                done.cancel()
            del self._in_flight[slot]

    async def _fetch(
        self,
        ref: SegmentRef,
        future: asyncio.Future[FragmentInfo | None] | None,
        *,
        whole: bool = False,
        newest_before: int | None = None,
        retries: int = 0,
    ) -> FragmentInfo | None:
        """Download one segment into the store; its fragment info, or None when missing.

        NetworkError when it failed after every retry: the caller decides what that means.
        """
        timeline = self.timelines[ref.track]
        default = timeline.init.default_sample_duration if timeline.init else None
        if self.store.has(ref.track, ref.key):
            stored = _parse_file(self.store.segment_path(ref.track, ref.key), default)
            if future is not None and not future.done():
                future.set_result(stored)
            return stored
        watcher = None
        if future is not None and not whole:
            watcher = _FirstMoof(future, default, lambda info: timeline.learn_from(ref, info))
        try:
            async with self.store.writer(ref.track, ref.key) as sink:
                # A refused request wrote nothing: asked again, the body starts from the first
                # byte all the same.
                size = await self.signing.signed(
                    lambda url: self.http.download(
                        url,
                        sink,
                        byte_range=ref.byte_range,
                        on_chunk=watcher.feed if watcher else None,
                        on_restart=watcher.restart if watcher else None,
                    ),
                    ref.url,
                )
        except SegmentMissing:
            if future is not None:
                # A chain step: the chain knows whether this is a gap or a wrong guess (unless
                # it stopped waiting, or the first moof already answered it).
                if not future.done():
                    future.set_result(None)
            elif newest_before is not None and newest_before > ref.key:
                await self.record_missing(ref)
            else:
                self._not_yet.add(ref, retries)
            return None
        info: FragmentInfo | None = None
        if not plain_text(timeline.rep):  # a WebVTT file is placed by the manifest alone
            try:
                info = sink.fragment(default)
            except Mp4Error as exc:
                log.warning("%s segment %d is not a media segment (%s)", ref.track, ref.key, exc)
        await self._commit(ref, timeline, info, size)
        if future is not None and not future.done():
            future.set_result(info)
        return info

    async def _commit(
        self, ref: SegmentRef, timeline: Timeline, info: FragmentInfo | None, size: int
    ) -> None:
        """Journal a downloaded segment, placed by its own tfdt when it has one."""
        start, duration = _placed(ref, timeline, info)
        await self.store.commit(
            ref.track,
            ref.key,
            start=start,
            duration=duration,
            size=size,
            media_time=info.base_media_decode_time if info else None,
            media_duration=info.duration if info else None,
            wait=False,  # durable in the background: the slot takes its next segment
        )
        self._tally.recorded(ref, size, timeline.selected == self.clock_track, start, duration)
        newest = ref.key > self._newest_key.get(ref.track, ref.key - 1)
        if newest:
            self._newest_key[ref.track] = ref.key
        self._not_yet.recorded(ref.track, ref.key, newest)


def _paced(job: DownloadJob, delay: float, store: SegmentStore) -> bool:
    """Whether --past-segment-delay spaces this job's start."""
    return (
        delay > 0
        and job.ref.origin == "archive"
        and job.first_fragment is None
        and not store.has(job.ref.track, job.ref.key)
    )


def _placed(
    ref: SegmentRef, timeline: Timeline, info: FragmentInfo | None
) -> tuple[float, float | None]:
    """Where a downloaded segment lies (start, duration in seconds): by its own tfdt when it
    has one, else where the manifest put it. ``timeline`` learns from its boxes."""
    if info is None:
        return ref.start, ref.duration
    timeline.learn_from(ref, info)
    if info.moof_count > 1 and not timeline.multi_moof:
        log.debug("%s: segments hold several moofs: chain on whole bodies", ref.track)
        timeline.multi_moof = True
    if timeline.init is None or info.base_media_decode_time is None:
        return ref.start, ref.duration
    scale = timeline.init.timescale
    return info.base_media_decode_time / scale + timeline.offset, info.duration / scale


async def fetch_inits(http: HttpClient, store: SegmentStore, timelines: Iterable[Timeline]) -> None:
    """Each track's init segment, from the store or downloaded into it, parsed onto its timeline."""
    for timeline in timelines:
        init = timeline.rep.init_segment()
        if init is None or plain_text(timeline.rep):
            continue  # WebVTT segments stand alone
        path = store.init_path(timeline.name)
        if not store.has_init(timeline.name):
            async with store.writer(timeline.name) as sink:
                await http.download(init.url, sink, byte_range=init.byte_range)
            place = TrackPlace(timeline.period_start, timeline.seconds(0), timeline.rep.id)
            await store.commit_init(timeline.name, offset=timeline.offset, place=place)
        try:
            timeline.init = parse_init(path.read_bytes())
        except Mp4Error as exc:
            raise UnsupportedStreamError(
                f"{timeline.name}: the init segment is not fragmented MP4 ({exc}); "
                "only fMP4 DASH streams can be recorded"
            ) from exc


def _parse_file(path: Path, default: int | None) -> FragmentInfo | None:
    """The timing of a segment already on disk (recorded by an earlier run, or just now)."""
    try:
        return parse_fragment(path.read_bytes(), default_sample_duration=default)
    except Mp4Error as exc:
        log.warning("%s: not a media segment (%s)", path.name, exc)
        return None
