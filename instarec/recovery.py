"""Finding the segments no manifest lists: the broadcast's past below the first window, and the
holes a live window skipped past between two refreshes.

``$Number$`` streams are searched by number (``archive.find_first_number``) and every number
from the first hit up is queued. ``$Time$`` streams cannot be enumerated: a backward search finds
the oldest start (``archive.find_first_time``), then chains walk forward through the media, each
step reading the next segment's time from the current one's moof (``archive.TimeChain``).
This module decides what to ask for; ``SegmentAccess`` (the recording) fetches, probes and
queues, so the logic is tested with fakes the way ``archive.py`` is.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
from collections.abc import Coroutine, Iterator, Mapping
from dataclasses import dataclass, field, replace
from fractions import Fraction
from typing import TYPE_CHECKING, Any, Protocol

from instarec.archive import (
    Presence,
    SearchLimits,
    StepResult,
    TimeChain,
    TimelineGap,
    find_first_number,
    find_first_time,
    find_seed,
    reaches_start,
    seed_targets,
)
from instarec.errors import InstarecError, Mp4Error, NetworkError
from instarec.manifest import Addressing, Manifest, MediaSegment
from instarec.mp4 import FragmentInfo
from instarec.segments import RefOrigin, SegmentRef
from instarec.selection import plain_text
from instarec.timeline import Timeline, median_ticks

if TYPE_CHECKING:
    from instarec.kept import KeptGround

log = logging.getLogger(__name__)

# Archives of fewer segments are walked by one chain (no probe); longer ones are split between
# several chains, each walking at least SEGMENTS_PER_CHAIN segments. A chain costs a round trip
# per segment (1.2 s for 60 segments at 20 ms), a seed about one wave of probes on the frame
# grid: from two chains' worth on, the probes are worth their time.
SEGMENTS_PER_CHAIN = 60
LONG_ARCHIVE_SEGMENTS = 2 * SEGMENTS_PER_CHAIN


class SegmentAccess(Protocol):
    """What recovery needs from the recording it works for."""

    def offer(self, ref: SegmentRef) -> bool:
        """Queue ``ref`` for download unless its key is known or below its timeline's floor."""
        ...

    async def inspect(self, ref: SegmentRef, *, whole: bool = False) -> FragmentInfo | None:
        """Download ``ref`` ahead of the queue; its timing (from the first moof unless
        ``whole``), or None when the server has no such segment. NetworkError when it gave no
        answer. Either way a key that is not there is forgotten, so it may be offered again."""
        ...

    async def probe(self, url: str) -> Presence:
        """Does the server have this segment? UNKNOWN when it did not say."""
        ...

    async def full_info(self, track: str, key: int) -> FragmentInfo | None:
        """The timing of a downloaded segment's whole body (waits for a download in flight)."""
        ...

    async def record_missing(self, ref: SegmentRef) -> None:
        """A segment the server should have and did not give, even when asked again."""
        ...


@dataclass(slots=True)
class ArchiveStart:
    """The oldest key past recovery found per track, and whether it is the broadcast's first
    segment; the summary checks on disk that it was recorded (not expired)."""

    first: dict[str, int] = field(default_factory=dict)  # by store track name
    complete: bool = False

    def note(self, track: str, key: int, complete: bool) -> None:
        known = self.first.get(track)
        if known is None or key < known:
            self.first[track] = key
            self.complete = complete


def shares_times(
    timelines: Mapping[str, Timeline], listing: Mapping[str, list[MediaSegment]]
) -> bool:
    """Instagram lists the same $Time$ values for video and audio: chain one, derive the other."""
    if set(timelines) != {"video", "audio"}:
        return False
    video, audio = timelines["video"], timelines["audio"]
    if not all(t.rep.addressing is Addressing.TIME_TIMELINE for t in (video, audio)):
        return False
    if video.timescale != audio.timescale:
        return False
    video_times = [s.time for s in listing.get(video.rep.id, [])]
    audio_times = [s.time for s in listing.get(audio.rep.id, [])]
    return bool(video_times) and video_times == audio_times


