"""The end of a recording: the segments on disk become the output file and its summary.

Everything here reads the ``SegmentStore`` only, so it serves a normal finish, a Ctrl+C, and a
rerun that merges what an earlier run kept once the manifest is gone.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from instarec.errors import InstarecError
from instarec.merge import TrackInput, merge_tracks
from instarec.options import Options
from instarec.store import SegmentStore, StoredSegment

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


@dataclass(frozen=True, slots=True)
class RecordingSummary:
    output: Path | None  # None when nothing was merged
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


@dataclass(frozen=True, slots=True)
class RecordedTrack:
    """What the summary says of a track besides its segments."""

    kind: str
    representation_id: str
    codecs: str | None


def _timeline_gaps(
    kind: str, stored: Sequence[StoredSegment], missing_keys: Sequence[int]
) -> list[GapRange]:
    """Holes in a track's recorded timeline, measured on the media itself (tfdt times).

    The media on disk is the truth: a lost segment, whatever found it missing (a 404 at the
    live edge, a search in the archive), shows as a jump between its neighbours' times.
    """
    gaps: list[GapRange] = []
    ordered = sorted(stored, key=lambda s: (s.start, s.key))
    for before, after in itertools.pairwise(ordered):
        end = before.start + (before.duration or 0.0)
        if after.start - end > _GAP_TOLERANCE:
            gaps.append(GapRange(kind, end, after.start))
    if ordered and any(key > ordered[-1].key for key in missing_keys):
        last = ordered[-1]
        gaps.append(GapRange(kind, last.start + (last.duration or 0.0), None))
    return gaps


# tfdt-derived times are exact; a millisecond absorbs float rounding only.
_GAP_TOLERANCE = 0.001


def recorded_archive_start(searched: float | None, tracks: Sequence[TrackSummary]) -> float | None:
    """Where the file really starts: the oldest segment found may expire before its download."""
    if searched is None:
        return None
    starts = [t.start for t in tracks if t.start is not None]
    if starts and min(starts) > searched + _GAP_TOLERANCE:
        log.warning(
            "the oldest segments expired before they could be downloaded: the recording starts "
            "at %.3f s instead of %.3f s",
            min(starts),
            searched,
        )
        return min(starts)
    return searched


async def merge_store(
    store: SegmentStore,
    tracks: Sequence[RecordedTrack],
    output: Path,
    ffmpeg: str,
    options: Options,
    end_reason: str,
    started: float,
) -> RecordingSummary:
    """Merge what the store holds into ``output``; remove the store after a successful merge."""
    inputs: list[TrackInput] = []
    summaries: list[TrackSummary] = []
    all_gaps: list[GapRange] = []
    for track in tracks:
        stored = store.segments(track.kind)
        missing = store.missing(track.kind)
        if stored:
            inputs.append(
                TrackInput(
                    track.kind,
                    store.init_path(track.kind),
                    tuple(s.path for s in stored),
                    stored[0].start,
                )
            )
        gaps = _timeline_gaps(track.kind, stored, [m.key for m in missing])
        all_gaps.extend(gaps)
        last = stored[-1] if stored else None
        summaries.append(
            TrackSummary(
                track.kind,
                track.representation_id,
                track.codecs,
                len(stored),
                max(len(missing), len(gaps)),
                stored[0].start if stored else None,
                (last.start + (last.duration or 0.0)) if last else None,
            )
        )
    size = 0
    duration = 0.0
    merged: Path | None = None
    if inputs:
        result = await merge_tracks(
            inputs, output, ffmpeg=ffmpeg, work_dir=store.root, overwrite=options.overwrite
        )
        merged = result.output
        size = result.size
        # The recorded media's own times say how long the file is; ffmpeg's progress report is
        # not the same in every version (some report no output time at all).
        starts = [t.start for t in summaries if t.start is not None]
        ends = [t.end for t in summaries if t.end is not None]
        duration = max(ends) - min(starts) if starts and ends else (result.duration or 0.0)
        if not options.keep_segments:
            store.remove()
    else:
        log.warning("no segment was recorded: nothing to merge")
    return RecordingSummary(
        output=merged,
        segments_dir=store.root,
        size=size,
        duration=duration,
        tracks=tuple(summaries),
        gaps=tuple(sorted(all_gaps, key=lambda g: (g.start, g.track))),
        wall_time=time.monotonic() - started,
        end_reason=end_reason,
        archive_start=None,
        archive_complete=False,
        interrupted=False,
    )


async def merge_leftovers(
    options: Options, output: Path, ffmpeg: str, started: float, cause: InstarecError
) -> RecordingSummary | None:
    """After the manifest is gone, merge the segments an earlier run of this command kept."""
    if options.segments_dir is None:
        return None
    store = SegmentStore.open_existing(options.segments_dir)
    if store is None:
        return None
    fingerprint = store.fingerprint
    tracks = [
        RecordedTrack(kind, fingerprint.get(kind, ""), None)
        for kind in ("video", "audio")
        if store.segments(kind)
    ]
    if not tracks:
        return None
    log.warning("%s; merging the segments recorded earlier", cause)
    return await merge_store(
        store, tracks, output, ffmpeg, options, "merged an earlier recording", started
    )
