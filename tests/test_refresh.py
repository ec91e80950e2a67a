"""Signed URLs that expire mid-recording: --refresh-url-command, or a resumable stop.

End to end on the simulated origin with rotating tokens (virtual clock), media checked with
PyAV; then the refresher alone (a stub server) and the command runner.
"""

from __future__ import annotations

import asyncio
import math
import os
import re
import shlex
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from instarec.errors import HttpStatusError, ManifestUnavailableError, UrlExpiredError
from instarec.http import TextResponse
from instarec.manifest import parse_manifest
from instarec.recorder import record
from instarec.refresh import Refresher, RefreshFailed, RefreshPolicy, run_command
from instarec.signing import SignedLocation
from instarec.testing.clock import ManualClock
from instarec.testing.faults import FaultConfig
from instarec.testing.media import TestMedia
from instarec.testing.origin import Origin, OriginConfig, RequestRecord
from tests.recording import fast_options, inspect, running_clock
from tests.test_errors import assert_one_error_line, run_main
from tests.test_resume_signals import FAST, journal_keys


def current_url_command(origin: Origin) -> str:
    """A refresh command as a user would write one: ask a service for the current URL."""
    script = (
        "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1]).read().decode())"
    )
    return f"{shlex.quote(sys.executable)} -c {shlex.quote(script)} {origin.base_url}/current-url"


def media_fetches(log: Sequence[RequestRecord]) -> Counter[tuple[str | None, int | None]]:
    """Media segments served whole, by (track, index)."""
    return Counter((r.track, r.index) for r in log if r.kind == "media" and r.complete)


def parts_of(output: Path) -> list[Path]:
    """The files a recording cut into parts wrote (NAME.NNN.EXT)."""
    return sorted(output.parent.glob(f"{output.stem}.[0-9][0-9][0-9]{output.suffix}"))


def recorded_frames(origin: Origin, segments_dir: Path) -> tuple[list[int], int]:
    """The video segment indexes a journal holds, and their frames."""
    keys = sorted(key for track, key in journal_keys(segments_dir) if track == "video")
    indexes = [origin.broadcast.index_of("video", key) for key in keys]
    assert None not in indexes
    return [i for i in indexes if i is not None], origin.expected_frames(0, len(keys) - 1)


# --- with --refresh-url-command -----------------------------------------------------------


async def test_a_refresh_command_carries_the_recording_through_rotations(
    tmp_path: Path, test_media: TestMedia
) -> None:
    # The first token expires while the past is still downloading (a latency of 50 ms a request
    # keeps several downloads in flight): segments and manifest are refused together.
    config = OriginConfig(
        shape="time",
        broadcast_duration=260,
        already_broadcast=200,
        token_rotation=10,
        token_grace=1,
        faults=FaultConfig(latency=0.05),
        media=test_media.spec,
    )
    clock = ManualClock()
    output = tmp_path / "rotating.mp4"
    async with Origin(config, clock, media=test_media) as origin:
        options = fast_options(
            origin.manifest_url, output, refresh_url_command=current_url_command(origin)
        )
        async with running_clock(origin, clock, step=0.1, every=0.01):
            summary = await record(options, install_signal_handlers=False)
        expected = origin.expected_frames(0, origin.segment_count - 1)
        segments = origin.segment_count
        log = origin.request_log

    refreshes = [r.virtual_time for r in log if r.path == "/current-url"]
    assert len(refreshes) >= 4
    # Each expiry ran the command once, however many requests it refused: never twice within
    # one token's time.
    periods = [math.floor(t / 10) for t in refreshes]
    assert len(set(periods)) == len(periods), refreshes
    refused = Counter(r.kind for r in log if r.status == 403)
    assert refused["manifest"] >= 4 and refused["media"] >= 2, refused
    # Nothing lost, nothing fetched twice.
    assert set(media_fetches(log).values()) == {1}
    assert len(media_fetches(log)) == 2 * segments
    report = inspect(output)
    assert report.video_frames == expected
    assert report.video_gaps == ()
    assert summary.unfinished is None
    assert summary.gaps == ()
    assert not summary.segments_dir.exists()