def next_step(timeline: Timeline, info: FragmentInfo) -> StepResult:
    """Where the segment after ``info`` starts, as the $Time$ values the server may use."""
    init = timeline.init
    if init is None or info.base_media_decode_time is None:
        raise Mp4Error(f"{timeline.name}: segment without tfdt; cannot chain $Time$")
    exact = Fraction(
        (info.base_media_decode_time + info.duration) * timeline.timescale, init.timescale
    )
    roundings = timeline.roundings(exact)
    return StepResult(roundings[0], timeline.frame_ticks(info), roundings[1:])


async def contained(work: Coroutine[Any, Any, None], what: str) -> None:
    """Run ``work``; a failure of it is logged, never the end of the recording."""
    try:
        await work
    except* InstarecError as failure:
        # Recovered segments are a bonus over the live recording, never a reason to lose it.
        for exc in failure.exceptions:
            log.error("%s stopped: %s", what, exc)


# Seconds a chain step stays unanswered, beyond the chain's hedge point, before the
# segments sharing its time are looked for on their own.
STALL_GRACE = 2.0


class TimeChains:
    """Walks $Time$ timelines forward through the media, for the past and for live holes."""

    def __init__(
        self,
        access: SegmentAccess,
        timelines: Mapping[str, Timeline],
        limits: SearchLimits,
        shared_times: bool,
    ) -> None:
        self._access = access
        self._timelines = timelines
        self._limits = limits
        self._shared_times = shared_times

    def derived(self, leader: Timeline) -> list[Timeline]:
        """The tracks whose segments share ``leader``'s $Time$ values (Instagram's audio)."""
        first_period = any(t is leader for t in self._timelines.values())
        if not self._shared_times or leader.kind != "video" or not first_period:
            return []  # (a later Period's tracks are chained each on its own)
        return [
            t
            for t in self._timelines.values()
            if t is not leader
            and t.rep.addressing is Addressing.TIME_TIMELINE
            and t.timescale == leader.timescale
            and t.rep.template is not None
        ]

    def lower_floor(self, timeline: Timeline, time_value: int) -> None:
        for chained in [timeline, *self.derived(timeline)]:
            chained.lower_floor(time_value)

    async def probe(self, timeline: Timeline, time_value: int) -> Presence:
        return await self._access.probe(timeline.rep.media_url(time=time_value))

    async def fill_hole(self, timeline: Timeline, start: int, end: int | None = None) -> None:
        """Chain from where the last listing ended up to the window that skipped past it (or
        up to ``end``, where the timeline's Period ends)."""
        await contained(
            self.chain_from(timeline, start, origin="live", end=end), "filling a live hole"
        )

    async def chain_from(
        self,
        timeline: Timeline,
        start: int,
        *,
        origin: RefOrigin,
        frame_ticks: float | None = None,
        end: int | None = None,
    ) -> None:
        gaps: list[TimelineGap] = []
        chain = TimeChain(
            step=lambda time_value: self._step(timeline, time_value, origin),
            probe=lambda time_value: self.probe(timeline, time_value),
            next_known=timeline.next_known,
            limits=self._limits.in_timescale(timeline.timescale),
            typical_duration=timeline.typical_ticks,
            gaps=gaps,
            known_frame=lambda: timeline.frame,
            end=end,
            # The tracks sharing its times must not wait for a late step: under retention
            # their segments expire meanwhile (chaos seed 204 lost an audio segment so).
            on_stall=(
                (lambda time_value: self._derived_if_stalled(timeline, time_value, origin))
                if self.derived(timeline)
                else None
            ),
        )
        await chain.run(start, frame_ticks=frame_ticks)
        for gap in gaps:
            until = (
                "the known timeline" if gap.end is None else f"{timeline.seconds(gap.end):.3f} s"
            )
            log.warning(
                "%s: no segment from %.3f s to %s",
                timeline.name,
                timeline.seconds(gap.start),
                until,
            )

    async def _step(
        self, timeline: Timeline, time_value: int, origin: RefOrigin
    ) -> StepResult | None:
        whole = timeline.multi_moof
        info = await self._fetch_step(timeline.time_ref(time_value, origin), timeline, whole)
        if info is None:
            await self._derived_if_present(timeline, time_value, origin)
            return None  # maybe only a wrong rounding of the time: the chain decides
        for other in self.derived(timeline):
            self._access.offer(other.time_ref(time_value, origin))
        result = next_step(timeline, info)
        if whole:
            return result

        async def verify() -> int | None:
            full = await self._access.full_info(timeline.name, time_value)
            return None if full is None else next_step(timeline, full).next_time

        return replace(result, verify=verify)

    async def _derived_if_stalled(
        self, timeline: Timeline, time_value: int, origin: RefOrigin
    ) -> None:
        # Most slow steps are one retry's backoff (a 429): their twins come with them, and a
        # probe of each would only add requests under the server's rate cap (chaos seed 228
        # overran its time so). A step still unanswered after the grace is in real trouble.
        await asyncio.sleep(STALL_GRACE)
        await self._derived_if_present(timeline, time_value, origin)

    async def _derived_if_present(
        self, timeline: Timeline, time_value: int, origin: RefOrigin
    ) -> None:
        """Offer the segments of the tracks sharing ``timeline``'s times at ``time_value``
        that the server has, when ``timeline``'s own is missing or late: a derived track's
        segment is otherwise offered only once the leader's step has succeeded."""
        for other in self.derived(timeline):
            if time_value in other.key_set:
                continue  # the step came back meanwhile, or the twin was found otherwise
            if await self.probe(other, time_value) is Presence.PRESENT:
                self._access.offer(other.time_ref(time_value, origin))

    async def _fetch_step(
        self, ref: SegmentRef, timeline: Timeline, whole: bool
    ) -> FragmentInfo | None:
        # A step that failed after its retries is unknown, not absent: ask again before the
        # chain takes it for a gap (and then it counts as missing).
        limits = self._limits.in_timescale(timeline.timescale)
        for attempt in range(limits.unknown_retries + 1):
            try:
                return await self._access.inspect(ref, whole=whole)
            except NetworkError as exc:
                log.warning("%s: segment at %d failed: %s", ref.track, ref.key, exc)
                if attempt < limits.unknown_retries:
                    await asyncio.sleep(min(30.0, limits.unknown_delay * 2**attempt))
        await self._access.record_missing(ref)
        return None


