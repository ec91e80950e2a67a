"""The orchestration of one recording: ``record()``, signals, the task group, progress.

One ``asyncio.TaskGroup`` holds: the live follower (manifest refreshes, ``live.py``), past
recovery (``recovery.py``), the download workers (``downloads.py``), and the progress reporter.
Producers hand ``SegmentRef``s to ``Recording.offer``; the first offer of a key queues a
download; workers stream bodies into the ``SegmentStore``. At the end (or on the first Ctrl+C)
``finish.py`` merges what is on disk with ffmpeg.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, cast

from instarec import identity
from instarec.archive import Presence, SearchLimits
from instarec.clock import SYSTEM_CLOCK, Clock
from instarec.downloads import Downloads, fetch_inits
from instarec.errors import (
    HttpStatusError,
    InstarecError,
    ManifestError,
    ManifestUnavailableError,
    NetworkError,
    UrlExpiredError,
    UsageError,
)
from instarec.finish import (
    RecordedTrack,
    RecordingEnd,
    RecordingSummary,
    merge_leftovers,
    merge_store,
)
from instarec.http import HttpClient
from instarec.kept import KeptGround
from instarec.live import (
    LiveFollower,
    LivePolicy,
    ManifestSource,
    Snapshot,
    StopAfter,
    listed_segments,
    window_update,
)
from instarec.livemux import LiveMux, MuxEnd, MuxTrack
from instarec.manifest import MediaSegment, Representation
from instarec.merge import check_output_free, find_ffmpeg, keeps_video
from instarec.mp4 import FragmentInfo
from instarec.numbering import calibrate_numbers, renumbered
from instarec.options import Options
from instarec.period_edges import head_work, period_tails, tail_work
from instarec.periods import PeriodFollower, earlier_periods_left, first_timeline
from instarec.progress import ProgressSnapshot, Reporter
from instarec.recovery import ArchiveStart, PastRecovery, TimeChains, shares_times
from instarec.refresh import REFUSALS, Refresher, RefreshPolicy, fresh_start_url
from instarec.segments import SegmentRef, TrackKind, slot_kind
from instarec.selection import SelectedTracks, plain_text, select_tracks
from instarec.store import (
    SegmentStore,
    discard,
    holds_partial_output,
    kept_fingerprint,
    kept_representations,
)
from instarec.timeline import Timeline
from instarec.watch import RecordingState

log = logging.getLogger(__name__)

# Why a recording streamed to stdout stopped when its player quit.
READER_GONE = "the player closed the stream"

# After the first Ctrl+C, downloads in flight get this long to finish before the merge.
DRAIN_TIMEOUT = 15.0


class Recording:
    """One run of ``instarec URL OUTPUT``: the timelines, the downloads, and what the live
    listing and past recovery offer them (it is their ``recovery.SegmentAccess``)."""

    def __init__(
        self,
        options: Options,
        http: HttpClient,
        store: SegmentStore,
        source: ManifestSource,
        first: Snapshot,
        selected: SelectedTracks,
        stop: asyncio.Event,
        clock: Clock,
    ) -> None:
        self.clock = clock
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
        self.selected = selected
        # Each selected track by its name (SelectedTracks.slots): "video", "audio", "audio2"...
        self.timelines: dict[str, Timeline] = {}
        for slot, rep in selected.slots():
            period = first.manifest.periods[rep.period_index]
            kind = cast(TrackKind, slot_kind(slot))
            self.timelines[slot] = first_timeline(slot, kind, rep, period, store.place(slot))
        self.refresher = Refresher(
            http,
            source.location,
            RefreshPolicy.from_options(options),
            self._newest_representations,
            clock,
        )
        source.when_refused(self.refresher.manifest_refused)
        # Every track by its store name: the first Period's above, later Periods' as they come.
        self.tracks: dict[str, Timeline] = {t.name: t for t in self.timelines.values()}
        kept = {kind: store.place(kind) for kind in self.timelines}
        self.periods = PeriodFollower(first.manifest, self.timelines, kept)
        self.downloads = Downloads(options, http, store, self.tracks, self.refresher, clock)
        self.started = clock.monotonic()
        self.past: PastRecovery | None = None
        self.unreachable: str | None = None  # the server stopped answering (see LiveFollower)
        self.newest_listed_end: float | None = None
        self._tails_seen: set[str] = set()  # tracks whose Period has left the manifest
        self.first_snapshot = first
        self.first_listing = {
            rep.id: segments
            for rep, segments in listed_segments(first, [t.rep for t in self.timelines.values()])
        }
        self.chains = TimeChains(
            self, self.timelines, self.limits, shares_times(self.timelines, self.first_listing)
        )
        self.state = RecordingState(
            store, self.tracks, lambda: self.past, not options.no_past, self.downloads.stats
        )

    def _newest_representations(self) -> list[Representation]:
        """Each selected track's representation in the newest Period followed: what a fresh
        manifest must still offer (the earlier Periods may have left it)."""
        newest: dict[str, Timeline] = {}
        for timeline in self.tracks.values():
            known = newest.get(timeline.selected)
            if known is None or timeline.period_start > known.period_start:
                newest[timeline.selected] = timeline
        return [timeline.rep for timeline in newest.values()]

    # -- what producers use (recovery.SegmentAccess) ---------------------------------------------

    def offer(self, ref: SegmentRef) -> bool:
        """Queue ``ref`` unless its key is known or lies below its timeline's floor."""
        timeline = self.tracks[ref.track]
        if timeline.floor is not None and ref.key < timeline.floor:
            return False
        if not timeline.add(ref.key):
            return False
        self.downloads.submit(ref)
        return True

    async def inspect(self, ref: SegmentRef, *, whole: bool = False) -> FragmentInfo | None:
        timeline = self.tracks[ref.track]
        timeline.add(ref.key)
        try:
            info = await self.downloads.inspect(ref, whole=whole)
        except NetworkError:
            timeline.discard(ref.key)
            raise
        if info is None:
            timeline.discard(ref.key)
        return info

    async def probe(self, url: str) -> Presence:
        try:
            present = await self.refresher.signed(
                lambda signed: self.http.probe(signed, refusals=True), url
            )
        except HttpStatusError as exc:
            if exc.status < 500:
                return Presence.ABSENT  # a final client error: the server has no such segment
            log.debug("probe failed for %s: %s", url, exc)
            return Presence.UNKNOWN
        except NetworkError as exc:
            log.debug("probe failed for %s: %s", url, exc)
            return Presence.UNKNOWN
        return Presence.PRESENT if present else Presence.ABSENT

    async def full_info(self, track: str, key: int) -> FragmentInfo | None:
        return await self.downloads.full_info(track, key)

    async def record_missing(self, ref: SegmentRef) -> None:
        await self.downloads.record_missing(ref)

    def progress(self) -> ProgressSnapshot:
        stats = self.downloads.stats()
        behind = None
        if self.newest_listed_end is not None and stats.newest_recorded_end is not None:
            behind = max(0.0, self.newest_listed_end - stats.newest_recorded_end)
        return ProgressSnapshot(
            elapsed=self.clock.monotonic() - self.started,
            archive_active=self.past is not None and self.past.active,
            archive_seconds=stats.recorded_seconds["archive"],
            live_seconds=stats.recorded_seconds["live"],
            segments_done=stats.downloaded,
            segments_missing=stats.missing,
            segments_queued=stats.queued["archive"] + stats.queued["live"],
            archive_queued=stats.queued["archive"],
            bytes_done=stats.bytes,
            behind_live=behind,
        )

    # -- live ---------------------------------------------------------------------------------

    def on_snapshot(self, snapshot: Snapshot, group: asyncio.TaskGroup) -> int:
        self.downloads.server_answered()  # after an outage the manifest is often back first
        new = 0
        for timeline, segments in self.periods.listings(snapshot, self.tracks):
            new += self._offer_listed(timeline, renumbered(timeline, segments), group)
        for timeline, segments in self.periods.new_tracks(snapshot, self.tracks):
            group.create_task(self._start_period(timeline, segments, group))
        for tail in period_tails(snapshot.manifest, self.tracks, self._tails_seen):
            if not self._derived(tail.timeline):
                self._fill(tail_work(self, tail), group)
        return new

    async def _start_period(
        self, timeline: Timeline, segments: list[MediaSegment], group: asyncio.TaskGroup
    ) -> None:
        """A new Period's track: its init first (its segments are parsed with it)."""
        log.info(
            "%s: a new Period starts at %.3f s (representation %s)",
            timeline.kind,
            timeline.period_start,
            timeline.rep.id,
        )
        await fetch_inits(self.http, self.store, [timeline])
        self.tracks[timeline.name] = timeline
        self._offer_listed(timeline, segments, group)
        self._fill(head_work(self, timeline, segments), group)

    def _derived(self, timeline: Timeline) -> bool:
        """Whether ``timeline``'s segments come with another track's chain."""
        return any(timeline is d for t in self.timelines.values() for d in self.chains.derived(t))

    def _offer_listed(
        self, timeline: Timeline, segments: list[MediaSegment], group: asyncio.TaskGroup
    ) -> int:
        update = window_update(timeline, segments)
        timeline.floor = update.floor
        timeline.typical = update.typical
        timeline.listed_end = update.listed_end
        timeline.listed_max_number = update.listed_max_number
        if segments and segments[-1].duration is not None:
            timeline.listed_until = segments[-1].start + segments[-1].duration
            if timeline.selected == self.downloads.clock_track:
                self.newest_listed_end = timeline.listed_until
        if (
            update.hole_from is not None
            and not self._derived(timeline)
            and not plain_text(timeline.rep)
        ):
            # The window moved further than one refresh: chain through the media to reach it
            # (a derived track's segments come with its leader's chain).
            log.info(
                "%s: window skipped past %d; chaining to fill the hole",
                timeline.kind,
                update.hole_from,
            )
            self._fill(self.chains.fill_hole(timeline, update.hole_from), group)
        return sum(self.offer(ref) for ref in update.refs)

    def _fill(self, work: Coroutine[Any, Any, None] | None, group: asyncio.TaskGroup) -> None:
        if work is not None:
            group.create_task(self._filling(work))

    async def _filling(self, work: Coroutine[Any, Any, None]) -> None:
        # Counted: a stream fed while it is recorded waits at the hole while it may be filled.
        self.state.filling += 1
        try:
            await work
        finally:
            self.state.filling -= 1

    # -- $Number$ under @duration: which number holds which time ------------------------------

    async def calibrate_numbers(self) -> None:
        """Renumber the first listing where the media numbers segments otherwise."""
        await calibrate_numbers(
            self.inspect, self.first_snapshot.manifest, self.timelines, self.first_listing
        )

    # -- the past -------------------------------------------------------------------------------

    async def recover_past(self) -> None:
        """Past recovery over what the first manifest listed (renumbered by the calibration)."""
        begins = earlier_periods_left(self.first_snapshot.manifest, self.timelines)
        if begins is not None:
            log.warning(
                "the manifest lists no Period before the one starting at %.3f s: earlier "
                "Periods have left it, and their segments cannot be found",
                begins,
            )
        listing = {
            kind: (timeline, self.first_listing.get(timeline.rep.id) or [])
            for kind, timeline in self.timelines.items()
        }
        self.past = PastRecovery(
            self,
            self.chains,
            listing,
            self.first_snapshot.manifest,
            self.limits,
            max_chains=self.options.concurrency,
            kept=KeptGround(
                self.chains,
                {t.name: self.store.segments(t.name) for t in self.timelines.values()},
                self.limits,
            ),
        )
        await self.past.run()


