"""Real test media for the simulated origin: H.264 + AAC fragmented MP4, made by ffmpeg once.

The video is encoded with keyframes forced at the planned segment boundaries and written by
ffmpeg as fragmented MP4 (one moof+mdat per keyframe), so each video fragment *is* a segment.
The audio is encoded separately and its AAC frames are regrouped into segments whose edges
are the AAC frames nearest to the video edges, so video segment i and audio segment i cover
the same span (within half an AAC frame).

The source length is a whole number of both video frames and AAC frames (16 frames at 30 fps
and 48 kHz), so a looped timeline has no drift: loop k simply adds k * source duration to every
tfdt, in both tracks. ``LoopedMedia`` computes segment i of an arbitrarily long timeline from
``i % source_count`` without encoding or storing anything per segment.

Everything produced is cached on disk, keyed by the spec and ``FORMAT_VERSION``.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import logging
import math
import os
import random
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from instarec import merge, mp4
from instarec.testing import fmp4, text

logger = logging.getLogger(__name__)

# Bump when the produced bytes or the cache layout change, so stale caches are not reused.
FORMAT_VERSION = 1

AAC_FRAME = 1024  # samples per AAC-LC frame
# The tone of each audio track, by its place in MediaSpec.audio_languages (Hz).
AUDIO_TONES = (440, 660, 880, 1100, 1320)
AUDIO_CODECS = "mp4a.40.2"

# Variable segment durations, like Instagram's irregular keyframe spacing.
VARIABLE_MIN = 1.8
VARIABLE_MAX = 2.3

_encode_runs = 0


def encode_runs() -> int:
    """How many times this process ran ffmpeg to make media (lets tests see cache hits)."""
    return _encode_runs


@dataclass(frozen=True, slots=True)
class MediaSpec:
    duration: float = 30.0  # seconds of source media to encode (looped for longer timelines)
    segment_durations: str = "variable"  # "variable" (1.8–2.3 s, seeded) | "constant"
    segment_duration: float = 2.0  # target for "constant"
    seed: int = 1
    width: int = 640
    height: int = 360
    fps: int = 30
    audio_rate: int = 48000
    video: bool = True
    audio: bool = True
    # Languages of the audio tracks: the first is the "audio" track's, each further one gets a
    # track of its own ("audio-fr") with a tone of another pitch (AUDIO_TONES).
    audio_languages: tuple[str, ...] = ()
    # A WebVTT-in-MP4 text track ("text-en") per language (testing/text.py).
    subtitles: tuple[str, ...] = ()
    # A TTML-in-MP4 text track per language, right within one loop of the source only.
    ttml_subtitles: tuple[str, ...] = ()
    # A text/vtt track per language: WebVTT files as segments, no init (made as served).
    plain_subtitles: tuple[str, ...] = ()

    def cache_key(self) -> str:
        fields = asdict(self)
        for name in ("audio_languages", "subtitles", "ttml_subtitles", "plain_subtitles"):
            if not fields[name]:
                del fields[name]  # media made before these existed keeps its cache
        text = json.dumps({"format": FORMAT_VERSION, **fields}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:20]


@dataclass(frozen=True, slots=True)
class SegmentInfo:
    t: int  # tfdt, in the track's media timescale
    d: int  # duration in the track's media timescale
    size: int  # bytes
    sample_count: int = 0  # video frames or AAC frames


@dataclass(frozen=True, slots=True)
class TrackMedia:
    kind: str  # "video" | "audio"
    timescale: int
    codecs: str
    bandwidth: int  # bits/s, the peak over segments (what an MPD @bandwidth promises)
    init: bytes
    segments: tuple[SegmentInfo, ...]  # source segments
    track_id: int = 1
    lang: str | None = None
    plain_text: bool = False  # WebVTT files as segments (text/vtt): no init, no boxes
    data: bytes = field(default=b"", repr=False)  # every source segment, back to back
    offsets: tuple[int, ...] = field(default=(), repr=False)  # start of segment i in data

    def segment_data(self, i: int) -> bytes:
        """Bytes of source segment i."""
        start = self.offsets[i]
        return self.data[start : start + self.segments[i].size]

    @property
    def duration(self) -> int:
        """Length of the source in ticks (what one loop adds to every tfdt)."""
        return sum(s.d for s in self.segments)


@dataclass(frozen=True, slots=True)
class TestMedia:
    __test__ = False  # not a pytest test class despite the name

    spec: MediaSpec
    video: TrackMedia | None
    audio: TrackMedia | None
    source_count: int  # number of source segments
    directory: Path | None = None  # where the cached files live
    extra: tuple[TrackMedia, ...] = ()  # further languages ("audio-fr") and text ("text-en")

    def track(self, kind: str) -> TrackMedia:
        for track in self.tracks():
            if track.kind == kind:
                return track
        raise KeyError(f"no {kind} track in this media")

    def tracks(self) -> tuple[TrackMedia, ...]:
        return (*(t for t in (self.video, self.audio) if t is not None), *self.extra)

    def looped(self, count: int, offset_seconds: float = 0.0) -> LoopedMedia:
        """``count`` segments: the source looped with continuous time.

        ``offset_seconds`` moves the whole timeline (every tfdt of every track) that far from 0,
        as packagers that keep their input's clock do.
        """
        return LoopedMedia(self, count, offset_seconds)


class LoopedMedia:
    """An arbitrarily long timeline made of the source segments repeated.

    Segment i is source segment ``i % source_count`` of loop ``i // source_count``; its tfdt is
    the source tfdt plus ``loop * source duration`` plus the track's share of ``offset_seconds``
    (``round(offset_seconds * timescale)`` ticks). Nothing is stored per segment. Times in
    seconds (``start_seconds``, ``index_at``) are on the media clock, offset included.
    """

    def __init__(self, media: TestMedia, count: int, offset_seconds: float = 0.0) -> None:
        if count < 0:
            raise ValueError("count must be >= 0")
        if offset_seconds < 0:
            raise ValueError("offset_seconds must not be negative")
        self.media = media
        self.count = count
        self.offset_seconds = float(offset_seconds)
        self._n = media.source_count
        self._offset: dict[str, int] = {
            track.kind: round(offset_seconds * track.timescale) for track in media.tracks()
        }
        # per track: source start times relative to the first one, and the loop period
        self._starts: dict[str, list[int]] = {}
        self._period: dict[str, int] = {}
        for track in media.tracks():
            first = track.segments[0].t
            self._starts[track.kind] = [s.t - first for s in track.segments]
            self._period[track.kind] = track.duration
        self._clock = "video" if media.video is not None else "audio"

    def _locate(self, i: int) -> tuple[int, int]:
        if not 0 <= i < self.count:
            raise IndexError(f"segment {i} outside 0..{self.count - 1}")
        return divmod(i, self._n)

    def segment_info(self, kind: str, i: int) -> SegmentInfo:
        """t, d, size of segment i on the continuous timeline."""
        loop, j = self._locate(i)
        src = self.media.track(kind).segments[j]
        t = src.t + loop * self._period[kind] + self._offset[kind]
        return SegmentInfo(t, src.d, src.size, src.sample_count)

    def segment_bytes(self, kind: str, i: int) -> bytes:
        """Source bytes with tfdt moved to the looped time and mfhd sequence = i + 1."""
        loop, j = self._locate(i)
        track = self.media.track(kind)
        if track.plain_text:
            info = self.segment_info(kind, i)
            return text.plain_segment(track.lang or "und", j, info.t, info.d, track.timescale)
        data = track.segment_data(j)
        if loop == 0 and not self._offset[kind]:
            return fmp4.rewrite_fragment(data, sequence_number=i + 1)
        t = track.segments[j].t + loop * self._period[kind] + self._offset[kind]
        return fmp4.rewrite_fragment(data, base_media_decode_time=t, sequence_number=i + 1)

    def index_for_time(self, kind: str, t: int) -> int | None:
        """Index of the segment whose tfdt is exactly ``t`` (a $Time$ value), else None."""
        track = self.media.track(kind)
        rel = t - track.segments[0].t - self._offset[kind]
        if rel < 0:
            return None
        loop, rest = divmod(rel, self._period[kind])
        starts = self._starts[kind]
        j = bisect.bisect_left(starts, rest)
        if j == len(starts) or starts[j] != rest:
            return None
        i = loop * self._n + j
        return i if i < self.count else None

    def index_at(self, seconds: float) -> int:
        """Index of the segment covering ``seconds`` on the video clock (clamped to the range)."""
        track = self.media.track(self._clock)
        ticks = math.floor(seconds * track.timescale)
        rel = max(0, ticks - track.segments[0].t - self._offset[self._clock])
        loop, rest = divmod(rel, self._period[self._clock])
        j = bisect.bisect_right(self._starts[self._clock], rest) - 1
        return min(loop * self._n + j, self.count - 1)

    def start_seconds(self, i: int) -> float:
        """Start of segment i (video clock, or audio when there is no video)."""
        track = self.media.track(self._clock)
        return self.segment_info(self._clock, i).t / track.timescale

    def duration_seconds(self, i: int) -> float:
        track = self.media.track(self._clock)
        return self.segment_info(self._clock, i).d / track.timescale

    def end_seconds(self, i: int) -> float:
        return self.start_seconds(i) + self.duration_seconds(i)

    def video_frames(self, i: int) -> int:
        """Frames in segment i (0 without a video track)."""
        if self.media.video is None:
            return 0
        return self.segment_info("video", i).sample_count


# --------------------------------------------------------------------------- generation


def find_ffmpeg() -> str:
    """$INSTAREC_FFMPEG, else what the recorder itself would run (PATH, then the bundled one)."""
    return merge.find_ffmpeg(os.environ.get("INSTAREC_FFMPEG") or "ffmpeg")


def default_cache_dir() -> Path:
    env = os.environ.get("INSTAREC_MEDIA_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "instarec" / "test-media"


def plan_segments(spec: MediaSpec) -> list[int]:
    """Frames in each source segment, summing to a whole number of AAC frames."""
    if spec.fps <= 0 or spec.duration <= 0:
        raise ValueError("fps and duration must be positive")
    # smallest frame count whose length is a whole number of AAC frames: loops then add
    # exactly the same time to both tracks and never drift apart
    unit = 1
    if spec.audio:
        period = spec.fps * AAC_FRAME
        unit = period // math.gcd(spec.audio_rate, period)
    total_target = spec.duration * spec.fps
    if spec.segment_durations == "constant":
        per = max(1, round(spec.segment_duration * spec.fps))
        count = max(1, round(spec.duration / spec.segment_duration))
        while (count * per) % unit:
            count += 1
        return [per] * count
    if spec.segment_durations != "variable":
        raise ValueError(f"unknown segment_durations {spec.segment_durations!r}")
    lo = math.ceil(VARIABLE_MIN * spec.fps)
    hi = math.floor(VARIABLE_MAX * spec.fps)
    rng = random.Random(spec.seed)
    count = max(1, round(total_target / ((lo + hi) / 2)))
    frames = [rng.randint(lo, hi) for _ in range(count)]
    total = sum(frames)
    goal = max(unit, round(total / unit) * unit)
    # spread the correction one frame at a time, staying inside [lo, hi] while possible
    step = 1 if goal > total else -1
    k = 0
    stuck = 0
    while total != goal:
        j = k % count
        k += 1
        if lo <= frames[j] + step <= hi or stuck >= count:
            frames[j] += step
            total += step
            stuck = 0
        else:
            stuck += 1
    return frames


def _run(cmd: list[str]) -> None:
    global _encode_runs
    _encode_runs += 1
    logger.debug("running %s", " ".join(cmd))
    subprocess.run(cmd, check=True, capture_output=True)


def _encode_video(ffmpeg: str, spec: MediaSpec, frames: list[int], out: Path) -> None:
    total = sum(frames)
    # A key frame at the first frame of each segment, named by frame number: keyframe times
    # would be rounded differently by different ffmpeg versions.
    edges, acc = [], 0
    for n in frames[:-1]:
        acc += n
        edges.append(f"eq(n,{acc})")
    source = f"testsrc2=size={spec.width}x{spec.height}:rate={spec.fps}"
    text = (
        ",drawtext=text='%{frame_num}':x=24:y=24:fontsize=48"
        ":fontcolor=white:box=1:boxcolor=black@0.6"
    )
    common = [
        "-frames:v",
        str(total),
        "-c:v",
        "libx264",
        "-preset",
        "veryfast",
        "-crf",
        "28",
        "-profile:v",
        "baseline",
        "-pix_fmt",
        "yuv420p",
        "-g",
        "100000",
        "-keyint_min",
        "100000",
        "-sc_threshold",
        "0",
        "-force_key_frames",
        "expr:" + "+".join(["eq(n,0)", *edges]),
        "-f",
        "mp4",
        "-movflags",
        "+frag_keyframe+empty_moov+default_base_moof",
        str(out),
    ]
    base = [ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i"]
    try:
        _run([*base, source + text, *common])
    except subprocess.CalledProcessError as exc:
        # drawtext needs libfreetype and a font; without them a plain test pattern will do
        logger.info("drawtext unavailable (%s), encoding without frame counter", exc.stderr[-200:])
        _run([*base, source, *common])


def _encode_audio(
    ffmpeg: str, spec: MediaSpec, seconds: float, out: Path, tone: int = AUDIO_TONES[0]
) -> None:
    _run(
        [
            ffmpeg,
            "-hide_banner",
            "-nostdin",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            f"sine=frequency={tone}:beep_factor=4:sample_rate={spec.audio_rate}",
            # a little extra so the cut at the last boundary never runs short
            "-t",
            f"{seconds + 0.5:.6f}",
            "-c:a",
            "aac",
            "-b:a",
            "96k",
            "-f",
            "mp4",
            "-movflags",
            "+empty_moov+default_base_moof",
            "-frag_duration",
            "1000000",
            str(out),
        ]
    )


def _bandwidth(segments: list[SegmentInfo], timescale: int) -> int:
    return max(math.ceil(s.size * 8 * timescale / s.d) for s in segments if s.d > 0)


def _video_track(path: Path, frames: list[int]) -> tuple[dict[str, Any], bytes]:
    raw = path.read_bytes()
    init, spans = fmp4.split_fragmented(raw)
    info = mp4.parse_init(init)
    if len(spans) != len(frames):
        raise RuntimeError(f"ffmpeg made {len(spans)} video fragments, {len(frames)} were planned")
    parts = []
    for start, end in spans:
        parts.append(fmp4.styp() + raw[start:end])
    meta = {"kind": "video", "codecs": fmp4.avc_codecs(init)}
    return _track_meta(meta, init, parts, frames, info), b"".join(parts)


def _audio_track(
    path: Path, spec: MediaSpec, frames: list[int], kind: str = "audio"
) -> tuple[dict[str, Any], bytes]:
    raw = path.read_bytes()
    init, _ = fmp4.split_fragmented(raw)
    info = mp4.parse_init(init)
    samples = fmp4.read_samples(raw, info.default_sample_duration)
    # audio edge for each video edge: the AAC frame nearest to it
    edges, acc = [0], 0
    for n in frames:
        acc += n
        edges.append(round(acc * spec.audio_rate / (spec.fps * AAC_FRAME)))
    if edges[-1] > len(samples):
        raise RuntimeError(f"ffmpeg made {len(samples)} AAC frames, {edges[-1]} are needed")
    parts = []
    t = 0
    for i in range(len(frames)):
        chunk = samples[edges[i] : edges[i + 1]]
        payload = b"".join(raw[s.offset : s.offset + s.size] for s in chunk)
        durations = [s.duration for s in chunk]
        parts.append(
            fmp4.build_fragment(
                track_id=info.track_id,
                sequence_number=i + 1,
                base_media_decode_time=t,
                durations=durations,
                sizes=[s.size for s in chunk],
                flags=[fmp4.SYNC_SAMPLE_FLAGS] * len(chunk),
                payload=payload,
                with_styp=True,
            )
        )
        t += sum(durations)
    meta = {"kind": kind, "codecs": AUDIO_CODECS}
    counts = [edges[i + 1] - edges[i] for i in range(len(frames))]
    return _track_meta(meta, init, parts, counts, info), b"".join(parts)


def _text_track(
    scratch: Path, spec: MediaSpec, frames: list[int], lang: str, *, ttml: bool = False
) -> tuple[dict[str, Any], bytes]:
    """A wvtt (or stpp) track cut like the video: a frame lasts 1000 ticks, so loops stay
    exact."""
    timescale = spec.fps * 1000
    edges = [0]
    for n in frames:
        edges.append(edges[-1] + n * 1000)
    kind = f"text-{lang}"
    init = text.text_init(1, timescale, lang, ttml=ttml)
    (scratch / f"{kind}.mp4").write_bytes(init)
    build = text.ttml_segments if ttml else text.text_segments
    parts = build(1, timescale, lang, edges)
    codecs = text.TTML_CODECS if ttml else text.TEXT_CODECS
    meta = {"kind": kind, "codecs": codecs, "lang": lang}
    counts = [1 if ttml else 3] * len(parts)
    return _track_meta(meta, init, parts, counts, mp4.parse_init(init)), b"".join(parts)


def _plain_text_track(
    scratch: Path, spec: MediaSpec, frames: list[int], lang: str
) -> tuple[dict[str, Any], bytes]:
    """A text/vtt track cut like the video; its files are written as they are served (their
    cue times follow the loop), so only their timing is kept here."""
    timescale = spec.fps * 1000
    kind = f"text-{lang}-vtt"
    (scratch / f"{kind}.mp4").write_bytes(b"")
    parts, t = [], 0
    for index, n in enumerate(frames):
        parts.append(text.plain_segment(lang, index, t, n * 1000, timescale))
        t += n * 1000
    starts = [sum(frames[:index]) * 1000 for index in range(len(frames))]
    meta = {
        "kind": kind,
        "codecs": text.TEXT_CODECS,
        "lang": lang,
        "plain": True,
        "timescale": timescale,
        "track_id": 0,
        "bandwidth": 1000,
        "segments": [
            [start, n * 1000, len(part), 1]
            for start, n, part in zip(starts, frames, parts, strict=True)
        ],
        "init_size": 0,
    }
    return meta, b"".join(parts)


def _track_meta(
    meta: dict[str, Any], init: bytes, parts: list[bytes], counts: list[int], info: mp4.InitInfo
) -> dict[str, Any]:
    segments = []
    for part, count in zip(parts, counts, strict=True):
        # t and d come from reading the bytes back, not from the plan
        frag = mp4.parse_fragment(part, default_sample_duration=info.default_sample_duration)
        if frag.sample_count != count or frag.base_media_decode_time is None:
            raise RuntimeError(
                f"{meta['kind']} segment has {frag.sample_count} samples, not {count}"
            )
        segments.append(
            SegmentInfo(frag.base_media_decode_time, frag.duration, len(part), frag.sample_count)
        )
    return {
        **meta,
        "timescale": info.timescale,
        "track_id": info.track_id,
        "bandwidth": _bandwidth(segments, info.timescale),
        "segments": [[s.t, s.d, s.size, s.sample_count] for s in segments],
        "init_size": len(init),
    }


def _build(spec: MediaSpec, directory: Path) -> None:
    ffmpeg = find_ffmpeg()
    frames = plan_segments(spec)
    seconds = sum(frames) / spec.fps
    tracks = []
    with tempfile.TemporaryDirectory(dir=directory.parent) as scratch_name:
        scratch = Path(scratch_name)
        if spec.video:
            _encode_video(ffmpeg, spec, frames, scratch / "video.mp4")
            tracks.append(_video_track(scratch / "video.mp4", frames))
        if spec.audio:
            languages = spec.audio_languages or (None,)
            for n, lang in enumerate(languages):
                kind = "audio" if n == 0 else f"audio-{lang}"
                source = scratch / f"{kind}.mp4"
                _encode_audio(ffmpeg, spec, seconds, source, AUDIO_TONES[n % len(AUDIO_TONES)])
                meta, data = _audio_track(source, spec, frames, kind)
                tracks.append(({**meta, "lang": lang}, data))
        for lang in spec.subtitles:
            tracks.append(_text_track(scratch, spec, frames, lang))
        for lang in spec.ttml_subtitles:
            tracks.append(_text_track(scratch, spec, frames, lang, ttml=True))
        for lang in spec.plain_subtitles:
            tracks.append(_plain_text_track(scratch, spec, frames, lang))
        out = scratch / "out"
        out.mkdir()
        for meta, data in tracks:
            kind = meta["kind"]
            init = (scratch / f"{kind}.mp4").read_bytes()[: meta["init_size"]]
            (out / f"{kind}-init.mp4").write_bytes(init)
            (out / f"{kind}-segments.bin").write_bytes(data)
        meta_all = {
            "format": FORMAT_VERSION,
            "spec": asdict(spec),
            "tracks": [m for m, _ in tracks],
        }
        (out / "meta.json").write_text(json.dumps(meta_all, indent=1))
        try:
            # atomic publish: readers see a complete directory or none
            out.rename(directory)
        except OSError:
            if not (directory / "meta.json").exists():
                raise
            logger.debug("another process cached %s first", directory)


def _load(spec: MediaSpec, directory: Path) -> TestMedia:
    meta_all = json.loads((directory / "meta.json").read_text())
    tracks: dict[str, TrackMedia] = {}
    for meta in meta_all["tracks"]:
        kind = meta["kind"]
        segments = tuple(SegmentInfo(*row) for row in meta["segments"])
        offsets, pos = [], 0
        for s in segments:
            offsets.append(pos)
            pos += s.size
        tracks[kind] = TrackMedia(
            kind=kind,
            timescale=meta["timescale"],
            codecs=meta["codecs"],
            bandwidth=meta["bandwidth"],
            init=(directory / f"{kind}-init.mp4").read_bytes(),
            segments=segments,
            track_id=meta["track_id"],
            lang=meta.get("lang"),
            plain_text=meta.get("plain", False),
            data=(directory / f"{kind}-segments.bin").read_bytes(),
            offsets=tuple(offsets),
        )
    counts = {len(t.segments) for t in tracks.values()}
    if len(counts) != 1:
        raise RuntimeError(f"cached media at {directory} has tracks of different lengths")
    extra = tuple(t for kind, t in tracks.items() if kind not in ("video", "audio"))
    return TestMedia(spec, tracks.get("video"), tracks.get("audio"), counts.pop(), directory, extra)


def generate_media(spec: MediaSpec = MediaSpec(), cache_dir: Path | None = None) -> TestMedia:
    """Media for ``spec``, from the cache or made with ffmpeg (a few seconds) and cached."""
    if not (spec.video or spec.audio):
        raise ValueError("a MediaSpec needs video or audio")
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    directory = root / spec.cache_key()
    if not (directory / "meta.json").exists():
        root.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        _build(spec, directory)
        logger.info("made test media %s in %.1f s", directory.name, time.monotonic() - started)
    return _load(spec, directory)
