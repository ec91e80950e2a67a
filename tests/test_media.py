"""Test media: real, decodable fMP4 whose index matches its bytes, looped without drift."""

from __future__ import annotations

import io
from pathlib import Path

import av
import pytest

from instarec import mp4
from instarec.testing import fmp4, media
from instarec.testing.media import MediaSpec, TestMedia, generate_media, plan_segments

FRAME_TICKS = 15360 // 30


def _decode(data: bytes) -> tuple[list[int], list[int], list[bool]]:
    """pts of every decoded frame, packet pts and keyframe flags (one-stream files)."""
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams[0]
        packets = [p for p in container.demux(stream) if p.size]
        pts = [p.pts for p in packets]
        keys = [p.is_keyframe for p in packets]
    with av.open(io.BytesIO(data)) as container:
        frames = [f.pts for f in container.decode(container.streams[0])]
    return frames, pts, keys


def test_default_media_shape(test_media: TestMedia) -> None:
    video, audio = test_media.video, test_media.audio
    assert video is not None and audio is not None
    assert video.timescale == 15360 and audio.timescale == 48000
    assert video.codecs.startswith("avc1.42") and audio.codecs == "mp4a.40.2"
    assert len(video.segments) == len(audio.segments) == test_media.source_count >= 10
    for track in (video, audio):
        assert 1 < track.bandwidth < 10_000_000
        for i, seg in enumerate(track.segments):
            assert len(track.segment_data(i)) == seg.size
            # every segment starts with styp and parses to the indexed timing
            assert track.segment_data(i)[4:8] == b"styp"
            info = mp4.parse_fragment(track.segment_data(i))
            assert (info.base_media_decode_time, info.duration) == (seg.t, seg.d)
            if i:
                assert seg.t == track.segments[i - 1].t + track.segments[i - 1].d
    # Instagram-like irregular spans of 1.8–2.3 s, not all equal
    seconds = [s.d / video.timescale for s in video.segments]
    assert all(1.8 - 1e-9 <= s <= 2.3 + 1e-9 for s in seconds)
    assert len(set(seconds)) > 3


def test_audio_spans_follow_video(test_media: TestMedia) -> None:
    video, audio = test_media.video, test_media.audio
    assert video is not None and audio is not None
    half_aac_frame = 512 / 48000
    for v, a in zip(video.segments, audio.segments, strict=True):
        assert abs(v.t / 15360 - a.t / 48000) <= half_aac_frame + 1e-9
        assert abs((v.t + v.d) / 15360 - (a.t + a.d) / 48000) <= half_aac_frame + 1e-9
    # the source ends at the same instant in both tracks: loops never drift
    assert video.duration / 15360 == audio.duration / 48000


def test_source_decodes_with_keyframe_at_each_segment(test_media: TestMedia) -> None:
    video = test_media.video
    assert video is not None
    data = video.init + b"".join(video.segment_data(i) for i in range(test_media.source_count))
    frames, pts, keys = _decode(data)
    assert len(frames) == sum(s.sample_count for s in video.segments) == len(pts)
    assert sorted(frames) == [n * FRAME_TICKS for n in range(len(frames))]
    key_times = [p for p, k in zip(pts, keys, strict=True) if k]
    assert key_times == [s.t for s in video.segments]


@pytest.mark.parametrize("kind", ["video", "audio"])
def test_looped_timeline_decodes_continuously(test_media: TestMedia, kind: str) -> None:
    n = test_media.source_count
    looped = test_media.looped(n + 3)  # crosses the loop boundary
    track = test_media.track(kind)
    data = track.init + b"".join(looped.segment_bytes(kind, i) for i in range(n + 3))
    frames, pts, _ = _decode(data)
    step = FRAME_TICKS if kind == "video" else 1024
    assert sorted(frames) == [k * step for k in range(len(frames))]
    if kind == "video":
        assert len(frames) == sum(looped.video_frames(i) for i in range(n + 3))
        assert looped.video_frames(n) == looped.video_frames(0) == track.segments[0].sample_count
    else:
        assert len(pts) == sum(looped.segment_info("audio", i).sample_count for i in range(n + 3))


def test_looped_tfdt_and_sequence_continuity(test_media: TestMedia) -> None:
    n = test_media.source_count
    looped = test_media.looped(2 * n + 2)
    for kind in ("video", "audio"):
        expected_t = 0
        for i in range(2 * n + 2):
            seg = looped.segment_bytes(kind, i)
            info = mp4.parse_fragment(seg)
            assert info.base_media_decode_time == expected_t
            assert looped.segment_info(kind, i).t == expected_t
            assert looped.segment_info(kind, i).size == len(seg)
            assert looped.index_for_time(kind, expected_t) == i
            moof = next(b for b in fmp4.iter_boxes(seg) if b.type == b"moof")
            mfhd = next(fmp4.iter_boxes(seg, moof.payload, moof.end))
            assert int.from_bytes(seg[mfhd.payload + 4 : mfhd.payload + 8]) == i + 1
            expected_t += info.duration
    assert looped.index_for_time("video", 1) is None


