"""Long broadcasts end to end on the simulated origin (virtual clock), checked with PyAV:
``--split`` and ``--split-size`` cut the recording into parts that hold every frame once and
play on their own; ``--stop-after`` leaves the live edge while the past is still recovered."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import itertools
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path

import av
import pytest

import instarec.recorder
from instarec.cli import main
from instarec.errors import MergeError
from instarec.finish import RecordingSummary
from instarec.options import Options
from instarec.recorder import record
from instarec.summary import summary_to_json
from instarec.testing.clock import ManualClock
from instarec.testing.faults import FaultConfig
from instarec.testing.media import TestMedia
from instarec.testing.origin import Origin, OriginConfig
from tests.recording import RecorderClock, fast_options, inspect, running_clock

# Two packet times naming the same instant (Matroska keeps milliseconds).
SAME_TIME = 0.002


@dataclass(frozen=True, slots=True)
class Packets:
    """A file's packets per stream, in decode order: (seconds, digest of the bytes)."""

    video: list[tuple[float, bytes]]
    audio: list[tuple[float, bytes]]
    first_video_is_key: bool


def packets(path: Path) -> Packets:
    streams: dict[str, list[tuple[float, bytes]]] = {"video": [], "audio": []}
    first_key: bool | None = None
    with av.open(str(path)) as container:
        for packet in container.demux():
            if packet.pts is None or packet.size == 0:
                continue
            kind = packet.stream.type
            if kind == "video" and first_key is None:
                first_key = packet.is_keyframe
            digest = hashlib.sha1(bytes(packet)).digest()
            streams[kind].append((float(packet.pts * packet.time_base), digest))
    return Packets(streams["video"], streams["audio"], bool(first_key))


def decodes_both(path: Path) -> bool:
    """Whether the first video frame and the first audio frame of ``path`` decode."""
    with av.open(str(path)) as container:
        video = next(container.decode(video=0), None)
    with av.open(str(path)) as container:
        audio = next(container.decode(audio=0), None)
    return video is not None and audio is not None


def joined(parts: list[Packets], offsets: list[float], kind: str) -> list[tuple[float, bytes]]:
    """The parts' packets of ``kind`` one after the other, each part's times moved by its
    offset: the recording as one timeline."""
    return [
        (seconds + offset, digest)
        for part, offset in zip(parts, offsets, strict=True)
        for seconds, digest in getattr(part, kind)
    ]


def assert_same_packets(got: list[tuple[float, bytes]], want: list[tuple[float, bytes]]) -> None:
    assert [digest for _, digest in got] == [digest for _, digest in want]
    worst = max(abs(a - b) for (a, _), (b, _) in zip(got, want, strict=True))
    assert worst < SAME_TIME


def assert_no_frame_lost_or_repeated(video: list[tuple[float, bytes]], frame: float) -> None:
    """One timeline of video packets: each a frame after the one before, none at the same time."""
    steps = [after - before for (before, _), (after, _) in itertools.pairwise(sorted(video))]
    assert min(steps) > frame - SAME_TIME
    assert max(steps) < frame + SAME_TIME


async def record_origin(
    config: OriginConfig, media: TestMedia, output: Path, **changes: object
) -> tuple[RecordingSummary, int]:
    """Record a whole broadcast (past and live); the summary and the frames it holds."""
    clock = ManualClock()
    async with Origin(config, clock, media=media) as origin:
        async with running_clock(origin, clock):
            summary = await record(
                fast_options(origin.manifest_url, output, **changes),
                install_signal_handlers=False,
            )
        expected = origin.expected_frames(0, origin.segment_count - 1)
    return summary, expected


def config_for(media: TestMedia) -> OriginConfig:
    return OriginConfig(
        shape="time", broadcast_duration=70, already_broadcast=20, window=5, media=media.spec
    )


