from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import subprocess
import sys
import types
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

import instarec.recorder
from instarec import __version__
from instarec.cli import build_parser, main, options_markdown, parse_args
from instarec.errors import NetworkError, UnsupportedStreamError
from instarec.finish import RecordingSummary, TrackSummary
from instarec.options import Options

URL = "https://cdn.example.test/live/manifest.mpd"
REPO = Path(__file__).resolve().parents[1]

# A dynamic $Number$ + @duration manifest: segment k (from 1) covers [2(k-1), 2k) seconds
# after availabilityStartTime, and is available once it has ended.
LIVE_MPD = """<?xml version="1.0" encoding="UTF-8"?>
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="dynamic"
     availabilityStartTime="2024-01-01T00:00:00Z" minimumUpdatePeriod="PT2S"
     timeShiftBufferDepth="PT1H" profiles="urn:mpeg:dash:profile:isoff-live:2011">
  <Period id="p0" start="PT0S">
    <AdaptationSet contentType="video" mimeType="video/mp4">
      <SegmentTemplate timescale="1000" duration="2000" startNumber="1"
                       initialization="$RepresentationID$/init.mp4"
                       media="$RepresentationID$/$Number$.m4s"/>
      <Representation id="v360" bandwidth="500000" width="640" height="360"
                      codecs="avc1.64001e" frameRate="30"/>
      <Representation id="v720" bandwidth="1500000" width="1280" height="720"
                      codecs="avc1.64001f" frameRate="30000/1001"/>
    </AdaptationSet>
    <AdaptationSet contentType="audio" mimeType="audio/mp4" lang="en">
      <SegmentTemplate timescale="1000" duration="2000" startNumber="1"
                       initialization="$RepresentationID$/init.mp4"
                       media="$RepresentationID$/$Number$.m4s"/>
      <Representation id="a128" bandwidth="128000" codecs="mp4a.40.2"
                      audioSamplingRate="48000"/>
    </AdaptationSet>
  </Period>
</MPD>
"""


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_error_line(err: str, fragment: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("instarec: error: "), err
    assert fragment in lines[0], err
    assert "Traceback" not in err


@pytest.fixture
def mpd_file(tmp_path: Path) -> Path:
    path = tmp_path / "live.mpd"
    path.write_text(LIVE_MPD, encoding="utf-8")
    return path


# --- version and help -------------------------------------------------------------------


def test_version_in_process(capsys):
    code, out, _ = run(capsys, "--version")
    assert code == 0
    assert out.strip() == f"instarec {__version__}"


def test_subprocess_version_and_error_without_traceback(tmp_path):
    version = subprocess.run(
        [sys.executable, "-m", "instarec", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=REPO,
    )
    assert version.returncode == 0
    assert version.stdout.startswith("instarec ")
    bad = subprocess.run(
        [sys.executable, "-m", "instarec", "--concurrency", "0", URL, str(tmp_path / "o.mkv")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=REPO,
    )
    assert bad.returncode == 2
    assert_one_error_line(bad.stderr, "--concurrency")


def test_help_groups_options_and_shows_defaults(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0
    for group in ("network:", "stream selection:", "archive search:", "output:", "logging:"):
        assert f"\n{group}\n" in out
    # Options sit in their group: the section after "archive search:" holds --no-past.
    archive = out.split("\narchive search:\n")[1].split("\n\n")[0]
    assert "--no-past" in archive and "--max-search-requests" in archive
    assert "(default: 50)" in archive
    assert "(default: 30000)" in archive
    network = out.split("\nnetwork:\n")[1].split("\n\n")[0]
    assert "--proxy" in network and "--cookies" in network
    assert "130" in out  # the exit code table


# --- Options ----------------------------------------------------------------------------


def test_defaults_match_the_original_tool(tmp_path):
    run = parse_args([URL, str(tmp_path / "out.mp4")])
    assert (run.mode, run.interactive, run.verbose, run.quiet) == ("record", False, False, False)
    options = run.options
    assert options.mpd_url == URL
    assert options.output_path == tmp_path / "out.mp4"
    assert options.poll_interval is None  # the manifest's minimumUpdatePeriod, else 2 s
    assert options.max_search_requests == 50
    assert options.download_retries == 5
    assert options.download_retry_delay == 1.0
    assert options.check_url_retries == 3
    assert options.end_stream_miss_threshold == 30000
    assert options.search_chunk_size == 500
    assert options.live_end_timeout == 180.0
    # The one default that departs from the original's (0.1 s): the pace adapts to the
    # server's pushback instead (instarec.pacing).
    assert options.past_segment_delay == 0.0
    assert options.ffmpeg_path == "ffmpeg"
    assert options.ffprobe_path == "ffprobe"
    assert options.concurrency == 8
    assert options.video_quality == () and options.audio_quality == ()
    assert not (options.no_past or options.keep_segments or options.overwrite)
    assert options.segments_dir == tmp_path / "out.mp4.segments"


def test_every_option_reaches_options(tmp_path):
    cookies = tmp_path / "cookies.txt"
    cookies.write_text("# Netscape HTTP Cookie File\n")
    run = parse_args(
        [
            "-i", "-v", "--log-file", str(tmp_path / "log.txt"),
            "--video-quality", "v1", "v2", "--audio-quality", "a1",
            "--poll-interval", "0.5", "--max-search-requests", "7",
            "--download-retries", "0", "--download-retry-delay", "0.25",
            "--check-url-retries", "1", "--end-stream-miss-threshold", "9",
            "--search-chunk-size", "11", "--no-past", "--keep-segments",
            "--ffmpeg-path", "/opt/ff", "--ffprobe-path", "/opt/fp",
            "--proxy", "socks5://127.0.0.1:1080", "--live-end-timeout", "30",
            "--past-segment-delay", "0", "--summary-file", str(tmp_path / "s.json"),
            "-H", "X-One: 1", "--header", "Referer:https://www.example.test/",
            "--user-agent", "Agent/1.0", "--cookies", str(cookies),
            "--concurrency", "3", "--overwrite",
            "--refresh-url-command", "fresh-url --id 42", "--refresh-url-retries", "5",
            URL, str(tmp_path / "rec"),
        ]
    )  # fmt: skip
    assert (run.mode, run.interactive, run.verbose, run.log_file) == (
        "record",
        True,
        True,
        tmp_path / "log.txt",
    )
    assert run.options == Options(
        mpd_url=URL,
        output_path=tmp_path / "rec.mkv",
        video_quality=("v1", "v2"),
        audio_quality=("a1",),
        poll_interval=0.5,
        max_search_requests=7,
        download_retries=0,
        download_retry_delay=0.25,
        check_url_retries=1,
        end_stream_miss_threshold=9,
        search_chunk_size=11,
        no_past=True,
        keep_segments=True,
        ffmpeg_path="/opt/ff",
        ffprobe_path="/opt/fp",
        proxy="socks5://127.0.0.1:1080",
        live_end_timeout=30.0,
        past_segment_delay=0.0,
        summary_file=tmp_path / "s.json",
        headers=(("X-One", "1"), ("Referer", "https://www.example.test/")),
        user_agent="Agent/1.0",
        cookies=cookies,
        concurrency=3,
        overwrite=True,
        refresh_url_command="fresh-url --id 42",
        refresh_url_retries=5,
    )


def test_http_config_carries_network_options(tmp_path):
    options = parse_args(
        ["--download-retries", "2", "--download-retry-delay", "0.5", "--check-url-retries", "4",
         "-H", "A: b", "--user-agent", "UA", "--proxy", "http://p:3128",
         URL, str(tmp_path / "o.mkv")]
    ).options  # fmt: skip
    config = options.http_config()
    assert config.retry.retries == 2
    assert config.retry.base_delay == 0.5
    assert config.probe_retries == 4
    assert config.headers == (("A", "b"),)
    assert config.user_agent == "UA"
    assert config.proxy == "http://p:3128"
    assert config.max_connections >= options.concurrency + options.max_search_requests


def test_now_is_parsed_to_utc(mpd_file):
    run = parse_args(["-J", "--now", "2024-01-01T02:00:10+02:00", str(mpd_file)])
    assert (run.mode, run.now) == ("json", datetime(2024, 1, 1, 0, 0, 10, tzinfo=UTC))
    assert parse_args(["-F", "--now", "2024-01-01T00:00:10Z", str(mpd_file)]).now == (
        datetime(2024, 1, 1, 0, 0, 10, tzinfo=UTC)
    )


def test_demo_takes_only_output(tmp_path):
    run = parse_args(["--demo", str(tmp_path / "demo.mkv")])
    assert run.mode == "demo"
    options = run.options
    assert options.output_path == tmp_path / "demo.mkv"
    assert options.mpd_url == ""


def test_local_manifest_with_base_url(mpd_file, tmp_path):
    options = parse_args(
        ["--base-url", "https://cdn.example.test/x/m.mpd", str(mpd_file), str(tmp_path / "o.ts")]
    ).options
    assert options.manifest_file == mpd_file
    assert options.mpd_url == "https://cdn.example.test/x/m.mpd"


# --- validation: one line, exit 2 --------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--concurrency", "0", URL, "{out}"], "--concurrency"),
        (["--download-retries", "-1", URL, "{out}"], "must not be negative"),
        (["--max-search-requests", "-5", URL, "{out}"], "--max-search-requests"),
        (["--poll-interval", "-1", URL, "{out}"], "--poll-interval"),
        (["--poll-interval", "0", URL, "{out}"], "greater than 0"),
        (["--download-retry-delay", "nan", URL, "{out}"], "--download-retry-delay"),
        (["--past-segment-delay", "-0.1", URL, "{out}"], "--past-segment-delay"),
        (["--live-end-timeout", "abc", URL, "{out}"], "expected a number"),
        (["--search-chunk-size", "1.5", URL, "{out}"], "whole number"),
        (["-q", "-v", URL, "{out}"], "not allowed with"),
        (["-F", "-J", URL], "not allowed with"),
        (["--no-such-option", URL, "{out}"], "unrecognized arguments"),
        ([URL], "OUTPUT is missing"),
        ([], "MPD_URL is missing"),
        (["ftp://cdn.example.test/m.mpd", "{out}"], "neither an http(s) URL nor an existing file"),
        (["https:///m.mpd", "{out}"], "no host"),
        (["{tmp}/missing.mpd", "{out}"], "neither an http(s) URL nor an existing file"),
        ([URL, "{tmp}/no/such/dir/out.mkv"], "does not exist"),
        ([URL, "{tmp}/out.webm"], "'.webm' is not supported"),
        ([URL, "{tmp}/out.avi"], "is not supported"),
        ([URL, "{tmp}"], "is a directory"),
        (["-H", "no colon here", URL, "{out}"], "'Name: value'"),
        (["-H", "bad name: x", URL, "{out}"], "'Name: value'"),
        (["-J", "--now", "yesterday", URL], "ISO 8601"),
        (["-J", "--now", "2024-01-01T00:00:00", URL], "no time zone"),
        (["--now", "2024-01-01T00:00:00Z", URL, "{out}"], "only applies to -F/-J"),
        (["--cookies", "{tmp}/cookies.txt", URL, "{out}"], "cookies file"),
        (["--log-file", "{tmp}/nope/log.txt", URL, "{out}"], "--log-file"),
        (["--summary-file", "{tmp}/nope/s.json", URL, "{out}"], "--summary-file"),
        (["--proxy", "127.0.0.1:8080", URL, "{out}"], "--proxy"),
        (["--base-url", "https://cdn.example.test/", URL, "{out}"], "only applies when"),
        (["--base-url", "not a url", "-J", URL], "--base-url must be"),
        (["--demo", URL, "{out}"], "--demo takes only OUTPUT"),
        (["--demo"], "--demo needs OUTPUT"),
        (["--demo", "-F", "{out}"], "cannot be combined"),
        (["--stop-after", "1h30", URL, "{out}"], "argument --stop-after: expected a duration"),
        (["--stop-after", "0", URL, "{out}"], "longer than 0"),
        (["--stop-after", "-5m", URL, "{out}"], "--stop-after"),
        (["--stop-after", "1:75", URL, "{out}"], "1:30 (minutes:seconds)"),
        (["--split", "soon", URL, "{out}"], "argument --split: expected a duration"),
        (["--split-size", "2XB", URL, "{out}"], "argument --split-size: expected a size"),
        (["--split-size", "0GB", URL, "{out}"], "at least 1 byte"),
        (["--split-size", "1e400", URL, "{out}"], "--split-size"),
    ],
)
def test_invalid_command_lines_exit_2_with_one_line(capsys, tmp_path, argv, fragment):
    argv = [a.format(out=tmp_path / "out.mkv", tmp=tmp_path) for a in argv]
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert out == ""
    assert_one_error_line(err, fragment)


def test_local_manifest_recording_needs_base_url(capsys, mpd_file, tmp_path):
    code, _, err = run(capsys, str(mpd_file), str(tmp_path / "o.mkv"))
    assert code == 2
    assert_one_error_line(err, "--base-url")


def test_existing_output_needs_overwrite(capsys, tmp_path):
    out = tmp_path / "out.mkv"
    out.write_bytes(b"old")
    code, _, err = run(capsys, URL, str(out))
    assert code == 2
    assert_one_error_line(err, "--overwrite")
    assert parse_args(["--overwrite", URL, str(out)]).options.output_path == out


def test_long_broadcast_options_reach_options(tmp_path):
    options = parse_args(
        ["--stop-after", "1h30m", "--split", "01:00:00", "--split-size", "1.5G",
         URL, str(tmp_path / "o.mkv")]
    ).options  # fmt: skip
    assert (options.stop_after, options.split_duration, options.split_size) == (
        5400.0,
        3600.0,
        1_500_000_000,
    )
    assert options.split.splits
    plain = parse_args([URL, str(tmp_path / "o.mkv")]).options
    assert (plain.stop_after, plain.split_duration, plain.split_size) == (None, None, None)
    assert not plain.split.splits


def test_a_part_of_an_earlier_split_recording_needs_overwrite(capsys, tmp_path):
    out = tmp_path / "out.mkv"
    (tmp_path / "out.002.mkv").write_bytes(b"old part")
    code, _, err = run(capsys, "--split", "30m", URL, str(out))
    assert code == 2
    assert_one_error_line(err, "'" + str(tmp_path / "out.002.mkv") + "' already exists (a part")
    assert "--overwrite" in err
    assert parse_args(["--overwrite", "--split", "30m", URL, str(out)]).options.overwrite
    # Unsplit, the parts are not what is written; split, OUTPUT itself is not.
    assert parse_args([URL, str(out)]).options.output_path == out
    (tmp_path / "out.002.mkv").unlink()
    out.write_bytes(b"an unsplit recording")
    assert parse_args(["--split-size", "2GB", URL, str(out)]).options.output_path == out


def test_missing_extension_defaults_to_mkv(tmp_path):
    assert parse_args([URL, str(tmp_path / "rec")]).options.output_path == tmp_path / "rec.mkv"


# --- dispatch to the recorder and exit codes ----------------------------------------------


def fake_summary(*, interrupted: bool = False, output: Path | None = Path("out.mkv")):
    """A RecordingSummary as the recorder returns it (one video track, nothing missing)."""
    return RecordingSummary(
        output=output,
        segments_dir=Path("out.mkv.segments"),
        size=1000,
        duration=10.0,
        tracks=(TrackSummary("video", "v1", "avc1", 5, 0, 0.0, 10.0),),
        gaps=(),
        wall_time=1.0,
        end_reason="stopped by the user" if interrupted else "the broadcast ended",
        archive_start=None,
        archive_complete=False,
        interrupted=interrupted,
    )


@pytest.fixture
def fake_recorder(monkeypatch):
    """Installs an ``instarec.recorder`` whose ``record`` does what the test says."""
    calls: list[Options] = []
    behaviour: dict[str, object] = {"result": fake_summary()}

    async def record(options: Options, **kwargs: object) -> RecordingSummary:
        calls.append(options)
        outcome = behaviour["result"]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome  # type: ignore[return-value]

    monkeypatch.setattr(instarec.recorder, "record", record)
    return calls, behaviour


def test_record_success_exit_0(capsys, tmp_path, fake_recorder):
    calls, _ = fake_recorder
    code, _, err = run(capsys, "--no-past", URL, str(tmp_path / "out.mkv"))
    assert code == 0, err
    assert len(calls) == 1
    assert calls[0].no_past and calls[0].output_path == tmp_path / "out.mkv"


@pytest.mark.parametrize(
    ("exc", "code", "fragment"),
    [
        (NetworkError("connection refused by cdn.example.test"), 4, "connection refused"),
        (UnsupportedStreamError("this stream is DRM-protected"), 5, "DRM-protected"),
        (KeyboardInterrupt(), 130, "interrupted"),
    ],
)
def test_record_errors_map_to_exit_codes(capsys, tmp_path, fake_recorder, exc, code, fragment):
    _, behaviour = fake_recorder
    behaviour["result"] = exc
    got, _, err = run(capsys, URL, str(tmp_path / "out.mkv"))
    assert got == code
    lines = err.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0]
    assert "Traceback" not in err


def test_interrupted_recording_exits_130(capsys, tmp_path, fake_recorder):
    _, behaviour = fake_recorder
    behaviour["result"] = fake_summary(interrupted=True)
    code, _, _ = run(capsys, URL, str(tmp_path / "out.mkv"))
    assert code == 130


def test_unexpected_error_is_one_line_and_traceback_only_with_verbose(
    capsys, tmp_path, fake_recorder
):
    _, behaviour = fake_recorder
    behaviour["result"] = RuntimeError("boom\nsecond line")
    code, _, err = run(capsys, URL, str(tmp_path / "out.mkv"))
    assert code == 1
    assert_one_error_line(err, "unexpected RuntimeError: boom second line")
    assert "-v" in err
    code, _, err = run(capsys, "-v", URL, str(tmp_path / "out.mkv"))
    assert code == 1
    assert "Traceback" in err
    assert err.strip().splitlines()[-1].startswith("instarec: error: unexpected RuntimeError")


def test_demo_dispatch(capsys, tmp_path, monkeypatch):
    seen: list[Options] = []

    async def run_demo(options: Options, **kwargs: object) -> RecordingSummary:
        seen.append(options)
        return fake_summary(output=tmp_path / "d.mp4")

    module = types.ModuleType("instarec.demo")
    module.run_demo = run_demo  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "instarec.demo", module)
    code, _, err = run(capsys, "--demo", str(tmp_path / "d.mp4"))
    assert code == 0, err
    assert seen[0].output_path == tmp_path / "d.mp4"


