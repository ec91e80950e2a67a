"""The pure side of long broadcasts: DURATION and SIZE as typed (units.py), and the cut of a
recording into parts (parts.py)."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from instarec.parts import Part, SplitLimits, part_number, part_output, plan_parts
from instarec.units import format_span, parse_duration, parse_size

# --- DURATION --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90", 90.0),
        ("90s", 90.0),
        ("2m", 120.0),
        ("1h30m", 5400.0),
        ("1h", 3600.0),
        ("2m30s", 150.0),
        ("1.5h", 5400.0),
        ("0.5s", 0.5),
        ("1:30", 90.0),  # minutes:seconds, as ffmpeg's -t reads it
        ("01:30:00", 5400.0),
        ("1:00:00.5", 3600.5),
        (" 1H30M ", 5400.0),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "expected a duration"),
        ("1h30", "expected a duration"),  # 1h30m or 1h0m30s? Not guessed.
        ("90 minutes", "expected a duration"),
        ("500ms", "expected a duration"),
        ("-5", "expected a duration"),
        ("1:75", "expected a duration"),
        ("1:60:00", "expected a duration"),
        ("1e3", "expected a duration"),
        ("nan", "expected a duration"),
        ("0", "longer than 0"),
        ("0:00", "longer than 0"),
        ("9" * 400, "out of range"),
    ],
)
def test_bad_durations_say_what_is_expected(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_duration(text)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(5400, "1h30m"), (90, "1m30s"), (45, "45s"), (3600, "1h"), (120, "2m"), (2.5, "2.5s")],
)
def test_spans_are_written_as_typed(seconds: float, text: str) -> None:
    assert format_span(seconds) == text
    assert parse_duration(text) == seconds


# --- SIZE ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("2GB", 2_000_000_000),
        ("700M", 700_000_000),
        ("1.5G", 1_500_000_000),
        ("10kB", 10_000),
        ("10 KB", 10_000),
        ("500MiB", 500 * 1024**2),
        ("2GiB", 2 * 1024**3),
        ("64KiB", 64 * 1024),
        ("1TB", 10**12),
        ("4096", 4096),
        ("4096B", 4096),
        ("1.5KiB", 1536),
    ],
)
def test_sizes(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "expected a size"),
        ("2XB", "expected a size"),
        ("-1G", "expected a size"),
        ("G", "expected a size"),
        ("2 gigabytes", "expected a size"),
        ("0", "at least 1 byte"),
        ("0.5", "at least 1 byte"),
        ("9" * 400, "out of range"),
    ],
)
def test_bad_sizes_say_what_is_expected(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_size(text)


# --- the cut ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Seg:
    name: str
    start: float
    duration: float | None
    size: int = 100


def video(*starts: float, length: float = 2.0, size: int = 100) -> list[Seg]:
    return [Seg(f"v{start:g}", start, length, size) for start in starts]


def audio_like(segments: list[Seg], shift: float, size: int = 10) -> list[Seg]:
    """Audio cut at the video's edges, ``shift`` seconds off them (the audio frame grid)."""
    return [Seg(f"a{s.start:g}", s.start + shift, s.duration, size) for s in segments]


def names(part: Part[Seg], kind: str) -> list[str]:
    return [s.name for s in part.segments(kind)]


def test_cuts_by_duration_at_video_segment_starts() -> None:
    v = video(*range(0, 20, 2))
    parts = plan_parts({"video": v}, "video", SplitLimits(duration=6))
    assert [names(p, "video") for p in parts] == [
        ["v0", "v2", "v4"],
        ["v6", "v8", "v10"],
        ["v12", "v14", "v16"],
        ["v18"],
    ]
    assert [(p.number, p.start, p.duration, p.size) for p in parts] == [
        (1, 0, 6, 300),
        (2, 6, 6, 300),
        (3, 12, 6, 300),
        (4, 18, 2, 100),
    ]


