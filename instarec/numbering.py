"""Which number holds which time under ``SegmentTemplate@duration``.

The standard numbers the segment at the presentation time offset ``startNumber``; some
packagers (Shaka Packager's constant-duration template) move ``startNumber`` with their window
while the files keep the numbers they got from the broadcast's start, so every number computed
from the manifest runs ahead of what exists. One segment's ``tfdt`` tells which numbering the
media follows.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace

from instarec.errors import NetworkError
from instarec.manifest import Addressing, Manifest, MediaSegment
from instarec.mp4 import FragmentInfo
from instarec.segments import SegmentRef
from instarec.selection import plain_text
from instarec.timeline import Timeline

log = logging.getLogger(__name__)

Inspect = Callable[[SegmentRef], Awaitable[FragmentInfo | None]]


async def calibrate_numbers(
    inspect: Inspect,
    manifest: Manifest,
    timelines: Mapping[str, Timeline],
    listing: dict[str, list[MediaSegment]],
) -> None:
    """Learn from the media which number holds which time, for each @duration track.

    When the first listed number is not there, the segment numbered ``startNumber`` tells by
    its tfdt which number holds which time; that numbering (``Timeline.number_base``) is taken
    only once the window's first segment answers under it, and ``listing`` (the first
    manifest's segments by representation id) is renumbered.
    """
    if not manifest.is_dynamic:
        return
    for timeline in timelines.values():
        template = timeline.rep.template
        segments = listing.get(timeline.rep.id)
        if (
            timeline.rep.addressing is not Addressing.NUMBER_DURATION
            or plain_text(timeline.rep)  # no tfdt to tell a number's time
            or template is None
            or not template.duration
            or not segments
            or segments[0].number is None
            or segments[0].number == template.start_number
        ):
            continue
        if await _fetched(inspect, timeline, segments[0].number) is not None:
            continue  # the manifest's numbers name what exists
        found = await _fetched(inspect, timeline, template.start_number)
        base = _number_base(timeline, template.start_number, found)
        if base is None or base == template.start_number:
            continue
        timeline.number_base = base
        numbered = renumbered(timeline, segments)
        if await _fetched(inspect, timeline, numbered[0].number or 0) is None:
            timeline.number_base = None  # no better: keep the manifest's numbers
            continue
        log.info(
            "%s: the media numbers segments from %d at time 0, not from startNumber %d",
            timeline.name,
            base,
            template.start_number,
        )
        listing[timeline.rep.id] = numbered


def renumbered(timeline: Timeline, segments: list[MediaSegment]) -> list[MediaSegment]:
    """Listed @duration segments under the numbering the media showed."""
    template = timeline.rep.template
    base = timeline.number_base
    if (
        base is None
        or template is None
        or not template.duration
        or timeline.rep.addressing is not Addressing.NUMBER_DURATION
    ):
        return segments
    result = []
    for segment in segments:
        if segment.time is None:
            return segments
        index = int((segment.time - template.presentation_time_offset) // template.duration)
        number = base + index
        url = timeline.rep.media_url(number=number)
        result.append(replace(segment, number=number, url=url))
    return result


async def _fetched(inspect: Inspect, timeline: Timeline, number: int) -> FragmentInfo | None:
    """Download segment ``number`` now; its timing, or None if it is not there (yet)."""
    try:
        return await inspect(timeline.number_ref(number, "live"))
    except NetworkError as exc:
        log.debug("%s: segment %d gave no answer: %s", timeline.name, number, exc)
        return None


def _number_base(timeline: Timeline, number: int, info: FragmentInfo | None) -> int | None:
    """The number of the segment at the presentation time offset, by ``info``'s tfdt."""
    template = timeline.rep.template
    if info is None or info.base_media_decode_time is None or timeline.init is None:
        return None
    assert template is not None and template.duration
    ticks = info.base_media_decode_time * template.timescale / timeline.init.timescale
    index = round((ticks - template.presentation_time_offset) / template.duration)
    return number - index