# --- -F / -J / -i on a local file and over HTTP -------------------------------------------


def test_dump_json_local_file_with_base_url_and_now(capsys, mpd_file):
    code, out, err = run(
        capsys,
        "-J",
        "--base-url",
        "https://cdn.example.test/live/manifest.mpd",
        "--now",
        "2024-01-01T00:00:10Z",
        str(mpd_file),
    )
    assert code == 0, err
    doc = json.loads(out)
    assert doc["type"] == "dynamic"
    reps = {rep["id"]: rep for rep in doc["representations"]}
    assert set(reps) == {"v360", "v720", "a128"}
    v720 = reps["v720"]
    # 10 s after availabilityStartTime, 2 s segments 1..5 have ended.
    assert v720["segment_count"] == 5
    assert [s["url"] for s in v720["segments"]] == [
        f"https://cdn.example.test/live/v720/{n}.m4s" for n in range(1, 6)
    ]
    assert v720["init"]["url"] == "https://cdn.example.test/live/v720/init.mp4"


def test_dump_json_local_file_without_base_url_uses_the_file(capsys, mpd_file):
    code, out, _ = run(capsys, "-J", "--now", "2024-01-01T00:00:04Z", str(mpd_file))
    assert code == 0
    rep = json.loads(out)["representations"][0]
    assert rep["segments"][0]["url"] == (mpd_file.parent / "v360" / "1.m4s").as_uri()
    assert rep["segment_count"] == 2


