"""The recorder as a process: kill -9 then rerun resumes; Ctrl+C merges; a second one aborts."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from instarec.recorder import record
from instarec.testing.clock import ManualClock
from instarec.testing.media import TestMedia
from instarec.testing.origin import Origin, OriginConfig
from tests.recording import fast_options, inspect, running_clock

FAST = [
    "--poll-interval",
    "0.05",
    "--past-segment-delay",
    "0",
    "--download-retry-delay",
    "0.01",
    "--live-end-timeout",
    "30",
]


async def start_recorder(url: str, output: Path, *extra: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "instarec",
        url,
        str(output),
        *FAST,
        *extra,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


def journal_keys(segments_dir: Path) -> set[tuple[str, int]]:
    journal = segments_dir / "journal.jsonl"
    if not journal.exists():
        return set()
    keys = set()
    for line in journal.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # the torn last line of a killed process
        if record.get("type") == "segment":
            keys.add((record["track"], int(record["key"])))
    return keys


async def wait_until(predicate: Callable[[], bool], limit: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


async def test_kill_9_then_rerun_resumes_without_refetching(
    tmp_path: Path, test_media: TestMedia
) -> None:
    config = OriginConfig(
        shape="instagram", broadcast_duration=150, already_broadcast=100, media=test_media.spec
    )
    clock = ManualClock()
    output = tmp_path / "resume.mp4"
    segments_dir = tmp_path / "resume.mp4.segments"
    async with Origin(config, clock, media=test_media) as origin:
        async with running_clock(origin, clock, step=0.1, every=0.01):
            first = await start_recorder(origin.manifest_url, output)
            await wait_until(lambda: len(journal_keys(segments_dir)) >= 30)
            first.kill()  # SIGKILL: no cleanup of any kind
            await first.wait()
            kept = journal_keys(segments_dir)
            gets_before = origin.stats.count(method="GET", kind="media", status=200)

            second = await start_recorder(origin.manifest_url, output)
            _, stderr = await asyncio.wait_for(second.communicate(), timeout=120)
            assert second.returncode == 0, stderr.decode()[-2000:]
        gets_after = origin.stats.count(method="GET", kind="media", status=200)
        expected = origin.expected_frames(0, origin.segment_count - 1)
        total_segments = 2 * origin.segment_count

    assert not output.with_name(output.name + ".part").exists()
    report = inspect(output)
    assert report.video_frames == expected
    assert report.video_gaps == ()
    # Nothing kept on disk was fetched again: the rerun fetched at most what was missing,
    # plus the few downloads the kill cut short.
    assert len(kept) >= 30
    assert gets_after - gets_before <= total_segments - len(kept) + 16


async def test_ctrl_c_merges_what_is_recorded(tmp_path: Path, test_media: TestMedia) -> None:
    config = OriginConfig(
        shape="time", broadcast_duration=3600, already_broadcast=60, media=test_media.spec
    )
    clock = ManualClock()
    output = tmp_path / "stopped.mkv"
    segments_dir = tmp_path / "stopped.mkv.segments"
    summary_file = tmp_path / "summary.json"
    origin = Origin(config, clock, media=test_media)
    async with origin, running_clock(origin, clock, step=0.1, every=0.01):
        proc = await start_recorder(
            origin.manifest_url, output, "--summary-file", str(summary_file)
        )
        await wait_until(lambda: len(journal_keys(segments_dir)) >= 50)
        proc.send_signal(signal.SIGINT)
        _, stderr = await asyncio.wait_for(proc.communicate(), timeout=60)

    assert proc.returncode == 130, stderr.decode()[-2000:]
    assert b"Traceback" not in stderr
    summary = json.loads(summary_file.read_text())
    assert summary["interrupted"] is True
    report = inspect(output)
    assert report.video_frames > 25 * 30  # at least the archive's first segments
    assert report.frame_duration is not None and report.video_start is not None
    assert report.audio_start is not None
    assert abs(report.audio_start - report.video_start) < 0.1
    # The past walks in parallel chains, so a Ctrl+C may leave a stretch between two of them
    # undone: whatever the file lacks must be reported as missing, at the same place.
    file_holes = [
        (before + report.frame_duration - report.video_start, before + length - report.video_start)
        for before, length in report.video_gaps
    ]
    archive_start = summary["archive"]["start_seconds"] or 0.0
    reported = [
        (r["start_seconds"] - archive_start, r["end_seconds"] - archive_start)
        for r in summary["missing_ranges"]
        if r["end_seconds"] is not None and "video" in r["tracks"]
    ]
    assert len(reported) == len(file_holes), (reported, file_holes)
    for (start, end), (hole_start, hole_end) in zip(reported, file_holes, strict=True):
        assert abs(start - hole_start) < 0.05 and abs(end - hole_end) < 0.05, (reported, file_holes)


@pytest.mark.skipif(os.name != "posix", reason="POSIX signals")
async def test_second_ctrl_c_exits_at_once_and_keeps_segments(
    tmp_path: Path, test_media: TestMedia
) -> None:
    # An ffmpeg that announces itself and then takes two minutes holds the merge open: the second
    # Ctrl+C lands while the recorder waits for it, however fast or loaded the machine is.
    real_ffmpeg = shutil.which("ffmpeg")
    assert real_ffmpeg is not None
    merging = tmp_path / "merging"
    slow_ffmpeg = tmp_path / "slow-ffmpeg"
    slow_ffmpeg.write_text(
        f"#!/bin/sh\ntrap 'kill $!; exit 143' TERM\ntouch \"{merging}\"\n"
        f'sleep 120 & wait $!\nexec "{real_ffmpeg}" "$@"\n'
    )
    slow_ffmpeg.chmod(0o755)
    config = OriginConfig(
        shape="time", broadcast_duration=3600, already_broadcast=300, media=test_media.spec
    )
    clock = ManualClock()
    output = tmp_path / "aborted.mp4"
    segments_dir = tmp_path / "aborted.mp4.segments"
    origin = Origin(config, clock, media=test_media)
    async with origin, running_clock(origin, clock, step=0.1, every=0.01):
        proc = await start_recorder(origin.manifest_url, output, "--ffmpeg-path", str(slow_ffmpeg))
        await wait_until(lambda: len(journal_keys(segments_dir)) >= 10)
        proc.send_signal(signal.SIGINT)
        await wait_until(merging.exists)
        proc.send_signal(signal.SIGINT)
        _, stderr = await asyncio.wait_for(proc.communicate(), timeout=60)

    assert proc.returncode == 130, stderr.decode()[-2000:]
    assert b"Traceback" not in stderr
    assert len(journal_keys(segments_dir)) >= 10, stderr.decode()
    assert not output.exists()


async def test_rerun_after_the_manifest_is_gone_merges_what_was_kept(
    tmp_path: Path, test_media: TestMedia
) -> None:
    config = OriginConfig(
        shape="instagram",
        broadcast_duration=60,
        already_broadcast=30,
        end_signal_manifest_404_after=5,
        media=test_media.spec,
    )
    clock = ManualClock()
    output = tmp_path / "late.mp4"
    segments_dir = tmp_path / "late.mp4.segments"
    options = fast_options("", output)
    async with Origin(config, clock, media=test_media) as origin:
        recording = asyncio.create_task(
            record(replace(options, mpd_url=origin.manifest_url), install_signal_handlers=False)
        )
        await wait_until(lambda: len(journal_keys(segments_dir)) >= 20)
        recording.cancel()  # like a crash: nothing merged, the segments stay
        with pytest.raises(asyncio.CancelledError):
            await recording
        kept = journal_keys(segments_dir)
        clock.advance(60)  # the broadcast ends and its manifest turns 404
        summary = await record(
            replace(options, mpd_url=origin.manifest_url), install_signal_handlers=False
        )

    assert summary.end_reason == "merged an earlier recording"
    assert summary.output == output
    video_kept = sum(1 for track, _ in kept if track == "video")
    assert [t.segments for t in summary.tracks if t.kind == "video"] == [video_kept]
    report = inspect(output)
    assert report.video_frames > 0
    assert abs(report.audio_duration - report.video_duration) < 0.1
