"""Live recordings across a Period change (an encoder restart), checked with PyAV."""

from __future__ import annotations

import itertools
from pathlib import Path

import av
import pytest

from instarec.recorder import record
from instarec.testing.clock import ManualClock
from instarec.testing.media import TestMedia
from instarec.testing.origin import Origin, OriginConfig
from tests.recording import fast_options, inspect, running_clock


def _packet_times(path: Path, kind: str) -> list[tuple[float, float]]:
    """(start, end) of every packet of the first ``kind`` stream, by start."""
    times: list[tuple[float, float]] = []
    with av.open(str(path)) as container:
        stream = getattr(container.streams, kind)[0]
        for packet in container.demux(stream):
            if packet.pts is None or packet.size == 0:
                continue
            start = float(packet.pts * packet.time_base)
            times.append((start, start + float((packet.duration or 0) * packet.time_base)))
    return sorted(times)


def _worst_joins(times: list[tuple[float, float]]) -> tuple[float, float]:
    """The largest overlap and the largest gap between consecutive packets (seconds)."""
    overlap = gap = 0.0
    for (_, end), (start, _) in itertools.pairwise(times):
        overlap = max(overlap, end - start)
        gap = max(gap, start - end)
    return overlap, gap


@pytest.mark.parametrize(("shape", "new_ids"), [("time", False), ("number_timeline", True)])
async def test_a_period_change_while_recording_keeps_one_continuous_timeline(
    shape: str, new_ids: bool, tmp_path: Path, test_media: TestMedia
) -> None:
    config = OriginConfig(
        shape=shape,
        broadcast_duration=60,
        already_broadcast=20,
        window=5,
        period_starts=(36.0,),
        period_new_ids=new_ids,
    )
    clock = ManualClock()
    output = tmp_path / "periods.mp4"
    async with Origin(config, clock, media=test_media) as origin:
        assert origin.broadcast.periods.several
        boundary = origin.segment_start(origin.broadcast.periods.firsts[1])
        async with running_clock(origin, clock) as driver:
            summary = await record(
                fast_options(origin.manifest_url, output, no_past=True),
                install_signal_handlers=False,
            )
        first_listed = driver.first_listed
        assert first_listed is not None
        last = origin.segment_count - 1
        expected = origin.expected_frames(first_listed, last)
        first_start = origin.segment_start(first_listed)
        broadcast_end = origin.segment_end(last)

    report = inspect(output)
    # Frames of both Periods, all of them, in one timeline as long as the broadcast.
    assert report.video_frames == expected
    assert report.video_gaps == ()
    assert report.video_duration == pytest.approx(broadcast_end - first_start, abs=0.05)
    assert abs(report.audio_duration - report.video_duration) < 0.1
    assert report.audio_start is not None and report.video_start is not None
    assert abs(report.audio_start - report.video_start) < 0.1
    video = _packet_times(output, "video")
    overlap, gap = _worst_joins(video)
    assert overlap < 0.001 and gap < 0.001
    # The second Period's first frame lies where the Period starts.
    starts = [start - video[0][0] for start, _ in video]
    assert min(abs(s - (boundary - first_start)) for s in starts) < 0.001
    audio_overlap, audio_gap = _worst_joins(_packet_times(output, "audio"))
    assert audio_overlap < 0.03 and audio_gap < 0.03
    assert summary.gaps == ()
    assert all(track.missing == 0 for track in summary.tracks)
