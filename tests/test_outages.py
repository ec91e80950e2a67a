"""Outages: every request to the server fails for a while during a live recording."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from instarec.recorder import record
from instarec.segments import SegmentRef
from instarec.testing.clock import ManualClock
from instarec.testing.faults import FaultConfig
from instarec.testing.media import TestMedia
from instarec.testing.origin import Origin, OriginConfig
from instarec.unanswered import Unanswered
from tests.recording import fast_options, inspect, media_for_shape, running_clock
from tests.test_errors import assert_one_error_line, run_main
from tests.test_resume_signals import FAST, journal_keys


@pytest.mark.parametrize(
    ("shape", "retention"),
    [
        ("time", None),
        ("instagram", 45),  # 90 s kept: the 60 s outage is six windows, but within retention
        ("number_timeline", 45),
        ("number_duration", None),
    ],
)
async def test_an_outage_longer_than_the_window_loses_nothing_the_server_still_has(
    shape: str,
    retention: int | None,
    tmp_path: Path,
    test_media: TestMedia,
    constant_media: TestMedia,
) -> None:
    # 60 s of every request reset (manifest, media, /time), with a window of 10 s: the live
    # edge moves six windows past what was listed before, and the downloads asked during the
    # outage run out of retries. Everything the server still has afterwards must be fetched.
    media = media_for_shape(shape, test_media, constant_media)
    config = OriginConfig(
        shape=shape,
        broadcast_duration=150,
        already_broadcast=20,
        window=5,
        retention=retention,
        media=media.spec,
        faults=FaultConfig(outages=((50.0, 110.0),)),
    )
    clock = ManualClock()
    output = tmp_path / "outage.mkv"
    async with Origin(config, clock, media=media) as origin:
        # 50x: the retries and re-asks wait real seconds while retention runs on this clock.
        async with running_clock(origin, clock, step=0.25) as driver:
            summary = await record(
                fast_options(origin.manifest_url, output, no_past=True),
                install_signal_handlers=False,
            )
        first_listed = driver.first_listed
        assert first_listed is not None
        # A $Number$+@duration client computes its window from timeShiftBufferDepth and may
        # start a segment or two before what the origin counts as listed.
        recorded_start = summary.tracks[0].start
        assert recorded_start is not None
        first = origin.media.index_at(recorded_start + 0.001)
        assert first_listed - 2 <= first <= first_listed
        last = origin.segment_count - 1
        reset = origin.stats.count(status=0)
        expected = origin.expected_frames(first, last)
        span = origin.segment_end(last) - origin.segment_start(first)

    assert reset > 0  # the outage happened while the recorder was asking
    report = inspect(output)
    assert report.video_frames == expected
    assert report.video_gaps == ()
    assert report.video_duration == pytest.approx(span, abs=0.05)
    assert abs(report.audio_duration - report.video_duration) < 0.1
    assert summary.gaps == ()


def _ref(key: int) -> SegmentRef:
    return SegmentRef("video", key, f"http://origin/v/{key}.m4s", None, float(key), 2.0, "live")


async def test_a_segment_without_answer_waits_then_goes_at_once_when_the_server_answers() -> None:
    asked: list[tuple[int, int]] = []
    unanswered = Unanswered(lambda ref, rounds: asked.append((ref.key, rounds)))
    assert unanswered.add(_ref(7), 0)
    assert unanswered.add(_ref(8), 3)
    await asyncio.sleep(0.05)
    assert asked == []  # the first round waits seconds, not a moment
    unanswered.answered()
    assert sorted(asked) == [(7, 1), (8, 4)]
    unanswered.answered()
    assert len(asked) == 2  # each asked once per round


async def test_at_the_end_each_waiting_segment_gets_a_last_ask_then_is_missing() -> None:
    asked: list[tuple[int, int]] = []
    unanswered = Unanswered(lambda ref, rounds: asked.append((ref.key, rounds)))
    assert not unanswered.last_call()  # nothing waited
    assert not unanswered.add(_ref(7), 0)  # the recording is over: missing at once
    fresh = Unanswered(lambda ref, rounds: asked.append((ref.key, rounds)))
    assert fresh.add(_ref(9), 2)
    assert fresh.last_call()
    assert asked == [(9, 3)]
    assert not fresh.add(_ref(9), 3)


async def test_a_server_unreachable_past_the_live_end_timeout_is_no_end_of_the_broadcast(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, test_media: TestMedia
) -> None:
    # The server answers nothing for longer than --live-end-timeout: the recording stops,
    # merged, but says the server was unreachable (not that the broadcast ended), exits with
    # the network code, keeps its segments, and the same command run again completes it.
    config = OriginConfig(
        shape="time",
        broadcast_duration=200,
        already_broadcast=30,
        window=5,
        media=test_media.spec,
        faults=FaultConfig(outages=((60.0, 130.0),)),
    )
    clock = ManualClock()
    output = tmp_path / "unreachable.mkv"
    segments_dir = tmp_path / "unreachable.mkv.segments"
    summary_file = tmp_path / "summary.json"
    # 0.5 virtual seconds every 10 ms: the 70 s outage lasts 1.4 s, the timeout 1 s.
    command = [*FAST, "--live-end-timeout", "1", "--summary-file", str(summary_file)]
    async with Origin(config, clock, media=test_media) as origin:
        async with running_clock(origin, clock, step=0.5, every=0.01):
            code, _, err = await run_main(capsys, *command, origin.manifest_url, str(output))
            stopped_at = clock.now()
            kept = journal_keys(segments_dir)
            partial = inspect(output)
            assert code == 4, err
            assert_one_error_line(
                err,
                "the server answered nothing for 1 s",
                f"merged into {output}",
                f"kept in {segments_dir}",
                "rerun the same command once the server answers again",
            )
            summary = json.loads(summary_file.read_text())
            while clock.now() < 130:  # noqa: ASYNC110 - the virtual clock runs beside
                await asyncio.sleep(0.01)
            code, out, err = await run_main(capsys, *command, origin.manifest_url, str(output))
        expected = origin.expected_frames(0, origin.segment_count - 1)
        end = origin.segment_end(origin.segment_count - 1)

    assert 60 <= stopped_at < 130  # stopped during the outage, not at the broadcast's end
    assert summary["exit_code"] == 4
    assert summary["end_reason"].startswith("the server answered nothing")
    assert kept and partial.video_frames > 0
    assert code == 0, err
    assert "Missing        none" in out
    report = inspect(output)
    assert report.video_frames == expected
    assert report.video_gaps == ()
    assert report.video_duration == pytest.approx(end, abs=0.05)
    assert not segments_dir.exists()
