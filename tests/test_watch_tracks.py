"""Watching while recording a broadcast in several languages: every language plays in the
growing file and on stdout, tagged; the captions come with the merge at the end."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import av
import pytest

from instarec.recorder import record
from instarec.testing.clock import ManualClock
from instarec.testing.media import AUDIO_TONES, TestMedia
from instarec.testing.origin import Origin, OriginConfig
from tests.recording import fast_options, inspect, running_clock
from tests.test_live_merge import grown_while_recording
from tests.test_record_tracks import LANGUAGES, _audio_span, _tone, languages_media
from tests.test_watch_stdout import start_watching

__all__ = ["languages_media"]  # the fixture, shared with the languages' own tests


def _languages(path: Path) -> list[str | None]:
    with av.open(str(path)) as container:
        return [s.metadata.get("language") for s in container.streams.audio]


@pytest.mark.parametrize("subtitles", [False, True])
async def test_every_language_grows_in_the_file_and_captions_come_at_the_end(
    subtitles: bool,
    tmp_path: Path,
    languages_media: TestMedia,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="instarec")
    config = OriginConfig(
        shape="time", broadcast_duration=60, already_broadcast=30, media=languages_media.spec
    )
    clock = ManualClock()
    output = tmp_path / "languages.mkv"
    async with Origin(config, clock, media=languages_media) as origin:
        async with running_clock(origin, clock, step=0.5):
            await record(
                fast_options(
                    origin.manifest_url,
                    output,
                    live_merge=True,
                    audio_quality=("all",),
                    subtitles=subtitles,
                ),
                install_signal_handlers=False,
            )
        expected = origin.expected_frames(0, origin.segment_count - 1)
        duration = origin.duration

    # Without captions the grown file is the output; with them the merge writes it anew.
    assert grown_while_recording(caplog) is not subtitles
    assert _languages(output) == ["eng", "fre", "ger"]
    for index in range(len(LANGUAGES)):
        assert _tone(output, index) == pytest.approx(AUDIO_TONES[index], abs=5)
        start, end = _audio_span(output, index)
        assert start == pytest.approx(0.0, abs=0.05)
        assert end == pytest.approx(duration, abs=0.1)
    with av.open(str(output)) as container:
        assert len(container.streams.subtitles) == (1 if subtitles else 0)
    report = inspect(output)
    assert report.video_frames == expected
    assert report.video_gaps == ()


async def test_every_language_plays_on_stdout(tmp_path: Path, languages_media: TestMedia) -> None:
    config = OriginConfig(
        shape="instagram", broadcast_duration=60, already_broadcast=30, media=languages_media.spec
    )
    clock = ManualClock()
    async with Origin(config, clock, media=languages_media) as origin:
        async with running_clock(origin, clock, step=0.1, every=0.01):
            proc = await start_watching(origin.manifest_url, tmp_path, "--audio-quality", "all")
            stdout, stderr = await asyncio.wait_for(proc.communicate(), timeout=120)
        expected = origin.expected_frames(0, origin.segment_count - 1)
        duration = origin.duration

    assert proc.returncode == 0, stderr.decode()[-2000:]
    stream = tmp_path / "stream.ts"
    stream.write_bytes(stdout)
    assert _languages(stream) == ["eng", "fra", "deu"]
    report = inspect(stream)
    assert report.video_frames == expected
    for index in range(len(LANGUAGES)):
        assert _tone(stream, index) == pytest.approx(AUDIO_TONES[index], abs=5)
        start, end = _audio_span(stream, index)
        assert end - start == pytest.approx(duration, abs=0.1)
