"""The end of a recording: the segments on disk become the output file and its summary.

Everything here reads the ``SegmentStore`` only, so it serves a normal finish, a Ctrl+C, and a
rerun that merges what an earlier run kept once the manifest is gone.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from instarec import identity
from instarec.clock import SYSTEM_CLOCK, Clock
from instarec.errors import InstarecError, storage_error
from instarec.files import PartSummary, PeriodPiece, write_files
from instarec.merge import TrackInput
from instarec.options import Options
from instarec.periods import period_start_ms, slot_of
from instarec.segments import slot_kind
from instarec.store import MissingSegment, SegmentStore, StoredSegment

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class GapRange:
    """A stretch of a track's timeline with no media, in seconds."""

    track: str
    start: float
    end: float | None


@dataclass(frozen=True, slots=True)
class TrackSummary:
    kind: str
    representation_id: str
    codecs: str | None
    segments: int
    missing: int
    start: float | None  # seconds, first recorded segment
    end: float | None  # seconds, end of the last recorded segment
    lang: str | None = None  # the language it is tagged with (recordings of several tracks)


@dataclass(frozen=True, slots=True)
class RecordingSummary:
    output: Path | None  # None when nothing was merged; the first part when cut into parts
    segments_dir: Path
    size: int
    duration: float
    tracks: tuple[TrackSummary, ...]
    gaps: tuple[GapRange, ...]
    wall_time: float
    end_reason: str
    archive_start: float | None  # where past recovery started, seconds; None without it
    archive_complete: bool  # the archive reaches the broadcast's first segment
    interrupted: bool
    parts: tuple[PartSummary, ...] = ()  # the files, when cut into parts; () for one file
    # Why the recording stopped before the broadcast's end with its segments kept for a rerun
    # to resume (an expired URL); None when it did not.
    unfinished: str | None = None
    streamed: bool = False  # streamed to stdout while recorded (OUTPUT -), not merged


@dataclass(frozen=True, slots=True)
class RecordedTrack:
    """What the summary says of a track besides its segments."""

    kind: str  # the track's name: "video", "audio", "audio2", "text"...
    representation_id: str
    codecs: str | None
    lang: str | None = None  # the language the output tags it with (None: none)
    role: str | None = None  # its DASH role, for the output's disposition (None: none)


def _timeline_gaps(
    kind: str, stored: Sequence[StoredSegment], lost: Sequence[MissingSegment]
) -> list[GapRange]:
    """Holes in a track's recorded timeline, measured on the media itself (tfdt times).

    The media on disk is the truth: a lost segment, whatever found it missing (a 404 at the
    live edge, a search in the archive), shows as a jump between its neighbours' times. A jump
    shorter than half a usual segment is no lost segment (a packager's rounding, a last sample
    of odd length) and is not reported.
    """
    gaps: list[GapRange] = []
    ordered = sorted(stored, key=lambda s: (s.start, s.key))
    tolerance = max(_GAP_TOLERANCE, _typical_length(ordered) / 2)
    for before, after in itertools.pairwise(ordered):
        end = before.start + (before.duration or 0.0)
        if after.start - end > tolerance:
            gaps.append(GapRange(kind, end, after.start))
    # Keys restart with each Period: only the last segment's own track says what came after.
    if ordered and any(m.track == ordered[-1].track and m.key > ordered[-1].key for m in lost):
        last = ordered[-1]
        gaps.append(GapRange(kind, last.start + (last.duration or 0.0), None))
    return gaps


# tfdt-derived times are exact; a millisecond absorbs float rounding only.
_GAP_TOLERANCE = 0.001


