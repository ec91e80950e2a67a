"""The files a recording becomes: OUTPUT, or its parts NAME.001.EXT, NAME.002.EXT, ...

Parts come from ``--split`` / ``--split-size``, and from a Period whose decoder configuration
(another codec, picture size or audio layout) cannot go on in the tracks of the Periods before
it: a track of a file has one configuration, so that Period begins the next file. Every part
plays on its own.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from instarec.merge import (
    TrackInput,
    check_output_free,
    keeps_video,
    merge_parts,
    merge_periods,
    remove_parts_after,
)
from instarec.mp4 import Mp4Error, parse_init
from instarec.options import Options
from instarec.parts import Part, part_output, plan_parts
from instarec.segments import slot_kind
from instarec.store import SegmentStore, StoredSegment

__all__ = ["PartSummary", "PeriodPiece", "codec_runs", "write_files"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PartSummary:
    """One file of a recording cut into parts."""

    path: Path
    start: float  # seconds on the broadcast's timeline, where its earliest track starts
    duration: float  # seconds, from that start to the end of its latest track
    size: int  # bytes of the file


@dataclass(frozen=True, slots=True)
class PeriodPiece:
    """What one Period of the recording holds on disk, ready for ffmpeg."""

    suffix: str  # of its store tracks' names ("" for the first Period, "-p60000", ...)
    tracks: tuple[TrackInput, ...]
    start: float  # seconds on the recording's clock, where its earliest track starts
    end: float  # where its latest track ends


def _sample_entry(init: Path) -> bytes | None:
    """The decoder configuration an init carries; None when it cannot be read (then it is
    taken to match: a file is only ever split on a difference seen)."""
    try:
        return parse_init(init.read_bytes()).sample_entry
    except (OSError, Mp4Error):
        return None


def codec_runs(pieces: Sequence[PeriodPiece]) -> list[list[PeriodPiece]]:
    """``pieces`` in runs that can share one file: a run ends before a Period where a track's
    decoder configuration differs from the one it had."""
    runs: list[list[PeriodPiece]] = []
    current: dict[str, bytes] = {}
    for piece in pieces:
        entries = {t.name: _sample_entry(t.init) for t in piece.tracks}
        changed = sorted(
            kind
            for kind, entry in entries.items()
            if entry is not None and current.get(kind, entry) != entry
        )
        if changed:
            log.warning(
                "the Period at %.3f s configures its %s otherwise (codec, size or layout): it "
                "begins the next file",
                piece.start,
                " and ".join(changed),
            )
        if not runs or changed:
            runs.append([])
        runs[-1].append(piece)
        current.update({kind: entry for kind, entry in entries.items() if entry is not None})
    return runs


async def write_files(
    store: SegmentStore,
    pieces: Sequence[PeriodPiece],
    output: Path,
    ffmpeg: str,
    options: Options,
    replace: bool,
) -> tuple[Path, int, tuple[PartSummary, ...]]:
    """Merge ``pieces`` into ``output`` or its parts: the (first) file, the bytes written, the
    parts (``()`` for one file)."""
    runs = await asyncio.to_thread(codec_runs, pieces)
    if options.split.splits:
        parts = await _split_parts(store, pieces, output, ffmpeg, options, replace)
    elif len(runs) > 1:
        parts = await _run_parts(runs, output, ffmpeg, replace)
    else:
        tracks = [piece.tracks for piece in pieces]
        result = await merge_periods(tracks, output, ffmpeg=ffmpeg, overwrite=replace)
        return result.output, result.size, ()
    return parts[0].path, sum(part.size for part in parts), parts


async def _run_parts(
    runs: Sequence[Sequence[PeriodPiece]], output: Path, ffmpeg: str, replace: bool
) -> tuple[PartSummary, ...]:
    """One part per run of Periods sharing their configurations, in order."""
    await asyncio.to_thread(check_output_free, output, replace, split=True)
    parts: list[PartSummary] = []
    for number, run in enumerate(runs, 1):
        path = part_output(output, number)
        tracks = [piece.tracks for piece in run]
        result = await merge_periods(tracks, path, ffmpeg=ffmpeg, overwrite=replace)
        start, end = run[0].start, max(piece.end for piece in run)
        parts.append(PartSummary(result.output, start, end - start, result.size))
    if replace:
        await asyncio.to_thread(remove_parts_after, output, len(parts))
    return tuple(parts)


async def _split_parts(
    store: SegmentStore,
    pieces: Sequence[PeriodPiece],
    output: Path,
    ffmpeg: str,
    options: Options,
    replace: bool,
) -> tuple[PartSummary, ...]:
    """Cut each Period into parts (``parts.py``) and merge each into a file; a part never
    holds two Periods (their timelines restart, and their configurations may differ)."""
    jobs: list[tuple[Path, list[TrackInput]]] = []
    planned: list[Part[StoredSegment]] = []
    for piece in pieces:
        on_disk = {t.name: store.segments(t.name + piece.suffix) for t in piece.tracks}
        labels = {t.name: (t.lang, t.role) for t in piece.tracks}
        video = bool(on_disk.get("video")) and keeps_video(output)
        lead = "video" if video or not on_disk.get("audio") else "audio"
        kept = {
            kind for kind, segments in on_disk.items() if segments and (video or kind != "video")
        }
        for part in plan_parts(on_disk, lead, options.split):
            path = part_output(output, len(jobs) + 1)
            lacking = kept - {kind for kind, _ in part.tracks}
            if lacking:
                # A hole in one track as long as the part: the part is still made, without it.
                log.warning(
                    "%s has no %s: none was recorded there", path, " or ".join(sorted(lacking))
                )
            jobs.append((path, _part_inputs(store, part, piece.suffix, labels)))
            planned.append(part)
    await asyncio.to_thread(check_output_free, output, replace, split=True)
    results = await merge_parts(jobs, ffmpeg=ffmpeg, overwrite=replace)
    if replace:
        await asyncio.to_thread(remove_parts_after, output, len(results))
    return tuple(
        PartSummary(result.output, part.start, part.duration, result.size)
        for part, result in zip(planned, results, strict=True)
    )


def _part_inputs(
    store: SegmentStore,
    part: Part[StoredSegment],
    suffix: str,
    labels: Mapping[str, tuple[str | None, str | None]],
) -> list[TrackInput]:
    inputs: list[TrackInput] = []
    for track, segments in part.tracks:  # by the recorded track's name: "audio2" is audio
        name = track + suffix
        paths = tuple(s.path for s in segments)
        start, shift = segments[0].start, store.offset(name)
        lang, role = labels.get(track, (None, None))
        init = store.init_path(name)
        inputs.append(TrackInput(slot_kind(track), init, paths, start, shift, lang, track, role))
    return inputs
