"""merge.py: ffmpeg discovery, container choice, and the mux checked with PyAV on the output.

The media is real: ffmpeg encodes 6 s of video (1 s GOPs) and audio into fragmented MP4, which a
small box walker here splits into an init segment and one segment per moof, like a DASH packager.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import shutil
import stat
import struct
import subprocess
import sys
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import pytest

from instarec import merge
from instarec.errors import FFmpegNotFoundError, MergeError, UsageError
from instarec.merge import TrackInput, find_ffmpeg, merge_tracks, output_format

FFMPEG = shutil.which("ffmpeg")
needs_ffmpeg = pytest.mark.skipif(FFMPEG is None, reason="ffmpeg is not installed")

FPS = 30
SECONDS = 6


# --- a minimal ISO-BMFF walker, independent of the code under test -------------------------


def _boxes(data: bytes, start: int = 0, end: int | None = None) -> Iterator[tuple[str, int, int]]:
    """(type, offset, size) of each box in data[start:end]."""
    end = len(data) if end is None else end
    off = start
    while off < end:
        size, kind = struct.unpack(">I4s", data[off : off + 8])
        header = 8
        if size == 1:
            size = struct.unpack(">Q", data[off + 8 : off + 16])[0]
            header = 16
        elif size == 0:
            size = end - off
        assert size >= header, "malformed box"
        yield kind.decode("latin-1"), off, size
        off += size


def _child(data: bytes, off: int, size: int, kind: str) -> tuple[int, int]:
    for k, o, s in _boxes(data, off + 8, off + size):
        if k == kind:
            return o, s
    raise AssertionError(f"no {kind} box")


def _tfdt_offset(segment: bytes) -> tuple[int, int]:
    """(offset of the tfdt value, its byte width) in the first traf of a segment."""
    moof = next((o, s) for k, o, s in _boxes(segment) if k == "moof")
    traf = _child(segment, *moof, "traf")
    tfdt_off, _ = _child(segment, *traf, "tfdt")
    version = segment[tfdt_off + 8]
    return tfdt_off + 12, 8 if version == 1 else 4


def read_tfdt(segment: bytes) -> int:
    off, width = _tfdt_offset(segment)
    return int.from_bytes(segment[off : off + width], "big")


def shift_tfdt(segment: bytes, ticks: int) -> bytes:
    """The segment with its (single-traf) tfdt moved by ``ticks``: a later point in a stream."""
    off, width = _tfdt_offset(segment)
    value = int.from_bytes(segment[off : off + width], "big") + ticks
    return segment[:off] + value.to_bytes(width, "big") + segment[off + width :]


def read_timescale(init: bytes) -> int:
    moov = next((o, s) for k, o, s in _boxes(init) if k == "moov")
    trak = _child(init, *moov, "trak")
    mdia = _child(init, *trak, "mdia")
    mdhd_off, _ = _child(init, *mdia, "mdhd")
    version = init[mdhd_off + 8]
    field = mdhd_off + 12 + (16 if version == 1 else 8)
    return int.from_bytes(init[field : field + 4], "big")


@dataclass(frozen=True, slots=True)
class SourceTrack:
    kind: str
    init: bytes
    segments: tuple[bytes, ...]
    timescale: int

    def start(self, index: int) -> float:
        return read_tfdt(self.segments[index]) / self.timescale


def _split(path: Path, kind: str) -> SourceTrack:
    data = path.read_bytes()
    init = b""
    segments: list[bytes] = []
    for box, off, size in _boxes(data):
        chunk = data[off : off + size]
        if box in ("ftyp", "moov"):
            init += chunk
        elif box == "moof":
            segments.append(chunk)
        elif box == "mdat":
            segments[-1] += chunk
    return SourceTrack(kind, init, tuple(segments), read_timescale(init))


@dataclass(frozen=True, slots=True)
class Source:
    video: SourceTrack
    audio: SourceTrack


@pytest.fixture(scope="session")
def source(tmp_path_factory: pytest.TempPathFactory) -> Source:
    if FFMPEG is None:
        pytest.skip("ffmpeg is not installed")
    root = tmp_path_factory.mktemp("merge-media")
    common = [FFMPEG, "-nostdin", "-hide_banner", "-loglevel", "error", "-y"]
    fmp4 = ["-f", "mp4", "-movflags", "+frag_keyframe+empty_moov+default_base_moof"]
    subprocess.run(
        [
            *common,
            *("-f", "lavfi", "-i", f"testsrc2=size=160x90:rate={FPS}:duration={SECONDS}"),
            *("-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"),
            *("-g", str(FPS), "-keyint_min", str(FPS), "-sc_threshold", "0"),
            *fmp4,
            str(root / "video.mp4"),
        ],
        check=True,
    )
    subprocess.run(
        [
            *common,
            *("-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={SECONDS}"),
            *("-c:a", "aac", "-b:a", "64k", "-frag_duration", "1000000"),
            *fmp4,
            str(root / "audio.mp4"),
        ],
        check=True,
    )
    video = _split(root / "video.mp4", "video")
    audio = _split(root / "audio.mp4", "audio")
    assert len(video.segments) == SECONDS
    assert len(audio.segments) >= SECONDS
    return Source(video, audio)


def write_track(
    directory: Path, track: SourceTrack, indexes: list[int], *, shift_seconds: float = 0.0
) -> TrackInput:
    """Store the chosen segments as the recorder would and describe them as a TrackInput."""
    directory.mkdir(parents=True, exist_ok=True)
    ticks = round(shift_seconds * track.timescale)
    init = directory / f"{track.kind}-init.mp4"
    init.write_bytes(track.init)
    paths = []
    for i in indexes:
        path = directory / f"{track.kind}-{i:04d}.m4s"
        path.write_bytes(shift_tfdt(track.segments[i], ticks))
        paths.append(path)
    first = (read_tfdt(track.segments[indexes[0]]) + ticks) / track.timescale
    return TrackInput(track.kind, init, tuple(paths), first)


@dataclass(frozen=True, slots=True)
class Probe:
    streams: tuple[str, ...]
    video_start: float | None
    audio_start: float | None
    video_pts: tuple[float, ...]  # decoded frames, seconds, presentation order
    audio_end: float | None


def probe(path: Path) -> Probe:
    with av.open(str(path)) as container:
        streams = tuple(s.type for s in container.streams)
        video_pts: list[float] = []
        audio_start = audio_end = None
        if container.streams.video:
            vs = container.streams.video[0]
            for frame in container.decode(vs):
                video_pts.append(float(frame.pts * vs.time_base))
    with av.open(str(path)) as container:
        if container.streams.audio:
            aud = container.streams.audio[0]
            for packet in container.demux(aud):
                if packet.pts is None:
                    continue
                t = float(packet.pts * aud.time_base)
                audio_start = t if audio_start is None else min(audio_start, t)
                end = float((packet.pts + packet.duration) * aud.time_base)
                audio_end = end if audio_end is None else max(audio_end, end)
    video_pts.sort()
    return Probe(
        streams, video_pts[0] if video_pts else None, audio_start, tuple(video_pts), audio_end
    )


async def run_merge(tmp_path: Path, tracks: list[TrackInput], name: str) -> merge.MergeResult:
    assert FFMPEG is not None
    return await merge_tracks(tracks, tmp_path / name, ffmpeg=FFMPEG, overwrite=False)


# --- output_format ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "muxer"),
    [
        ("a.mp4", "mp4"),
        ("a.M4V", "mp4"),
        ("a.mov", "mov"),
        ("a.m4a", "ipod"),
        ("a.mkv", "matroska"),
        ("dir.d/a.ts", "mpegts"),
    ],
)
def test_output_format_from_extension(name: str, muxer: str) -> None:
    assert output_format(Path(name)) == muxer


@pytest.mark.parametrize("name", ["a.avi", "a.webm", "a", "a.mp4.part"])
def test_output_format_rejects_other_extensions(name: str) -> None:
    with pytest.raises(UsageError, match=r"\.mp4"):
        output_format(Path(name))


# --- find_ffmpeg -----------------------------------------------------------------------------


def _executable(path: Path) -> Path:
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_find_ffmpeg_explicit_path(tmp_path: Path) -> None:
    exe = _executable(tmp_path / "my-ffmpeg")
    assert find_ffmpeg(str(exe)) == str(exe)


@pytest.mark.parametrize("mode", ["missing", "not-executable"])
def test_find_ffmpeg_bad_explicit_path(tmp_path: Path, mode: str) -> None:
    path = tmp_path / "ffmpeg"
    if mode == "not-executable":
        path.write_text("")
    with pytest.raises(FFmpegNotFoundError) as info:
        find_ffmpeg(str(path))
    message = str(info.value)
    assert "--ffmpeg-path" in message
    assert "instarec[ffmpeg]" in message
    assert "\n" not in message


def test_find_ffmpeg_command_name_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    exe = _executable(tmp_path / "ffmpeg-5")
    monkeypatch.setenv("PATH", str(tmp_path))
    assert find_ffmpeg("ffmpeg-5") == str(exe)


def test_find_ffmpeg_prefers_path_over_bundled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    exe = _executable(tmp_path / "ffmpeg")
    monkeypatch.setenv("PATH", str(tmp_path))
    fake = types.ModuleType("imageio_ffmpeg")
    fake.get_ffmpeg_exe = lambda: "/bundled/ffmpeg"  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", fake)
    assert find_ffmpeg() == str(exe)


def test_find_ffmpeg_falls_back_to_bundled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # empty directory: no ffmpeg on PATH
    fake = types.ModuleType("imageio_ffmpeg")
    fake.get_ffmpeg_exe = lambda: "/bundled/ffmpeg"  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", fake)
    assert find_ffmpeg() == "/bundled/ffmpeg"


def test_find_ffmpeg_nothing_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)  # import raises ImportError
    with pytest.raises(FFmpegNotFoundError, match=r"apt install ffmpeg.*--ffmpeg-path"):
        find_ffmpeg()


def test_find_ffmpeg_explicit_name_does_not_fall_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The user asked for a specific command: silently using another binary would surprise.
    monkeypatch.setenv("PATH", str(tmp_path))
    fake = types.ModuleType("imageio_ffmpeg")
    fake.get_ffmpeg_exe = lambda: "/bundled/ffmpeg"  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", fake)
    with pytest.raises(FFmpegNotFoundError, match="ffmpeg-6"):
        find_ffmpeg("ffmpeg-6")


# --- merge: timestamps -----------------------------------------------------------------------

FRAME = 1 / FPS


@needs_ffmpeg
async def test_a_track_is_streamed_as_init_then_segments_in_order(
    tmp_path: Path, source: Source
) -> None:
    # What ffmpeg reads from its pipe: the init segment, then each segment, byte for byte.
    video = write_track(tmp_path / "segs", source.video, [2, 0, 1])
    feed = merge._TrackFeed(video)
    received = bytearray()

    def drain() -> None:
        with open(feed.read_fd, "rb") as pipe:
            while chunk := pipe.read(65536):
                received.extend(chunk)

    await asyncio.gather(asyncio.to_thread(drain), asyncio.to_thread(feed.feed))
    assert feed.error is None
    segments = source.video.segments
    expected = source.video.init + segments[2] + segments[0] + segments[1]
    assert bytes(received) == expected


@needs_ffmpeg
async def test_the_merge_writes_no_copy_of_the_recording(tmp_path: Path, source: Source) -> None:
    video = write_track(tmp_path / "segs", source.video, list(range(SECONDS)))
    before = sorted(os.listdir(tmp_path / "segs"))
    await run_merge(tmp_path, [video], "out.mp4")
    assert sorted(os.listdir(tmp_path / "segs")) == before
    assert sorted(os.listdir(tmp_path)) == ["out.mp4", "segs"]


@needs_ffmpeg
async def test_a_segment_file_gone_mid_merge_fails_it_instead_of_cutting_it_short(
    tmp_path: Path, source: Source
) -> None:
    video = write_track(tmp_path / "segs", source.video, list(range(SECONDS)))
    video.segments[SECONDS // 2].unlink()
    with pytest.raises(MergeError, match="missing"):
        await run_merge(tmp_path, [video], "out.mp4")
    assert not (tmp_path / "out.mp4").exists()
    assert not (tmp_path / "out.part.mp4").exists()


@needs_ffmpeg
@pytest.mark.parametrize("late", ["audio", "video"])
async def test_late_track_keeps_its_offset(tmp_path: Path, source: Source, late: str) -> None:
    # Recording joined so that one track's first kept segment is one second after the other's.
    video_idx = list(range(1 if late == "video" else 0, SECONDS))
    audio_idx = list(range(1 if late == "audio" else 0, len(source.audio.segments)))
    video = write_track(tmp_path / "segs", source.video, video_idx)
    audio = write_track(tmp_path / "segs", source.audio, audio_idx)
    expected = source.audio.start(audio_idx[0]) - source.video.start(video_idx[0])
    assert abs(abs(expected) - 1.0) < 0.05  # the fixture really has ~1 s segments

    await run_merge(tmp_path, [video, audio], "out.mp4")

    p = probe(tmp_path / "out.mp4")
    assert p.video_start is not None and p.audio_start is not None
    assert p.audio_start - p.video_start == pytest.approx(expected, abs=0.05)
    # The earlier track starts the file: no leading empty second.
    assert min(p.video_start, p.audio_start) == pytest.approx(0.0, abs=0.05)
    assert len(p.video_pts) == FPS * len(video_idx)


@needs_ffmpeg
async def test_large_stream_times_are_moved_to_zero(tmp_path: Path, source: Source) -> None:
    # A recording that joins a broadcast running for 5 hours: tfdt values are large. The output
    # starts at zero with the tracks' one-second offset intact.
    hours = 5 * 3600.0
    video = write_track(tmp_path / "segs", source.video, [2, 3, 4, 5], shift_seconds=hours)
    audio = write_track(tmp_path / "segs", source.audio, [3, 4, 5], shift_seconds=hours)
    assert video.first_start > hours

    await run_merge(tmp_path, [video, audio], "out.mkv")

    p = probe(tmp_path / "out.mkv")
    assert p.video_start == pytest.approx(0.0, abs=0.01)
    assert p.audio_start is not None
    expected = source.audio.start(3) - source.video.start(2)
    assert p.audio_start - p.video_start == pytest.approx(expected, abs=0.05)
    assert len(p.video_pts) == 4 * FPS


@needs_ffmpeg
async def test_missing_middle_segment_stays_a_gap(tmp_path: Path, source: Source) -> None:
    kept = [0, 1, 3, 4, 5]  # segment 2 (2.0 s to 3.0 s) was never downloaded
    video = write_track(tmp_path / "segs", source.video, kept)
    audio = write_track(tmp_path / "segs", source.audio, list(range(len(source.audio.segments))))
    gap = source.video.start(3) - source.video.start(2)
    assert gap == pytest.approx(1.0, abs=0.001)

    await run_merge(tmp_path, [video, audio], "out.mp4")

    p = probe(tmp_path / "out.mp4")
    assert len(p.video_pts) == FPS * len(kept)
    steps = [b - a for a, b in zip(p.video_pts, p.video_pts[1:], strict=False)]
    jumps = [(i, s) for i, s in enumerate(steps) if s > 1.5 * FRAME]
    assert len(jumps) == 1
    index, step = jumps[0]
    assert index == 2 * FPS - 1  # between the last frame of segment 1 and the first of 3
    assert step == pytest.approx(gap + FRAME, abs=0.005)
    # Media after the gap is where it was broadcast, not pulled earlier.
    assert p.video_pts[2 * FPS] == pytest.approx(source.video.start(3), abs=0.005)
    assert p.video_pts[-1] == pytest.approx(SECONDS - FRAME, abs=0.005)
    # Audio is continuous and ends with the video.
    assert p.audio_end == pytest.approx(SECONDS, abs=0.05)


# --- merge: containers and track sets --------------------------------------------------------


def _names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def _top_level_boxes(path: Path) -> list[str]:
    data = path.read_bytes()
    return [kind for kind, _, _ in _boxes(data)]


@needs_ffmpeg
@pytest.mark.parametrize("name", ["out.mp4", "out.mkv", "out.ts", "out.mov"])
async def test_containers(tmp_path: Path, source: Source, name: str) -> None:
    video = write_track(tmp_path / "segs", source.video, list(range(SECONDS)))
    audio = write_track(tmp_path / "segs", source.audio, list(range(1, len(source.audio.segments))))

    result = await run_merge(tmp_path, [video, audio], name)

    output = tmp_path / name
    assert result.output == output
    assert result.size == output.stat().st_size
    assert _names(tmp_path) == sorted([name, "segs"])  # no .part file, no copy of the tracks
    p = probe(output)
    assert sorted(p.streams) == ["audio", "video"]
    assert len(p.video_pts) == FPS * SECONDS
    assert p.video_start is not None and p.audio_start is not None
    # MPEG-TS starts its clock at 1.4 s: compare the tracks, not absolute times.
    assert p.audio_start - p.video_start == pytest.approx(audio.first_start, abs=0.05)
    if name.endswith((".mp4", ".mov")):
        boxes = _top_level_boxes(output)
        assert boxes.index("moov") < boxes.index("mdat"), "faststart: moov must come first"


@needs_ffmpeg
async def test_m4a_keeps_only_audio(tmp_path: Path, source: Source) -> None:
    video = write_track(tmp_path / "segs", source.video, list(range(SECONDS)))
    audio = write_track(tmp_path / "segs", source.audio, list(range(len(source.audio.segments))))

    await run_merge(tmp_path, [video, audio], "out.m4a")

    p = probe(tmp_path / "out.m4a")
    assert p.streams == ("audio",)
    assert p.audio_end == pytest.approx(SECONDS, abs=0.05)
    boxes = _top_level_boxes(tmp_path / "out.m4a")
    assert boxes.index("moov") < boxes.index("mdat")


@needs_ffmpeg
async def test_m4a_without_audio_is_an_error(tmp_path: Path, source: Source) -> None:
    video = write_track(tmp_path / "segs", source.video, [0, 1])
    with pytest.raises(MergeError, match="audio"):
        await run_merge(tmp_path, [video], "out.m4a")
    assert not (tmp_path / "out.m4a").exists()


@needs_ffmpeg
async def test_video_only(tmp_path: Path, source: Source) -> None:
    video = write_track(tmp_path / "segs", source.video, [1, 2, 3])
    await run_merge(tmp_path, [video], "out.mp4")
    p = probe(tmp_path / "out.mp4")
    assert p.streams == ("video",)
    assert len(p.video_pts) == 3 * FPS
    assert p.video_start == pytest.approx(0.0, abs=0.01)


@needs_ffmpeg
async def test_audio_only_into_mp4(tmp_path: Path, source: Source) -> None:
    audio = write_track(tmp_path / "segs", source.audio, [2, 3])
    await run_merge(tmp_path, [audio], "out.mp4")
    p = probe(tmp_path / "out.mp4")
    assert p.streams == ("audio",)
    assert p.audio_start == pytest.approx(0.0, abs=0.03)
    expected = source.audio.start(4) - source.audio.start(2)
    assert p.audio_end is not None
    assert p.audio_end - p.audio_start == pytest.approx(expected, abs=0.03)


@needs_ffmpeg
async def test_track_without_segments_is_left_out(tmp_path: Path, source: Source) -> None:
    video = write_track(tmp_path / "segs", source.video, [0, 1])
    audio = TrackInput("audio", video.init, (), 0.0)
    await run_merge(tmp_path, [video, audio], "out.mp4")
    assert probe(tmp_path / "out.mp4").streams == ("video",)


async def test_nothing_recorded_is_an_error(tmp_path: Path) -> None:
    init = tmp_path / "init"
    init.write_bytes(b"")
    with pytest.raises(MergeError, match="no segment"):
        await merge_tracks(
            [TrackInput("video", init, (), 0.0)],
            tmp_path / "out.mp4",
            ffmpeg="ffmpeg",
            overwrite=True,
        )


# --- merge: output file safety ---------------------------------------------------------------


@needs_ffmpeg
async def test_existing_output_needs_overwrite(tmp_path: Path, source: Source) -> None:
    assert FFMPEG is not None
    video = write_track(tmp_path / "segs", source.video, [0, 1])
    output = tmp_path / "out.mp4"
    output.write_bytes(b"keep me")
    with pytest.raises(UsageError, match="--overwrite"):
        await run_merge(tmp_path, [video], "out.mp4")
    assert output.read_bytes() == b"keep me"

    await merge_tracks([video], output, ffmpeg=FFMPEG, overwrite=True)
    assert len(probe(output).video_pts) == 2 * FPS


@needs_ffmpeg
@needs_ffmpeg
async def test_parts_appear_together_or_not_at_all(tmp_path: Path, source: Source) -> None:
    assert FFMPEG is not None
    first = write_track(tmp_path / "one", source.video, [0, 1, 2])
    second = write_track(tmp_path / "two", source.video, [3, 4, 5])
    second.init.write_bytes(b"this is not an init segment")
    outputs = [tmp_path / "rec.001.mp4", tmp_path / "rec.002.mp4"]
    jobs = [(outputs[0], [first]), (outputs[1], [second])]
    # The second part fails after the first was written: neither is left, nor a .part file.
    with pytest.raises(MergeError, match="ffmpeg failed"):
        await merge.merge_parts(jobs, ffmpeg=FFMPEG, overwrite=False)
    assert sorted(os.listdir(tmp_path)) == ["one", "two"]

    second.init.write_bytes(source.video.init)
    results = await merge.merge_parts(jobs, ffmpeg=FFMPEG, overwrite=False)
    assert [r.output for r in results] == outputs
    assert [r.size for r in results] == [o.stat().st_size for o in outputs]
    for output in outputs:
        p = probe(output)
        assert len(p.video_pts) == 3 * FPS
        assert p.video_start == pytest.approx(0.0, abs=0.01)  # each part starts at 0


def test_a_split_output_is_guarded_by_its_parts(tmp_path: Path) -> None:
    output = tmp_path / "rec.mkv"
    output.write_bytes(b"an unsplit recording")
    merge.check_output_free(output, False, split=True)  # the parts are what is written
    for name in ("rec.mkv.001", "rec.001.part.mkv", "rec.01.mkv", "other.001.mkv"):
        (tmp_path / name).write_bytes(b"")
    merge.check_output_free(output, False, split=True)
    (tmp_path / "rec.004.mkv").write_bytes(b"")
    (tmp_path / "rec.002.mkv").write_bytes(b"")
    with pytest.raises(UsageError, match=r"rec\.002\.mkv' already exists \(a part .*--overwrite"):
        merge.check_output_free(output, False, split=True)
    merge.check_output_free(output, True, split=True)
    with pytest.raises(UsageError, match=r"rec\.mkv' already exists"):
        merge.check_output_free(output, False)


def test_an_overwritten_split_recording_loses_its_later_parts(tmp_path: Path) -> None:
    output = tmp_path / "rec.mkv"
    names = ["rec.001.mkv", "rec.002.mkv", "rec.003.mkv", "rec.1000.mkv", "rec.mkv"]
    names += ["rec.003.part.mkv", "other.003.mkv", "rec.003.mp4"]
    for name in names:
        (tmp_path / name).write_bytes(b"")
    merge.remove_parts_after(output, 2)
    assert sorted(os.listdir(tmp_path)) == sorted(
        [
            "rec.001.mkv",
            "rec.002.mkv",
            "rec.mkv",
            "rec.003.part.mkv",
            "other.003.mkv",
            "rec.003.mp4",
        ]
    )


@needs_ffmpeg
async def test_ffmpeg_failure_leaves_no_output(tmp_path: Path, source: Source) -> None:
    video = write_track(tmp_path / "segs", source.video, [0, 1])
    video.init.write_bytes(b"this is not an init segment")
    with pytest.raises(MergeError, match=r"ffmpeg failed: .+"):
        await run_merge(tmp_path, [video], "out.mp4")
    assert not (tmp_path / "out.mp4").exists()
    assert not (tmp_path / "out.part.mp4").exists()


async def test_missing_segment_file_is_a_merge_error(tmp_path: Path) -> None:
    init = tmp_path / "init"
    init.write_bytes(b"init")
    with pytest.raises(MergeError, match="missing"):
        await merge_tracks(
            [TrackInput("video", init, (tmp_path / "gone.m4s",), 0.0)],
            tmp_path / "out.mp4",
            ffmpeg="ffmpeg",
            overwrite=True,
        )


def _fake_ffmpeg(tmp_path: Path, *, ignore_term: bool) -> Path:
    """An 'ffmpeg' that records its pid, creates its output, then hangs."""
    script = tmp_path / "slow-ffmpeg"
    handler = "signal.signal(signal.SIGTERM, signal.SIG_IGN)" if ignore_term else "pass"
    script.write_text(
        f"#!{sys.executable}\n"
        "import os, signal, sys, time\n"
        f"{handler}\n"
        "open(sys.argv[-1], 'wb').write(b'partial')\n"
        f"open({str(tmp_path / 'pid')!r}, 'w').write(str(os.getpid()))\n"
        "time.sleep(60)\n"
    )
    script.chmod(0o755)
    return script


@pytest.mark.parametrize("ignore_term", [False, True])
async def test_cancel_stops_ffmpeg(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ignore_term: bool
) -> None:
    monkeypatch.setattr(merge, "TERMINATE_TIMEOUT", 0.5)
    init = tmp_path / "init"
    init.write_bytes(b"init")
    segment = tmp_path / "s.m4s"
    segment.write_bytes(b"data")
    fake = _fake_ffmpeg(tmp_path, ignore_term=ignore_term)
    task = asyncio.create_task(
        merge_tracks(
            [TrackInput("video", init, (segment,), 0.0)],
            tmp_path / "out.mp4",
            ffmpeg=str(fake),
            overwrite=True,
        )
    )
    pid_file = tmp_path / "pid"
    for _ in range(200):
        if pid_file.exists() and pid_file.read_text():
            break
        await asyncio.sleep(0.025)
    pid = int(pid_file.read_text())
    loop = asyncio.get_running_loop()
    started = loop.time()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert loop.time() - started < 5
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # gone and reaped
    assert not (tmp_path / "out.mp4").exists()
    assert not (tmp_path / "out.part.mp4").exists()


# --- with the project's shared test media (variable ~2 s segments, looped timeline) ------------


@needs_ffmpeg
async def test_shared_media_offset_and_gap_across_a_loop(tmp_path: Path) -> None:
    media_mod = pytest.importorskip("instarec.testing.media")
    media = media_mod.generate_media(media_mod.MediaSpec())
    n = media.source_count
    looped = media.looped(n + 4)
    # A window across the loop boundary (tfdt rewritten there), one video segment missing and
    # the audio joined one segment later than the video.
    window = list(range(n - 3, n + 4))
    missing = n + 1
    video_idx = [i for i in window if i != missing]
    audio_idx = window[1:]

    def store(kind: str, indexes: list[int]) -> TrackInput:
        track = media.track(kind)
        directory = tmp_path / "segs"
        directory.mkdir(exist_ok=True)
        init = directory / f"{kind}-init.mp4"
        init.write_bytes(track.init)
        paths = []
        for i in indexes:
            path = directory / f"{kind}-{i}.m4s"
            path.write_bytes(looped.segment_bytes(kind, i))
            paths.append(path)
        first = looped.segment_info(kind, indexes[0]).t / track.timescale
        return TrackInput(kind, init, tuple(paths), first)

    video = store("video", video_idx)
    audio = store("audio", audio_idx)
    await run_merge(tmp_path, [video, audio], "out.mp4")

    p = probe(tmp_path / "out.mp4")
    assert len(p.video_pts) == sum(looped.video_frames(i) for i in video_idx)
    assert p.video_start == pytest.approx(0.0, abs=0.01)
    assert p.audio_start is not None
    offset = audio.first_start - video.first_start
    assert offset == pytest.approx(looped.duration_seconds(window[0]), abs=0.03)
    assert p.audio_start - p.video_start == pytest.approx(offset, abs=0.05)
    frame = 1 / media.spec.fps
    steps = [b - a for a, b in zip(p.video_pts, p.video_pts[1:], strict=False)]
    jumps = [s for s in steps if s > 1.5 * frame]
    assert jumps == [pytest.approx(looped.duration_seconds(missing) + frame, abs=0.005)]
    # The last frame sits where the broadcast put it, relative to the first kept segment.
    expected_last = looped.end_seconds(window[-1]) - looped.start_seconds(window[0]) - frame
    assert p.video_pts[-1] == pytest.approx(expected_last, abs=0.005)


@pytest.mark.skipif(sys.platform != "linux", reason="pipe sizes are set on Linux only")
def test_a_track_feeds_ffmpeg_through_a_wide_pipe(tmp_path: Path) -> None:
    feed = merge._TrackFeed(TrackInput("video", tmp_path / "init.mp4", (), 0.0))
    try:
        # 16 times the default: the copy and ffmpeg take turns every MiB, not every 64 KiB.
        assert fcntl.fcntl(feed.read_fd, fcntl.F_GETPIPE_SZ) == 1 << 20
    finally:
        feed.close()
