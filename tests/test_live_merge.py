"""--live-merge: OUTPUT grows while the broadcast is recorded and plays at any moment; probed
with PyAV mid-recording, and checked whole at the end."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

import av
import av.error
import pytest

from instarec.recorder import record
from instarec.testing.clock import ManualClock
from instarec.testing.media import TestMedia
from instarec.testing.origin import Origin, OriginConfig
from tests.recording import fast_options, inspect, media_for_shape, running_clock
from tests.test_resume_signals import journal_keys, start_recorder, wait_until


@dataclass(frozen=True, slots=True)
class Probe:
    """What a player opening the growing file finds at one moment."""

    size: int
    video_frames: int  # frames decoded
    first_pts: float | None  # seconds
    first_key: bool


def probe(path: Path) -> Probe | None:
    """Open and decode ``path`` as it is now; None when it is not there yet. A frame cut by the
    writer at the very end of the file is where the decoding stops."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return None
    frames = 0
    first_pts = None
    first_key = False
    try:
        with av.open(str(path)) as container:
            video = container.streams.video[0]
            for packet in container.demux(video):
                for frame in packet.decode():
                    if frame.pts is None or frame.time_base is None:
                        continue
                    if first_pts is None:
                        first_pts = float(frame.pts * frame.time_base)
                        first_key = frame.key_frame
                    frames += 1
    except (av.error.FFmpegError, EOFError):
        pass  # the end of what was written so far
    return Probe(size, frames, first_pts, first_key)


def grown_while_recording(caplog: pytest.LogCaptureFixture) -> bool:
    """Whether the output came from the live merge (not from a merge at the end)."""
    messages = [record.getMessage() for record in caplog.records]
    return any("while recording" in m for m in messages) and not any("anew" in m for m in messages)


async def probe_while_recording(path: Path, probes: list[Probe]) -> None:
    while True:
        await asyncio.sleep(0.3)
        found = await asyncio.to_thread(probe, path)
        if found is not None:
            probes.append(found)


@pytest.mark.parametrize(
    ("suffix", "shape"),
    [(".mp4", "time"), (".mkv", "number_duration"), (".ts", "instagram")],
)
async def test_output_grows_playable_from_the_first_frame_and_ends_whole(
    suffix: str,
    shape: str,
    tmp_path: Path,
    test_media: TestMedia,
    constant_media: TestMedia,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="instarec")
    media = media_for_shape(shape, test_media, constant_media)
    config = OriginConfig(
        shape=shape, broadcast_duration=90, already_broadcast=40, media=media.spec
    )
    clock = ManualClock()
    output = tmp_path / f"growing{suffix}"
    probes: list[Probe] = []
    async with Origin(config, clock, media=media) as origin:
        async with running_clock(origin, clock, step=0.1, every=0.01):
            prober = asyncio.create_task(probe_while_recording(output, probes))
            try:
                summary = await record(
                    fast_options(origin.manifest_url, output, live_merge=True),
                    install_signal_handlers=False,
                )
            finally:
                prober.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await prober
        expected = origin.expected_frames(0, origin.segment_count - 1)
        duration = origin.duration

    # Mid-recording, a player opening the file decodes from the broadcast's first frame (the
    # recovered past comes first), and finds more each time.
    # MPEG-TS starts its clock at 1.4 s (as the merge without --live-merge writes it).
    zero = 1.4 if suffix == ".ts" else 0.0
    playable = [p for p in probes if p.video_frames > 0]
    assert len(playable) >= 3, probes
    assert all(p.first_pts == pytest.approx(zero, abs=0.001) and p.first_key for p in playable)
    assert playable[-1].video_frames > playable[0].video_frames
    # Never less than a moment before: the file is only ever appended to (no rewrite in place
    # that a player, or a kill, could catch half done).
    counts = [p.video_frames for p in playable]
    assert counts == sorted(counts), counts
    assert playable[-1].size > playable[0].size
    assert playable[0].video_frames < expected * 0.9  # seen while it was still growing
    # At the end: the whole broadcast, finished (the container knows its duration).
    report = inspect(output)
    assert report.video_frames == expected
    assert report.video_start == pytest.approx(zero, abs=0.001)
    assert report.video_gaps == ()
    assert report.video_duration == pytest.approx(duration, abs=0.05)
    assert abs(report.audio_duration - report.video_duration) < 0.1
    with av.open(str(output)) as container:
        assert container.duration is not None
        assert container.duration / 1e6 == pytest.approx(duration, abs=0.1)
    assert summary.output == output
    assert grown_while_recording(caplog)
    assert summary.size == output.stat().st_size
    assert not summary.segments_dir.exists()  # removed after a successful recording
    assert not output.with_name(f"{output.stem}.part{output.suffix}").exists()


