"""Following a live manifest across Periods (an encoder restart, an ad break).

Pure code. Each Period after the one the recording began in is its own track in the store
(``video-p60000``: the Period's start in milliseconds), since its ``$Time$`` / ``$Number$``
keys restart and its segments need its own init. The segments of every Period are placed on
the first Period's media clock: a Period's media time plus its ``offset`` is where it plays.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator, Mapping

from instarec.live import Snapshot
from instarec.manifest import Manifest, MediaSegment, Period, Representation, expand_segments
from instarec.segments import TrackKind
from instarec.selection import rank, track_kind
from instarec.store import TrackPlace
from instarec.timeline import Timeline

__all__ = [
    "PeriodFollower",
    "earlier_periods_left",
    "first_timeline",
    "kind_of",
    "match_representation",
    "period_offset",
    "period_start_ms",
    "slot_of",
    "track_name",
]

log = logging.getLogger(__name__)

_PERIOD_TRACK = re.compile(r"((?:video|audio|text)\d*)(?:-p(\d+))?")


def track_name(slot: str, period: Period, first: Period | float) -> str:
    """The store's name for ``slot`` in ``period``: the plain slot in the recording's first
    Period (``first``, or its start in seconds), ``slot-p<start in ms>`` in any other."""
    start = first if isinstance(first, float) else first.start
    if abs(period.start - start) < 0.0005:
        return slot
    return f"{slot}-p{round(period.start * 1000)}"


def slot_of(track: str) -> str | None:
    """The selected track a store track name holds ("audio2-p60000" holds audio2), None for
    no track."""
    match = _PERIOD_TRACK.fullmatch(track)
    return match.group(1) if match else None


def kind_of(track: str) -> str | None:
    """The kind a store track name holds ("video-p60000" holds video, "audio2" audio), None
    for no kind."""
    slot = slot_of(track)
    return slot.rstrip("0123456789") if slot else None


def period_start_ms(track: str) -> int:
    """Where a store track's Period starts, in ms (0 for the first Period's plain name)."""
    match = _PERIOD_TRACK.fullmatch(track)
    return int(match.group(2)) if match and match.group(2) else 0


def _shift(rep: Representation, period: Period) -> float:
    """Presentation time minus media time for ``rep`` (seconds)."""
    template = rep.template
    offset = template.presentation_time_offset / template.timescale if template else 0.0
    return period.start - offset


def period_offset(
    rep: Representation, period: Period, first_rep: Representation, first: Period
) -> float:
    """Seconds to add to ``rep``'s media time to place it on ``first_rep``'s media clock."""
    return _shift(rep, period) - _shift(first_rep, first)


def first_timeline(
    slot: str, kind: TrackKind, rep: Representation, period: Period, kept: TrackPlace | None
) -> Timeline:
    """The track ``slot`` a run begins with. It is the recording's first (named by its slot)
    unless the run resumes a recording whose first Period has left the manifest since: then
    this Period is a later one of that recording, named and placed on its clock as such."""
    if kept is None:
        return Timeline(kind, rep, period.start, slot=slot)
    offset = _shift(rep, period) - kept.shift
    name = track_name(slot, period, kept.period_start)
    track = "" if name == slot else name
    return Timeline(kind, rep, period.start, track=track, offset=offset, slot=slot)


def match_representation(
    candidates: Iterable[Representation], wanted: Representation
) -> Representation | None:
    """The representation of a new Period that continues ``wanted``: the same id, else the
    same codecs, resolution and bandwidth, else the best of the same kind."""
    kind = track_kind(wanted)
    same_kind = [rep for rep in candidates if track_kind(rep) == kind]
    for rep in same_kind:
        if rep.id == wanted.id:
            return rep
    for rep in same_kind:
        if (rep.codecs, rep.width, rep.height, rep.bandwidth) == (
            wanted.codecs,
            wanted.width,
            wanted.height,
            wanted.bandwidth,
        ):
            return rep
    ranked = rank(same_kind)
    return ranked[0] if ranked else None


def earlier_periods_left(manifest: Manifest, timelines: Mapping[str, Timeline]) -> float | None:
    """Where the first Period a live manifest lists begins when that is after the broadcast's
    start: the Periods before it have left the manifest, and nothing tells their segments'
    addresses. None when a recording of ``timelines`` reaches the broadcast's start."""
    starts = [t.period_start for t in timelines.values() if not t.track]
    if manifest.type != "dynamic" or not starts or min(starts) < 0.0005:
        return None
    return min(starts)


Listing = tuple[Timeline, list[MediaSegment]]


class PeriodFollower:
    """Finds each recorded track again in a refreshed manifest, Period by Period.

    A Period is known by its id and start, never by its index: the index of a Period moves
    when an earlier one leaves the manifest.
    """

    def __init__(
        self,
        manifest: Manifest,
        timelines: Mapping[str, Timeline],
        kept: Mapping[str, TrackPlace | None],
    ) -> None:
        self._selected = dict(timelines)
        self._first = {
            kind: manifest.periods[timeline.rep.period_index]
            for kind, timeline in timelines.items()
        }
        # The recording's first Period per kind, the one its plain track names hold: its start
        # and shift (presentation minus media time). A resumed run may begin in a later one.
        self._base: dict[str, tuple[float, float]] = {}
        for kind, timeline in timelines.items():
            place = kept.get(kind)
            self._base[kind] = (
                (place.period_start, place.shift)
                if place is not None
                else (timeline.period_start, timeline.seconds(0))
            )
        self._pending: set[str] = set()  # new Periods' tracks waiting for their init

    def _periods(self, snapshot: Snapshot, kind: str) -> Iterator[tuple[Period, str]]:
        first = self._first[kind]
        for period in snapshot.manifest.periods:
            # Periods before the first recorded one are the past: not followed here.
            if period.start >= first.start - 0.0005:
                yield period, track_name(kind, period, self._base[kind][0])

    def listings(self, snapshot: Snapshot, tracks: Mapping[str, Timeline]) -> list[Listing]:
        """Each known track's representation in ``snapshot`` and its listed segments."""
        out: list[Listing] = []
        for kind in self._selected:
            for period, name in self._periods(snapshot, kind):
                timeline = tracks.get(name)
                if timeline is None:
                    continue
                rep = match_representation(period.representations, timeline.rep)
                if rep is None:
                    log.warning("%s: representation %s vanished", name, timeline.rep.id)
                    continue
                timeline.rep = rep
                out.append((timeline, expand_segments(snapshot.manifest, rep, snapshot.now)))
        return out

    def new_tracks(self, snapshot: Snapshot, tracks: Mapping[str, Timeline]) -> list[Listing]:
        """Tracks of Periods met for the first time, with their listed segments."""
        out: list[Listing] = []
        for kind, selected in self._selected.items():
            for period, name in self._periods(snapshot, kind):
                if name in tracks or name in self._pending:
                    continue
                rep = match_representation(period.representations, selected.rep)
                if rep is None:
                    log.warning("the Period at %.3f s has no %s", period.start, kind)
                    continue
                self._pending.add(name)
                offset = _shift(rep, period) - self._base[kind][1]
                timeline = Timeline(
                    selected.kind, rep, period.start, track=name, offset=offset, slot=kind
                )
                out.append((timeline, expand_segments(snapshot.manifest, rep, snapshot.now)))
        return out