async def test_a_failing_refresh_command_is_retried_then_the_recording_stops(
    tmp_path: Path, test_media: TestMedia
) -> None:
    runs = tmp_path / "runs"
    config = OriginConfig(
        shape="time",
        broadcast_duration=90,
        already_broadcast=20,
        token_rotation=60,
        token_grace=2,
        media=test_media.spec,
    )
    clock = ManualClock()
    output = tmp_path / "failing.mkv"
    async with Origin(config, clock, media=test_media) as origin:
        options = fast_options(
            origin.manifest_url,
            output,
            refresh_url_command=f"echo run >> {shlex.quote(str(runs))}; exit 3",
            refresh_url_retries=2,
            refresh_retry_delay=0.01,
        )
        async with running_clock(origin, clock, step=0.25, every=0.01):
            summary = await record(options, install_signal_handlers=False)
        indexes, frames = recorded_frames(origin, summary.segments_dir)

    assert runs.read_text().split() == ["run"] * 3
    assert summary.unfinished == (
        "the signed URL expired (HTTP 403) and --refresh-url-command failed 3 times "
        "(it exited with status 3)"
    )
    assert summary.end_reason == summary.unfinished
    # What was recorded is merged and kept: from the start, up to the expiry, without a hole.
    assert indexes == list(range(len(indexes))) and len(indexes) >= 5
    report = inspect(output)
    assert report.video_frames == frames
    assert report.video_gaps == ()


@pytest.mark.parametrize(
    ("command", "says"),
    [
        ("echo 'no such tool' >&2; exit 127", "it exited with status 127: no such tool"),
        ("true", "it printed no URL"),
        ("echo {stale}", "the URL it printed answers HTTP 403"),
    ],
    ids=["exit-status", "no-output", "stale-url"],
)
async def test_a_failing_refresh_command_exits_4_with_what_was_recorded(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    test_media: TestMedia,
    command: str,
    says: str,
) -> None:
    config = OriginConfig(
        shape="time",
        broadcast_duration=90,
        already_broadcast=20,
        token_rotation=60,
        token_grace=2,
        media=test_media.spec,
    )
    clock = ManualClock()
    output = tmp_path / "failing.mkv"
    segments_dir = tmp_path / "failing.mkv.segments"
    async with Origin(config, clock, media=test_media) as origin:
        url = origin.manifest_url
        command = command.format(stale=shlex.quote(url))
        argv = [*FAST, "--refresh-url-command", command, "--refresh-url-retries", "0"]
        async with running_clock(origin, clock, step=0.25, every=0.01):
            code, out, err = await run_main(capsys, *argv, url, str(output))
        indexes, frames = recorded_frames(origin, segments_dir)

    assert code == 4, err
    line = assert_one_error_line(
        err,
        "the signed URL expired (HTTP 403) and --refresh-url-command failed once",
        says,
        f"merged into {output}",
        f"kept in {segments_dir}",
        "rerun with a fresh MPD URL and the same OUTPUT",
    )
    assert "pass --refresh-url-command" not in line
    assert re.search(r"^Ended +the signed URL expired \(HTTP 403\) and --refresh-url", out, re.M)
    assert indexes == list(range(len(indexes))) and len(indexes) >= 5
    report = inspect(output)
    assert report.video_frames == frames
    assert report.video_gaps == ()


# --- without the option: a resumable stop ---------------------------------------------------


async def test_an_expired_url_stops_the_recording_and_a_rerun_with_a_fresh_one_completes_it(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, test_media: TestMedia
) -> None:
    config = OriginConfig(
        shape="time",
        broadcast_duration=100,
        already_broadcast=30,
        token_rotation=60,
        token_grace=5,
        media=test_media.spec,
    )
    clock = ManualClock()
    output = tmp_path / "expiring.mkv"
    segments_dir = tmp_path / "expiring.mkv.segments"
    summary_file = tmp_path / "summary.json"
    async with Origin(config, clock, media=test_media) as origin:
        stale = origin.manifest_url
        async with running_clock(origin, clock, step=0.25, every=0.01):
            code, _, err = await run_main(
                capsys, *FAST, "--summary-file", str(summary_file), stale, str(output)
            )
        # The clock stands still between the runs: a loaded machine does not change the story.
        assert code == 4, err
        assert_one_error_line(
            err,
            "the signed URL expired (HTTP 403)",
            f"merged into {output}",
            f"kept in {segments_dir}",
            "rerun with a fresh MPD URL and the same OUTPUT to resume the recording",
            "or pass --refresh-url-command",
        )
        assert '"exit_code": 4' in summary_file.read_text()
        indexes, frames = recorded_frames(origin, segments_dir)
        partial = inspect(output)
        # Rerun with the expired URL by mistake: refused, and the segments wait as they are.
        kept = journal_keys(segments_dir)
        code, _, err = await run_main(capsys, *FAST, stale, str(output))
        assert code == 4
        assert_one_error_line(err, "HTTP 403", f"kept in {segments_dir}", "fresh URL")
        assert journal_keys(segments_dir) == kept
        fresh = origin.manifest_url
        assert fresh.split("?")[0] == stale.split("?")[0] and fresh != stale
        # The same OUTPUT, no --overwrite: the rerun resumes and replaces the partial file.
        async with running_clock(origin, clock, step=0.25, every=0.01):
            code, out, err = await run_main(capsys, *FAST, fresh, str(output))
        expected = origin.expected_frames(0, origin.segment_count - 1)
        segments = origin.segment_count
        log = origin.request_log

    assert indexes == list(range(len(indexes))) and len(indexes) >= 5
    assert partial.video_frames == frames < expected
    assert partial.video_gaps == ()
    assert code == 0, err
    assert "Missing        none" in out
    report = inspect(output)
    assert report.video_frames == expected
    assert report.video_gaps == ()
    assert not segments_dir.exists()
    # The rerun fetched only what the first run had not: every segment once, over both runs.
    assert set(media_fetches(log).values()) == {1}
    assert len(media_fetches(log)) == 2 * segments