# ---------------------------------------------------------------------------------------------


def _open_store(options: Options, selected: SelectedTracks) -> SegmentStore:
    """The recording's segment directory: resumed when it holds this recording, started afresh
    when ``--overwrite`` discards another one, refused otherwise."""
    root = options.segments_dir
    assert root is not None
    more: dict[str, str] = {}
    if selected.several:
        for slot, rep in selected.slots():
            if slot not in ("video", "audio"):
                more[slot] = rep.id
            if rep.lang:
                more[identity.LANG_PREFIX + slot] = rep.lang
            if rep.role:
                more[identity.ROLE_PREFIX + slot] = rep.role
    wanted = identity.fingerprint(
        options.mpd_url,
        selected.video.id if selected.video else "",
        selected.audio.id if selected.audio else "",
        more,
    )
    kept = kept_fingerprint(root)
    later = kept_representations(root) if kept is not None else {}
    problem = None if kept is None else identity.mismatch(kept, wanted, root, later)
    if kept is not None and problem is None:
        if kept["manifest"] != wanted["manifest"]:
            log.info("resuming the recording kept in %s (from %s)", root, kept["manifest"])
        wanted = kept  # the journal goes on under the fingerprint it began with
    elif options.overwrite and root.exists():
        log.warning("discarding %s: %s", root, problem or "it holds no recording to resume")
        discard(root)
    elif problem is not None:
        raise UsageError(problem)
    return SegmentStore.open(root, wanted)


