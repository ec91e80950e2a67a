"""A Period's segments that no listing named, reached anyway.

A manifest that could not be refreshed for a while (an outage, a stalled CDN) may skip a
Period's edges: its head, when a new Period is first seen after its first segments left the
window; its tail, when the Period left the manifest before its last segments were listed.
The server still has them. A ``$Time$`` track chains to them through the media; a numbered
one asks for the numbers between, as many as the time between holds.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Coroutine, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from instarec.archive import Presence
from instarec.manifest import Addressing, Manifest, MediaSegment
from instarec.recovery import TimeChains
from instarec.segments import SegmentRef
from instarec.timeline import Timeline

__all__ = ["EdgeAccess", "PeriodTail", "head_work", "period_tails", "tail_work"]

log = logging.getLogger(__name__)

_SAME_START = 0.0005  # seconds: Period starts closer than this are one Period

Work = Coroutine[Any, Any, None]


class EdgeAccess(Protocol):
    """What reaching a Period's edges needs of the recording."""

    chains: TimeChains

    def offer(self, ref: SegmentRef) -> bool: ...

    async def probe(self, url: str) -> Presence: ...


def head_work(access: EdgeAccess, timeline: Timeline, segments: list[MediaSegment]) -> Work | None:
    """The work that fetches a new Period's segments before the first one listed, back to the
    Period's start (None: the listing starts there)."""
    template = timeline.rep.template
    first = segments[0] if segments else None
    if first is None or first.time is None or template is None:
        return None
    before = first.time - template.presentation_time_offset
    if before <= _slack(timeline):
        return None
    log.info("%s: the new Period's first segments left the window: reaching them", timeline.name)
    if timeline.rep.addressing is Addressing.TIME_TIMELINE:
        start = template.presentation_time_offset
        access.chains.lower_floor(timeline, start)
        return access.chains.fill_hole(timeline, start)
    if first.number is None:
        return None
    # startNumber often moves with the window: the numbers before the first listed one are
    # asked for, back to the Period's start, as long as the server has them.
    count = math.ceil(before / timeline.typical_ticks) + 1
    return _numbers_before(access, timeline, first.number, count)


async def _numbers_before(access: EdgeAccess, timeline: Timeline, first: int, count: int) -> None:
    for number in range(first - 1, max(first - 1 - count, -1), -1):
        ref = timeline.number_ref(number, "live")
        if await access.probe(ref.url) is Presence.ABSENT:
            return
        timeline.lower_floor(number)
        access.offer(ref)


@dataclass(frozen=True, slots=True)
class PeriodTail:
    """A track whose Period left the manifest: its segments end where the next Period starts."""

    timeline: Timeline
    end: float  # presentation seconds


def period_tails(
    manifest: Manifest, tracks: Mapping[str, Timeline], chased: set[str]
) -> Iterator[PeriodTail]:
    """The tracks of ``tracks`` whose Period ``manifest`` no longer lists though a later one is
    listed, each once (``chased`` keeps their names)."""
    starts = [period.start for period in manifest.periods]
    for name, timeline in tracks.items():
        if name in chased or any(abs(s - timeline.period_start) < _SAME_START for s in starts):
            continue
        later = [s for s in starts if s > timeline.period_start + _SAME_START]
        if later:
            chased.add(name)
            yield PeriodTail(timeline, min(later))


def tail_work(access: EdgeAccess, tail: PeriodTail) -> Work | None:
    """The work that fetches the segments of ``tail`` after the last one listed (None: none
    are missing)."""
    timeline = tail.timeline
    end = math.floor(timeline.ticks(tail.end))
    if timeline.rep.addressing is Addressing.TIME_TIMELINE:
        start = timeline.listed_end
        if start is None or end - start <= _slack(timeline):
            return None
        log.info(
            "%s: its Period left the manifest before its end was listed: chaining", timeline.name
        )
        return access.chains.fill_hole(timeline, start, end)
    last, until = timeline.listed_max_number, timeline.listed_until
    if last is None or until is None:
        return None
    missing = end - timeline.ticks(until)
    if missing <= _slack(timeline):
        return None
    log.info(
        "%s: its Period left the manifest before its end was listed: asking for it", timeline.name
    )
    return _numbers_after(access, timeline, last, round(missing / timeline.typical_ticks))


async def _numbers_after(access: EdgeAccess, timeline: Timeline, last: int, count: int) -> None:
    # One number more than the time holds: the Period's last segment may be a short one.
    for number in range(last + 1, last + count + 2):
        ref = timeline.number_ref(number, "live")
        presence = await access.probe(ref.url)
        if presence is Presence.PRESENT or (
            presence is Presence.UNKNOWN and number <= last + count
        ):
            access.offer(ref)


def _slack(timeline: Timeline) -> float:
    """Ticks of a Period's edge that hold no segment: less than a frame."""
    return timeline.frame or timeline.typical_ticks / 50