async def test_another_broadcast_into_an_unfinished_output_is_refused_unless_overwrite(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, test_media: TestMedia
) -> None:
    output = tmp_path / "rec.mkv"
    segments_dir = tmp_path / "rec.mkv.segments"
    first = OriginConfig(
        shape="instagram",
        broadcast_duration=90,
        already_broadcast=20,
        token_rotation=60,
        token_grace=2,
        media=test_media.spec,
    )
    clock = ManualClock()
    origin = Origin(first, clock, media=test_media)
    async with origin, running_clock(origin, clock, step=0.25, every=0.01):
        code, _, err = await run_main(capsys, *FAST, origin.manifest_url, str(output))
    assert code == 4, err
    kept = journal_keys(segments_dir)
    partial = output.read_bytes()

    other = OriginConfig(shape="static", broadcast_duration=10, already_broadcast=10)
    async with Origin(other, ManualClock(), media=test_media) as origin:
        code, _, err = await run_main(capsys, *FAST, origin.manifest_url, str(output))
        assert code == 2
        assert_one_error_line(
            err,
            str(segments_dir),
            "holds an unfinished recording of another broadcast",
            "--overwrite",
        )
        assert output.read_bytes() == partial
        assert journal_keys(segments_dir) == kept
        code, _, err = await run_main(
            capsys, *FAST, "--overwrite", origin.manifest_url, str(output)
        )
        expected = origin.expected_frames(0, origin.segment_count - 1)
    assert code == 0, err
    assert inspect(output).video_frames == expected
    assert not segments_dir.exists()


# --- the refresher alone --------------------------------------------------------------------

CDN = "https://cdn.example.test"
STALE = f"{CDN}/live/manifest.mpd?sig=old&exp=1"
FRESH = f"{CDN}/live/manifest.mpd?sig=new&exp=2"


def mpd(query: str) -> bytes:
    query = query.replace("&", "&amp;")
    template = (
        f'<SegmentTemplate timescale="1000" duration="2000" startNumber="1" '
        f'initialization="$RepresentationID$/init.mp4?{query}" '
        f'media="$RepresentationID$/$Number$.m4s?{query}"/>'
    )
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="dynamic"
     availabilityStartTime="2024-01-01T00:00:00Z" profiles="urn:mpeg:dash:profile:isoff-live:2011">
  <Period id="p0" start="PT0S">
    <AdaptationSet contentType="video" mimeType="video/mp4">{template}
      <Representation id="v1" bandwidth="500000" width="640" height="360" codecs="avc1.64001e"/>
    </AdaptationSet>
  </Period>
