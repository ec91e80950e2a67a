"""Recording whole broadcasts from an origin with real packagers' habits (see docs/packagers.md).

The origin imitates Shaka Packager's moving ``startNumber`` under ``@duration`` and nginx-rtmp's
zero duration for the last sample of every segment (with its first segment named ``$Time$``
0); the recorder, unchanged, must still get every frame from the first one.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from instarec.recorder import record
from instarec.testing.clock import ManualClock
from instarec.testing.media import TestMedia
from instarec.testing.origin import Origin, OriginConfig
from tests.recording import fast_options, inspect, running_clock


async def test_start_number_following_the_window_is_recorded_whole(
    tmp_path: Path, constant_media: TestMedia
) -> None:
    config = OriginConfig(
        shape="number_duration",
        broadcast_duration=90,
        already_broadcast=60,
        window=5,
        start_number_follows_window=True,
        media=constant_media.spec,
    )
    clock = ManualClock()
    output = tmp_path / "shaka.mp4"
    async with Origin(config, clock, media=constant_media) as origin:
        async with running_clock(origin, clock, step=0.5) as driver:
            summary = await record(
                fast_options(origin.manifest_url, output), install_signal_handlers=False
            )
        # The recorder joined with startNumber far from 1: the past was below it.
        assert driver.first_listed is not None and driver.first_listed > 20
        expected = origin.expected_frames(0, origin.segment_count - 1)
        duration = origin.duration

    report = inspect(output)
    assert report.video_frames == expected
    assert report.video_start == pytest.approx(0.0, abs=0.001)
    assert report.video_gaps == ()
    assert report.video_duration == pytest.approx(duration, abs=0.05)
    assert abs(report.audio_duration - report.video_duration) < 0.1
    assert summary.archive_complete
    assert summary.gaps == ()


@pytest.mark.parametrize("offset", [0.0, 0.021], ids=["from-0", "first-named-0"])
async def test_last_sample_duration_zero_is_recorded_whole_without_probing(
    offset: float, tmp_path: Path, test_media: TestMedia
) -> None:
    # 0.021: nginx-rtmp's first video tfdt, while segment 0 is named $Time$ 0.
    config = OriginConfig(
        shape="time",
        broadcast_duration=90,
        already_broadcast=60,
        window=5,
        timeline_offset=offset,
        last_sample_duration_zero=True,
        media=test_media.spec,
    )
    clock = ManualClock()
    output = tmp_path / "nginx.mp4"
    async with Origin(config, clock, media=test_media) as origin:
        async with running_clock(origin, clock, step=0.5) as driver:
            summary = await record(
                fast_options(origin.manifest_url, output), install_signal_handlers=False
            )
        assert driver.first_listed is not None and driver.first_listed > 20
        expected = origin.expected_frames(0, origin.segment_count - 1)
        duration = origin.duration
        heads = [r for r in origin.request_log if r.method == "HEAD"]

    report = inspect(output)
    assert report.video_frames == expected
    # The merge moves the earliest track to 0, whatever the media's first time.
    assert report.video_start == pytest.approx(0.0, abs=0.001)
    assert report.video_gaps == ()
    assert report.video_duration == pytest.approx(duration, abs=0.05)
    assert abs(report.audio_duration - report.video_duration) < 0.1
    assert summary.archive_complete
    assert summary.gaps == ()
    # tfdt + durations, the trailing zero read as one more sample, names every next segment.
    assert heads == [], [(r.path, r.status) for r in heads]