async def record(
    options: Options,
    *,
    stop: asyncio.Event | None = None,
    install_signal_handlers: bool = True,
    reporter: Reporter | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> RecordingSummary:
    """Record ``options.mpd_url`` into ``options.output_path`` until the broadcast ends.

    ``stop`` ends the recording gracefully when set (as the first Ctrl+C does); ``reporter`` is
    run beside the recording with a function returning the current ``ProgressSnapshot``, and
    cancelled when the downloads are over.
    """
    started = clock.monotonic()
    output = options.output_path
    if output is None:
        raise UsageError("an output path is required")
    assert options.segments_dir is not None  # there is an output
    # An output merged before its broadcast was all recorded is this recording's to replace.
    replace = options.overwrite or holds_partial_output(options.segments_dir)
    if not options.to_stdout:  # a stream on stdout writes no file (a rerun merges one)
        check_output_free(output, replace, split=options.split.splits)
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
        return await _record(options, output, ffmpeg, stop, started, reporter, clock)
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
    clock: Clock,
) -> RecordingSummary:
    async with HttpClient(options.http_config()) as http:
        try:
            source, first = await _first_manifest(options, http, clock)
        except (NetworkError, ManifestError) as exc:
            # Rerunning a stopped recording after the broadcast ended must still give a file;
            # a refused URL is no ended broadcast: what was kept waits for a fresh one.
            refused = isinstance(exc, UrlExpiredError) or (
                isinstance(exc, ManifestUnavailableError) and exc.status in (401, 403)
            )
            leftovers = (
                None
                if refused
                else await merge_leftovers(options, output, ffmpeg, started, exc, clock)
            )
            if leftovers is None:
                raise
            return leftovers
        # The CLI runs the interactive picker and passes the choice as --*-quality ids.
        selected = select_tracks(first.manifest, options)
        store = _open_store(options, selected)
        try:
            recording = Recording(options, http, store, source, first, selected, stop, clock)
            await fetch_inits(http, store, recording.timelines.values())
            mux = _live_mux(recording, output, ffmpeg)
            if options.live_merge:
                await store.mark_output(partial=True)  # a rerun may replace what grows now
            policy = _live_policy(options, started)
            end_reason = await _run(recording, first, reporter, policy, mux)
            reader_gone = mux is not None and mux.reader_gone
            interrupted = stop.is_set() and not reader_gone
            return await _finish(recording, output, ffmpeg, end_reason, interrupted, started, mux)
        finally:
            # Cancelled or failed, the recording leaves its journal as it stands now: a rerun
            # (or a test) reading it must not race a batch still being written.
            await store.settle()


