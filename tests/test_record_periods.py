"""Live recordings across a Period change (an encoder restart), checked with PyAV."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import Counter
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import av
import pytest

from instarec.finish import RecordingSummary
from instarec.manifest import InitSegment, expand_segments, parse_manifest
from instarec.periods import kind_of, match_representation, period_offset, track_name
from instarec.recorder import record
from instarec.testing.clock import ManualClock
from instarec.testing.faults import FaultConfig
from instarec.testing.media import MediaSpec, TestMedia
from instarec.testing.origin import Origin, OriginConfig
from tests.recording import fast_options, inspect, running_clock
from tests.test_resume_signals import journal_keys, wait_until


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


MPD = """<?xml version="1.0"?>
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="dynamic"
     availabilityStartTime="2024-01-01T00:00:00Z" minimumUpdatePeriod="PT2S">
  <Period id="a" start="PT0S">
    <AdaptationSet contentType="video" mimeType="video/mp4">
      <Representation id="v1" codecs="avc1.42c01e" bandwidth="500000" width="640" height="360">
        <SegmentTemplate timescale="1000" media="a/$Time$.m4s" initialization="a/init.mp4">
          <SegmentTimeline><S t="0" d="2000" r="2"/></SegmentTimeline>
        </SegmentTemplate>
      </Representation>
    </AdaptationSet>
  </Period>
  <Period id="b" start="PT6.5S">
    <AdaptationSet contentType="video" mimeType="video/mp4">
      <Representation id="low" codecs="avc1.42c01e" bandwidth="200000" width="320" height="180">
        <SegmentTemplate timescale="90000" media="b/low/$Time$.m4s" initialization="b/i.mp4"
                         presentationTimeOffset="900000">
          <SegmentTimeline><S t="900000" d="180000" r="1"/></SegmentTimeline>
        </SegmentTemplate>
      </Representation>
      <Representation id="x" codecs="avc1.42c01e" bandwidth="500000" width="640" height="360">
        <SegmentTemplate timescale="90000" media="b/x/$Time$.m4s" initialization="b/x.mp4"
                         presentationTimeOffset="900000">
          <SegmentTimeline><S t="900000" d="180000" r="1"/></SegmentTimeline>
        </SegmentTemplate>
      </Representation>
    </AdaptationSet>
  </Period>
