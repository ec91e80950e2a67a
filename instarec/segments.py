"""The recorder's unit of work: one media segment of one selected track."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from instarec.manifest import ByteRange

TrackKind = Literal["video", "audio"]
RefOrigin = Literal["live", "archive"]


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