def _live_mux(recording: Recording, output: Path, ffmpeg: str) -> LiveMux | None:
    """The ffmpeg fed during the recording: the stream on stdout (OUTPUT ``-``) or the growing
    OUTPUT (``--live-merge``); None when the output is merged at the end only."""
    options = recording.options
    if not (options.to_stdout or options.live_merge):
        return None
    # The picture and every sound the stream (or the growing file) plays, tagged as the merge
    # tags them; an audio-only container takes the sound alone. Captions are the merge's.
    kinds = ("video", "audio") if options.to_stdout or keeps_video(output) else ("audio",)
    several = recording.selected.several
    tracks = [
        MuxTrack(t.name, t.kind, t.rep.lang if several else None, t.rep.role if several else None)
        for t in recording.timelines.values()
        if t.kind in kinds
    ]

    def reader_gone() -> None:
        log.warning(
            "%s: recording stopped; its segments are kept in %s (instarec MPD_URL %s merges "
            "them, or resumes the recording while the broadcast goes on)",
            READER_GONE,
            options.segments_dir,
            output,
        )
        recording.stop.set()

    target = None if options.to_stdout else output
    return LiveMux(recording.store, tracks, recording.state, target, ffmpeg, reader_gone)


def _live_merged(recording: Recording, mux: LiveMux | None) -> Path | None:
    """The OUTPUT the live merge wrote whole; None when the usual merge must write it."""
    if mux is None or mux.target is None or mux.outcome is None:
        return None
    if mux.outcome.end is MuxEnd.FAILED:
        log.warning("merging %s anew from the recorded segments", mux.target)
        return None
    if any(
        t.kind == "text" and recording.store.segments(t.name) for t in recording.timelines.values()
    ):
        # The captions' cues are converted by the merge (see captions.py): it writes them in.
        log.info("merging %s anew with the captions", mux.target)
        return None
    followed = {timeline.name for timeline in recording.timelines.values()}
    if any(track not in followed for track in recording.store.tracks()):
        # The live merge follows the first Period's tracks; the usual merge joins them all.
        log.warning("the broadcast changed Period: merging anew with every Period")
        return None
    return mux.target if mux.outcome.end is MuxEnd.FINISHED else None