class PastRecovery:
    """Everything the server still has below the first window, for every selected track."""

    def __init__(
        self,
        access: SegmentAccess,
        chains: TimeChains,
        listing: Mapping[str, tuple[Timeline, list[MediaSegment]]],
        manifest: Manifest,
        limits: SearchLimits,
        max_chains: int,
        kept: KeptGround,
    ) -> None:
        self._access = access
        self._chains = chains
        # On a resume, what an earlier run kept below the window (else nothing).
        self._kept = kept
        # Each track's timeline and what the first manifest listed for it.
        self._listing = listing
        self._manifest = manifest
        self._limits = limits
        self._max_chains = max_chains
        self.archive = ArchiveStart()
        # Where each track's backward $Time$ walk has got (presentation seconds): the others
        # try there first and keep pace (archive.PeerLead).
        self._walked_back: dict[str, float] = {}
        self.active = False

    async def run(self) -> None:
        self.active = True
        try:
            await contained(self._recover(), "past recovery")
        finally:
            self.active = False
        log.info("past recovery finished")

    async def _recover(self) -> None:
        # Tracks numbered alike (same first listed number, same lowest number) share one
        # search: what one track's server still has, the other's has too.
        numbered: dict[tuple[int, int], list[Timeline]] = {}
        derived = {
            t.name for leader, _ in self._listing.values() for t in self._chains.derived(leader)
        }
        async with asyncio.TaskGroup() as group:
            for timeline, segments in self._listing.values():
                if not segments or timeline.name in derived:
                    continue  # a derived track is fetched by its leader's chain
                addressing = timeline.rep.addressing
                if addressing in (Addressing.NUMBER_TIMELINE, Addressing.NUMBER_DURATION):
                    first_number = segments[0].number
                    assert first_number is not None
                    numbered.setdefault((first_number, lowest_number(timeline)), []).append(
                        timeline
                    )
                elif addressing is Addressing.TIME_TIMELINE and plain_text(timeline.rep):
                    # A $Time$ chain reads each segment's tfdt: a WebVTT file has none.
                    log.warning(
                        "%s: WebVTT segments named by $Time$ cannot be found in the past: "
                        "the captions start with the live window",
                        timeline.name,
                    )
                elif addressing is Addressing.TIME_TIMELINE:
                    group.create_task(self._recover_times(timeline, segments))
            for timelines in numbered.values():
                group.create_task(self._recover_numbers(timelines))

    # -- $Number$ ---------------------------------------------------------------------------

    async def _recover_numbers(self, timelines: list[Timeline]) -> None:
        leader = timelines[0]
        segments = self._listing[leader.selected][1]
        first_listed = segments[0].number
        assert first_listed is not None
        typical = median_ticks([s.duration for s in segments], 1000) / 1000
        # --end-stream-miss-threshold counts milliseconds of media: as numbers, that much media.
        guard = max(1, math.ceil(self._limits.miss_threshold / 1000 / typical))
        lowest = lowest_number(leader)
        queued_from = first_listed

        def queue_from(number: int) -> None:
            # Every number from a hit up exists: download them while the search goes on,
            # before a server deleting its oldest segments takes them. The queue orders them
            # oldest first across tracks (by number where they carry no time of their own),
            # so a lower hit's numbers go first and retention takes both tracks alike.
            nonlocal queued_from
            for timeline in timelines:
                timeline.lower_floor(number)
            for n in range(number, queued_from):
                for timeline in timelines:
                    self._access.offer(timeline.number_ref(n, "archive"))
            queued_from = min(queued_from, number)

        first = await find_first_number(
            lambda n: self._access.probe(leader.rep.media_url(number=n)),
            start_number=lowest,
            first_listed=first_listed,
            guard=guard,
            limits=self._limits,
            on_found=queue_from,
        )
        oldest = first_listed if first is None else first
        for timeline in timelines:
            self.archive.note(timeline.name, oldest, oldest <= lowest + 1)
        if first is None:
            log.info("no past segment before the window")
            return
        log.info("recovering numbers %d-%d", first, first_listed - 1)
        queue_from(first)  # a start number that answered at once was not reported

    # -- $Time$ -----------------------------------------------------------------------------

    async def _recover_times(self, timeline: Timeline, segments: list[MediaSegment]) -> None:
        first_listed = segments[0].time
        assert first_listed is not None
        typical = median_ticks([s.duration for s in segments], timeline.timescale)
        limits = self._limits.in_timescale(timeline.timescale)
        async with asyncio.TaskGroup() as group:
            # Fetching a listed segment first teaches the time mapping (rounding, offset) and
            # whether segments hold several moofs, before any time is derived: the start
            # hints too (ffmpeg names its first AAC segment by its priming, below 0).
            frame = await listed_frame_ticks(self._access, timeline, segments, group)
            hints = list(dict.fromkeys(self._start_hints(timeline)))
            walked: set[int] = set()

            def found(time_value: int) -> None:
                # A server deleting its past may drop what the search found while it goes on
                # (and what lies just after): a chain starts from each find at once, reading
                # the starts the search leapt over, up to the ground a newer find made known.
                walked.add(time_value)
                self._walked_back[timeline.name] = timeline.seconds(time_value)
                self._chains.lower_floor(timeline, time_value)
                group.create_task(self._chain(timeline, time_value, frame))

            start = await find_first_time(
                functools.partial(self._kept.probe, timeline),
                hints=self._kept.unkept(timeline, first_listed, hints),
                first_listed=self._kept.start(
                    timeline, first_listed, typical, frame, group, walked
                ),
                typical_duration=typical,
                frame_ticks=frame,
                limits=limits,
                hint_probe=lambda t: self._fetch_probe(timeline, t),
                on_found=found,
                peer_oldest=lambda: self._peer_walked(timeline),
            )
            complete = reaches_start(start, hints=hints, typical_duration=typical, limits=limits)
            for chained in [timeline, *self._chains.derived(timeline)]:
                self.archive.note(chained.name, min(start, first_listed), complete)
            if start >= first_listed:
                log.info("%s: no past segment before the window", timeline.name)
                return
            self._chains.lower_floor(timeline, start)
            chains = self._chain_count((first_listed - start) / typical)
            log.info(
                "%s: recovering the past from time %d with up to %d chain(s)",
                timeline.name,
                start,
                chains,
            )
            if start not in walked:  # a hint named it
                group.create_task(self._chain(timeline, start, frame))
            # A long archive walked by one chain costs one round trip per segment: more chains
            # start from seeds found by short searches, each as soon as its seed is found, and
            # each chain stops where the next one's seed lies.
            for target in seed_targets(start, first_listed, chains, frame):
                group.create_task(
                    self._seeded_chain(timeline, target, typical, frame, first_listed)
                )

    async def _chain(self, timeline: Timeline, start: int, frame: float | None) -> None:
        await self._chains.chain_from(timeline, start, origin="archive", frame_ticks=frame)

    async def _seeded_chain(
        self,
        timeline: Timeline,
        target: int,
        typical: int,
        frame: float | None,
        first_listed: int,
    ) -> None:
        seed = await find_seed(
            lambda t: self._chains.probe(timeline, t),
            target,
            typical_duration=typical,
            frame_ticks=frame,
            limits=self._limits.in_timescale(timeline.timescale),
        )
        if seed is None or seed >= first_listed or seed in timeline.key_set:
            return  # nothing found, or a chain already walked past it
        timeline.add(seed)  # the chain below stops here
        log.debug("%s: a chain starts from the seed at %d", timeline.name, seed)
        await self._chain(timeline, seed, frame)

    def _chain_count(self, segments: float) -> int:
        """How many chains walk an archive of ``segments`` segments at once.

        Short archives keep one chain: it needs no probe at all. Past that, one chain per
        download slot, each walking at least ``SEGMENTS_PER_CHAIN`` segments.
        """
        if segments < LONG_ARCHIVE_SEGMENTS:
            return 1
        return max(1, min(self._max_chains, int(segments // SEGMENTS_PER_CHAIN)))

    async def _fetch_probe(self, timeline: Timeline, time_value: int) -> Presence:
        """Probe by fetching: for a segment the chain will download anyway, GET beats HEAD."""
        try:
            info = await self._access.inspect(timeline.time_ref(time_value, "archive"))
        except NetworkError as exc:
            log.debug("%s: no answer for time %d: %s", timeline.name, time_value, exc)
            return Presence.UNKNOWN
        return Presence.ABSENT if info is None else Presence.PRESENT

    def _peer_walked(self, timeline: Timeline) -> float | None:
        """The oldest start another track's walk has found, in ``timeline``'s ticks."""
        others = [at for kind, at in self._walked_back.items() if kind != timeline.name]
        return timeline.ticks(min(others)) if others else None

    def _start_hints(self, timeline: Timeline) -> Iterator[int]:
        """Where the broadcast's first segment likely is: its first frame time, or time 0."""
        for name in ("publishFrameTime", "firstAvTimeMs"):
            value = self._manifest.attributes.get(name)
            if value is None:
                continue
            with contextlib.suppress(ValueError):
                yield round(float(value) * timeline.timescale / 1000)
        # Media time 0 as this server names it (ffmpeg: minus the AAC priming), then plain 0.
        yield timeline.time_offset
        yield 0


def lowest_number(timeline: Timeline) -> int:
    """The lowest number a broadcast's first segment may have.

    The past lies below the window from 0 or 1, whatever startNumber says: under a timeline it
    numbers the first listed S, and some packagers move it with the window under @duration
    too. A broadcast numbered from startNumber answers there as well.
    """
    template = timeline.rep.template
    assert template is not None
    return min(0, template.start_number)


async def listed_frame_ticks(
    access: SegmentAccess,
    timeline: Timeline,
    segments: list[MediaSegment],
    group: asyncio.TaskGroup,
) -> float | None:
    """One frame's length, read from the first listed segment to answer.

    The first listed ones may be holes, even all of a short window but its newest: without
    the frame grid every search probes every tick and the walk back cannot leap (under
    retention the past expires meanwhile). So every listed segment is asked, and all at
    once: the live recording is downloading them anyway (an inspect shares the download),
    and one held in a retry's backoff must not hold up the search for the past while the
    server deletes its oldest segments. The answers after the first go on in ``group``.
    """
    asked = [
        group.create_task(_frame_of(access, timeline, segment.time))
        for segment in segments
        if segment.time is not None
    ]
    pending = set(asked)
    while pending:
        done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        # The oldest listed of those that answered together, as when asked in order.
        for task in sorted(done, key=asked.index):
            frame = task.result()
            if frame is not None:
                return frame
    return None


async def _frame_of(access: SegmentAccess, timeline: Timeline, time_value: int) -> float | None:
    """One frame's length from the listed segment at ``time_value``, None if it has none."""
    ref = timeline.time_ref(time_value, "live")
    try:
        info = await access.inspect(ref, whole=True)
    except NetworkError as exc:
        log.debug("%s: listed segment %d failed: %s", timeline.name, time_value, exc)
        return None
    return None if info is None else timeline.frame_ticks(info)