async def test_a_live_start_appends_the_past_in_its_turn_and_keeps_gaps(
    tmp_path: Path, test_media: TestMedia, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="instarec")
    # The past is long (recovered while the live edge is recorded) and has lost segments: the
    # file holds the past first, the live edge after it, the lost segments as gaps.
    gaps = {5, 60}
    config = OriginConfig(
        shape="instagram",
        broadcast_duration=200,
        already_broadcast=150,
        gaps=gaps,
        media=test_media.spec,
    )
    clock = ManualClock()
    output = tmp_path / "late.mkv"
    async with Origin(config, clock, media=test_media) as origin:
        async with running_clock(origin, clock, step=0.5):
            summary = await record(
                fast_options(origin.manifest_url, output, live_merge=True),
                install_signal_handlers=False,
            )
        expected = origin.expected_frames(0, origin.segment_count - 1)
        holes = [(origin.segment_start(i), origin.segment_end(i)) for i in sorted(gaps)]

    report = inspect(output)
    assert report.video_frames == expected
    assert report.video_start == pytest.approx(0.0, abs=0.001)
    assert len(report.video_gaps) == len(holes)
    frame = report.frame_duration or 0.0
    for (at, jump), (start, end) in zip(report.video_gaps, holes, strict=True):
        assert at + frame == pytest.approx(start, abs=0.02)
        assert jump == pytest.approx(end - start + frame, abs=0.02)
    assert summary.output == output
    assert grown_while_recording(caplog)


async def test_killed_then_rerun_rewrites_the_file_from_the_kept_segments(
    tmp_path: Path, test_media: TestMedia, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="instarec")
    config = OriginConfig(
        shape="instagram", broadcast_duration=120, already_broadcast=60, media=test_media.spec
    )
    clock = ManualClock()
    output = tmp_path / "resumed.mp4"
    segments_dir = tmp_path / "resumed.mp4.segments"
    options = fast_options("", output, live_merge=True)
    async with Origin(config, clock, media=test_media) as origin:
        async with running_clock(origin, clock, step=0.1, every=0.01):
            options = replace(options, mpd_url=origin.manifest_url)
            first = asyncio.create_task(record(options, install_signal_handlers=False))
            await wait_until(lambda: len(journal_keys(segments_dir)) >= 40 and output.exists())
            first.cancel()  # stopped at once (a second Ctrl+C): the segments stay
            with pytest.raises(asyncio.CancelledError):
                await first
            assert output.exists()  # what had grown so far
            summary = await record(options, install_signal_handlers=False)
        expected = origin.expected_frames(0, origin.segment_count - 1)

    report = inspect(output)
    assert report.video_frames == expected
    assert report.video_gaps == ()
    assert abs(report.audio_duration - report.video_duration) < 0.1
    assert summary.output == output
    assert grown_while_recording(caplog)


async def test_a_period_change_is_merged_whole_at_the_end(
    tmp_path: Path, test_media: TestMedia, caplog: pytest.LogCaptureFixture
) -> None:
    # The file grows with the first Period's tracks; the Period after it comes from the usual
    # merge at the end, which joins every Period on one timeline.
    caplog.set_level(logging.INFO, logger="instarec")
    config = OriginConfig(
        shape="time", broadcast_duration=60, already_broadcast=20, window=5, period_starts=(36.0,)
    )
    clock = ManualClock()
    output = tmp_path / "periods.mkv"
    async with Origin(config, clock, media=test_media) as origin:
        async with running_clock(origin, clock) as driver:
            await record(
                fast_options(origin.manifest_url, output, no_past=True, live_merge=True),
                install_signal_handlers=False,
            )
        assert driver.first_listed is not None
        expected = origin.expected_frames(driver.first_listed, origin.segment_count - 1)

    assert not grown_while_recording(caplog)
    assert any("changed Period" in record.getMessage() for record in caplog.records)
    report = inspect(output)
    assert report.video_frames == expected
    assert report.video_gaps == ()


async def test_kill_9_leaves_a_playable_file_and_the_rerun_completes_it(
    tmp_path: Path, test_media: TestMedia
) -> None:
    config = OriginConfig(
        shape="time", broadcast_duration=150, already_broadcast=60, media=test_media.spec
    )
    clock = ManualClock()
    output = tmp_path / "killed.mkv"
    segments_dir = tmp_path / "killed.mkv.segments"
    async with Origin(config, clock, media=test_media) as origin:
        async with running_clock(origin, clock, step=0.1, every=0.01):
            first = await start_recorder(origin.manifest_url, output, "--live-merge")
            await wait_until(lambda: len(journal_keys(segments_dir)) >= 50 and output.exists())
            first.kill()  # SIGKILL: no cleanup of any kind
            await first.wait()
            # ffmpeg, a process of its own, finishes the file once its input is gone.
            await wait_until(
                lambda: (found := probe(output)) is not None and found.video_frames > 0
            )
            killed = probe(output)
            second = await start_recorder(origin.manifest_url, output, "--live-merge")
            _, stderr = await asyncio.wait_for(second.communicate(), timeout=120)
            assert second.returncode == 0, stderr.decode()[-2000:]
        expected = origin.expected_frames(0, origin.segment_count - 1)

    assert killed is not None
    assert killed.first_pts == pytest.approx(0.0, abs=0.001) and killed.first_key
    assert 0 < killed.video_frames < expected
    report = inspect(output)
    assert report.video_frames == expected
    assert report.video_gaps == ()
    assert abs(report.audio_duration - report.video_duration) < 0.1
    assert not segments_dir.exists()