def test_list_formats_local_file(capsys, mpd_file):
    code, out, _ = run(capsys, "-F", str(mpd_file))
    assert code == 0
    lines = out.splitlines()
    video_rows = lines[lines.index("Video:") + 2 : lines.index("Audio:")]
    assert [row.split()[1] for row in video_rows] == ["v720", "v360"]
    assert "29.97" in video_rows[0]
    assert "a128" in out and "48000 Hz" in out and " en " in out


def test_malformed_local_manifest_exits_3(capsys, tmp_path):
    bad = tmp_path / "bad.mpd"
    bad.write_text("<html><body>Sign in</body></html>")
    code, _, err = run(capsys, "-F", str(bad))
    assert code == 3
    assert_one_error_line(err, "")


@pytest.fixture
async def mpd_server():
    async def manifest(request: web.Request) -> web.Response:
        return web.Response(body=LIVE_MPD.encode(), content_type="application/dash+xml")

    async def gone(request: web.Request) -> web.Response:
        return web.Response(status=404)

    app = web.Application()
    app.router.add_get("/live/manifest.mpd", manifest)
    app.router.add_get("/old/manifest.mpd", gone)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield server
    finally:
        await server.close()


async def test_list_formats_and_dump_json_over_http(capsys, mpd_server):
    url = str(mpd_server.make_url("/live/manifest.mpd"))
    # main() runs its own event loop, so it goes to a thread while the server runs here.
    code = await asyncio.to_thread(main, ["-F", url])
    out = capsys.readouterr().out
    assert code == 0
    assert "v720" in out and "1280x720" in out
    code = await asyncio.to_thread(main, ["-J", "--now", "2024-01-01T00:00:06Z", url])
    doc = json.loads(capsys.readouterr().out)
    assert code == 0
    seg = doc["representations"][0]["segments"][-1]
    assert seg["url"] == str(mpd_server.make_url("/live/v360/3.m4s"))


