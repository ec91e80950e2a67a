"""OUTPUT ``-``: the recording streamed to stdout as MPEG-TS while it is recorded, checked with
PyAV on the bytes a player would read."""

from __future__ import annotations

import asyncio
import itertools
import os
import sys
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import pytest

from instarec.recorder import record
from instarec.testing.clock import ManualClock
from instarec.testing.media import TestMedia
from instarec.testing.origin import Origin, OriginConfig
from instarec.watch import rerun_output
from tests.recording import fast_options, inspect, running_clock
from tests.test_resume_signals import FAST, journal_keys


async def start_watching(
    url: str, cwd: Path, *extra: str, stdout: int = asyncio.subprocess.PIPE
) -> asyncio.subprocess.Process:
    """``instarec URL -`` with stdout a pipe, as ``| mpv -`` gives it."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "instarec",
        url,
        "-",
        *FAST,
        *extra,
        cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=stdout,
        stderr=asyncio.subprocess.PIPE,
    )


def read_then_quit(read_fd: int, size: int) -> bytes:
    """What a player does that is closed after a few seconds: read, then close the pipe."""
    seen = b""
    with open(read_fd, "rb", buffering=0) as pipe:
        while len(seen) < size and (chunk := pipe.read(size - len(seen))):
            seen += chunk
    return seen


@dataclass(frozen=True, slots=True)
class StreamReport:
    video_frames: int
    keyframe_first: bool  # the first video frame decoded is a keyframe
    video_start: float
    video_end: float
    audio_start: float
    audio_end: float
    largest_video_step: float  # the largest jump between consecutive frames, seconds
    frame: float  # one frame's duration
    decreasing_dts: int  # packets whose dts goes back in their stream (out of order)
    # The largest distance between the audio and the video read so far, at any point of the
    # stream: how far apart the tracks are interleaved (what a player must buffer).
    interleave: float


def decode(path: Path) -> StreamReport:
    """Decode every frame of ``path`` as a player would, measuring what it shows."""
    video_times: list[float] = []
    audio_start = audio_end = None
    keyframe_first = False
    decreasing = 0
    last_dts: dict[int, int] = {}
    newest: dict[str, float] = {}
    interleave = 0.0
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        audio = container.streams.audio[0]
        for packet in container.demux(video, audio):
            if packet.dts is not None:
                previous = last_dts.get(packet.stream.index)
                if previous is not None and packet.dts < previous:
                    decreasing += 1
                last_dts[packet.stream.index] = packet.dts
                newest[packet.stream.type] = float(packet.dts * packet.time_base)
                if len(newest) == 2:
                    interleave = max(interleave, abs(newest["video"] - newest["audio"]))
            for frame in packet.decode():
                if frame.pts is None:
                    continue
                time_base = frame.time_base or Fraction(1, 90000)
                at = float(frame.pts * time_base)
                if packet.stream is video:
                    if not video_times:
                        keyframe_first = frame.key_frame
                    video_times.append(at)
                else:
                    assert isinstance(frame, av.AudioFrame)
                    end = at + frame.samples / frame.sample_rate
                    audio_start = at if audio_start is None else min(audio_start, at)
                    audio_end = end if audio_end is None else max(audio_end, end)
    video_times.sort()
    steps = [b - a for a, b in itertools.pairwise(video_times)]
    frame = sorted(steps)[len(steps) // 2]
    assert audio_start is not None and audio_end is not None
    return StreamReport(
        video_frames=len(video_times),
        keyframe_first=keyframe_first,
        video_start=video_times[0],
        video_end=video_times[-1] + frame,
        audio_start=audio_start,
        audio_end=audio_end,
        largest_video_step=max(steps),
        frame=frame,
        decreasing_dts=decreasing,
        interleave=interleave,
    )


async def test_stdout_streams_the_whole_broadcast_past_first_then_live(
    tmp_path: Path, test_media: TestMedia
) -> None:
    config = OriginConfig(
        shape="instagram", broadcast_duration=90, already_broadcast=40, media=test_media.spec
    )
    clock = ManualClock()
    async with Origin(config, clock, media=test_media) as origin:
        async with running_clock(origin, clock, step=0.1, every=0.01):
            proc = await start_watching(origin.manifest_url, tmp_path)
            stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout=120)
        expected = origin.expected_frames(0, origin.segment_count - 1)
        duration = origin.duration
        longest = max(
            origin.segment_end(i) - origin.segment_start(i) for i in range(origin.segment_count)
        )
        segments_dir = tmp_path / (rerun_output(origin.manifest_url).name + ".segments")

    messages = stderr.decode()
    assert proc.returncode == 0, messages[-2000:]
    assert "Traceback" not in messages
    stream = tmp_path / "stream.ts"
    stream.write_bytes(stdout)
    report = decode(stream)
    # Every frame of the broadcast, from its first (recovered from the past) to its last,
    # in order and without a hole.
    assert report.video_frames == expected
    assert report.keyframe_first
    assert report.decreasing_dts == 0
    # Audio and video come interleaved: a player never buffers seconds of one to find the
    # other (the muxer packs a few audio frames per PES packet: a fraction of a second).
    assert report.interleave < 0.5
    assert report.largest_video_step < 1.5 * report.frame
    assert report.video_end - report.video_start == pytest.approx(duration, abs=0.05)
    assert abs(report.audio_start - report.video_start) < 0.1
    assert abs(report.audio_end - report.video_end) < 0.1
    # The summary went to stderr; the segments stay for a rerun with a file OUTPUT.
    assert "stdout (MPEG-TS, streamed while recording)" in messages
    assert any(
        line.startswith("Segments kept in") and line.endswith(segments_dir.name)
        for line in messages.splitlines()
    )
    assert len(journal_keys(segments_dir)) == 2 * origin.segment_count

    # A player joining late (reading from the middle of the stream) hears the audio at once,
    # sees the picture from the next keyframe (a segment starts with one) and plays on
    # without a hole to the end, audio beside video.
    late = tmp_path / "late.ts"
    late.write_bytes(stdout[len(stdout) // 2 :])
    joined = decode(late)
    assert joined.keyframe_first
    assert expected * 0.3 < joined.video_frames < expected * 0.7
    assert joined.largest_video_step < 1.5 * joined.frame
    assert joined.video_end == pytest.approx(report.video_end, abs=0.001)
    assert 0 <= joined.video_start - joined.audio_start <= longest
    assert abs(joined.audio_end - joined.video_end) < 0.1


async def test_a_player_quitting_ends_the_recording_and_a_rerun_merges_it(
    tmp_path: Path, test_media: TestMedia
) -> None:
    config = OriginConfig(
        shape="time", broadcast_duration=60, already_broadcast=30, media=test_media.spec
    )
    clock = ManualClock()
    async with Origin(config, clock, media=test_media) as origin:
        async with running_clock(origin, clock, step=0.05, every=0.01):
            read_fd, write_fd = os.pipe()
            proc = await start_watching(origin.manifest_url, tmp_path, stdout=write_fd)
            os.close(write_fd)
            assert proc.stderr is not None
            # A few seconds of play, then the player quits.
            seen = await asyncio.to_thread(read_then_quit, read_fd, 500_000)
            quit_at = clock.now()
            stderr = await asyncio.wait_for(proc.stderr.read(), timeout=60)
            await asyncio.wait_for(proc.wait(), timeout=30)
            stopped_at = clock.now()
            segments_dir = tmp_path / (rerun_output(origin.manifest_url).name + ".segments")
            kept = journal_keys(segments_dir)
            # The rerun with a file OUTPUT merges the same recording (and follows it on).
            output = tmp_path / rerun_output(origin.manifest_url)
            summary = await record(
                fast_options(origin.manifest_url, output), install_signal_handlers=False
            )
        expected = origin.expected_frames(0, origin.segment_count - 1)

    messages = stderr.decode()
    assert proc.returncode == 0, messages[-2000:]
    # The stream played at once (the recorded past first), long before the broadcast's end,
    # and the recording stopped soon after the player quit.
    assert quit_at - config.already_broadcast < 10
    assert stopped_at - quit_at < 10
    assert "Traceback" not in messages
    assert "Broken pipe" not in messages and "BrokenPipe" not in messages
    assert "Exception ignored" not in messages
    assert messages.count("the player closed the stream") >= 1
    assert len([line for line in messages.splitlines() if "closed the stream:" in line]) == 1
    assert len(seen) == 500_000
    assert len(kept) >= 20
    assert summary.output == output
    report = inspect(output)
    assert report.video_frames == expected
    assert report.video_gaps == ()


async def test_lost_segments_are_jumps_the_stream_plays_past(
    tmp_path: Path, test_media: TestMedia
) -> None:
    # Lost in the recovered past (5) and at the live edge (40, 41): the stream waits for
    # neither for good, and keeps audio and video together after each jump.
    gaps = {5, 40, 41}
    config = OriginConfig(
        shape="number_timeline",
        broadcast_duration=100,
        already_broadcast=40,
        gaps=gaps,
        media=test_media.spec,
    )
    clock = ManualClock()
    async with Origin(config, clock, media=test_media) as origin:
        async with running_clock(origin, clock, step=0.1, every=0.01):
            proc = await start_watching(origin.manifest_url, tmp_path)
            stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout=120)
        expected = origin.expected_frames(0, origin.segment_count - 1)
        holes = [origin.segment_end(5) - origin.segment_start(5)]
        holes.append(origin.segment_end(41) - origin.segment_start(40))
        duration = origin.duration

    assert proc.returncode == 0, stderr.decode()[-2000:]
    stream = tmp_path / "stream.ts"
    stream.write_bytes(stdout)
    report = decode(stream)
    assert report.video_frames == expected
    assert report.decreasing_dts == 0
    assert report.video_end - report.video_start == pytest.approx(duration, abs=0.05)
    assert abs(report.audio_start - report.video_start) < 0.1
    assert abs(report.audio_end - report.video_end) < 0.1
    assert report.largest_video_step == pytest.approx(max(holes) + report.frame, abs=0.02)
    assert report.interleave < 0.5 + max(holes)
