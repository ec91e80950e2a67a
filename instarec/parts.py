"""A recording cut into parts (``--split``, ``--split-size``): which segments each part holds,
and what the parts are called (pure).

A part holds whole segments of every track. Cuts fall where a segment of the lead track (the
video; the audio when there is no video) starts, and each segment of another track goes, whole,
to the part that holds most of it (its middle): no media is lost or doubled at a cut, and a
track overhangs a cut by less than half of its segment. Packagers cut the audio a few
milliseconds off the video's segment edges (on the audio frame grid): by its start, the audio
segment beginning just before a cut would go to the part before it, and that part would end
with a whole segment of audio more than of video, the next one start with as much less.
A part ends at the last cut before it would exceed a limit: no part is longer or bigger than
asked, unless a single lead segment alone is.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, Protocol, TypeVar

__all__ = ["Part", "Piece", "SplitLimits", "part_number", "part_output", "plan_parts"]

# Tracks on different timescales name one instant with slightly different floats: a segment of
# unknown length starting with the lead segment at a cut is after the cut, not before it. The
# same slack lets a part be its limit long, not a rounding error less.
_SAME_INSTANT = 0.001


class Piece(Protocol):
    """What the planning reads of a recorded segment (``store.StoredSegment`` is one)."""

    @property
    def start(self) -> float: ...  # seconds on the broadcast's timeline

    @property
    def duration(self) -> float | None: ...  # seconds

    @property
    def size(self) -> int: ...  # bytes


T = TypeVar("T", bound=Piece)


@dataclass(frozen=True, slots=True)
class SplitLimits:
    """How big a part may get: seconds of media, bytes of segment files (None: no limit)."""

    duration: float | None = None
    size: int | None = None

    @property
    def splits(self) -> bool:
        return self.duration is not None or self.size is not None


@dataclass(frozen=True, slots=True)
class Part(Generic[T]):
    """One part: its segments per track kind, in timeline order, and where it lies."""

    number: int  # from 1
    tracks: tuple[tuple[str, tuple[T, ...]], ...]  # only the kinds with segments in this part
    start: float  # seconds, the earliest segment start of any track
    end: float  # seconds, the latest segment end of any track
    size: int  # bytes, summed over its segment files

    @property
    def duration(self) -> float:
        return self.end - self.start

    def segments(self, kind: str) -> tuple[T, ...]:
        return next((segments for k, segments in self.tracks if k == kind), ())


def plan_parts(tracks: Mapping[str, Sequence[T]], lead: str, limits: SplitLimits) -> list[Part[T]]:
    """The parts ``tracks`` (kind -> segments) are cut into, cutting at ``lead``'s segments.

    Without limits, or without a lead segment to cut at, everything is one part.
    """
    ordered = {kind: sorted(segments, key=lambda s: s.start) for kind, segments in tracks.items()}
    cuts = ordered.get(lead, [])
    if not cuts:
        everything = {kind: segments for kind, segments in ordered.items() if segments}
        return _parts([everything], [[0]]) if everything else []
    starts = [segment.start for segment in cuts]
    # Slot j runs from lead segment j to the next one; the other tracks' segments join the
    # slot their middle lies in (those before the first lead segment, the first).
    members: list[dict[str, list[T]]] = [{lead: [segment]} for segment in cuts]
    for kind, segments in ordered.items():
        if kind == lead:
            continue
        for segment in segments:
            middle = segment.start + (segment.duration or 0.0) / 2
            index = max(0, bisect.bisect_right(starts, middle + _SAME_INSTANT) - 1)
            members[index].setdefault(kind, []).append(segment)
    last = cuts[-1]
    ends = [*starts[1:], last.start + (last.duration or 0.0)]
    sizes = [sum(s.size for segments in slot.values() for s in segments) for slot in members]
    groups = _group(starts, ends, sizes, limits)
    return _parts(members, groups)


def _group(
    starts: Sequence[float], ends: Sequence[float], sizes: Sequence[int], limits: SplitLimits
) -> list[list[int]]:
    """Consecutive slots packed into parts, each as full as the limits allow."""
    groups: list[list[int]] = []
    part_start = 0.0
    part_size = 0
    for index, (start, end, size) in enumerate(zip(starts, ends, sizes, strict=True)):
        span = end - part_start
        too_long = limits.duration is not None and span > limits.duration + _SAME_INSTANT
        too_big = limits.size is not None and part_size + size > limits.size
        if not groups or too_long or too_big:
            groups.append([index])
            part_start, part_size = start, size
        else:
            groups[-1].append(index)
            part_size += size
    return groups


def _parts(members: Sequence[Mapping[str, list[T]]], groups: Sequence[list[int]]) -> list[Part[T]]:
    parts: list[Part[T]] = []
    for number, group in enumerate(groups, start=1):
        by_kind: dict[str, list[T]] = {}
        for index in group:
            for kind, segments in members[index].items():
                by_kind.setdefault(kind, []).extend(segments)
        every = [s for segments in by_kind.values() for s in segments]
        parts.append(
            Part(
                number=number,
                tracks=tuple((kind, tuple(segments)) for kind, segments in by_kind.items()),
                start=min(s.start for s in every),
                end=max(s.start + (s.duration or 0.0) for s in every),
                size=sum(s.size for s in every),
            )
        )
    return parts


def part_output(output: Path, number: int) -> Path:
    """Part ``number`` of ``output``: ``NAME.001.EXT`` for ``NAME.EXT``."""
    return output.with_name(f"{output.stem}.{number:03d}{output.suffix}")


def part_number(output: Path, candidate: Path) -> int | None:
    """Which part of ``output`` ``candidate`` is named as, or None when it is named as none."""
    if candidate.parent != output.parent or candidate.suffix != output.suffix:
        return None
    match = re.fullmatch(rf"{re.escape(output.stem)}\.(\d{{3,}})", candidate.stem)
    return int(match.group(1)) if match else None