async def test_split_parts_hold_every_frame_once_and_play_on_their_own(
    tmp_path: Path, test_media: TestMedia
) -> None:
    config = config_for(test_media)
    whole_summary, expected = await record_origin(config, test_media, tmp_path / "whole.mp4")
    summary, _ = await record_origin(config, test_media, tmp_path / "split.mp4", split_duration=20)

    parts = summary.parts
    assert len(parts) >= 3
    assert [p.path for p in parts] == [
        tmp_path / f"split.{n:03d}.mp4" for n in range(1, 1 + len(parts))
    ]
    assert summary.output == parts[0].path
    assert not (tmp_path / "split.mp4").exists()
    assert sorted(os.listdir(tmp_path)) == sorted(["whole.mp4", *(p.path.name for p in parts)])
    assert whole_summary.parts == ()

    whole = packets(tmp_path / "whole.mp4")
    pieces = [packets(part.path) for part in parts]
    assert len(whole.video) == expected
    assert sum(len(piece.video) for piece in pieces) == expected
    # Each part starts at 0; moved to where it starts in the recording, the parts are the
    # unsplit file packet for packet: no frame or audio frame lost, repeated or moved.
    offsets = [part.start - parts[0].start for part in parts]
    assert_same_packets(joined(pieces, offsets, "video"), whole.video)
    assert_same_packets(joined(pieces, offsets, "audio"), whole.audio)
    for part, piece in zip(parts, pieces, strict=True):
        report = inspect(part.path)
        assert piece.first_video_is_key
        assert decodes_both(part.path)
        assert min(piece.video[0][0], piece.audio[0][0]) == pytest.approx(0.0, abs=SAME_TIME)
        assert report.video_gaps == ()
        assert abs((report.audio_start or 0.0) - (report.video_start or 0.0)) < 0.1
        assert abs((report.audio_end or 0.0) - (report.video_end or 0.0)) < 0.1
        assert report.video_duration <= 20.0 + SAME_TIME
        assert part.duration == pytest.approx(report.video_duration, abs=0.1)
        assert part.size == part.path.stat().st_size
    # Not cut shorter than it had to be: a part and the next part's first segment exceed 20 s.
    for part, after in itertools.pairwise(parts):
        assert after.start - part.start <= 20.0 + SAME_TIME
        assert after.start - part.start > 20.0 - 2.4  # the longest segment of the media
    assert summary.duration == pytest.approx(whole_summary.duration, abs=0.01)

    document = summary_to_json(summary)
    assert [p["path"] for p in document["parts"]] == [str(p.path) for p in parts]
    assert [p["size_bytes"] for p in document["parts"]] == [p.path.stat().st_size for p in parts]
    assert document["parts"][1]["start_seconds"] == pytest.approx(parts[1].start, abs=0.001)
    assert summary_to_json(whole_summary)["parts"] == []


async def test_split_size_parts_stay_under_the_size(tmp_path: Path, test_media: TestMedia) -> None:
    config = config_for(test_media)
    clock = ManualClock()
    async with Origin(config, clock, media=test_media) as origin:
        looped = origin.broadcast.media
        count = origin.segment_count
        total = sum(
            looped.segment_info(kind, i).size for kind in ("video", "audio") for i in range(count)
        )
        audio_frames = sum(looped.segment_info("audio", i).sample_count for i in range(count))
        expected = origin.expected_frames(0, count - 1)
    limit = total // 3 + 1000
    output = tmp_path / "sized.mkv"
    summary, _ = await record_origin(config, test_media, output, split_size=limit)

    parts = summary.parts
    assert len(parts) >= 3
    pieces = [packets(part.path) for part in parts]
    assert sum(len(piece.video) for piece in pieces) == expected
    assert sum(len(piece.audio) for piece in pieces) == audio_frames
    offsets = [part.start - parts[0].start for part in parts]
    assert_no_frame_lost_or_repeated(joined(pieces, offsets, "video"), 1 / test_media.spec.fps)
    for part, piece in zip(parts, pieces, strict=True):
        size = part.path.stat().st_size
        # The segments' moof boxes give way to Matroska's block headers: about the same size.
        assert size <= limit * 1.02
        assert piece.first_video_is_key
        assert decodes_both(part.path)
        report = inspect(part.path)
        assert abs((report.audio_start or 0.0) - (report.video_start or 0.0)) < 0.1
        assert abs((report.audio_end or 0.0) - (report.video_end or 0.0)) < 0.1
    for part in parts[:-1]:
        assert part.path.stat().st_size > limit * 0.85  # cut near the size, not early


