"""Recording live streams end to end on the simulated origin, checked with PyAV."""

from __future__ import annotations

from pathlib import Path

import pytest

from instarec.recorder import record
from instarec.testing.clock import ManualClock
from instarec.testing.faults import FaultConfig
from instarec.testing.media import MediaSpec, TestMedia, generate_media
from instarec.testing.origin import Origin, OriginConfig
from tests.recording import fast_options, inspect, media_for_shape, running_clock

LIVE_SHAPES = ["instagram", "time", "number_timeline", "number_duration"]


@pytest.mark.parametrize("shape", LIVE_SHAPES)
async def test_live_recording_has_every_frame_broadcast_while_recording(
    shape: str, tmp_path: Path, test_media: TestMedia, constant_media: TestMedia
) -> None:
    media = media_for_shape(shape, test_media, constant_media)
    config = OriginConfig(
        shape=shape, broadcast_duration=90, already_broadcast=20, window=5, media=media.spec
    )
    clock = ManualClock()
    output = tmp_path / "live.mp4"
    async with Origin(config, clock, media=media) as origin:
        async with running_clock(origin, clock) as driver:
            summary = await record(
                fast_options(origin.manifest_url, output, no_past=True),
                install_signal_handlers=False,
            )
        last = origin.segment_count - 1
        first_listed = driver.first_listed
        assert first_listed is not None
        # A $Number$+@duration client computes its window from timeShiftBufferDepth and may
        # start a segment or two before what the origin counts as listed; never after it.
        recorded_start = summary.tracks[0].start
        assert recorded_start is not None
        first = origin.media.index_at(recorded_start + 0.001)
        assert first_listed - 2 <= first <= first_listed
        expected = origin.expected_frames(first, last)
        first_start = origin.segment_start(first)
        broadcast_end = origin.segment_end(last)

    report = inspect(output)
    assert report.video_frames == expected
    assert report.video_gaps == ()
    assert report.video_duration == pytest.approx(broadcast_end - first_start, abs=0.05)
    assert abs(report.audio_duration - report.video_duration) < 0.1
    assert summary.output == output
    assert summary.duration == pytest.approx(report.video_duration, abs=0.1)
    assert summary.gaps == ()
    assert not summary.segments_dir.exists()  # removed after a successful merge


async def test_missing_segments_stay_timestamp_gaps(tmp_path: Path, test_media: TestMedia) -> None:
    gaps = {14, 15}
    config = OriginConfig(
        shape="time", broadcast_duration=60, already_broadcast=20, window=5, gaps=gaps
    )
    clock = ManualClock()
    output = tmp_path / "gaps.mkv"
    async with Origin(config, clock, media=test_media) as origin:
        async with running_clock(origin, clock) as driver:
            summary = await record(
                fast_options(origin.manifest_url, output, no_past=True),
                install_signal_handlers=False,
            )
        first_listed = driver.first_listed
        assert first_listed is not None
        expected = origin.expected_frames(first_listed, origin.segment_count - 1)
        hole_start = origin.segment_start(14)
        hole_length = origin.segment_end(15) - hole_start
        first_start = origin.segment_start(first_listed)
        assert test_media.audio is not None
        audio_hole_start = origin.segment_key("audio", 14) / test_media.audio.timescale

    report = inspect(output)
    assert report.video_frames == expected
    assert len(report.video_gaps) == 1
    at, jump = report.video_gaps[0]
    frame = report.frame_duration or 0.0
    # The file starts at 0: compare positions relative to the first recorded segment.
    assert at + frame == pytest.approx(hole_start - first_start, abs=0.02)
    assert jump == pytest.approx(hole_length + frame, abs=0.02)
    # Each track's hole starts where that track's segment 14 starts: audio segments sit on the
    # audio frame grid, a few milliseconds off the video's.
    reported = sorted((g.track, round(g.start, 3)) for g in summary.gaps)
    assert reported == [
        ("audio", round(audio_hole_start, 3)),
        ("video", round(hole_start, 3)),
    ]


