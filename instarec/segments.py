"""The recorder's unit of work: one media segment of one selected track."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from instarec.manifest import ByteRange

TrackKind = Literal["video", "audio", "text"]
RefOrigin = Literal["live", "archive"]


def slot_kind(slot: str) -> str:
    """What a recorded track's name carries: "audio2" is audio, "text" text."""
    return slot.rstrip("0123456789")


@dataclass(frozen=True, slots=True)
class SegmentRef:
    """A segment to fetch.

    ``key`` is the segment's ``$Number$`` or ``$Time$`` value (or its list index): unique per
    track and increasing along the timeline, so it both names the file on disk and orders the
    merge.
    """

    track: str  # the store's track: the kind, or the kind and its Period (periods.py)
    key: int
    url: str
    byte_range: ByteRange | None
    start: float
    duration: float | None
    origin: RefOrigin = "live"
