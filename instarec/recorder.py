"""The orchestration of one recording.

One ``asyncio.TaskGroup`` holds: the live follower (manifest refreshes), the archive search (past
segments), the download workers (``downloads.py``), and the progress reporter. Producers hand
``SegmentRef``s to ``Recording.offer``; the first offer of a key queues a download; workers stream
bodies into the ``SegmentStore``. At the end (or on the first Ctrl+C) ``finish.py`` merges what is
on disk with ffmpeg.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import signal
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import replace
from fractions import Fraction
from pathlib import Path
from urllib.parse import urlsplit

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
from instarec.downloads import Downloads
from instarec.errors import (
    HttpStatusError,
    InstarecError,
    ManifestError,
    Mp4Error,
    NetworkError,
    UsageError,
)
from instarec.finish import (
    RecordedTrack,
    RecordingSummary,
    merge_leftovers,
    merge_store,
)
from instarec.http import HttpClient
from instarec.live import (
    LiveFollower,
    LivePolicy,
    ManifestSource,
    Snapshot,
    listed_segments,
    segment_key,
)
from instarec.manifest import Addressing, MediaSegment
from instarec.merge import find_ffmpeg
from instarec.mp4 import FragmentInfo
from instarec.options import Options
from instarec.progress import ProgressSnapshot, Reporter
from instarec.segments import RefOrigin, SegmentRef, TrackKind
from instarec.selection import SelectedTracks, select_tracks
from instarec.store import SegmentStore
from instarec.timeline import Timeline

log = logging.getLogger(__name__)

# Archives of fewer segments are walked by one chain (no probe); longer ones are split between
# several chains, each walking at least SEGMENTS_PER_CHAIN segments.
LONG_ARCHIVE_SEGMENTS = 600
SEGMENTS_PER_CHAIN = 60

# After the first Ctrl+C, downloads in flight get this long to finish before the merge.
DRAIN_TIMEOUT = 15.0


class Recording:
    """One run of ``instarec URL OUTPUT``: owns the queues, the timelines and the store."""

    def __init__(
        self,
        options: Options,
        http: HttpClient,
        store: SegmentStore,
        source: ManifestSource,
        first: Snapshot,
        selected: SelectedTracks,
        stop: asyncio.Event,
    ) -> None:
        self.options = options
        self.http = http
        self.store = store
        self.source = source
        self.stop = stop
        self.limits = SearchLimits(
            max_in_flight=options.max_search_requests,
            chunk_size=options.search_chunk_size,
            miss_threshold=options.end_stream_miss_threshold,
        )
        self.timelines: dict[TrackKind, Timeline] = {}
        for kind, rep in (("video", selected.video), ("audio", selected.audio)):
            if rep is not None:
                period_start = first.manifest.periods[rep.period_index].start
                self.timelines[kind] = Timeline(kind, rep, period_start)  # type: ignore[arg-type,index]
        self.downloads = Downloads(options, http, store, self.timelines)
        # The oldest key past recovery found per track, and whether it is the broadcast's
        # first segment; the summary checks on disk that it was recorded (not expired).
        self.archive_first: dict[TrackKind, int] = {}
        self.archive_complete = False
        # Where each track's backward $Time$ walk has got (presentation seconds): the others
        # try there first and keep pace (archive.PeerLead).
        self.walked_back: dict[TrackKind, float] = {}
        self.started = time.monotonic()
        self.archive_active = False
        self.newest_listed_end: float | None = None
        self.first_listing = {
            rep.id: segments
            for rep, segments in listed_segments(first, [t.rep for t in self.timelines.values()])
        }
        self.first_snapshot = first
        # Instagram lists the same $Time$ values for video and audio: chain one, derive the other.
        self.shared_times = self._shared_time_tracks(self.first_listing)

    # -- producers' entry point ----------------------------------------------------------------

    def offer(
        self,
        ref: SegmentRef,
        *,
        first_fragment: asyncio.Future[FragmentInfo | None] | None = None,
        urgent: bool = False,
        whole: bool = False,
    ) -> bool:
        """Queue ``ref`` unless its key is known; a chain step always gets its future answered."""
        timeline = self.timelines[ref.track]
        if first_fragment is None and timeline.floor is not None and ref.key < timeline.floor:
            return False
        new = timeline.add(ref.key)
        if not new and first_fragment is None:
            return False
        self.downloads.submit(ref, first_fragment=first_fragment, urgent=urgent, whole=whole)
        return new

    def progress(self) -> ProgressSnapshot:
        downloads = self.downloads
        behind = None
        if self.newest_listed_end is not None and downloads.newest_recorded_end is not None:
            behind = max(0.0, self.newest_listed_end - downloads.newest_recorded_end)
        return ProgressSnapshot(
            elapsed=time.monotonic() - self.started,
            archive_active=self.archive_active,
            archive_seconds=downloads.recorded_seconds["archive"],
            live_seconds=downloads.recorded_seconds["live"],
            segments_done=downloads.downloaded,
            segments_missing=downloads.missing,
            segments_queued=downloads.queued["archive"] + downloads.queued["live"],
            archive_queued=downloads.queued["archive"],
            bytes_done=downloads.bytes,
            behind_live=behind,
        )

    # -- live ---------------------------------------------------------------------------------

    def on_snapshot(self, snapshot: Snapshot, group: asyncio.TaskGroup) -> int:
        new = 0
        reps = [timeline.rep for timeline in self.timelines.values()]
        for rep, segments in listed_segments(snapshot, reps):
            timeline = next(t for t in self.timelines.values() if t.rep.id == rep.id)
            timeline.rep = rep
            new += self._offer_listed(timeline, self._renumbered(timeline, segments), group)
        return new

    # -- $Number$ under @duration: which number holds which time ------------------------------

    async def calibrate_numbers(self) -> None:
        """Learn from the media which number holds which time under SegmentTemplate@duration.

        The standard numbers the segment at the presentation time offset ``startNumber``; a
        packager that moves ``startNumber`` with its window while counting from the broadcast's
        start makes every computed number run ahead of what exists. When the first listed
        number is not there, the segment numbered ``startNumber`` tells by its tfdt which
        number holds which time; that numbering is taken only once the window's first segment
        answers under it.
        """
        if not self.first_snapshot.manifest.is_dynamic:
            return
        for timeline in self.timelines.values():
            template = timeline.rep.template
            segments = self.first_listing.get(timeline.rep.id)
            if (
                timeline.rep.addressing is not Addressing.NUMBER_DURATION
                or template is None
                or not template.duration
                or not segments
                or segments[0].number is None
                or segments[0].number == template.start_number
            ):
                continue
            if await self._fetched(timeline, segments[0].number) is not None:
                continue  # the manifest's numbers name what exists
            found = await self._fetched(timeline, template.start_number)
            base = self._number_base(timeline, template.start_number, found)
            if base is None or base == template.start_number:
                continue
            timeline.number_base = base
            renumbered = self._renumbered(timeline, segments)
            if await self._fetched(timeline, renumbered[0].number or 0) is None:
                timeline.number_base = None  # no better: keep the manifest's numbers
                continue
            log.info(
                "%s: the media numbers segments from %d at time 0, not from startNumber %d",
                timeline.kind,
                base,
                template.start_number,
            )
            self.first_listing[timeline.rep.id] = renumbered

    async def _fetched(self, timeline: Timeline, number: int) -> FragmentInfo | None:
        """Download segment ``number`` now; its timing, or None if it is not there (yet)."""
        try:
            return await self._fetch_now(self._number_ref(timeline, number, "live"))
        except NetworkError as exc:
            log.debug("%s: segment %d gave no answer: %s", timeline.kind, number, exc)
            return None

    async def _fetch_now(self, ref: SegmentRef, *, whole: bool = False) -> FragmentInfo | None:
        """Download ``ref`` ahead of the queue; its timing, or None on a 404.

        NetworkError when it gave no answer. Either way a key that is not there is forgotten,
        so that the listing or a chain may offer it again.
        """
        future: asyncio.Future[FragmentInfo | None] = asyncio.get_running_loop().create_future()
        self.offer(ref, first_fragment=future, urgent=True, whole=whole)
        try:
            info = await future
        except NetworkError:
            self.timelines[ref.track].discard(ref.key)
            raise
        if info is None:
            self.timelines[ref.track].discard(ref.key)
        return info

    @staticmethod
    def _number_base(timeline: Timeline, number: int, info: FragmentInfo | None) -> int | None:
        """The number of the segment at the presentation time offset, by ``info``'s tfdt."""
        template = timeline.rep.template
        if info is None or info.base_media_decode_time is None or timeline.init is None:
            return None
        assert template is not None and template.duration
        ticks = info.base_media_decode_time * template.timescale / timeline.init.timescale
        index = round((ticks - template.presentation_time_offset) / template.duration)
        return number - index

    def _renumbered(self, timeline: Timeline, segments: list[MediaSegment]) -> list[MediaSegment]:
        """Listed @duration segments under the numbering the media showed."""
        template = timeline.rep.template
        base = timeline.number_base
        if (
            base is None
            or template is None
            or not template.duration
            or timeline.rep.addressing is not Addressing.NUMBER_DURATION
        ):
            return segments
        renumbered = []
        for segment in segments:
            if segment.time is None:
                return segments
            index = int((segment.time - template.presentation_time_offset) // template.duration)
            number = base + index
            url = timeline.rep.media_url(number=number)
            renumbered.append(replace(segment, number=number, url=url))
        return renumbered

    def _offer_listed(
        self,
        timeline: Timeline,
        segments: list[MediaSegment],
        group: asyncio.TaskGroup,
    ) -> int:
        rep = timeline.rep
        new = 0
        if not segments:
            return 0
        keys = [segment_key(segment, rep) for segment in segments]
        if timeline.floor is None:
            timeline.floor = keys[0]
        if any(segment.duration for segment in segments):
            timeline.typical = _typical_ticks(segments, timeline.timescale)
        if rep.addressing is Addressing.TIME_TIMELINE:
            previous_end = timeline.listed_end
            if (
                previous_end is not None
                and previous_end < keys[0]
                and previous_end not in timeline.key_set
                # Instagram's audio shares the video's times: the video chain fetches it too.
                and not (self.shared_times and timeline.kind == "audio")
            ):
                # The window moved further than one refresh: chain through the media to reach it.
                log.info(
                    "%s: window skipped past %d; chaining to fill the hole",
                    timeline.kind,
                    previous_end,
                )
                group.create_task(self.chain_from(timeline, previous_end, origin="live"))
            last = segments[-1]
            if last.time is not None and last.duration is not None:
                timeline.listed_end = last.time + round(last.duration * timeline.timescale)
        elif rep.addressing in (Addressing.NUMBER_TIMELINE, Addressing.NUMBER_DURATION):
            previous = timeline.listed_max_number
            if previous is not None and keys[0] > previous + 1:
                log.info(
                    "%s: numbers %d-%d scrolled out between refreshes",
                    timeline.kind,
                    previous + 1,
                    keys[0] - 1,
                )
                for number in range(previous + 1, keys[0]):
                    new += self.offer(self._number_ref(timeline, number, "live"))
            timeline.listed_max_number = keys[-1] if previous is None else max(keys[-1], previous)
        if timeline.kind == self.downloads.clock_track and segments[-1].duration is not None:
            self.newest_listed_end = segments[-1].start + segments[-1].duration
        for segment, key in zip(segments, keys, strict=True):
            ref = SegmentRef(
                timeline.kind,
                key,
                segment.url,
                segment.byte_range,
                segment.start,
                segment.duration,
                "live",
            )
            new += self.offer(ref)
        return new

    # -- archive ------------------------------------------------------------------------------

    async def recover_past(self, first: Snapshot) -> None:
        self.archive_active = True
        try:
            await self._recover_past(first)
        except* InstarecError as failure:
            # The past is a bonus over the live recording, never a reason to lose it.
            for exc in failure.exceptions:
                log.error("past recovery stopped: %s", exc)
        finally:
            self.archive_active = False

    async def _recover_past(self, first: Snapshot) -> None:
        # Tracks numbered alike (same first listed number, same lowest number) share one
        # search: what one track's server still has, the other's has too.
        numbered: dict[tuple[int, int], list[Timeline]] = {}
        async with asyncio.TaskGroup() as group:
            for timeline in self.timelines.values():
                segments = self.first_listing.get(timeline.rep.id) or []
                if not segments:
                    continue
                if self.shared_times and timeline.kind == "audio":
                    continue  # derived from the video chain: Instagram shares $Time$ values
                addressing = timeline.rep.addressing
                if addressing in (Addressing.NUMBER_TIMELINE, Addressing.NUMBER_DURATION):
                    key = (segment_key(segments[0], timeline.rep), self._lowest_number(timeline))
                    numbered.setdefault(key, []).append(timeline)
                elif addressing is Addressing.TIME_TIMELINE:
                    group.create_task(self._recover_times(timeline, segments, first))
            for timelines in numbered.values():
                segments = self.first_listing[timelines[0].rep.id]
                group.create_task(self._recover_numbers(timelines, segments))
        log.info("past recovery finished")

    @staticmethod
    def _lowest_number(timeline: Timeline) -> int:
        # The past lies below the window from 0 or 1, whatever startNumber says: under a
        # timeline it numbers the first listed S, and some packagers move it with the window
        # under @duration too. A broadcast numbered from startNumber answers there as well.
        template = timeline.rep.template
        assert template is not None
        return min(0, template.start_number)

    def _shared_time_tracks(self, listed: dict[str, list[MediaSegment]]) -> bool:
        if set(self.timelines) != {"video", "audio"}:
            return False
        video, audio = self.timelines["video"], self.timelines["audio"]
        if not all(t.rep.addressing is Addressing.TIME_TIMELINE for t in (video, audio)):
            return False
        if video.timescale != audio.timescale:
            return False
        video_times = [s.time for s in listed.get(video.rep.id, [])]
        audio_times = [s.time for s in listed.get(audio.rep.id, [])]
        return bool(video_times) and video_times == audio_times

    async def _recover_numbers(
        self, timelines: list[Timeline], segments: list[MediaSegment]
    ) -> None:
        leader = timelines[0]
        first_listed = segment_key(segments[0], leader.rep)
        durations = [s.duration for s in segments if s.duration]
        typical = sum(durations) / len(durations) if durations else 2.0
        # --end-stream-miss-threshold counts timeline milliseconds: as numbers, that much media.
        guard = max(1, math.ceil(self.limits.miss_threshold / 1000 / typical))
        lowest = self._lowest_number(leader)
        queued_from = first_listed

        def queue_from(number: int) -> None:
            # Every number from a hit up exists: download them while the search goes on,
            # before a server deleting its oldest segments takes them. The queue orders them
            # oldest first across tracks (by number where they carry no time of their own),
            # so a lower hit's numbers go first and retention takes both tracks alike.
            nonlocal queued_from
            for timeline in timelines:
                floor = timeline.floor
                timeline.floor = number if floor is None else min(floor, number)
            for n in range(number, queued_from):
                for timeline in timelines:
                    self.offer(self._number_ref(timeline, n, "archive"))
            queued_from = min(queued_from, number)

        first = await find_first_number(
            lambda n: self._probe(leader.rep.media_url(number=n)),
            start_number=lowest,
            first_listed=first_listed,
            guard=guard,
            limits=self.limits,
            on_found=queue_from,
        )
        if first is None:
            log.info("no past segment before the window")
            for timeline in timelines:
                self._note_archive_start(timeline, first_listed, first_listed <= lowest + 1)
            return
        for timeline in timelines:
            self._note_archive_start(timeline, first, first <= lowest + 1)
        log.info("recovering numbers %d-%d", first, first_listed - 1)
        queue_from(first)  # a start number that answered at once was not reported

    def _number_ref(self, timeline: Timeline, number: int, origin: RefOrigin) -> SegmentRef:
        rep = timeline.rep
        template = rep.template
        assert template is not None
        start = timeline.period_start
        duration: float | None = None
        if template.duration:
            duration = template.duration / template.timescale
            base = template.start_number if timeline.number_base is None else timeline.number_base
            start += (number - base) * duration
        return SegmentRef(
            timeline.kind, number, rep.media_url(number=number), None, start, duration, origin
        )

    async def _recover_times(
        self, timeline: Timeline, segments: list[MediaSegment], first: Snapshot
    ) -> None:
        template = timeline.rep.template
        assert template is not None
        first_listed = segments[0].time
        assert first_listed is not None
        typical = _typical_ticks(segments, template.timescale)
        limits = self.limits.in_timescale(template.timescale)
        # Fetching a listed segment first teaches the time mapping (rounding, offset) and
        # whether segments hold several moofs, before any time is derived.
        frame = await self._listed_frame_ticks(timeline, segments)
        hints = list(dict.fromkeys(self._start_hints(first, template.timescale, timeline)))
        probe = self._time_probe(timeline)
        async with asyncio.TaskGroup() as group:
            walked: set[int] = set()

            def found(time_value: int) -> None:
                # A server deleting its past may drop what the search found while it goes on
                # (and what lies just after): a chain starts from each find at once, reading
                # the starts the search leapt over, up to the ground a newer find made known.
                walked.add(time_value)
                self.walked_back[timeline.kind] = timeline.seconds(time_value)
                self._lower_floor(timeline, time_value)
                group.create_task(
                    self.chain_from(timeline, time_value, origin="archive", frame_ticks=frame)
                )

            start = await find_first_time(
                probe,
                hints=hints,
                first_listed=first_listed,
                typical_duration=typical,
                frame_ticks=frame,
                limits=limits,
                hint_probe=lambda t: self._fetch_probe(timeline, t),
                on_found=found,
                peer_oldest=lambda: self._peer_walked(timeline),
            )
            complete = reaches_start(start, hints=hints, typical_duration=typical, limits=limits)
            for chained in [timeline, *self._derived(timeline)]:
                self._note_archive_start(chained, min(start, first_listed), complete)
            if start >= first_listed:
                log.info("%s: no past segment before the window", timeline.kind)
                return
            self._lower_floor(timeline, start)
            chains = self._chain_count((first_listed - start) / typical)
            log.info(
                "%s: recovering the past from time %d with up to %d chain(s)",
                timeline.kind,
                start,
                chains,
            )
            if start not in walked:  # a hint named it
                group.create_task(
                    self.chain_from(timeline, start, origin="archive", frame_ticks=frame)
                )
            # A long archive walked by one chain costs one round trip per segment: more chains
            # start from seeds found by short searches, each as soon as its seed is found, and
            # each chain stops where the next one's seed lies.
            for target in seed_targets(start, first_listed, chains, frame):
                group.create_task(
                    self._seeded_chain(timeline, probe, target, typical, frame, first_listed)
                )

    def _lower_floor(self, timeline: Timeline, time_value: int) -> None:
        """Let refs down to ``time_value`` in: the past reaches at least that far."""
        for chained in [timeline, *self._derived(timeline)]:
            floor = chained.floor
            chained.floor = time_value if floor is None else min(floor, time_value)

    async def _seeded_chain(
        self,
        timeline: Timeline,
        probe: Callable[[int], Awaitable[Presence]],
        target: int,
        typical: int,
        frame: float | None,
        first_listed: int,
    ) -> None:
        seed = await find_seed(
            probe,
            target,
            typical_duration=typical,
            frame_ticks=frame,
            limits=self.limits.in_timescale(timeline.timescale),
        )
        if seed is None or seed >= first_listed or seed in timeline.key_set:
            return  # nothing found, or a chain already walked past it
        timeline.add(seed)  # the chain below stops here
        log.debug("%s: a chain starts from the seed at %d", timeline.kind, seed)
        await self.chain_from(timeline, seed, origin="archive", frame_ticks=frame)

    def _chain_count(self, segments: float) -> int:
        """How many chains walk an archive of ``segments`` segments at once.

        Short archives keep one chain: it needs no probe at all. Past that, one chain per
        download slot, each walking at least ``SEGMENTS_PER_CHAIN`` segments.
        """
        if segments < LONG_ARCHIVE_SEGMENTS:
            return 1
        return max(1, min(self.options.concurrency, int(segments // SEGMENTS_PER_CHAIN)))

    def _time_probe(self, timeline: Timeline) -> Callable[[int], Awaitable[Presence]]:
        return lambda t: self._probe(timeline.rep.media_url(time=t))

    async def _fetch_probe(self, timeline: Timeline, time_value: int) -> Presence:
        """Probe by fetching: for a segment the chain will download anyway, GET beats HEAD."""
        try:
            info = await self._fetch_now(self._time_ref(timeline, time_value, "archive"))
        except NetworkError as exc:
            log.debug("%s: no answer for time %d: %s", timeline.kind, time_value, exc)
            return Presence.UNKNOWN
        return Presence.ABSENT if info is None else Presence.PRESENT

    def _peer_walked(self, timeline: Timeline) -> float | None:
        """The oldest start another track's walk has found, in ``timeline``'s ticks."""
        others = [at for kind, at in self.walked_back.items() if kind != timeline.kind]
        return timeline.ticks(min(others)) if others else None

    def _start_hints(self, first: Snapshot, timescale: int, timeline: Timeline) -> Iterator[int]:
        """Where the broadcast's first segment likely is: its first frame time, or time 0."""
        attributes = first.manifest.attributes
        for name in ("publishFrameTime", "firstAvTimeMs"):
            value = attributes.get(name)
            if value is None:
                continue
            with contextlib.suppress(ValueError):
                yield round(float(value) * timescale / 1000)
        # Media time 0 as this server names it (ffmpeg: minus the AAC priming), then plain 0.
        yield timeline.time_offset
        yield 0

    async def _listed_frame_ticks(
        self, timeline: Timeline, segments: list[MediaSegment]
    ) -> float | None:
        """One frame's length, read from the first listed segments that answer.

        The first listed one may be a hole: without the frame grid every search would probe
        every tick.
        """
        for segment in segments[:_FRAME_SOURCES]:
            frame = await self._frame_ticks(timeline, segment)
            if frame is not None:
                return frame
        return None

    async def _frame_ticks(self, timeline: Timeline, segment: MediaSegment) -> float | None:
        if segment.time is None:
            return None
        try:
            info = await self._fetch_now(self._time_ref(timeline, segment.time, "live"), whole=True)
        except NetworkError as exc:
            log.debug("%s: listed segment %d failed: %s", timeline.kind, segment.time, exc)
            return None
        if info is None or not info.sample_count or timeline.init is None:
            return None
        return info.duration / info.sample_count * timeline.timescale / timeline.init.timescale

    def _note_archive_start(self, timeline: Timeline, key: int, complete: bool) -> None:
        known = self.archive_first.get(timeline.kind)
        if known is None or key < known:
            self.archive_first[timeline.kind] = key
            self.archive_complete = complete

    # -- the $Time$ chain -----------------------------------------------------------------------

    async def chain_from(
        self, timeline: Timeline, start: int, *, origin: str, frame_ticks: float | None = None
    ) -> None:
        derived = self._derived(timeline)
        gaps: list[TimelineGap] = []
        limits = self.limits.in_timescale(timeline.timescale)

        async def fetch_step(ref: SegmentRef, whole: bool) -> FragmentInfo | None:
            # A step that failed after its retries is unknown, not absent: ask again before
            # the chain takes it for a gap (and then it counts as missing).
            for attempt in range(limits.unknown_retries + 1):
                future: asyncio.Future[FragmentInfo | None] = (
                    asyncio.get_running_loop().create_future()
                )
                self.offer(ref, first_fragment=future, urgent=True, whole=whole)
                try:
                    return await future
                except NetworkError as exc:
                    log.warning("%s: segment at %d failed: %s", ref.track, ref.key, exc)
                    if attempt < limits.unknown_retries:
                        await asyncio.sleep(min(30.0, limits.unknown_delay * 2**attempt))
            self.downloads.record_missing(ref)
            return None

        async def step(time_value: int) -> StepResult | None:
            ref = self._time_ref(timeline, time_value, origin)
            whole = timeline.multi_moof
            info = await fetch_step(ref, whole)
            if info is None:
                # Maybe only a wrong rounding of the time: the chain decides if it is a gap.
                timeline.discard(time_value)
                return None
            for other in derived:
                self.offer(self._time_ref(other, time_value, origin))
            result = self._next_step(timeline, info)
            if whole:
                return result

            async def verify() -> int | None:
                full = await self.downloads.full_info(timeline.kind, time_value)
                return None if full is None else self._next_step(timeline, full).next_time

            return replace(result, verify=verify)

        chain = TimeChain(
            step=step,
            probe=lambda t: self._probe(timeline.rep.media_url(time=t)),
            next_known=timeline.next_known,
            limits=limits,
            typical_duration=self._typical_duration(timeline),
            gaps=gaps,
        )
        await chain.run(start, frame_ticks=frame_ticks)
        for gap in gaps:
            end = "the known timeline" if gap.end is None else f"{timeline.seconds(gap.end):.3f} s"
            log.warning(
                "%s: no segment from %.3f s to %s", timeline.kind, timeline.seconds(gap.start), end
            )

    @staticmethod
    def _typical_duration(timeline: Timeline) -> int:
        """A segment's usual length in the timeline's ticks (2 s until the manifest says)."""
        return timeline.typical or max(1, 2 * timeline.timescale)

    def _derived(self, leader: Timeline) -> list[Timeline]:
        """The tracks whose segments share ``leader``'s $Time$ values (Instagram's audio)."""
        return [t for t in self.timelines.values() if t is not leader and self._derives(leader, t)]

    def _derives(self, leader: Timeline, other: Timeline) -> bool:
        return (
            leader.kind == "video"
            and other.rep.addressing is Addressing.TIME_TIMELINE
            and other.timescale == leader.timescale
            and other.rep.template is not None
            and self.shared_times
        )

    def _next_step(self, timeline: Timeline, info: FragmentInfo) -> StepResult:
        init = timeline.init
        if init is None or info.base_media_decode_time is None:
            raise Mp4Error(f"{timeline.kind}: segment without tfdt; cannot chain $Time$")
        exact = Fraction(
            (info.base_media_decode_time + info.duration) * timeline.timescale, init.timescale
        )
        frame = None
        if info.sample_count:
            frame = info.duration / info.sample_count * timeline.timescale / init.timescale
        roundings = timeline.roundings(exact)
        return StepResult(roundings[0], frame, roundings[1:])

    def _time_ref(self, timeline: Timeline, time_value: int, origin: str) -> SegmentRef:
        return SegmentRef(
            timeline.kind,
            time_value,
            timeline.rep.media_url(time=time_value),
            None,
            timeline.seconds(time_value),
            None,
            origin,  # type: ignore[arg-type]
        )

    async def _probe(self, url: str) -> Presence:
        try:
            present = await self.http.probe(url)
        except HttpStatusError as exc:
            if exc.status < 500:
                return Presence.ABSENT  # a final client error: the server has no such segment
            log.debug("probe failed for %s: %s", url, exc)
            return Presence.UNKNOWN
        except NetworkError as exc:
            log.debug("probe failed for %s: %s", url, exc)
            return Presence.UNKNOWN
        return Presence.PRESENT if present else Presence.ABSENT


# Listed segments tried for the frame length before the searches go on without the grid.
_FRAME_SOURCES = 4


def _typical_ticks(segments: list[MediaSegment], timescale: int) -> int:
    durations = sorted(s.duration for s in segments if s.duration)
    if not durations:
        return 2 * timescale
    return max(1, round(durations[len(durations) // 2] * timescale))


# ---------------------------------------------------------------------------------------------


def _fingerprint(options: Options, selected: SelectedTracks) -> dict[str, str]:
    parts = urlsplit(options.mpd_url)
    return {
        "manifest": f"{parts.scheme}://{parts.netloc}{parts.path}",
        "video": selected.video.id if selected.video else "",
        "audio": selected.audio.id if selected.audio else "",
    }


async def record(
    options: Options,
    *,
    stop: asyncio.Event | None = None,
    install_signal_handlers: bool = True,
    reporter: Reporter | None = None,
) -> RecordingSummary:
    """Record ``options.mpd_url`` into ``options.output_path`` until the broadcast ends.

    ``stop`` ends the recording gracefully when set (as the first Ctrl+C does); ``reporter`` is
    run beside the recording with a function returning the current ``ProgressSnapshot``, and
    cancelled when the downloads are over.
    """
    started = time.monotonic()
    output = options.output_path
    if output is None:
        raise UsageError("an output path is required")
    if output.exists() and not options.overwrite:
        raise UsageError(f"{output} already exists: pass --overwrite or choose another output")
    ffmpeg = find_ffmpeg(options.ffmpeg_path)
    stop = stop or asyncio.Event()
    interrupts = 0
    main_task = asyncio.current_task()

    def on_signal() -> None:
        nonlocal interrupts
        interrupts += 1
        if interrupts == 1:
            log.warning("stopping: merging what is recorded (press Ctrl+C again to quit at once)")
            stop.set()
        elif main_task is not None:
            main_task.cancel()

    loop = asyncio.get_running_loop()
    handled: list[signal.Signals] = []
    if install_signal_handlers:
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(signum, on_signal)
                handled.append(signum)
    try:
        return await _record(options, output, ffmpeg, stop, started, reporter)
    finally:
        for signum in handled:
            loop.remove_signal_handler(signum)


async def _record(
    options: Options,
    output: Path,
    ffmpeg: str,
    stop: asyncio.Event,
    started: float,
    reporter: Reporter | None,
) -> RecordingSummary:
    async with HttpClient(options.http_config()) as http:
        source = ManifestSource(http, options.mpd_url)
        try:
            first = await source.fetch()
        except (NetworkError, ManifestError) as exc:
            # Rerunning a stopped recording after the broadcast ended must still give a file.
            leftovers = await merge_leftovers(options, output, ffmpeg, started, exc)
            if leftovers is None:
                raise
            return leftovers
        # The CLI runs the interactive picker and passes the choice as --*-quality ids.
        selected = select_tracks(first.manifest, options)
        assert options.segments_dir is not None
        store = SegmentStore.open(options.segments_dir, _fingerprint(options, selected))
        recording = Recording(options, http, store, source, first, selected, stop)
        await recording.downloads.fetch_inits()
        end_reason = await _run(recording, first, reporter)
        interrupted = stop.is_set()
        return await _finish(recording, output, ffmpeg, end_reason, interrupted, started)


async def _run(recording: Recording, first: Snapshot, reporter: Reporter | None) -> str:
    options = recording.options
    policy = LivePolicy(
        poll_interval=options.poll_interval,
        poll_interval_explicit=options.poll_interval_explicit,
        live_end_timeout=options.live_end_timeout,
    )
    end_reason = "unknown"
    try:
        async with asyncio.TaskGroup() as group:
            workers = [
                group.create_task(recording.downloads.worker()) for _ in range(options.concurrency)
            ]
            helpers: list[asyncio.Task[None]] = []
            if reporter is not None:
                helpers.append(group.create_task(reporter(recording.progress)))

            async def produce() -> None:
                nonlocal end_reason
                await recording.calibrate_numbers()
                async with asyncio.TaskGroup() as producers:
                    follower = LiveFollower(
                        recording.source,
                        policy,
                        lambda snapshot: recording.on_snapshot(snapshot, producers),
                        recording.downloads.live_activity,
                        recording.stop,
                    )
                    live = producers.create_task(follower.run(first))
                    if not options.no_past:
                        producers.create_task(recording.recover_past(first))
                    end_reason = await live
                log.info("recording ends: %s", end_reason)
                await recording.downloads.queue.join()

            producer = group.create_task(produce())
            stopper = group.create_task(recording.stop.wait())
            await asyncio.wait({producer, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if recording.stop.is_set():
                end_reason = "stopped by the user"
                producer.cancel()
            stopper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await producer
            if recording.stop.is_set():
                await recording.downloads.drain(workers, DRAIN_TIMEOUT)
            for task in [*workers, *helpers]:
                task.cancel()
    except BaseExceptionGroup as group_error:
        raise _first_instarec_error(group_error) from None
    return end_reason


def _first_instarec_error(group_error: BaseExceptionGroup) -> BaseException:
    for exc in group_error.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            return _first_instarec_error(exc)
        if isinstance(exc, InstarecError):
            return exc
    return group_error.exceptions[0]


async def _finish(
    recording: Recording,
    output: Path,
    ffmpeg: str,
    end_reason: str,
    interrupted: bool,
    started: float,
) -> RecordingSummary:
    tracks = [RecordedTrack(t.kind, t.rep.id, t.rep.codecs) for t in recording.timelines.values()]
    # Checked before the merge removes the segments: the oldest segment found may have left
    # the server before its download.
    expired = sorted(
        kind for kind, key in recording.archive_first.items() if not recording.store.has(kind, key)
    )
    traffic = recording.http.stats.snapshot()
    log.info(
        "%d HTTP requests, %d retried, %.1f MB received; transport errors: %s",
        traffic.total_requests,
        traffic.retries,
        traffic.bytes_downloaded / 1e6,
        dict(traffic.transport_errors) or "none",
    )
    summary = await merge_store(
        recording.store, tracks, output, ffmpeg, recording.options, end_reason, started
    )
    # Where the file starts, in the media's own times (a timeline need not start at 0).
    starts = [t.start for t in summary.tracks if t.start is not None]
    archive_start = min(starts) if recording.archive_first and starts else None
    if expired and archive_start is not None:
        log.warning(
            "the oldest %s segments found expired before they could be downloaded: the "
            "recording starts at %.3f s",
            " and ".join(expired),
            archive_start,
        )
    return replace(
        summary,
        archive_start=archive_start,
        archive_complete=recording.archive_complete and not expired,
        interrupted=interrupted,
    )