async def test_manifest_404_exits_4_with_one_line(capsys, mpd_server):
    url = str(mpd_server.make_url("/old/manifest.mpd"))
    code = await asyncio.to_thread(main, ["-J", url])
    err = capsys.readouterr().err
    assert code == 4
    assert_one_error_line(err, "404")


async def test_interactive_choice_reaches_the_recorder(
    capsys, monkeypatch, mpd_server, fake_recorder, tmp_path
):
    calls, _ = fake_recorder
    monkeypatch.setattr(sys, "stdin", io.StringIO("2\n"))
    url = str(mpd_server.make_url("/live/manifest.mpd"))
    code = await asyncio.to_thread(main, ["-i", url, str(tmp_path / "o.mkv")])
    out = capsys.readouterr().out
    assert code == 0
    assert "Choose video" in out
    assert "Choose audio" not in out  # a single audio choice is taken without asking
    assert calls[0].video_quality == ("v360",)
    assert calls[0].audio_quality == ("a128",)


async def test_interactive_end_of_input_cancels(capsys, monkeypatch, mpd_server, fake_recorder):
    calls, _ = fake_recorder
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    url = str(mpd_server.make_url("/live/manifest.mpd"))
    code = await asyncio.to_thread(main, ["-i", url, "o.mkv"])
    err = capsys.readouterr().err
    assert code == 130
    assert_one_error_line(err, "cancelled")
    assert calls == []