async def _first_manifest(
    options: Options, http: HttpClient, clock: Clock
) -> tuple[ManifestSource, Snapshot]:
    """The manifest's source and first snapshot. An MPD URL refused as expired (a rerun with
    the command that was interrupted) is renewed with --refresh-url-command when given."""
    source = ManifestSource(http, options.mpd_url, clock)
    try:
        return source, await source.fetch()
    except ManifestUnavailableError as exc:
        if exc.status not in REFUSALS or options.refresh_url_command is None:
            raise
        fresh = await fresh_start_url(RefreshPolicy.from_options(options), exc.status)
    source = ManifestSource(http, fresh, clock)
    return source, await source.fetch()


def _live_policy(options: Options, started: float) -> LivePolicy:
    stop_after = None
    if options.stop_after is not None:
        stop_after = StopAfter(started + options.stop_after, options.stop_after)
    return LivePolicy(options.poll_interval, options.live_end_timeout, stop_after)


async def _run(
    recording: Recording,
    first: Snapshot,
    reporter: Reporter | None,
    policy: LivePolicy,
    mux: LiveMux | None = None,
) -> str:
    """Record until the broadcast ends, Ctrl+C or an expired URL; the reason it ended. The
    ``mux`` is fed all along and finished once the downloads are over."""
    end_reason = "unknown"
    try:
        async with asyncio.TaskGroup() as group:
            muxing = group.create_task(mux.run()) if mux is not None else None
            workers = [
                group.create_task(recording.downloads.worker())
                for _ in range(recording.options.concurrency)
            ]
            helpers: list[asyncio.Task[None]] = []
            if reporter is not None:
                helpers.append(group.create_task(reporter(recording.progress)))

            async def produce() -> None:
                nonlocal end_reason
                end_reason = await _produce(recording, first, policy)

            producer = group.create_task(produce())
            halted = await _halted(recording, producer, group)
            if halted is not None:
                end_reason = halted
                await recording.downloads.drain(workers, DRAIN_TIMEOUT)
            if mux is not None and muxing is not None:
                mux.finish()  # what is on disk now is all there is: fed, then the output ends
                await muxing
                if mux.reader_gone:
                    end_reason = READER_GONE
            for task in [*workers, *helpers]:
                task.cancel()
    except BaseExceptionGroup as group_error:
        raise _first_instarec_error(group_error) from None
    return end_reason