async def test_an_audio_only_output_grows_with_the_audio(
    tmp_path: Path, test_media: TestMedia, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="instarec")
    config = OriginConfig(
        shape="number_timeline", broadcast_duration=60, already_broadcast=20, media=test_media.spec
    )
    clock = ManualClock()
    output = tmp_path / "sound.m4a"
    async with Origin(config, clock, media=test_media) as origin:
        async with running_clock(origin, clock):
            await record(
                fast_options(origin.manifest_url, output, live_merge=True),
                install_signal_handlers=False,
            )
        duration = origin.duration

    assert grown_while_recording(caplog)
    with av.open(str(output)) as container:
        assert not container.streams.video
        assert len(container.streams.audio) == 1
    report = inspect(output)
    assert report.audio_start == pytest.approx(0.0, abs=0.05)
    assert report.audio_duration == pytest.approx(duration, abs=0.1)


async def test_ffmpeg_failing_mid_recording_leaves_the_merge_to_the_end(
    tmp_path: Path, test_media: TestMedia, caplog: pytest.LogCaptureFixture
) -> None:
    # An ffmpeg that dies a second into the live merge (and merges normally otherwise).
    caplog.set_level(logging.INFO, logger="instarec")
    real_ffmpeg = shutil.which("ffmpeg")
    assert real_ffmpeg is not None
    failing = tmp_path / "failing-ffmpeg"
    failing.write_text(
        "#!/bin/sh\n"
        'case "$*" in *-flush_packets*) exec timeout -s KILL 1 "' + real_ffmpeg + '" "$@";; esac\n'
        'exec "' + real_ffmpeg + '" "$@"\n'
    )
    failing.chmod(0o755)
    config = OriginConfig(
        shape="time", broadcast_duration=60, already_broadcast=20, media=test_media.spec
    )
    clock = ManualClock()
    output = tmp_path / "fallback.mp4"
    async with Origin(config, clock, media=test_media) as origin:
        async with running_clock(origin, clock, step=0.1, every=0.01):
            summary = await record(
                fast_options(
                    origin.manifest_url, output, live_merge=True, ffmpeg_path=str(failing)
                ),
                install_signal_handlers=False,
            )
        expected = origin.expected_frames(0, origin.segment_count - 1)

    messages = [record.getMessage() for record in caplog.records]
    assert any("ffmpeg stopped writing" in m for m in messages), messages
    assert not grown_while_recording(caplog)
    report = inspect(output)
    assert report.video_frames == expected
    assert report.video_gaps == ()
    assert summary.output == output


async def test_ctrl_c_finishes_the_grown_file_with_what_is_recorded(
    tmp_path: Path, test_media: TestMedia, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="instarec")
    config = OriginConfig(
        shape="instagram", broadcast_duration=600, already_broadcast=20, media=test_media.spec
    )
    clock = ManualClock()
    output = tmp_path / "stopped.mp4"
    segments_dir = tmp_path / "stopped.mp4.segments"
    stop = asyncio.Event()
    origin = Origin(config, clock, media=test_media)
    async with origin, running_clock(origin, clock, step=0.1, every=0.01):
        recording = asyncio.create_task(
            record(
                fast_options(origin.manifest_url, output, live_merge=True, no_past=True),
                stop=stop,
                install_signal_handlers=False,
            )
        )
        await wait_until(lambda: len(journal_keys(segments_dir)) >= 30)
        stop.set()  # the first Ctrl+C
        summary = await recording
        stopped_at = clock.now()

    assert summary.interrupted
    assert stopped_at < origin.duration  # long before the broadcast's end
    assert grown_while_recording(caplog)
    report = inspect(output)
    assert report.video_frames > 0
    assert report.video_gaps == ()
    assert report.video_duration == pytest.approx(summary.duration, abs=0.1)
    assert abs(report.audio_duration - report.video_duration) < 0.1
    with av.open(str(output)) as container:  # finished: its duration is known
        assert container.duration is not None
        assert container.duration / 1e6 == pytest.approx(summary.duration, abs=0.1)