@pytest.mark.parametrize("shift", [-0.006, 0.0, 0.021])
def test_audio_cut_near_the_video_edges_stays_with_its_video(shift: float) -> None:
    # Whether the audio segment starts a few ms before, with or after the video's, it goes
    # with the video segment it lies beside: each part's audio spans its video.
    v = video(*range(0, 12, 2))
    a = audio_like(v, shift)
    parts = plan_parts({"video": v, "audio": a}, "video", SplitLimits(duration=4))
    assert [names(p, "audio") for p in parts] == [["a0", "a2"], ["a4", "a6"], ["a8", "a10"]]
    for part in parts:
        video_span = (part.segments("video")[0].start, part.segments("video")[-1].start + 2)
        audio_span = (part.segments("audio")[0].start, part.segments("audio")[-1].start + 2)
        assert audio_span == pytest.approx((video_span[0] + shift, video_span[1] + shift))


def test_a_segment_straddling_a_cut_goes_whole_to_the_part_holding_most_of_it() -> None:
    v = video(0, 2, 4, 6)
    a = [Seg("a0", 0.0, 1.5, 1), Seg("a1.5", 1.5, 1.4, 1), Seg("a2.9", 2.9, 1.2, 1)]
    a += [Seg("a4.1", 4.1, 3.0, 1)]
    parts = plan_parts({"video": v, "audio": a}, "video", SplitLimits(duration=2))
    # a1.5 starts before the cut at 2 and lies mostly after it (its middle is 2.2).
    assert [names(p, "audio") for p in parts] == [["a0"], ["a1.5", "a2.9"], ["a4.1"], []]


def test_segments_before_the_first_cut_and_after_the_last_are_kept() -> None:
    v = video(10, 12, 14)
    a = [Seg("early", 7.0, 2.0, 1), *audio_like(v, 0.0), Seg("late", 17.0, 2.0, 1)]
    parts = plan_parts({"video": v, "audio": a}, "video", SplitLimits(duration=4))
    assert [names(p, "audio") for p in parts] == [["early", "a10", "a12"], ["a14", "late"]]
    assert (parts[0].start, parts[0].end) == (7.0, 14.0)
    assert (parts[1].start, parts[1].end) == (14.0, 19.0)


def test_a_hole_counts_as_the_time_it_spans() -> None:
    v = video(0, 2, 4, 8, 10)  # the segment at 6 was lost
    parts = plan_parts({"video": v}, "video", SplitLimits(duration=6))
    assert [names(p, "video") for p in parts] == [["v0", "v2"], ["v4", "v8"], ["v10"]]


def test_cuts_by_size_before_the_segment_that_would_exceed_it() -> None:
    v = [Seg(f"v{i}", 2.0 * i, 2.0, size) for i, size in enumerate([40, 30, 20, 50, 10, 10])]
    a = [Seg(f"a{i}", s.start + 0.01, 2.0, 5) for i, s in enumerate(v)]
    parts = plan_parts({"video": v, "audio": a}, "video", SplitLimits(size=100))
    # With its audio, each video segment brings 5 bytes more: 45, 35, 25, 55, 15, 15.
    assert [names(p, "video") for p in parts] == [["v0", "v1"], ["v2", "v3", "v4"], ["v5"]]
    assert [names(p, "audio") for p in parts] == [["a0", "a1"], ["a2", "a3", "a4"], ["a5"]]
    assert [p.size for p in parts] == [80, 95, 15]
    # Exactly at the limit is within it; one byte less is not.
    exact = plan_parts({"video": v}, "video", SplitLimits(size=90))
    assert names(exact[0], "video") == ["v0", "v1", "v2"]
    below = plan_parts({"video": v}, "video", SplitLimits(size=89))
    assert names(below[0], "video") == ["v0", "v1"]


def test_a_segment_bigger_than_the_size_is_a_part_of_its_own() -> None:
    v = [Seg("small", 0.0, 2.0, 10), Seg("huge", 2.0, 2.0, 500), Seg("after", 4.0, 2.0, 10)]
    parts = plan_parts({"video": v}, "video", SplitLimits(size=100))
    assert [names(p, "video") for p in parts] == [["small"], ["huge"], ["after"]]


def test_with_both_limits_the_first_one_reached_cuts() -> None:
    v = [Seg(f"v{i}", 2.0 * i, 2.0, 10 if i < 6 else 100) for i in range(10)]
    parts = plan_parts({"video": v}, "video", SplitLimits(duration=6, size=150))
    # Three cheap segments hit the duration; then the size cuts before 6 s.
    assert [len(p.segments("video")) for p in parts] == [3, 3, 1, 1, 1, 1]