</MPD>
"""


def test_several_periods_parse_each_with_its_own_template_and_place_on_one_timeline() -> None:
    manifest = parse_manifest(MPD.encode(), "http://h/live/m.mpd")
    first, second = manifest.periods
    assert (first.id, first.start, first.duration) == ("a", 0.0, 6.5)
    assert (second.id, second.start, second.duration) == ("b", 6.5, None)
    now = datetime(2024, 1, 1, 0, 0, 20, tzinfo=UTC)
    wanted = first.representations[0]
    rep = match_representation(second.representations, wanted)
    assert rep is not None and rep.id == "x"  # same codecs, resolution and bandwidth
    segments = expand_segments(manifest, rep, now)
    assert [s.url for s in segments] == [
        "http://h/live/b/x/900000.m4s",
        "http://h/live/b/x/1080000.m4s",
    ]
    # Period@start + (t - presentationTimeOffset) / timescale
    assert [s.start for s in segments] == [6.5, 8.5]
    assert rep.init_segment() == InitSegment("http://h/live/b/x.mp4", None)
    # Media time 10 s of the second Period plays at 6.5 s on the first Period's clock.
    assert period_offset(rep, second, wanted, first) == pytest.approx(-3.5)
    assert track_name("video", second, first) == "video-p6500"
    assert track_name("video", first, first) == "video"
    assert kind_of("video-p6500") == "video" and kind_of("other") is None


def test_a_new_period_without_the_id_or_the_quality_takes_the_best_of_its_kind() -> None:
    manifest = parse_manifest(MPD.encode(), "http://h/live/m.mpd")
    first, second = manifest.periods
    wanted = replace(first.representations[0], bandwidth=1, width=1, height=1)
    rep = match_representation(second.representations, wanted)
    assert rep is not None and rep.id == "x"  # the highest bandwidth
    assert match_representation(second.representations, replace(wanted, id="low")) is not None
    same = match_representation(second.representations, replace(wanted, id="low"))
    assert same is not None and same.id == "low"


def _video_size(path: Path) -> tuple[int, int]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return stream.codec_context.width, stream.codec_context.height


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
async def test_a_period_with_another_picture_size_goes_on_in_the_next_part(
    suffix: str, tmp_path: Path, test_media: TestMedia, media_cache_dir: Path
) -> None:
    config = OriginConfig(
        shape="time",
        broadcast_duration=50,
        already_broadcast=24,
        window=5,
        period_starts=(16.0,),
        period_media=MediaSpec(width=320, height=180),
    )
    clock = ManualClock()
    output = tmp_path / f"restart{suffix}"
    async with Origin(config, clock, media=test_media, cache_dir=media_cache_dir) as origin:
        boundary = origin.broadcast.periods.firsts[1]
        before = origin.expected_frames(0, boundary - 1)
        after = origin.expected_frames(boundary, origin.segment_count - 1)
        boundary_time = origin.segment_start(boundary)
        async with running_clock(origin, clock):
            summary = await record(
                fast_options(origin.manifest_url, output), install_signal_handlers=False
            )

    first, second = (tmp_path / f"restart.{n:03d}{suffix}" for n in (1, 2))
    assert not output.exists()
    assert [part.path for part in summary.parts] == [first, second]
    assert summary.output == first
    # Each file holds one configuration, every frame of its Periods, and plays on its own.
    assert _video_size(first) == (640, 360) and _video_size(second) == (320, 180)
    for path, frames in ((first, before), (second, after)):
        report = inspect(path)
        assert report.video_frames == frames
        assert report.video_gaps == ()
        assert abs(report.audio_duration - report.video_duration) < 0.1
    assert summary.parts[0].start == pytest.approx(0.0, abs=0.05)
    assert summary.parts[1].start == pytest.approx(boundary_time, abs=0.05)
    assert summary.parts[0].duration == pytest.approx(boundary_time, abs=0.05)
    assert summary.gaps == ()


async def test_split_cuts_every_period_of_a_recording_into_parts(
    tmp_path: Path, test_media: TestMedia
) -> None:
    config = OriginConfig(
        shape="number_timeline",
        broadcast_duration=50,
        already_broadcast=24,
        window=5,
        period_starts=(26.0,),
        period_new_ids=True,
    )
    clock = ManualClock()
    output = tmp_path / "split.mkv"
    async with Origin(config, clock, media=test_media) as origin:
        expected = origin.expected_frames(0, origin.segment_count - 1)
        async with running_clock(origin, clock):
            summary = await record(
                fast_options(origin.manifest_url, output, split_duration=20.0),
                install_signal_handlers=False,
            )

    paths = [part.path for part in summary.parts]
    # 50 s in two Periods (about 26 s and 24 s), each cut at 20 s at most: four parts.
    assert paths == [tmp_path / f"split.{n:03d}.mkv" for n in range(1, 5)]
    reports = [inspect(path) for path in paths]
    assert sum(report.video_frames for report in reports) == expected
    for report, part in zip(reports, summary.parts, strict=True):
        assert report.video_gaps == ()
        assert report.video_duration <= 20.0 + 0.05
        assert report.video_duration == pytest.approx(part.duration, abs=0.1)
    starts = [part.start for part in summary.parts]
    assert starts == sorted(starts) and starts[0] == pytest.approx(0.0, abs=0.05)


@pytest.mark.parametrize(("shape", "new_ids"), [("time", False), ("number_timeline", True)])
async def test_a_restart_in_the_recovered_past_is_recovered_from_the_broadcasts_first_frame(
    shape: str, new_ids: bool, tmp_path: Path, test_media: TestMedia
) -> None:
    # Joined at 24 s with a window of 5 segments: the Period before the restart at 16 s is
    # listed by its last segments only, its start is past recovery's to find.
    config = OriginConfig(
        shape=shape,
        broadcast_duration=50,
        already_broadcast=24,
        window=5,
        period_starts=(16.0,),
        period_new_ids=new_ids,
    )
    clock = ManualClock()
    output = tmp_path / "past.mkv"
    async with Origin(config, clock, media=test_media) as origin:
        async with running_clock(origin, clock) as driver:
            summary = await record(
                fast_options(origin.manifest_url, output), install_signal_handlers=False
            )
        first_listed = driver.first_listed
        expected = origin.expected_frames(0, origin.segment_count - 1)
        broadcast_end = origin.segment_end(origin.segment_count - 1)

    assert first_listed is not None and first_listed > 0
    report = inspect(output)
    assert report.video_frames == expected
    assert report.video_gaps == ()
    assert report.video_duration == pytest.approx(broadcast_end, abs=0.05)
    assert abs(report.audio_duration - report.video_duration) < 0.1
    assert summary.archive_complete
    assert summary.gaps == ()


@pytest.mark.parametrize(("shape", "new_ids"), [("time", False), ("number_timeline", True)])
async def test_a_rerun_after_the_first_period_left_the_manifest_resumes_into_the_next(
    shape: str, new_ids: bool, tmp_path: Path, test_media: TestMedia
) -> None:
    config = OriginConfig(
        shape=shape,
        broadcast_duration=60,
        already_broadcast=10,
        window=5,
        period_starts=(20.0,),
        period_new_ids=new_ids,
    )
    clock = ManualClock()
    output = tmp_path / "resumed.mkv"
    segments_dir = tmp_path / "resumed.mkv.segments"
    async with Origin(config, clock, media=test_media) as origin:
        options = fast_options(origin.manifest_url, output)
        # The first run records into the second Period, then dies (a second Ctrl+C, kill -9).
        async with running_clock(origin, clock, step=0.1):
            first_run = asyncio.create_task(record(options, install_signal_handlers=False))
            second = origin.broadcast.periods.firsts[1]
            suffix = f"-p{round(origin.segment_start(second) * 1000)}"
            tracks = {"video", "audio", "video" + suffix, "audio" + suffix}
            await wait_until(
                lambda: {t for t, _ in journal_keys(segments_dir)} == tracks or first_run.done()
            )
            assert not first_run.done(), first_run.result()
            first_run.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await first_run
        # Later, the first Period has left the manifest: the rerun starts in the second one.
        clock.advance(30)
        assert origin.listed_segments()[0] > second
        async with running_clock(origin, clock):
            summary = await record(options, install_signal_handlers=False)
        expected = origin.expected_frames(0, origin.segment_count - 1)
        broadcast_end = origin.segment_end(origin.segment_count - 1)
        log = origin.request_log

    report = inspect(output)
    assert report.video_frames == expected
    assert report.video_gaps == ()
    assert report.video_duration == pytest.approx(broadcast_end, abs=0.05)
    assert abs(report.audio_duration - report.video_duration) < 0.1
    assert summary.gaps == ()
    # Nothing the first run kept was fetched again.
    fetched = Counter((r.track, r.index) for r in log if r.kind == "media" and r.complete)
    assert set(fetched.values()) == {1}


async def test_a_period_that_left_the_manifest_before_the_start_is_said_to_be_out_of_reach(
    tmp_path: Path, test_media: TestMedia, caplog: pytest.LogCaptureFixture
) -> None:
    # Joined at 40 s, window 5: the Period before the restart at 16 s is listed no more, and
    # nothing tells where its segments are (its files live under their own directory).
    config = OriginConfig(
        shape="time", broadcast_duration=50, already_broadcast=40, window=5, period_starts=(16.0,)
    )
    clock = ManualClock()
    output = tmp_path / "late.mkv"
    async with Origin(config, clock, media=test_media) as origin:
        second = origin.broadcast.periods.firsts[1]
        async with running_clock(origin, clock) as driver:
            summary = await record(
                fast_options(origin.manifest_url, output), install_signal_handlers=False
            )
        assert driver.first_listed is not None and driver.first_listed > second
        expected = origin.expected_frames(second, origin.segment_count - 1)
        begins = origin.segment_start(second)

    # Every frame of the Period it could reach, from that Period's first one.
    report = inspect(output)
    assert report.video_frames == expected
    assert report.video_gaps == ()
    # ... and no claim to reach the broadcast's start.
    assert not summary.archive_complete
    assert f"no Period before the one starting at {begins:.3f} s" in caplog.text


@dataclass(frozen=True, slots=True)
class RestartRun:
    summary: RecordingSummary
    expected: int  # every video frame of the broadcast
    second_period_first: int  # the index of the new Period's first segment
    video_requested: frozenset[int]  # the video segment indexes asked for


async def _record_across_a_restart(
    shape: str, new_ids: bool, outage: tuple[float, float], output: Path, media: TestMedia
) -> RestartRun:
    """A 60 s broadcast, 20 s past, window 5, restarting at 30.9 s (the first segment
    boundary after 30 s), with every request unanswered during ``outage``, recorded whole."""
    config = OriginConfig(
        shape=shape,
        broadcast_duration=60,
        already_broadcast=20,
        window=5,
        period_starts=(30.0,),
        period_new_ids=new_ids,
        faults=FaultConfig(outages=(outage,)),
    )
    clock = ManualClock()
    async with Origin(config, clock, media=media) as origin:
        async with running_clock(origin, clock, step=0.1):
            summary = await record(
                fast_options(origin.manifest_url, output), install_signal_handlers=False
            )
        return RestartRun(
            summary,
            origin.expected_frames(0, origin.segment_count - 1),
            origin.broadcast.periods.firsts[1],
            frozenset(
                r.index for r in origin.request_log if r.kind == "media" and r.track == "video"
            ),
        )


@pytest.mark.parametrize(("shape", "new_ids"), [("time", False), ("number_timeline", True)])
async def test_a_period_first_seen_after_its_first_segments_left_the_window_is_whole(
    shape: str, new_ids: bool, tmp_path: Path, test_media: TestMedia
) -> None:
    # The restart comes at 30.9 s (the first segment boundary after 30 s). The server answers
    # nothing from just after it until the new Period's first segments have left the
    # 5-segment window: the new Period is first seen in its middle.
    output = tmp_path / "late-period.mkv"
    run = await _record_across_a_restart(shape, new_ids, (31.5, 47.0), output, test_media)
    summary, expected = run.summary, run.expected

    assert run.second_period_first in run.video_requested
    report = inspect(output)
    assert report.video_frames == expected
    assert report.video_gaps == ()
    assert summary.gaps == ()


@pytest.mark.parametrize(("shape", "new_ids"), [("time", True), ("number_timeline", False)])
async def test_a_periods_tail_published_while_unreachable_is_chased_to_the_next_period(
    shape: str, new_ids: bool, tmp_path: Path, test_media: TestMedia
) -> None:
    # The server answers nothing from 26 s, before the restart at 30.9 s, until the first
    # Period's last segments have left the 5-segment window (and the first Period the
    # manifest): no listing ever names them, yet the server still has them.
    output = tmp_path / "period-tail.mkv"
    run = await _record_across_a_restart(shape, new_ids, (26.0, 47.0), output, test_media)
    summary, expected = run.summary, run.expected

    report = inspect(output)
    assert report.video_frames == expected
    assert report.video_gaps == ()
    _, audio_gap = _worst_joins(_packet_times(output, "audio"))
    assert audio_gap < 0.05
    assert abs(report.audio_duration - report.video_duration) < 0.1
    assert summary.gaps == ()
