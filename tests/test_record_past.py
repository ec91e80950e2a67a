"""Recording from the broadcast's first frame: past recovery while the live edge is followed."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from instarec.recorder import record
from instarec.testing.clock import ManualClock
from instarec.testing.media import TestMedia
from instarec.testing.origin import Origin, OriginConfig
from tests.recording import fast_options, inspect, media_for_shape, running_clock

SHAPES = ["instagram", "time", "number_timeline", "number_duration"]


@pytest.mark.parametrize("shape", SHAPES)
async def test_ten_minute_broadcast_begun_eight_minutes_ago_is_recorded_whole(
    shape: str, tmp_path: Path, test_media: TestMedia, constant_media: TestMedia
) -> None:
    media = media_for_shape(shape, test_media, constant_media)
    config = OriginConfig(
        shape=shape, broadcast_duration=600, already_broadcast=480, window=5, media=media.spec
    )
    clock = ManualClock()
    output = tmp_path / "whole.mp4"
    async with Origin(config, clock, media=media) as origin:
        async with running_clock(origin, clock, step=1.0) as driver:
            summary = await record(
                fast_options(origin.manifest_url, output), install_signal_handlers=False
            )
        assert driver.first_listed is not None and driver.first_listed > 200
        expected = origin.expected_frames(0, origin.segment_count - 1)
        duration = origin.duration
        heads = origin.stats.count(method="HEAD")

    report = inspect(output)
    assert report.video_frames == expected
    assert report.video_start == pytest.approx(0.0, abs=0.001)
    assert report.video_gaps == ()
    assert report.video_duration == pytest.approx(duration, abs=0.05)
    assert abs(report.audio_duration - report.video_duration) < 0.1
    assert summary.archive_start == pytest.approx(0.0, abs=0.001)
    assert summary.archive_complete
    assert summary.gaps == ()
    if shape in ("instagram", "time"):
        # The $Time$ chains walk the media itself: only their seeds probe (four minutes of
        # past and more are split between chains, one per minute or two).
        assert heads <= 300


@pytest.mark.parametrize("shape", ["instagram", "number_timeline"])
async def test_configured_gaps_are_exactly_the_reported_gaps(
    shape: str, tmp_path: Path, test_media: TestMedia
) -> None:
    gaps = {3, 40, 41, 118}  # 118 is listed in the window at the start; the rest are past
    config = OriginConfig(
        shape=shape,
        broadcast_duration=300,
        already_broadcast=250,
        window=5,
        gaps=gaps,
        media=test_media.spec,
    )
    clock = ManualClock()
    output = tmp_path / "gaps.mkv"
    async with Origin(config, clock, media=test_media) as origin:
        async with running_clock(origin, clock, step=1.0):
            summary = await record(
                fast_options(origin.manifest_url, output), install_signal_handlers=False
            )
        expected = origin.expected_frames(0, origin.segment_count - 1)
        holes = [(origin.segment_start(i), origin.segment_end(i)) for i in sorted(gaps)]

    report = inspect(output)
    assert report.video_frames == expected
    # 40 and 41 are adjacent: one hole in the file, three in all.
    assert len(report.video_gaps) == 3
    video_gaps = sorted(
        (round(g.start, 2), round(g.end or -1, 2)) for g in summary.gaps if g.track == "video"
    )
    merged = [(round(holes[0][0], 2), round(holes[0][1], 2))]
    merged.append((round(holes[1][0], 2), round(holes[2][1], 2)))
    merged.append((round(holes[3][0], 2), round(holes[3][1], 2)))
    # Each reported range covers exactly the lost segments (adjacent losses may be one range).
    covered = sorted({(a, b) for a, b in video_gaps})
    assert _union(covered) == merged, (summary.gaps, merged)
    assert {g.track for g in summary.gaps} == {"video", "audio"}


def _union(ranges: list[tuple[float, float]]) -> list[tuple[float, float]]:
    merged: list[tuple[float, float]] = []
    for start, end in sorted(ranges):
        if merged and abs(merged[-1][1] - start) < 0.02:
            merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged


@pytest.mark.parametrize("shape", ["instagram", "number_duration"])
async def test_limited_retention_starts_at_the_oldest_retained_segment(
    shape: str, tmp_path: Path, test_media: TestMedia, constant_media: TestMedia
) -> None:
    media = media_for_shape(shape, test_media, constant_media)
    config = OriginConfig(
        shape=shape,
        broadcast_duration=260,
        already_broadcast=240,
        window=5,
        retention=60,
        media=media.spec,
    )
    clock = ManualClock()
    output = tmp_path / "retained.mp4"
    async with Origin(config, clock, media=media) as origin:
        oldest_at_start = origin.retained_segments()[0]
        async with running_clock(origin, clock, step=0.1, every=0.01):
            summary = await record(
                fast_options(origin.manifest_url, output), install_signal_handlers=False
            )
        assert summary.archive_start is not None
        first = origin.media.index_at(summary.archive_start + 0.001)
        expected = origin.expected_frames(first, origin.segment_count - 1)

    # Retention moves on while the search runs: the start is the oldest segment still there
    # when it was found, a few segments after the oldest one at the start at most.
    assert oldest_at_start <= first <= oldest_at_start + 4
    assert not summary.archive_complete
    report = inspect(output)
    assert report.video_frames == expected
    assert report.video_gaps == ()
    assert summary.gaps == ()


async def test_long_archive_is_split_between_seeded_chains(
    tmp_path: Path, test_media: TestMedia
) -> None:
    # 25 minutes of past: long enough for several chains, each seeded by a short search.
    gaps = {1, 300, 301, 640}
    config = OriginConfig(
        shape="instagram",
        broadcast_duration=1520,
        already_broadcast=1500,
        window=5,
        gaps=gaps,
        media=test_media.spec,
    )
    clock = ManualClock()
    output = tmp_path / "long.mkv"
    async with Origin(config, clock, media=test_media) as origin:
        async with running_clock(origin, clock, step=0.05, every=0.01) as driver:
            summary = await record(
                fast_options(origin.manifest_url, output), install_signal_handlers=False
            )
        expected = origin.expected_frames(0, origin.segment_count - 1)
        heads = origin.stats.count(method="HEAD")
        assert origin.request_log_dropped == 0
        first_gets = list(
            dict.fromkeys(
                r.index
                for r in origin.request_log
                if r.method == "GET" and r.kind == "media" and r.track == "video"
            )
        )
        first_listed = driver.first_listed
        holes = [(origin.segment_start(i), origin.segment_end(i)) for i in sorted(gaps)]

    report = inspect(output)
    assert report.video_frames == expected
    assert len(report.video_gaps) == 3
    video = sorted(
        (round(g.start, 2), round(g.end or -1, 2)) for g in summary.gaps if g.track == "video"
    )
    assert video == [
        (round(holes[0][0], 2), round(holes[0][1], 2)),
        (round(holes[1][0], 2), round(holes[2][1], 2)),
        (round(holes[3][0], 2), round(holes[3][1], 2)),
    ]
    # Seeds and gap searches probe; a whole-range search would cost thousands.
    assert 0 < heads < 2000
    # One chain asks for the past in order, one segment after the other; each further chain
    # starts far above what the chains before it have asked for so far.
    assert first_listed is not None
    past = [i for i in first_gets if i is not None and i < first_listed]
    chain_starts = [b for a, b in itertools.pairwise(past) if b - a > 50]
    assert len(chain_starts) >= 2, past[:40]


@pytest.mark.parametrize("shape", ["time", "static"])
async def test_finished_broadcast_static_manifest_is_recorded_whole(
    shape: str, tmp_path: Path, test_media: TestMedia
) -> None:
    # "time" after its end: a static manifest that still lists only its last window, while
    # the server keeps every segment. "static": a VOD manifest listing everything.
    config = OriginConfig(
        shape=shape, broadcast_duration=120, already_broadcast=125, media=test_media.spec
    )
    output = tmp_path / "finished.mp4"
    async with Origin(config, ManualClock(), media=test_media) as origin:
        summary = await record(
            fast_options(origin.manifest_url, output), install_signal_handlers=False
        )
        expected = origin.expected_frames(0, origin.segment_count - 1)

    assert summary.end_reason == "the manifest became static"
    report = inspect(output)
    assert report.video_frames == expected
    assert report.video_gaps == ()
