"""Every audio track and the subtitles, recorded from the broadcast's start (past recovery and
live following), checked in the file with PyAV: languages, lengths, tones, cue texts and times."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
from array import array
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import av
import pytest

from instarec.cli import main
from instarec.merge import existing_parts
from instarec.recorder import record
from instarec.testing.clock import ManualClock
from instarec.testing.media import AUDIO_TONES, MediaSpec, TestMedia, generate_media
from instarec.testing.origin import Origin, OriginConfig
from instarec.testing.text import CUE_END, CUE_START, cue_text
from tests.recording import fast_options, inspect, running_clock

LANGUAGES = ("en", "fr", "de")
FAST_ARGS = [
    "--poll-interval",
    "0.05",
    "--past-segment-delay",
    "0",
    "--download-retry-delay",
    "0.01",
    "--live-end-timeout",
    "30",
]


@pytest.fixture(scope="module")
def languages_media(media_cache_dir: Path) -> TestMedia:
    """Three audio languages (tones of 440, 660 and 880 Hz) and English WebVTT captions."""
    return generate_media(MediaSpec(audio_languages=LANGUAGES, subtitles=("en",)), media_cache_dir)


@dataclass(frozen=True, slots=True)
class Expected:
    starts: list[float]  # every segment's start, seconds from the broadcast's start
    source_count: int
    duration: float


async def _record(
    media: TestMedia, shape: str, output: Path, **changes: object
) -> tuple[Expected, int]:
    config = OriginConfig(
        shape=shape, broadcast_duration=90, already_broadcast=60, window=5, media=media.spec
    )
    clock = ManualClock()
    async with Origin(config, clock, media=media) as origin:
        async with running_clock(origin, clock, step=1.0) as driver:
            await record(
                fast_options(origin.manifest_url, output, **changes),
                install_signal_handlers=False,
            )
        assert driver.first_listed is not None and driver.first_listed > 20  # a late start
        starts = [origin.segment_start(i) for i in range(origin.segment_count)]
        expected = Expected(starts, media.source_count, origin.duration)
        frames = origin.expected_frames(0, origin.segment_count - 1)
    return expected, frames


def _tone(path: Path, index: int) -> float:
    """The pitch of audio stream ``index`` (Hz), from the zero crossings of a second of it
    (the usual cycle: the test tones beep at another pitch now and then)."""
    resampler = av.AudioResampler(format="s16", layout="mono")
    samples = array("h")
    with av.open(str(path)) as container:
        stream = container.streams.audio[index]
        rate = stream.rate
        for frame in container.decode(stream):
            for mono in resampler.resample(frame):
                samples.frombytes(bytes(mono.planes[0])[: 2 * mono.samples])
            if len(samples) >= rate:
                break
    # Crossings of a band around zero (the codec's noise crosses zero too), first to last.
    band = max(abs(v) for v in samples) / 4
    crossings: list[int] = []
    sign = 0
    for i, value in enumerate(samples):
        if abs(value) < band:
            continue
        current = 1 if value > 0 else -1
        if sign and current != sign:
            crossings.append(i)
        sign = current
    # A cycle spans two crossings; the median cycle ignores a short beep of another pitch.
    cycles = sorted(b - a for a, b in zip(crossings, crossings[2:], strict=False))
    usual = cycles[len(cycles) // 2]
    alike = [c for c in cycles if abs(c - usual) <= usual / 10]  # whole samples: averaged
    return rate * len(alike) / sum(alike)


def _audio_span(path: Path, index: int) -> tuple[float, float]:
    with av.open(str(path)) as container:
        stream = container.streams.audio[index]
        times = [
            (float(p.pts * p.time_base), float((p.pts + p.duration) * p.time_base))
            for p in container.demux(stream)
            if p.pts is not None and p.size
        ]
    return times[0][0], times[-1][1]


def _cues(path: Path) -> list[tuple[float, float, str]]:
    with av.open(str(path)) as container:
        stream = container.streams.subtitles[0]
        cues = []
        for packet in container.demux(stream):
            if packet.pts is None or not packet.size:
                continue
            data = bytes(packet)
            if stream.codec_context.name == "mov_text":
                data = data[2 : 2 + int.from_bytes(data[:2], "big")]
            if not data:
                continue  # mov_text's empty samples between cues
            start = float(packet.pts * packet.time_base)
            cues.append((start, start + float(packet.duration * packet.time_base), data.decode()))
    return cues


def _check_cues(path: Path, expected: Expected) -> None:
    cues = _cues(path)
    assert len(cues) == len(expected.starts)
    for i, (start, end, text) in enumerate(cues):
        assert text == cue_text("en", i % expected.source_count)
        assert start == pytest.approx(expected.starts[i] + CUE_START, abs=0.1)
        assert end == pytest.approx(expected.starts[i] + CUE_END, abs=0.1)


@pytest.mark.parametrize("shape", ["time", "instagram", "number_timeline"])
async def test_three_languages_and_captions_are_recorded_from_the_start_into_mkv(
    shape: str, tmp_path: Path, languages_media: TestMedia
) -> None:
    output = tmp_path / "languages.mkv"
    expected, frames = await _record(
        languages_media, shape, output, audio_quality=("all",), subtitles=True
    )

    with av.open(str(output)) as container:
        audio = container.streams.audio
        assert len(container.streams.video) == 1
        assert [s.metadata.get("language") for s in audio] == ["eng", "fre", "ger"]
        assert len(container.streams.subtitles) == 1
        assert container.streams.subtitles[0].metadata.get("language") == "eng"
        assert container.streams.subtitles[0].codec_context.name == "webvtt"
    report = inspect(output)
    assert report.video_frames == frames
    assert report.video_start == pytest.approx(0.0, abs=0.001)
    for index, tone in enumerate(AUDIO_TONES[:3]):
        start, end = _audio_span(output, index)
        assert start == pytest.approx(0.0, abs=0.05)  # from the broadcast's first frame
        assert end == pytest.approx(expected.duration, abs=0.1)
        assert _tone(output, index) == pytest.approx(tone, abs=5)
    _check_cues(output, expected)


async def test_mp4_takes_the_languages_and_the_captions_as_timed_text(
    tmp_path: Path, languages_media: TestMedia
) -> None:
    output = tmp_path / "languages.mp4"
    expected, _ = await _record(
        languages_media, "time", output, audio_quality=("all",), subtitles=True
    )

    with av.open(str(output)) as container:
        assert [s.metadata.get("language") for s in container.streams.audio] == [
            "eng",
            "fra",
            "deu",
        ]
        subtitles = container.streams.subtitles[0]
        assert subtitles.codec_context.name == "mov_text"
        assert subtitles.metadata.get("language") == "eng"
    _check_cues(output, expected)


async def test_without_the_options_only_the_best_audio_is_recorded_untagged(
    tmp_path: Path, languages_media: TestMedia
) -> None:
    output = tmp_path / "default.mkv"
    await _record(languages_media, "time", output)

    with av.open(str(output)) as container:
        assert len(container.streams.audio) == 1
        assert not container.streams.subtitles
        assert container.streams.audio[0].metadata.get("language") in (None, "und")
    # As before: the highest bandwidth, whatever its language.
    audio = [t for t in languages_media.tracks() if t.kind.startswith("audio")]
    best = max(range(len(audio)), key=lambda n: audio[n].bandwidth)
    assert _tone(output, 0) == pytest.approx(AUDIO_TONES[best], abs=5)


async def test_named_ids_choose_the_tracks_and_others_take_their_best(
    tmp_path: Path, languages_media: TestMedia
) -> None:
    output = tmp_path / "two.mkv"
    await _record(
        languages_media, "time", output, audio_quality=("audio-de",), more_audio=("audio-fr",)
    )

    with av.open(str(output)) as container:
        assert [s.metadata.get("language") for s in container.streams.audio] == ["ger", "fre"]
    assert _tone(output, 0) == pytest.approx(AUDIO_TONES[2], abs=5)
    assert _tone(output, 1) == pytest.approx(AUDIO_TONES[1], abs=5)


def _kept(segments_dir: Path) -> set[str]:
    tracks = set()
    for line in (segments_dir / "journal.jsonl").read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            record_ = json.loads(line)
            if record_.get("type") == "segment":
                tracks.add(record_["track"])
    return tracks


async def _until(predicate: Callable[[], bool], limit: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not predicate():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def test_a_crashed_recording_resumes_every_track(
    tmp_path: Path, languages_media: TestMedia
) -> None:
    config = OriginConfig(
        shape="time", broadcast_duration=90, already_broadcast=60, media=languages_media.spec
    )
    clock = ManualClock()
    output = tmp_path / "resumed.mkv"
    segments_dir = tmp_path / "resumed.mkv.segments"
    options = fast_options("", output, audio_quality=("all",), subtitles=True)
    async with Origin(config, clock, media=languages_media) as origin:
        options = replace(options, mpd_url=origin.manifest_url)
        first = asyncio.create_task(record(options, install_signal_handlers=False))
        await _until(
            lambda: (
                segments_dir.exists()
                and {"video", "audio", "audio2", "audio3", "text"} <= _kept(segments_dir)
            )
        )
        first.cancel()  # like a crash: nothing merged, the segments stay
        with pytest.raises(asyncio.CancelledError):
            await first
        async with running_clock(origin, clock, step=1.0):
            await record(options, install_signal_handlers=False)
        starts = [origin.segment_start(i) for i in range(origin.segment_count)]
        expected = Expected(starts, languages_media.source_count, origin.duration)

    with av.open(str(output)) as container:
        assert [s.metadata.get("language") for s in container.streams.audio] == [
            "eng",
            "fre",
            "ger",
        ]
    for index in range(3):
        assert _audio_span(output, index) == pytest.approx((0.0, expected.duration), abs=0.1)
    _check_cues(output, expected)


async def test_segments_kept_after_the_broadcast_are_merged_with_their_languages(
    tmp_path: Path, languages_media: TestMedia
) -> None:
    config = OriginConfig(
        shape="time",
        broadcast_duration=60,
        already_broadcast=30,
        end_signal_manifest_404_after=5,
        media=languages_media.spec,
    )
    clock = ManualClock()
    output = tmp_path / "late.mkv"
    segments_dir = tmp_path / "late.mkv.segments"
    options = fast_options("", output, audio_quality=("all",), subtitles=True)
    async with Origin(config, clock, media=languages_media) as origin:
        options = replace(options, mpd_url=origin.manifest_url)
        recording = asyncio.create_task(record(options, install_signal_handlers=False))
        await _until(
            lambda: (
                segments_dir.exists()
                and {"video", "audio", "audio2", "audio3", "text"} <= _kept(segments_dir)
            )
        )
        recording.cancel()
        with pytest.raises(asyncio.CancelledError):
            await recording
        clock.advance(60)  # the broadcast ends and its manifest turns 404
        summary = await record(options, install_signal_handlers=False)

    assert summary.end_reason == "merged an earlier recording"
    assert [t.kind for t in summary.tracks] == ["video", "audio", "audio2", "audio3", "text"]
    assert [t.lang for t in summary.tracks] == [None, "en", "fr", "de", "en"]
    with av.open(str(output)) as container:
        assert [s.metadata.get("language") for s in container.streams.audio] == [
            "eng",
            "fre",
            "ger",
        ]
        assert container.streams.subtitles[0].metadata.get("language") == "eng"
    assert _cues(output)


async def test_every_track_follows_a_new_period(tmp_path: Path, languages_media: TestMedia) -> None:
    config = OriginConfig(
        shape="time",
        broadcast_duration=90,
        already_broadcast=20,
        window=5,
        period_starts=(50.0,),
        media=languages_media.spec,
    )
    clock = ManualClock()
    output = tmp_path / "periods.mkv"
    async with Origin(config, clock, media=languages_media) as origin:
        async with running_clock(origin, clock, step=1.0):
            summary = await record(
                fast_options(origin.manifest_url, output, audio_quality=("all",), subtitles=True),
                install_signal_handlers=False,
            )
        starts = [origin.segment_start(i) for i in range(origin.segment_count)]
        expected = Expected(starts, languages_media.source_count, origin.duration)

    assert summary.gaps == ()
    with av.open(str(output)) as container:
        assert [s.metadata.get("language") for s in container.streams.audio] == [
            "eng",
            "fre",
            "ger",
        ]
    for index, tone in enumerate(AUDIO_TONES[:3]):
        assert _audio_span(output, index) == pytest.approx((0.0, expected.duration), abs=0.1)
        assert _tone(output, index) == pytest.approx(tone, abs=5)
    _check_cues(output, expected)


async def test_ttml_captions_are_recorded_as_subtitles(
    tmp_path: Path, media_cache_dir: Path
) -> None:
    # TTML documents carry their own times: the broadcast stays within one loop of the source.
    media = generate_media(MediaSpec(duration=40.0, ttml_subtitles=("fr",)), media_cache_dir)
    config = OriginConfig(
        shape="number_timeline",
        broadcast_duration=36,
        already_broadcast=20,
        window=5,
        media=media.spec,
    )
    clock = ManualClock()
    output = tmp_path / "ttml.mkv"
    async with Origin(config, clock, media=media) as origin:
        async with running_clock(origin, clock, step=1.0):
            await record(
                fast_options(origin.manifest_url, output, subtitles=True),
                install_signal_handlers=False,
            )
        starts = [origin.segment_start(i) for i in range(origin.segment_count)]
    assert len(starts) < media.source_count

    with av.open(str(output)) as container:
        assert container.streams.subtitles[0].metadata.get("language") == "fre"
    cues = _cues(output)
    assert [text for _, _, text in cues] == [cue_text("fr", i) for i in range(len(starts))]
    for (start, end, _), segment_start in zip(cues, starts, strict=True):
        assert start == pytest.approx(segment_start + CUE_START, abs=0.1)
        assert end == pytest.approx(segment_start + CUE_END, abs=0.1)


@pytest.mark.parametrize("shape", ["number_timeline", "number_duration"])
async def test_webvtt_file_segments_are_recorded_from_the_start(
    shape: str, tmp_path: Path, media_cache_dir: Path
) -> None:
    constant = "constant" if shape == "number_duration" else "variable"
    media = generate_media(
        MediaSpec(segment_durations=constant, plain_subtitles=("es",)), media_cache_dir
    )
    output = tmp_path / "vtt.mkv"
    expected, _ = await _record(media, shape, output, subtitles=True)

    with av.open(str(output)) as container:
        assert container.streams.subtitles[0].metadata.get("language") == "spa"
    cues = _cues(output)
    assert len(cues) == len(expected.starts)
    for i, (start, end, text) in enumerate(cues):
        assert text == cue_text("es", i % expected.source_count)
        assert start == pytest.approx(expected.starts[i] + CUE_START, abs=0.1)
        assert end == pytest.approx(expected.starts[i] + CUE_END, abs=0.1)


async def test_list_formats_shows_the_languages_and_the_text_tracks(
    capsys: pytest.CaptureFixture[str], languages_media: TestMedia
) -> None:
    config = OriginConfig(shape="time", already_broadcast=30, media=languages_media.spec)
    async with Origin(config, ManualClock(), media=languages_media) as origin:
        code = await asyncio.to_thread(main, ["-F", origin.manifest_url])
    out = capsys.readouterr().out
    assert code == 0
    audio_rows = out.split("Audio:")[1].split("Text")[0].splitlines()[2:]
    assert sorted(row.split()[4] for row in audio_rows) == ["de", "en", "fr"]
    text_rows = out.split("Text (recorded with --subtitles):")[1].splitlines()[2:]
    assert [row.split()[1] for row in text_rows] == ["text-en"]
    assert "wvtt" in text_rows[0] and " en " in text_rows[0]


async def test_the_picker_ticks_two_languages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, languages_media: TestMedia
) -> None:
    config = OriginConfig(
        shape="time", broadcast_duration=40, already_broadcast=20, media=languages_media.spec
    )
    clock = ManualClock()
    output = tmp_path / "picked.mkv"
    monkeypatch.setattr("sys.stdin", io.StringIO("audio-fr,audio-de\n"))
    async with (
        Origin(config, clock, media=languages_media) as origin,
        running_clock(origin, clock, step=0.5, every=0.01),
    ):
        argv = ["-i", origin.manifest_url, str(output), *FAST_ARGS]
        code = await asyncio.to_thread(main, argv)
    assert code == 0

    with av.open(str(output)) as container:
        assert [s.metadata.get("language") for s in container.streams.audio] == ["fre", "ger"]
    assert _tone(output, 0) == pytest.approx(AUDIO_TONES[1], abs=5)
    assert _tone(output, 1) == pytest.approx(AUDIO_TONES[2], abs=5)


async def test_parts_each_carry_every_language_and_their_captions(
    tmp_path: Path, languages_media: TestMedia
) -> None:
    output = tmp_path / "cut.mkv"
    expected, _ = await _record(
        languages_media,
        "time",
        output,
        audio_quality=("all",),
        subtitles=True,
        split_duration=30.0,
    )

    parts = existing_parts(output)
    assert len(parts) >= 3  # at most 30 s each, cut where a video segment starts
    texts = []
    for part in parts:
        with av.open(str(part)) as container:
            assert [s.metadata.get("language") for s in container.streams.audio] == [
                "eng",
                "fre",
                "ger",
            ]
            assert container.streams.subtitles[0].metadata.get("language") == "eng"
        cues = _cues(part)
        # Each part starts at 0 where one of its segments does: its first cue 0.25 s later.
        assert cues[0][0] == pytest.approx(CUE_START, abs=0.1)
        texts += [text for _, _, text in cues]
    assert texts == [cue_text("en", i % expected.source_count) for i in range(len(expected.starts))]


async def test_ts_keeps_every_language_and_leaves_the_captions_out(
    tmp_path: Path, languages_media: TestMedia, caplog: pytest.LogCaptureFixture
) -> None:
    output = tmp_path / "languages.ts"
    await _record(languages_media, "time", output, audio_quality=("all",), subtitles=True)

    with av.open(str(output)) as container:
        assert [s.metadata.get("language") for s in container.streams.audio] == [
            "eng",
            "fra",
            "deu",
        ]
        assert not container.streams.subtitles
    assert "takes no text subtitles" in caplog.text


async def test_roles_become_dispositions(tmp_path: Path, languages_media: TestMedia) -> None:
    config = OriginConfig(
        shape="time",
        broadcast_duration=30,
        already_broadcast=10,
        media=languages_media.spec,
        roles=(("audio", "main"), ("audio-de", "commentary"), ("text-en", "caption")),
    )
    clock = ManualClock()
    output = tmp_path / "roles.mkv"
    async with (
        Origin(config, clock, media=languages_media) as origin,
        running_clock(origin, clock, step=1.0),
    ):
        await record(
            fast_options(origin.manifest_url, output, audio_quality=("all",), subtitles=True),
            install_signal_handlers=False,
        )

    with av.open(str(output)) as container:
        audio = container.streams.audio
        assert audio[0].disposition & av.stream.Disposition.default
        assert not audio[1].disposition & av.stream.Disposition.comment
        assert audio[2].disposition & av.stream.Disposition.comment
        assert container.streams.subtitles[0].disposition & av.stream.Disposition.hearing_impaired
