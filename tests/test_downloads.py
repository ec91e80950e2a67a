"""Segments that answered "not yet": which are asked again, and when (downloads.NotYetPublished)."""

from __future__ import annotations

import asyncio

from instarec.downloads import NOT_YET_RETRIES, NotYetPublished
from instarec.segments import SegmentRef, TrackKind


def ref(key: int, track: TrackKind = "video") -> SegmentRef:
    # 0.5 s segments: the shortest wait before a key is asked again.
    return SegmentRef(track, key, f"http://origin.test/{track}/{key}.m4s", None, key / 2, 0.5)


class Asked:
    def __init__(self) -> None:
        self.keys: list[tuple[str, int, int]] = []

    def __call__(self, ref: SegmentRef, retries: int) -> None:
        self.keys.append((ref.track, ref.key, retries))


async def test_only_the_lowest_waiting_key_of_a_track_is_asked_again() -> None:
    asked = Asked()
    not_yet = NotYetPublished(asked)
    for key in (12, 10, 11):
        not_yet.add(ref(key), 0)
    not_yet.add(ref(10, "audio"), 3)
    await asyncio.sleep(0.7)
    assert sorted(asked.keys) == [("audio", 10, 4), ("video", 10, 1)]


async def test_a_recorded_segment_releases_the_keys_below_it_and_the_next_one() -> None:
    asked = Asked()
    not_yet = NotYetPublished(asked)
    for key in (10, 11, 13):
        not_yet.add(ref(key), 2)
    not_yet.recorded("video", 12, newest=True)
    # 10 and 11 lie below a segment on disk: asked at once (a 404 now means missing).
    assert asked.keys == [("video", 10, 3), ("video", 11, 3)]
    await asyncio.sleep(0.05)
    # 13 may be out now that 12 is: asked at the next turn, not a segment length later.
    assert asked.keys[-1] == ("video", 13, 3)


async def test_a_key_that_never_appears_takes_the_keys_above_it_along() -> None:
    asked = Asked()
    not_yet = NotYetPublished(asked)
    not_yet.add(ref(21), 0)
    not_yet.add(ref(20), NOT_YET_RETRIES)
    not_yet.add(ref(19), 0)
    await asyncio.sleep(0.7)
    assert asked.keys == [("video", 19, 1)]  # 21 was dropped with 20


async def test_nothing_is_asked_once_stopped() -> None:
    asked = Asked()
    not_yet = NotYetPublished(asked)
    not_yet.add(ref(5), 0)
    not_yet.stop()
    not_yet.add(ref(6), 0)
    not_yet.recorded("video", 9, newest=True)
    await asyncio.sleep(0.7)
    assert asked.keys == []
