"""Recording real packagers' live output, joined late, in real time: the packager matrix.

ffmpeg's DASH muxer, nginx-rtmp and Shaka Packager each package one source clip as it plays;
the recorder (the real CLI, in a subprocess) joins each stream at least 20 s late and must
record every frame from the first one (or from the oldest one the server still has), with no
timestamp gap, audio and video in sync, notice the end by itself, and, where its ``$Time$``
chain can read every next time from the media, send no HEAD request at all.

Every case runs at once, in one module fixture: the matrix takes about as long as one case
(the clip's length plus the recorder's live end timeout). What a correct recording holds comes
from the clip and the packager's own output (``tests/packagers/harness.py``).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.packagers import ffmpeg_dash, nginx_rtmp, shaka
from tests.packagers.harness import (
    CaseResult,
    ClipSpec,
    Expected,
    PackagerCase,
    find_ffmpeg,
    make_source_clip,
    run_cases,
)

CASES: dict[str, PackagerCase] = {
    case.name: case for case in [*ffmpeg_dash.CASES, *nginx_rtmp.CASES, *shaka.CASES]
}
CLIP = ClipSpec()

# The recorder joins this late at least, measured from the packager's first segment.
MIN_JOIN_DELAY = 20.0
AV_TOLERANCE = 0.1  # seconds


# The matrix runs in real time and mostly waits: started in a thread as soon as the tests are
# collected (``start_matrix``, from conftest.py), it runs while the tests before it do.
_started: dict[str, Future[dict[str, CaseResult]]] = {}


def _selected(session: pytest.Session) -> set[str]:
    return {
        item.callspec.params["name"]
        for item in session.items
        if item.module is not None
        and item.module.__name__ == __name__
        and hasattr(item, "callspec")
    }


def start_matrix(
    session: pytest.Session, media_cache_dir: Path, make_root: Callable[[], Path]
) -> None:
    """Start the selected cases side by side in a thread of their own (none selected: none)."""
    ffmpeg = find_ffmpeg()
    selected = _selected(session)
    if ffmpeg is None or not selected or "matrix" in _started:
        return
    cases = [case for name, case in CASES.items() if name in selected]
    root = make_root()

    def run() -> dict[str, CaseResult]:
        clip = make_source_clip(media_cache_dir, CLIP, ffmpeg)
        return asyncio.run(run_cases(cases, clip, root))

    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="packagers")
    _started["matrix"] = pool.submit(run)
    pool.shutdown(wait=False)


@pytest.fixture(scope="module")
def matrix(
    request: pytest.FixtureRequest, media_cache_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, CaseResult]:
    """The selected cases' results, from the run started after collection."""
    if find_ffmpeg() is None:
        pytest.skip("ffmpeg is not installed (apt-get install ffmpeg)")
    if "matrix" not in _started:  # the module imported by another conftest: start it here
        start_matrix(request.session, media_cache_dir, lambda: tmp_path_factory.mktemp("packagers"))
    return _started["matrix"].result()


def _matching(result: CaseResult) -> Expected | None:
    """The correct recording this one claims to be: the start with its frame count."""
    assert result.report is not None
    candidates = [e for e in result.expected if e.video_frames == result.report.video_frames]
    if not candidates:
        return None
    report = result.report
    return min(
        candidates,
        key=lambda e: (
            abs(report.audio_start - report.video_start - e.av_start_offset)
            if report.audio_start is not None and report.video_start is not None
            else 0.0
        ),
    )


def _problems(case: PackagerCase, result: CaseResult) -> list[str]:
    problems: list[str] = []
    if result.joined_late is None or result.joined_late < MIN_JOIN_DELAY:
        problems.append(f"joined {result.joined_late} s after the first segment, too early")
    if not result.ended_by_itself:
        problems.append("the recorder did not notice the end by itself (stopped by the test)")
    if result.exit_code != 0:
        problems.append(f"exit code {result.exit_code}")
    report = result.report
    if report is None:
        return [*problems, "no recording was written"]
    expected = _matching(result)
    if expected is None:
        counts = sorted({e.video_frames for e in result.expected})
        problems.append(
            f"recorded {report.video_frames} video frames; a correct recording has {counts} "
            f"(the source has {CLIP.video_frames})"
        )
    if report.video_gaps:
        problems.append(f"video timestamp gaps (at, jump): {report.video_gaps}")
    if expected is not None:
        if abs(report.video_duration - expected.video_span) > 1.0 / CLIP.fps:
            problems.append(
                f"video spans {report.video_duration:.3f} s, expected {expected.video_span:.3f} s"
            )
        if report.audio_start is None or report.video_start is None:
            problems.append("no audio or no video in the recording")
        else:
            start_offset = report.audio_start - report.video_start
            end_offset = (report.audio_end or 0.0) - (report.video_end or 0.0)
            if abs(start_offset - expected.av_start_offset) > AV_TOLERANCE:
                problems.append(
                    f"audio starts {start_offset:+.3f} s from the video, the packager's output "
                    f"{expected.av_start_offset:+.3f} s"
                )
            if abs(end_offset - expected.av_end_offset) > AV_TOLERANCE:
                problems.append(
                    f"audio ends {end_offset:+.3f} s from the video, the packager's output "
                    f"{expected.av_end_offset:+.3f} s"
                )
    if case.no_probe and result.heads():
        problems.append(
            f"{result.heads()} HEAD requests ({result.heads(404)} answered 404) where the "
            "$Time$ chain knows every next time from the media"
        )
    summary = result.summary
    if summary is None:
        problems.append("no summary file")
    else:
        # The server served every segment from the recording's start on: no hole in it.
        if summary["missing_ranges"]:
            problems.append(f"summary: missing ranges {summary['missing_ranges']}")
        # Where the past is deleted, the oldest segment may go between search and download:
        # only a server that keeps everything leaves nothing to count as missing.
        if case.past_kept and summary["segments_missing"]:
            problems.append(f"summary: {summary['segments_missing']} segments missing")
        if expected is not None and summary["segments_recorded"] != expected.segments:
            problems.append(
                f"summary: {summary['segments_recorded']} segments recorded, the recording "
                f"holds {expected.segments}"
            )
        if case.past_kept and not summary["archive"]["reaches_broadcast_start"]:
            problems.append(f"summary: the archive does not reach the start: {summary['archive']}")
    if case.past_kept:
        # A server that keeps every segment gives a correct recorder nothing to warn about.
        warnings = [
            line for line in result.stderr.splitlines() if line.startswith(("WARNING", "ERROR"))
        ]
        if warnings:
            problems.append("warnings: " + " | ".join(warnings))
    return problems


@pytest.mark.parametrize("name", list(CASES))
def test_records_real_packager_from_its_first_frame(
    name: str, matrix: dict[str, CaseResult]
) -> None:
    result = matrix[name]
    if result.skipped is not None:
        # CI installs every packager (.ci/run): there a missing one is a failure, not a skip.
        if os.environ.get("CI"):
            pytest.fail(result.skipped)
        pytest.skip(result.skipped)
    assert result.harness_error is None, result.describe()
    problems = _problems(CASES[name], result)
    assert not problems, "\n".join(["", *problems, "", result.describe()])