async def test_faults_are_retried_and_nothing_is_lost(
    tmp_path: Path, test_media: TestMedia
) -> None:
    faults = FaultConfig(
        error_503=0.1,
        error_429=0.05,
        retry_after=0,
        reset=0.05,
        truncate=0.1,
        manifest_failure=0.1,
        seed=7,
    )
    config = OriginConfig(
        shape="instagram", broadcast_duration=60, already_broadcast=10, window=5, faults=faults
    )
    clock = ManualClock()
    output = tmp_path / "faults.mp4"
    async with Origin(config, clock, media=test_media) as origin:
        async with running_clock(origin, clock, step=0.25):
            summary = await record(
                fast_options(origin.manifest_url, output, download_retries=8),
                install_signal_handlers=False,
            )
        expected = origin.expected_frames(0, origin.segment_count - 1)
        stats = origin.stats

    injected = sum(stats.faults.values())
    assert injected > 10  # the faults really happened
    report = inspect(output)
    assert report.video_frames == expected
    assert report.video_gaps == ()
    assert summary.gaps == ()


async def test_audio_only_stream(tmp_path: Path, media_cache_dir: Path) -> None:
    media = generate_media(MediaSpec(video=False), media_cache_dir)
    config = OriginConfig(
        shape="time", broadcast_duration=40, already_broadcast=10, media=media.spec
    )
    clock = ManualClock()
    output = tmp_path / "audio.m4a"
    async with Origin(config, clock, media=media) as origin:
        async with running_clock(origin, clock):
            await record(fast_options(origin.manifest_url, output), install_signal_handlers=False)
        duration = origin.duration

    report = inspect(output)
    assert report.video_frames == 0
    assert report.audio_duration == pytest.approx(duration, abs=0.1)


async def test_stream_that_never_signals_its_end_stops_after_the_live_end_timeout(
    tmp_path: Path, test_media: TestMedia
) -> None:
    # nginx-rtmp's habit: shared $Time$ values, old fragments kept but unlisted, and no end
    # signal at all: the manifest simply stops changing.
    config = OriginConfig(
        shape="instagram",
        broadcast_duration=60,
        already_broadcast=30,
        signed=False,
        signal_end=False,
        media=test_media.spec,
    )
    clock = ManualClock()
    output = tmp_path / "nginx.mp4"
    async with Origin(config, clock, media=test_media) as origin:
        async with running_clock(origin, clock):
            summary = await record(
                fast_options(origin.manifest_url, output, live_end_timeout=1.0),
                install_signal_handlers=False,
            )
        expected = origin.expected_frames(0, origin.segment_count - 1)

    assert "no new segment" in summary.end_reason
    report = inspect(output)
    assert report.video_frames == expected
    assert report.video_gaps == ()


@pytest.mark.parametrize("shape", ["instagram", "time", "number_timeline"])
async def test_segments_scrolled_out_between_refreshes_are_still_fetched(
    shape: str, tmp_path: Path, test_media: TestMedia
) -> None:
    # A 2-segment window and refreshes 10 virtual seconds apart: most segments are never
    # listed. Without past recovery, only the hole filling between refreshes can find them.
    config = OriginConfig(
        shape=shape, broadcast_duration=90, already_broadcast=20, window=2, media=test_media.spec
    )
    clock = ManualClock()
    output = tmp_path / "scrolled.mp4"
    async with Origin(config, clock, media=test_media) as origin:
        async with running_clock(origin, clock, step=1.0, every=0.005) as driver:
            summary = await record(
                fast_options(origin.manifest_url, output, no_past=True, poll_interval=0.05),
                install_signal_handlers=False,
            )
        first_listed = driver.first_listed
        assert first_listed is not None
        expected = origin.expected_frames(first_listed, origin.segment_count - 1)
        manifests = origin.stats.count(kind="manifest")

    assert manifests < origin.segment_count - first_listed  # fewer refreshes than segments
    report = inspect(output)
    assert report.video_frames == expected
    assert report.video_gaps == ()
    assert summary.gaps == ()