async def test_stop_after_leaves_the_live_edge_and_still_recovers_the_past(
    tmp_path: Path,
    test_media: TestMedia,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Every segment's first byte comes 10 ms late: the chain through the 60 past segments
    # lasts over half a real second, fifty virtual ones, long after the 10 s of --stop-after.
    config = OriginConfig(
        shape="time",
        broadcast_duration=600,
        already_broadcast=120,
        window=5,
        media=test_media.spec,
        faults=FaultConfig(slow_first_byte=1.0, slow_first_byte_delay=0.01),
    )
    clock = ManualClock()
    recorder_clock = RecorderClock(clock)
    monkeypatch.setattr(
        instarec.recorder,
        "record",
        functools.partial(record, clock=recorder_clock, install_signal_handlers=False),
    )
    output = tmp_path / "stopped.mkv"
    summary_file = tmp_path / "stopped.json"
    async with Origin(config, clock, media=test_media) as origin:
        started = clock.now()
        async with running_clock(origin, clock) as driver:
            code = await asyncio.to_thread(
                main,
                [origin.manifest_url, str(output), "--stop-after", "10s",
                 "--summary-file", str(summary_file), "--poll-interval", "0.02",
                 "--download-retry-delay", "0.01", "--live-end-timeout", "20"],
            )  # fmt: skip
        requests = origin.request_log
        document = json.loads(summary_file.read_text())
        video_end = document["tracks"][0]["end_seconds"]
        last = origin.media.index_at(video_end - 0.001)
        expected = origin.expected_frames(0, last)
        first_listed = driver.first_listed
        broadcast_end = origin.duration

    assert code == 0, capsys.readouterr().err
    assert document["end_reason"] == "stopped after 10s (--stop-after)"
    assert (document["exit_code"], document["interrupted"]) == (0, False)
    assert "stopped after 10s (--stop-after)" in capsys.readouterr().out
    stop = started + 10
    # The live edge was followed up to the stop and no further, in a broadcast going on.
    manifests = [r.virtual_time for r in requests if r.kind == "manifest"]
    # (A refresh, with its time request, costs the broadcast a few virtual seconds.)
    assert stop - 3 <= max(manifests) < stop + 10
    assert stop - 3 - 2.4 <= video_end < stop + 10 < broadcast_end
    # The past was still being recovered after the stop, and all of it was.
    assert first_listed is not None and first_listed > 50
    past = [
        r.virtual_time
        for r in requests
        if r.kind == "media" and r.index is not None and r.index < first_listed
    ]
    assert max(past) > max(manifests)
    assert document["archive"]["reaches_broadcast_start"]
    assert document["tracks"][0]["start_seconds"] == 0.0
    assert document["missing_ranges"] == []
    report = inspect(output)
    assert report.video_frames == expected
    assert report.video_gaps == ()
    assert report.video_start == pytest.approx(0.0, abs=SAME_TIME)
    assert abs(report.audio_duration - report.video_duration) < 0.1


async def test_a_failed_split_merge_leaves_no_part_and_the_rerun_makes_them_all(
    tmp_path: Path, test_media: TestMedia
) -> None:
    # ffmpeg fails on the second part: nothing is published, the segments stay, and running
    # the same command again (the manifest gone meanwhile) merges every part.
    calls = tmp_path / "calls"
    failing = tmp_path / "ffmpeg-fails-second"
    failing.write_text(
        "#!/bin/sh\n"
        f"echo x >> '{calls}'\n"
        f"if [ $(wc -l < '{calls}') -eq 2 ]; then echo 'simulated failure' >&2; exit 1; fi\n"
        'exec ffmpeg "$@"\n'
    )
    failing.chmod(0o755)
    config = replace(config_for(test_media), end_signal_manifest_404_after=5)
    output = tmp_path / "rerun.mkv"
    clock = ManualClock()
    async with Origin(config, clock, media=test_media) as origin:
        options: Options = fast_options(origin.manifest_url, output, split_duration=20)
        async with running_clock(origin, clock):
            with pytest.raises(MergeError, match="simulated failure"):
                await record(
                    replace(options, ffmpeg_path=str(failing)), install_signal_handlers=False
                )
        assert sorted(os.listdir(tmp_path)) == sorted(
            ["calls", "ffmpeg-fails-second", "rerun.mkv.segments"]
        )
        clock.advance(60)  # the manifest is gone
        summary = await record(options, install_signal_handlers=False)
        expected = origin.expected_frames(0, origin.segment_count - 1)

    assert summary.end_reason == "merged an earlier recording"
    assert len(summary.parts) >= 3
    assert sum(inspect(part.path).video_frames for part in summary.parts) == expected
    assert not (tmp_path / "rerun.mkv.segments").exists()