def _typical_length(stored: Sequence[StoredSegment]) -> float:
    lengths = sorted(s.duration for s in stored if s.duration)
    return lengths[len(lengths) // 2] if lengths else 0.0


def _record_slack(stored: Sequence[StoredSegment]) -> float:
    # A record's time comes from the manifest, the media's from tfdt: they may differ by a
    # packager's offset (an encoder's audio priming), never by a good part of a segment.
    return max(_GAP_TOLERANCE, _typical_length(stored) / 4)


def _lost_segments(
    stored: Sequence[StoredSegment], missing: Sequence[MissingSegment]
) -> list[MissingSegment]:
    """The records of misses whose time no recorded segment covers.

    A miss a recorded segment covers was a wrong guess of a name (a rounding, an offset), not
    a loss.
    """
    ordered = sorted(stored, key=lambda s: s.start)
    starts = [s.start for s in ordered]
    slack = _record_slack(ordered)

    def covered(segment: MissingSegment) -> bool:
        index = bisect.bisect_right(starts, segment.start + slack) - 1
        if index < 0:
            return False
        holder = ordered[index]
        return segment.start < holder.start + (holder.duration or 0.0) - slack

    return [m for m in missing if not covered(m)]


def _missing_count(
    stored: Sequence[StoredSegment], lost: Sequence[MissingSegment], gaps: Sequence[GapRange]
) -> int:
    """Segments the server should have had and did not give.

    Each hole in the media counts the segments recorded lost inside it, or, when the search
    that crossed it recorded none, as many as fit in it at the usual length.
    """
    typical = _typical_length(stored)
    slack = _record_slack(stored)
    count = 0
    counted: set[int] = set()
    for gap in gaps:
        if gap.end is None:
            continue
        inside = [m for m in lost if gap.start - slack <= m.start < gap.end]
        counted.update(m.key for m in inside)
        fits = round((gap.end - gap.start) / typical) if typical else 1
        count += max(len(inside), fits, 1)
    return count + sum(1 for m in lost if m.key not in counted)


@dataclass(frozen=True, slots=True)
class RecordingEnd:
    """How a recording ended, for its summary."""

    reason: str
    started: float  # the recording clock's monotonic() when the recording started
    interrupted: bool = False  # stopped by the user (Ctrl+C)
    # The oldest key past recovery found per track (none: no past recovery ran), and whether
    # it is the broadcast's first segment.
    archive_first: Mapping[str, int] = field(default_factory=dict)  # by store track name
    archive_complete: bool = False
    unfinished: str | None = None  # see RecordingSummary.unfinished


async def merge_store(
    store: SegmentStore,
    tracks: Sequence[RecordedTrack],
    output: Path,
    ffmpeg: str,
    options: Options,
    end: RecordingEnd,
    clock: Clock = SYSTEM_CLOCK,
    *,
    written: Path | None = None,
) -> RecordingSummary:
    """Merge what the store holds into ``output`` (``written``: the live merge did) and remove
    the store; streamed to stdout, nothing is merged and the store stays for a rerun."""
    inputs, summaries, gaps = _tracks_on_disk(store, tracks)
    # Checked before the merge removes the segments: the oldest segment found may have left
    # the server before its download.
    expired = sorted(
        slot_of(track) or track
        for track, key in end.archive_first.items()
        if not store.has(track, key)
    )
    size = 0
    merged: Path | None = None
    parts: tuple[PartSummary, ...] = ()
    # Where the file starts and ends, in the media's own times (a timeline need not start at 0).
    starts = [t.start for t in summaries if t.start is not None]
    ends = [t.end for t in summaries if t.end is not None]
    duration = max(ends) - min(starts) if starts and ends else 0.0
    if end.unfinished is not None:
        await store.mark_output(partial=True)  # before the merge: a rerun may replace OUTPUT
    if inputs and not options.to_stdout:
        merged, size, parts = await _output(store, inputs, output, ffmpeg, options, written)
        if end.unfinished is None:
            await _finished(store, options.keep_segments)
    elif not inputs:
        log.warning("no segment was recorded: nothing to merge")
    archive_start = min(starts) if end.archive_first and starts else None
    if expired and archive_start is not None:
        log.warning(
            "the oldest %s segments found expired before they could be downloaded: the "
            "recording starts at %.3f s",
            " and ".join(expired),
            archive_start,
        )
    return RecordingSummary(
        output=merged,
        segments_dir=store.root,
        size=size,
        duration=duration,
        tracks=tuple(summaries),
        gaps=tuple(sorted(gaps, key=lambda g: (g.start, g.track))),
        wall_time=clock.monotonic() - end.started,
        end_reason=end.reason,
        archive_start=archive_start,
        archive_complete=end.archive_complete and not expired,
        interrupted=end.interrupted,
        parts=parts,
        unfinished=end.unfinished,
        streamed=options.to_stdout,
    )


async def _output(
    store: SegmentStore,
    inputs: Sequence[PeriodPiece],
    output: Path,
    ffmpeg: str,
    options: Options,
    written: Path | None,
) -> tuple[Path, int, tuple[PartSummary, ...]]:
    """The output file: the one the live merge ``written``, or merged now."""
    if written is None:
        # An output merged before the broadcast was all recorded is this recording's to replace.
        replace = options.overwrite or store.partial_output
        return await write_files(store, inputs, output, ffmpeg, options, replace)
    size = await asyncio.to_thread(_size_of, written)
    log.info("wrote %s (%d bytes) while recording", written, size)
    return written, size, ()


def _size_of(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError as exc:
        raise storage_error(exc, "read", path) from exc


async def _finished(store: SegmentStore, keep_segments: bool) -> None:
    """The output holds the whole recording: its segments go, unless they are to be kept."""
    if not keep_segments:
        store.remove()
    elif store.partial_output:
        await store.mark_output(partial=False)


def _period_suffixes(store: SegmentStore) -> list[str]:
    """The store's Periods, in order, by the suffix their tracks carry ("" for the first)."""
    suffixes = {track.removeprefix(slot) for track in store.tracks() if (slot := slot_of(track))}
    return sorted(suffixes, key=lambda s: (s != "", period_start_ms("video" + s)))


def _tracks_on_disk(
    store: SegmentStore, tracks: Sequence[RecordedTrack]
) -> tuple[list[PeriodPiece], list[TrackSummary], list[GapRange]]:
    """What ffmpeg merges (the tracks of each Period), and what the summary says, for each
    recorded track (its Periods together: they lie on one clock)."""
    suffixes = _period_suffixes(store)
    pieces: list[list[TrackInput]] = [[] for _ in suffixes]
    spans: list[list[float]] = [[] for _ in suffixes]
    summaries: list[TrackSummary] = []
    all_gaps: list[GapRange] = []
    for track in tracks:
        stored: list[StoredSegment] = []
        missing: list[MissingSegment] = []
        for piece, span, suffix in zip(pieces, spans, suffixes, strict=True):
            name = track.kind + suffix
            segments = store.segments(name)
            stored += segments
            missing += store.missing(name)
            if segments:
                paths = tuple(s.path for s in segments)
                start, shift = segments[0].start, store.offset(name)
                piece.append(
                    TrackInput(
                        slot_kind(track.kind),
                        store.init_path(name),
                        paths,
                        start,
                        shift,
                        track.lang,
                        track.kind,
                        track.role,
                    )
                )
                span += [start, segments[-1].start + (segments[-1].duration or 0.0)]
        lost = _lost_segments(stored, missing)
        gaps = _timeline_gaps(track.kind, stored, lost)
        all_gaps.extend(gaps)
        last = stored[-1] if stored else None
        summaries.append(
            TrackSummary(
                track.kind,
                track.representation_id,
                track.codecs,
                len(stored),
                _missing_count(stored, lost, gaps),
                stored[0].start if stored else None,
                (last.start + (last.duration or 0.0)) if last else None,
                track.lang,
            )
        )
    periods = [
        PeriodPiece(suffix, tuple(piece), min(span), max(span))
        for suffix, piece, span in zip(suffixes, pieces, spans, strict=True)
        if piece
    ]
    return periods, summaries, all_gaps


async def merge_leftovers(
    options: Options,
    output: Path,
    ffmpeg: str,
    started: float,
    cause: InstarecError,
    clock: Clock = SYSTEM_CLOCK,
) -> RecordingSummary | None:
    """After the manifest is gone, merge the segments an earlier run of this command kept."""
    if options.segments_dir is None:
        return None
    store = SegmentStore.open_existing(options.segments_dir)
    if store is None:
        return None
    fingerprint = store.fingerprint
    tracks = [
        RecordedTrack(
            name,
            fingerprint.get(name, ""),
            None,
            fingerprint.get(identity.LANG_PREFIX + name),
            fingerprint.get(identity.ROLE_PREFIX + name),
        )
        for name in identity.track_names(fingerprint)
        if store.segments(name)
    ]
    if not tracks:
        return None
    log.warning("%s; merging the segments recorded earlier", cause)
    end = RecordingEnd("merged an earlier recording", started)
    return await merge_store(store, tracks, output, ffmpeg, options, end, clock)