def test_without_limits_or_without_a_lead_segment_everything_is_one_part() -> None:
    v = video(0, 2, 4)
    a = audio_like(v, 0.0)
    assert [names(p, "video") for p in plan_parts({"video": v}, "video", SplitLimits())] == [
        ["v0", "v2", "v4"]
    ]
    only_audio = plan_parts({"video": [], "audio": a}, "video", SplitLimits(duration=2))
    assert [names(p, "audio") for p in only_audio] == [["a0", "a2", "a4"]]
    assert plan_parts({"video": [], "audio": []}, "video", SplitLimits(duration=2)) == []


def test_audio_leads_an_audio_only_recording() -> None:
    a = audio_like(video(0, 2, 4, 6), 0.0)
    parts = plan_parts({"audio": a}, "audio", SplitLimits(duration=4))
    assert [names(p, "audio") for p in parts] == [["a0", "a2"], ["a4", "a6"]]


segment_lengths = st.lists(st.floats(0.5, 3.0), min_size=1, max_size=40)


@given(
    lengths=segment_lengths,
    shifts=st.lists(st.floats(-0.2, 0.2), min_size=40, max_size=40),
    sizes=st.lists(st.integers(1, 1000), min_size=40, max_size=40),
    limit_duration=st.one_of(st.none(), st.floats(1.0, 20.0)),
    limit_size=st.one_of(st.none(), st.integers(1, 5000)),
)
def test_every_segment_is_in_one_part_and_parts_keep_their_limits(
    lengths: list[float],
    shifts: list[float],
    sizes: list[int],
    limit_duration: float | None,
    limit_size: int | None,
) -> None:
    starts = list(itertools.accumulate([0.0, *lengths[:-1]]))
    v = [Seg(f"v{i}", s, d, sizes[i]) for i, (s, d) in enumerate(zip(starts, lengths, strict=True))]
    a = [Seg(f"a{i}", s.start + shifts[i], s.duration, 7) for i, s in enumerate(v)]
    limits = SplitLimits(limit_duration, limit_size)
    parts = plan_parts({"video": v, "audio": a}, "video", limits)

    assert [p.number for p in parts] == list(range(1, len(parts) + 1))
    assert [s for p in parts for s in p.segments("video")] == v
    assert [s for p in parts for s in p.segments("audio")] == a
    for part in parts:
        alone = len(part.segments("video")) == 1
        lead = part.segments("video")
        if limit_duration is not None and not alone:
            assert (
                lead[-1].start + (lead[-1].duration or 0) - lead[0].start <= limit_duration + 1e-3
            )
        if limit_size is not None and not alone:
            assert part.size <= limit_size
        assert part.size == sum(s.size for _, segments in part.tracks for s in segments)
    for before, after in itertools.pairwise(parts):
        # Cut only where the next lead segment would break a limit.
        first, *following = after.segments("video")
        span = first.start + (first.duration or 0) - before.segments("video")[0].start
        slot_end = following[0].start if following else math.inf
        slot = [first, *(s for s in after.segments("audio") if middle(s) < slot_end)]
        size = before.size + sum(s.size for s in slot)
        assert (limit_duration is not None and span > limit_duration) or (
            limit_size is not None and size > limit_size
        )


def middle(segment: Seg) -> float:
    return segment.start + (segment.duration or 0) / 2


# --- names -----------------------------------------------------------------------------------


def test_part_names() -> None:
    output = Path("/rec/broadcast.mp4")
    assert part_output(output, 1) == Path("/rec/broadcast.001.mp4")
    assert part_output(output, 1234) == Path("/rec/broadcast.1234.mp4")
    assert part_number(output, Path("/rec/broadcast.007.mp4")) == 7
    assert part_number(output, Path("/rec/broadcast.1234.mp4")) == 1234
    for other in (
        "/rec/broadcast.mp4",
        "/rec/broadcast.07.mp4",
        "/rec/broadcast.001.part.mp4",  # ffmpeg still writing it
        "/rec/broadcast.001.mkv",
        "/rec/other.001.mp4",
        "/elsewhere/broadcast.001.mp4",
        "/rec/broadcastX001.mp4",
    ):
        assert part_number(output, Path(other)) is None, other