def test_three_hour_timeline_is_arithmetic(test_media: TestMedia) -> None:
    video = test_media.video
    assert video is not None
    source_seconds = video.duration / video.timescale
    count = int(3 * 3600 / source_seconds + 1) * test_media.source_count
    looped = test_media.looped(count)
    last = count - 1
    loops = last // test_media.source_count
    assert looped.segment_info("video", last).t == (loops * video.duration + video.segments[-1].t)
    assert looped.end_seconds(last) >= 3 * 3600
    assert looped.index_at(looped.start_seconds(last) + 0.01) == last
    assert looped.index_at(7200.0) == looped.index_for_time(
        "video", looped.segment_info("video", looped.index_at(7200.0)).t
    )
    seg = looped.segment_bytes("audio", last)
    assert mp4.parse_fragment(seg).base_media_decode_time == looped.segment_info("audio", last).t
    with pytest.raises(IndexError):
        looped.segment_info("video", count)


def test_cache_hit_does_not_run_ffmpeg(tmp_path: Path) -> None:
    spec = MediaSpec(duration=2.0, segment_durations="constant", segment_duration=1.0, seed=5)
    before = media.encode_runs()
    first = generate_media(spec, tmp_path)
    made = media.encode_runs()
    assert made > before
    assert first.directory is not None
    stamp = (first.directory / "meta.json").stat().st_mtime_ns
    second = generate_media(spec, tmp_path)
    assert media.encode_runs() == made
    assert (second.directory / "meta.json").stat().st_mtime_ns == stamp
    assert second.video == first.video and second.audio == first.audio
    # a different spec is a different cache entry
    assert MediaSpec(seed=6).cache_key() != MediaSpec(seed=5).cache_key()


def test_audio_only_media(tmp_path: Path) -> None:
    spec = MediaSpec(duration=3.0, video=False, segment_durations="constant")
    m = generate_media(spec, tmp_path)
    assert m.video is None and m.audio is not None
    looped = m.looped(m.source_count + 1)
    assert looped.video_frames(0) == 0
    assert looped.start_seconds(m.source_count) == pytest.approx(m.audio.duration / 48000)


@pytest.mark.parametrize("seed", range(20))
def test_plan_variable_segments(seed: int) -> None:
    frames = plan_segments(MediaSpec(duration=20.0, seed=seed))
    assert all(54 <= n <= 69 for n in frames)
    # 16 frames at 30 fps = 25 AAC frames at 48 kHz: the loop length fits both exactly
    assert sum(frames) % 16 == 0
    assert abs(sum(frames) / 30 - 20.0) < 2.3


def test_plan_constant_segments() -> None:
    assert plan_segments(MediaSpec(duration=30.0, segment_durations="constant")) == [60] * 16
    frames = plan_segments(MediaSpec(duration=30.0, segment_durations="constant", audio=False))
    assert frames == [60] * 15
    with pytest.raises(ValueError):
        plan_segments(MediaSpec(segment_durations="sometimes"))


def test_rewrite_widens_v0_tfdt_and_keeps_samples() -> None:
    payload = bytes(range(30))
    seg = fmp4.build_fragment(
        track_id=1,
        sequence_number=1,
        base_media_decode_time=100,
        durations=[10, 10, 10],
        sizes=[5, 10, 15],
        payload=payload,
        tfdt_version=0,
    )
    out = fmp4.rewrite_fragment(seg, base_media_decode_time=2**33, sequence_number=9)
    assert len(out) == len(seg) + 4
    assert mp4.parse_fragment(out).base_media_decode_time == 2**33
    samples = fmp4.read_samples(out)
    assert b"".join(out[s.offset : s.offset + s.size] for s in samples) == payload
    small = fmp4.rewrite_fragment(seg, base_media_decode_time=5)
    assert len(small) == len(seg) and mp4.parse_fragment(small).base_media_decode_time == 5


@pytest.mark.parametrize("offset", [1.4, 100_000.0])
def test_offset_timeline_shifts_every_tfdt(test_media: TestMedia, offset: float) -> None:
    n = test_media.source_count
    plain, moved = test_media.looped(n + 2), test_media.looped(n + 2, offset)
    for track in test_media.tracks():
        shift = round(offset * track.timescale)
        for i in (0, 1, n, n + 1):
            seg = moved.segment_bytes(track.kind, i)
            tfdt = mp4.parse_fragment(seg).base_media_decode_time
            assert tfdt == plain.segment_info(track.kind, i).t + shift
            assert moved.segment_info(track.kind, i).t == tfdt
            assert moved.index_for_time(track.kind, tfdt) == i
        assert moved.index_for_time(track.kind, plain.segment_info(track.kind, 1).t) is None
    assert moved.index_at(moved.start_seconds(n) + 0.01) == n
    assert moved.start_seconds(0) == pytest.approx(offset, abs=1 / 15360)
    # Decodes continuously from the moved start.
    video = test_media.track("video")
    data = video.init + b"".join(moved.segment_bytes("video", i) for i in range(3))
    frames, _, _ = _decode(data)
    first = round(offset * video.timescale)
    assert sorted(frames) == [first + k * FRAME_TICKS for k in range(len(frames))]
