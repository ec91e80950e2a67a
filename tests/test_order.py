"""Which recorded segments a stream watched while recording may take next (order.py)."""

from __future__ import annotations

from pathlib import Path

from instarec.order import Settling, TrackCursor
from instarec.store import StoredSegment


def seg(key: int, start: float, duration: float = 2.0) -> StoredSegment:
    return StoredSegment("video", key, start, duration, 1000, None, None, Path(f"{key}.m4s"))


def settling(
    *,
    searching: bool = False,
    pending: tuple[int, ...] = (),
    missing: tuple[int, ...] = (),
    first: int | None = None,
    over: bool = False,
) -> Settling:
    return Settling(searching, pending, missing, first, over)


def keys(segments: list[StoredSegment]) -> list[int]:
    return [s.key for s in segments]


def test_contiguous_segments_go_in_order_and_each_once() -> None:
    cursor = TrackCursor("video")
    stored = [seg(1, 0.0), seg(2, 2.0), seg(3, 4.0)]
    assert keys(cursor.ready(stored, settling())) == [1, 2, 3]
    assert cursor.ready(stored, settling()) == []
    assert keys(cursor.ready([*stored, seg(4, 6.0)], settling())) == [4]


def test_a_download_in_flight_holds_what_follows_it() -> None:
    cursor = TrackCursor("video")
    stored = [seg(1, 0.0), seg(3, 4.0)]
    assert keys(cursor.ready(stored, settling(pending=(2,)))) == [1]
    assert cursor.ready(stored, settling(pending=(2,))) == []
    # Pending keys beyond what is stored hold nothing back.
    stored = [seg(1, 0.0), seg(2, 2.0), seg(3, 4.0)]
    assert keys(cursor.ready(stored, settling(pending=(4, 5)))) == [2, 3]


def test_a_hole_waits_while_the_search_may_fill_it_then_goes_on() -> None:
    cursor = TrackCursor("video")
    stored = [seg(10, 0.0), seg(20, 10.0)]  # $Time$-like keys: a hole from 2 s to 10 s
    assert keys(cursor.ready(stored, settling(searching=True, first=10))) == [10]
    assert cursor.ready(stored, settling(searching=True, first=10)) == []
    assert keys(cursor.ready(stored, settling(searching=False))) == [20]


def test_a_hole_of_lost_segments_is_final_at_once() -> None:
    cursor = TrackCursor("video")
    stored = [seg(1, 0.0), seg(4, 6.0)]
    assert keys(cursor.ready(stored, settling(searching=True, missing=(2, 3), first=1))) == [1, 4]


def test_the_first_segment_waits_for_the_past_to_be_found() -> None:
    cursor = TrackCursor("video")
    live = [seg(50, 100.0), seg(51, 102.0)]
    # The live edge is on disk; past recovery has not found the broadcast's start yet.
    assert cursor.ready(live, settling(searching=True)) == []
    # It found segment 1: the stream starts there, the live edge waits its turn.
    assert cursor.ready(live, settling(searching=True, first=1)) == []
    past = [seg(1, 0.0), seg(2, 2.0)]
    assert keys(cursor.ready(past + live, settling(searching=True, first=1))) == [1, 2]
    assert keys(cursor.ready(past + live, settling(searching=False))) == [50, 51]


def test_over_takes_everything_left_in_order() -> None:
    cursor = TrackCursor("video")
    stored = [seg(1, 0.0), seg(3, 4.0), seg(7, 12.0)]
    assert keys(cursor.ready(stored, settling(searching=True, pending=(2,)))) == []
    assert keys(cursor.ready(stored, settling(searching=True, pending=(2,), over=True))) == [
        1,
        3,
        7,
    ]


def test_a_segment_older_than_the_last_fed_is_never_fed() -> None:
    cursor = TrackCursor("video")
    assert keys(cursor.ready([seg(5, 8.0)], settling())) == [5]
    assert cursor.ready([seg(4, 6.0), seg(5, 8.0)], settling(over=True)) == []


def test_a_short_odd_join_counts_as_contiguous() -> None:
    # A packager's last sample of odd length: a few ms between segments is no hole.
    cursor = TrackCursor("video")
    stored = [seg(1, 0.0, 1.99), seg(2, 2.0), seg(3, 4.02)]
    assert keys(cursor.ready(stored, settling(searching=True, first=1))) == [1, 2, 3]