@pytest.fixture
def chatty_recorder(monkeypatch):
    async def record(options: Options, **kwargs: object) -> RecordingSummary:
        log = logging.getLogger("instarec.recorder")
        log.debug("debug-line")
        log.info("info-line")
        log.warning("warning-line")
        return fake_summary()

    monkeypatch.setattr(instarec.recorder, "record", record)


@pytest.mark.parametrize(
    ("flags", "shown", "hidden"),
    [
        ([], ["info-line", "warning-line"], ["debug-line"]),
        (["-q"], ["warning-line"], ["info-line", "debug-line"]),
        (["-v"], ["debug-line", "info-line", "warning-line"], []),
    ],
)
def test_verbosity_flags(capsys, tmp_path, chatty_recorder, flags, shown, hidden):
    code, _, err = run(capsys, *flags, URL, str(tmp_path / "o.mkv"))
    assert code == 0
    for text in shown:
        assert text in err
    for text in hidden:
        assert text not in err


def test_verbose_logs_name_the_task(capsys, tmp_path, chatty_recorder):
    _, _, err = run(capsys, "-v", URL, str(tmp_path / "o.mkv"))
    line = next(line for line in err.splitlines() if "debug-line" in line)
    assert "[Task-" in line  # asyncio.run's main task: the record() coroutine


def test_log_file_gets_debug_even_with_quiet(capsys, tmp_path, chatty_recorder):
    log_file = tmp_path / "rec.log"
    code, _, err = run(capsys, "-q", "--log-file", str(log_file), URL, str(tmp_path / "o.mkv"))
    assert code == 0
    assert "debug-line" not in err
    text = log_file.read_text()
    assert "debug-line" in text and "info-line" in text and "warning-line" in text


# --- the README ----------------------------------------------------------------------------


def test_readme_options_table_is_the_parsers():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert options_markdown() in readme, "paste instarec.cli.options_markdown() into README.md"
    # Every option string of the parser, one by one (a clearer failure than the block above).
    parser = build_parser()
    for action in parser._actions:
        for option in action.option_strings:
            if option not in ("-h", "--help"):
                assert f"`{option}`" in readme, option


def test_readme_set_up_commands_match_ci():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```sh\n(.*?)\n```", readme, flags=re.S)
    assert blocks[0] == "pip install '.[ffmpeg]' && instarec --demo demo.mp4"
    assert blocks[1] == "pip install -e '.[test]' && python -m pytest"
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert ci.rstrip().splitlines()[-1] == blocks[1]