</MPD>""".encode()


@dataclass
class StubServer:
    """Answers manifest requests only: a body, or a final status."""

    answers: dict[str, bytes | int]
    asked: list[str] = field(default_factory=list)

    async def fetch_manifest(self, url: str, *, max_bytes: int) -> TextResponse:
        self.asked.append(url)
        await asyncio.sleep(0.01)  # an answer takes a while: refusals meanwhile share it
        answer = self.answers.get(url, 404)
        if isinstance(answer, int):
            raise ManifestUnavailableError(f"HTTP {answer}", answer)
        return TextResponse(url, 200, {}, answer)


def refresher(server: StubServer, command: str | None) -> Refresher:
    recorded = list(parse_manifest(mpd("sig=old&exp=1"), STALE).representations())
    policy = RefreshPolicy(command, retries=0, retry_delay=0.0, timeout=10.0)
    return Refresher(server, SignedLocation(STALE), policy, lambda: recorded)  # type: ignore[arg-type]


async def refused_unless_fresh(url: str) -> str:
    if "sig=new" not in url:
        raise HttpStatusError("access denied (HTTP 403)", 403, url)
    return url


async def test_requests_refused_together_run_the_command_once(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    server = StubServer({STALE: 403, FRESH: mpd("sig=new&exp=2")})
    keeper = refresher(server, f"echo run >> {shlex.quote(str(runs))}; echo '{FRESH}'")
    urls = [f"{CDN}/live/v1/{n}.m4s?sig=old&exp=1" for n in range(20)]
    answers = await asyncio.gather(*(keeper.signed(refused_unless_fresh, url) for url in urls))
    assert answers == [url.replace("sig=old&exp=1", "sig=new&exp=2") for url in urls]
    assert runs.read_text().split() == ["run"]
    assert keeper.location.generation == 1
    assert keeper.location.manifest_url == FRESH
    assert not keeper.ended.is_set()


async def test_a_refusal_the_manifest_does_not_share_is_the_resources_own(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    server = StubServer({STALE: mpd("sig=old&exp=1")})
    keeper = refresher(server, f"echo run >> {shlex.quote(str(runs))}; echo '{FRESH}'")
    urls = [f"{CDN}/live/v1/{n}.m4s?sig=old&exp=1" for n in range(10)]
    answers = await asyncio.gather(
        *(keeper.signed(refused_unless_fresh, url) for url in urls), return_exceptions=True
    )
    assert all(isinstance(a, HttpStatusError) and a.status == 403 for a in answers)
    assert not runs.exists()  # no command: the URL did not expire
    assert len(server.asked) <= 2  # one look at the manifest for the refusals answered before it
    assert keeper.location.generation == 0


async def test_without_a_command_an_expired_url_ends_the_recording() -> None:
    # The manifest answers 410 (gone, as some CDNs say of an expired link): the segment's 403
    # was the expiry.
    keeper = refresher(StubServer({STALE: 410}), None)
    with pytest.raises(UrlExpiredError, match=r"the signed URL expired \(HTTP 403\)"):
        await keeper.signed(refused_unless_fresh, f"{CDN}/live/v1/1.m4s?sig=old&exp=1")
    assert keeper.ended.is_set()
    assert not await keeper.manifest_refused(0, 403)  # nothing else is asked any more


async def test_a_fresh_manifest_without_the_recorded_representation_is_a_failed_refresh() -> None:
    other = mpd("sig=new&exp=2").replace(b'width="640" height="360"', b'width="1920" height="1080"')
    server = StubServer({STALE: 403, FRESH: other.replace(b'id="v1"', b'id="v9"')})
    keeper = refresher(server, f"echo '{FRESH}'")
    assert not await keeper.manifest_refused(0, 403)
    assert keeper.failure is not None
    assert "its manifest has no representation like 'v1'" in keeper.failure


async def test_a_fresh_url_whose_manifest_is_gone_still_signs_the_segments() -> None:
    # Chaos seed 28: the token expired just as the broadcast ended, and the manifest of an
    # ended Instagram broadcast answers 404 while its segments are still served.
    keeper = refresher(StubServer({STALE: 403, FRESH: 404}), f"echo '{FRESH}'")
    url = f"{CDN}/live/v1/7.m4s?sig=old&exp=1"
    assert await keeper.signed(refused_unless_fresh, url) == url.replace(
        "sig=old&exp=1", "sig=new&exp=2"
    )
    assert keeper.failure is None and not keeper.ended.is_set()
    # A URL of another manifest answering 404 is a failed refresh, not an ended broadcast.
    elsewhere = FRESH.replace("/live/", "/other/")
    keeper = refresher(StubServer({STALE: 403, elsewhere: 404}), f"echo '{elsewhere}'")
    assert not await keeper.manifest_refused(0, 403)
    assert keeper.failure is not None and "answers HTTP 404" in keeper.failure


# --- the command -----------------------------------------------------------------------------


async def test_the_command_gives_the_first_line_it_prints() -> None:
    url = await run_command("printf 'https://cdn.example.test/a.mpd?x=1\\nsecond line\\n'")
    assert url == "https://cdn.example.test/a.mpd?x=1"
    with pytest.raises(RefreshFailed, match="exited with status 3: oops"):
        await run_command("echo partial; echo oops >&2; exit 3")
    with pytest.raises(RefreshFailed, match="printed no URL"):
        await run_command("true")
    with pytest.raises(RefreshFailed, match="'ftp://x', not an http"):
        await run_command("echo ftp://x")


@pytest.mark.skipif(os.name != "posix", reason="process groups")
async def test_a_command_cut_short_stops_everything_it_started(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    command = f"sleep 60 & echo $! > {shlex.quote(str(pid_file))}; wait"
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.5):
            await run_command(command)
    await asyncio.sleep(0.1)
    assert not running(int(pid_file.read_text()))


def running(pid: int) -> bool:
    """Whether a process runs (a zombie waiting for a reaper that is not the shell any more
    does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def test_a_recording_cut_into_parts_resumes_its_parts_too(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, test_media: TestMedia
) -> None:
    config = OriginConfig(
        shape="time",
        broadcast_duration=100,
        already_broadcast=30,
        token_rotation=60,
        token_grace=5,
        media=test_media.spec,
    )
    clock = ManualClock()
    output = tmp_path / "cut.mkv"
    argv = [*FAST, "--split", "30"]
    async with Origin(config, clock, media=test_media) as origin:
        async with running_clock(origin, clock, step=0.25, every=0.01):
            code, _, err = await run_main(capsys, *argv, origin.manifest_url, str(output))
        assert code == 4, err
        assert_one_error_line(err, "the signed URL expired", "parts from", "same OUTPUT")
        first_parts = parts_of(output)
        assert len(first_parts) >= 2
        async with running_clock(origin, clock, step=0.25, every=0.01):
            code, _, err = await run_main(capsys, *argv, origin.manifest_url, str(output))
        expected = origin.expected_frames(0, origin.segment_count - 1)

    assert code == 0, err
    parts = parts_of(output)
    assert len(parts) > len(first_parts)
    assert sum(inspect(part).video_frames for part in parts) == expected


async def test_a_rerun_with_the_expired_url_and_a_refresh_command_renews_it_and_resumes(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, test_media: TestMedia
) -> None:
    config = OriginConfig(
        shape="time",
        broadcast_duration=70,
        already_broadcast=30,
        token_rotation=40,
        token_grace=5,
        media=test_media.spec,
    )
    clock = ManualClock()
    output = tmp_path / "renewed.mkv"
    segments_dir = tmp_path / "renewed.mkv.segments"
    async with Origin(config, clock, media=test_media) as origin:
        stale = origin.manifest_url
        async with running_clock(origin, clock, step=0.25, every=0.01):
            code, _, err = await run_main(capsys, *FAST, stale, str(output))
        assert code == 4, err
        kept = journal_keys(segments_dir)
        assert kept
        # The same command again, now with a way to renew the URL it was given.
        command = ["--refresh-url-command", current_url_command(origin)]
        async with running_clock(origin, clock, step=0.25, every=0.01):
            code, out, err = await run_main(capsys, *FAST, *command, stale, str(output))
        expected = origin.expected_frames(0, origin.segment_count - 1)
        segments = origin.segment_count
        log = origin.request_log

    assert code == 0, err
    assert "Missing        none" in out
    assert sum(1 for r in log if r.path == "/current-url") == 1
    report = inspect(output)
    assert report.video_frames == expected
    assert report.video_gaps == ()
    # Nothing fetched twice over both runs.
    assert set(media_fetches(log).values()) == {1}
    assert len(media_fetches(log)) == 2 * segments


async def test_an_expired_url_at_the_start_whose_command_fails_exits_4_after_its_retries(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, test_media: TestMedia
) -> None:
    config = OriginConfig(shape="time", broadcast_duration=40, token_rotation=5, token_grace=1)
    clock = ManualClock()
    output = tmp_path / "refused.mkv"
    async with Origin(config, clock, media=test_media) as origin:
        stale = origin.manifest_url
        clock.advance(20)  # the token of the URL is long expired
        failing = f"{shlex.quote(sys.executable)} -c 'import sys; sys.exit(3)'"
        code, _, err = await run_main(
            capsys,
            *FAST,
            "--refresh-url-command",
            failing,
            "--refresh-url-retries",
            "1",
            stale,
            str(output),
        )
        requests = [r.kind for r in origin.request_log]
    assert code == 4
    assert_one_error_line(err, "HTTP 403", "--refresh-url-command failed 2 times")
    assert requests == ["manifest"]
    assert not output.exists()