async def _produce(recording: Recording, first: Snapshot, policy: LivePolicy) -> str:
    """Follow the live edge beside past recovery until the broadcast ends, then wait for every
    download queued; the reason it ended."""
    await recording.calibrate_numbers()
    async with asyncio.TaskGroup() as producers:
        follower = LiveFollower(
            recording.source,
            policy,
            lambda snapshot: recording.on_snapshot(snapshot, producers),
            recording.downloads.live_activity,
            recording.stop,
            recording.clock,
        )
        live = producers.create_task(follower.run(first))
        if not recording.options.no_past:
            producers.create_task(recording.recover_past())
        end_reason = await live
        recording.unreachable = follower.unreachable
        if follower.idle or follower.left_early:
            # Nothing was published for the live end timeout while the segments that answered
            # "not yet" were asked again, or what comes after the stop is not wanted: asking
            # on delays the merge.
            recording.downloads.stop_asking_again()
    log.info("recording ends: %s", end_reason)
    await recording.downloads.join()
    return end_reason


async def _halted(
    recording: Recording, producer: asyncio.Task[None], group: asyncio.TaskGroup
) -> str | None:
    """Wait for ``producer``, or stop it on Ctrl+C or once the URL expired for good; why it was
    stopped (None: it finished)."""
    stopper = group.create_task(recording.stop.wait())
    expiry = group.create_task(recording.refresher.ended.wait())
    try:
        await asyncio.wait({producer, stopper, expiry}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
        expiry.cancel()
    halted = None
    if recording.stop.is_set():
        halted = "stopped by the user"
    elif recording.refresher.ended.is_set():
        halted = recording.refresher.failure
    if halted is not None:
        producer.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await producer
    return halted


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
    mux: LiveMux | None = None,
) -> RecordingSummary:
    several = recording.selected.several
    tracks = [
        RecordedTrack(
            slot,
            t.rep.id,
            t.rep.codecs,
            t.rep.lang if several else None,
            t.rep.role if several else None,
        )
        for slot, t in recording.timelines.items()
    ]
    archive = recording.past.archive if recording.past is not None else ArchiveStart()
    traffic = recording.http.stats.snapshot()
    log.info(
        "%d HTTP requests, %d retried, %.1f MB received; transport errors: %s",
        traffic.total_requests,
        traffic.retries,
        traffic.bytes_downloaded / 1e6,
        dict(traffic.transport_errors) or "none",
    )
    await recording.store.flush()  # the journal holds every segment before the merge
    end = RecordingEnd(
        end_reason,
        started,
        interrupted,
        archive.first,
        archive.complete
        and earlier_periods_left(recording.first_snapshot.manifest, recording.timelines) is None,
        unfinished=recording.refresher.failure or recording.unreachable,
    )
    written = _live_merged(recording, mux)
    summary = await merge_store(
        recording.store,
        tracks,
        output,
        ffmpeg,
        recording.options,
        end,
        recording.clock,
        written=written,
    )
    if recording.options.to_stdout and (mux is None or not mux.reader_gone):
        log.info(
            "the segments are kept in %s: instarec MPD_URL %s merges them",
            summary.segments_dir,
            output,
        )
    return summary
