"""Which recorded segments of a track may be played next, during the recording.

A stream watched while it is recorded (``-`` as OUTPUT, ``--live-merge``) must be fed in
presentation order, yet segments reach the store in any order: the live edge arrives while
the past behind it is still being recovered, a download may be retried, a segment may be
lost for good. A ``TrackCursor`` remembers the last segment fed and hands out the next ones
once nothing can still come before them: a segment that continues the last one (no hole in
the media times) goes at once; one after a hole waits while a producer may still fill the
hole (past recovery, a live hole being chained, a download in flight) and goes once the hole
is final (the segments in it recorded missing, the producers done).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass

from instarec.store import StoredSegment

# tfdt-derived times are exact: a millisecond absorbs float rounding; a packager's odd last
# sample is absorbed by a fraction of the usual segment length.
_TOLERANCE = 0.001
_TOLERANCE_SHARE = 0.25


@dataclass(frozen=True, slots=True)
class Settling:
    """What may still add a segment to a track, as the recording stands now."""

    # Past recovery or a live hole's chain runs: a hole in the media may yet be filled.
    searching: bool
    # Keys known to exist (listed or found) that are neither on disk nor recorded missing,
    # in ascending order: their downloads are queued or in flight.
    pending: Sequence[int]
    # Keys recorded missing for good, ascending: a hole they explain is final at once.
    missing: Sequence[int]
    # The oldest key past recovery found for the track; None while it searches (or without it).
    first: int | None
    # The recording is over: whatever is on disk is all there will be.
    over: bool


class TrackCursor:
    """The next segments of one track to feed, in presentation order."""

    def __init__(self, track: str) -> None:
        self.track = track
        self.last: StoredSegment | None = None

    def ready(self, stored: Sequence[StoredSegment], settling: Settling) -> list[StoredSegment]:
        """The segments of ``stored`` (the track's, in timeline order) to feed now, in order;
        each is taken as fed."""
        out: list[StoredSegment] = []
        start = 0
        if self.last is not None:
            keys = [s.key for s in stored]
            start = bisect.bisect_right(keys, self.last.key)
        tolerance = _tolerance(stored)
        for segment in stored[start:]:
            if not settling.over and not self._settled(segment, settling, tolerance):
                break
            out.append(segment)
            self.last = segment
        return out

    def _settled(self, segment: StoredSegment, settling: Settling, tolerance: float) -> bool:
        last = self.last
        floor = last.key if last is not None else None
        # A download still under way below this segment comes first.
        index = 0 if floor is None else bisect.bisect_right(settling.pending, floor)
        if index < len(settling.pending) and settling.pending[index] < segment.key:
            return False
        if last is None:
            # The first segment: none older may still be found.
            return not settling.searching or (
                settling.first is not None and segment.key <= settling.first
            )
        end = last.start + (last.duration or 0.0)
        if segment.start - end <= tolerance or not settling.searching:
            return True
        # A hole whose segments the server lost: nothing will fill it.
        lost = bisect.bisect_right(settling.missing, last.key)
        return lost < len(settling.missing) and settling.missing[lost] < segment.key


def _tolerance(stored: Sequence[StoredSegment]) -> float:
    lengths = sorted(s.duration for s in stored[-16:] if s.duration)
    typical = lengths[len(lengths) // 2] if lengths else 0.0
    return max(_TOLERANCE, typical * _TOLERANCE_SHARE)
