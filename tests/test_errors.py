"""Every failure a user can meet: one line on stderr, a documented exit code, no traceback.

Each case runs the real command line (``main``) against a real server: a small aiohttp app
for bad manifests, the simulated origin for recordings. ``main`` runs its own event loop, so
it goes to a thread while the servers run on the test's loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from instarec.cli import main
from instarec.testing.clock import ManualClock
from instarec.testing.media import TestMedia
from instarec.testing.origin import Origin, OriginConfig
from tests.recording import inspect

# Fail fast: the retry policy itself is tested in test_http.py.
FAST = ["--download-retries", "0", "--download-retry-delay", "0", "--check-url-retries", "0"]

MPD_HEAD = """<?xml version="1.0" encoding="UTF-8"?>
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="dynamic"
     availabilityStartTime="2024-01-01T00:00:00Z" minimumUpdatePeriod="PT2S"
     profiles="urn:mpeg:dash:profile:isoff-live:2011">
  <Period id="p0" start="PT0S">
"""
TEMPLATE = (
    '<SegmentTemplate timescale="1000" duration="2000" startNumber="1" '
    'initialization="$RepresentationID$/init.mp4" media="$RepresentationID$/$Number$.m4s"/>'
)
DRM_MPD = f"""{MPD_HEAD}
    <AdaptationSet contentType="video" mimeType="video/mp4">
      <ContentProtection schemeIdUri="urn:mpeg:dash:mp4protection:2011" value="cenc"/>
      <ContentProtection schemeIdUri="urn:uuid:edef8ba9-79d6-4ace-a3c8-27dcd51d21ed"/>
      {TEMPLATE}
      <Representation id="v1" bandwidth="500000" width="640" height="360" codecs="avc1.64001e"/>
    </AdaptationSet>
  </Period>
</MPD>
"""
TEXT_ONLY_MPD = f"""{MPD_HEAD}
    <AdaptationSet contentType="text" mimeType="application/mp4" lang="en">
      {TEMPLATE}
      <Representation id="sub" bandwidth="1000" codecs="stpp"/>
    </AdaptationSet>
  </Period>
</MPD>
"""
HTML_PAGE = "<!DOCTYPE html><html><head><title>Instagram</title></head><body>Log in</body></html>"
MALFORMED = '<?xml version="1.0"?><MPD xmlns="urn:mpeg:dash:schema:mpd:2011"><Period></MPD>'


def assert_one_error_line(err: str, *fragments: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.startswith("instarec: error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in lines[0], err
    return lines[0]


async def run_main(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = await asyncio.to_thread(main, list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
async def bad_server() -> AsyncIterator[TestServer]:
    bodies = {
        "/drm.mpd": (200, DRM_MPD, "application/dash+xml"),
        "/text.mpd": (200, TEXT_ONLY_MPD, "application/dash+xml"),
        "/page.mpd": (200, HTML_PAGE, "text/html"),
        "/malformed.mpd": (200, MALFORMED, "application/dash+xml"),
        "/401.mpd": (401, "Unauthorized", "text/plain"),
        "/403.mpd": (403, "URL signature expired", "text/plain"),
        "/404.mpd": (404, "Not Found", "text/plain"),
        "/410.mpd": (410, "Gone", "text/plain"),
    }

    async def handle(request: web.Request) -> web.Response:
        status, body, content_type = bodies[request.path]
        return web.Response(status=status, text=body, content_type=content_type)

    app = web.Application()
    for path in bodies:
        app.router.add_get(path, handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield server
    finally:
        await server.close()


# --- the manifest URL ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("htp://cdn.example.test/live.mpd", "neither an http(s) URL nor an existing file"),
        ("https:///live.mpd", "has no host name"),
        ("www.instagram.com/live", "neither an http(s) URL nor an existing file"),
    ],
)
async def test_invalid_url_exits_2(capsys, tmp_path, url, fragment):
    code, out, err = await run_main(capsys, url, str(tmp_path / "out.mkv"))
    assert code == 2
    assert out == ""
    assert_one_error_line(err, fragment)


async def test_dns_failure_exits_4(capsys, tmp_path):
    url = "http://instarec-test.invalid/live/manifest.mpd"
    code, _, err = await run_main(capsys, *FAST, url, str(tmp_path / "out.mkv"))
    assert code == 4
    assert_one_error_line(err, "cannot resolve host 'instarec-test.invalid'", "check the URL")
    assert not (tmp_path / "out.mkv").exists()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_connection_refused_exits_4(capsys, tmp_path):
    port = free_port()  # bound then released: nothing listens there any more
    url = f"http://127.0.0.1:{port}/live/manifest.mpd"
    code, _, err = await run_main(capsys, *FAST, url, str(tmp_path / "out.mkv"))
    assert code == 4
    assert_one_error_line(err, "connection refused", f"127.0.0.1:{port}")


@pytest.mark.parametrize("status", [401, 403])
async def test_manifest_denied_says_to_copy_a_fresh_url(capsys, tmp_path, bad_server, status):
    url = str(bad_server.make_url(f"/{status}.mpd"))
    code, _, err = await run_main(capsys, *FAST, url, str(tmp_path / "out.mkv"))
    assert code == 4
    assert_one_error_line(err, f"HTTP {status}", "copy a fresh")


@pytest.mark.parametrize("status", [404, 410])
async def test_manifest_gone_exits_4(capsys, tmp_path, bad_server, status):
    url = str(bad_server.make_url(f"/{status}.mpd"))
    code, _, err = await run_main(capsys, *FAST, url, str(tmp_path / "out.mkv"))
    assert code == 4
    assert_one_error_line(err, f"HTTP {status}", "ended")


# --- the manifest body --------------------------------------------------------------------


async def test_html_page_exits_3(capsys, tmp_path, bad_server):
    url = str(bad_server.make_url("/page.mpd"))
    code, _, err = await run_main(capsys, *FAST, url, str(tmp_path / "out.mkv"))
    assert code == 3
    assert_one_error_line(err, "HTML page, not a DASH manifest", ".mpd URL")


async def test_malformed_xml_exits_3(capsys, tmp_path, bad_server):
    url = str(bad_server.make_url("/malformed.mpd"))
    code, _, err = await run_main(capsys, *FAST, url, str(tmp_path / "out.mkv"))
    assert code == 3
    assert_one_error_line(err, "not well-formed XML")


async def test_drm_protected_stream_exits_5(capsys, tmp_path, bad_server):
    url = str(bad_server.make_url("/drm.mpd"))
    code, _, err = await run_main(capsys, *FAST, url, str(tmp_path / "out.mkv"))
    assert code == 5
    assert_one_error_line(err, "DRM-protected", "cannot record encrypted")
    assert not (tmp_path / "out.mkv").exists()


async def test_no_video_and_no_audio_exits_5(capsys, tmp_path, bad_server):
    url = str(bad_server.make_url("/text.mpd"))
    code, _, err = await run_main(capsys, *FAST, url, str(tmp_path / "out.mkv"))
    assert code == 5
    assert_one_error_line(err, "no video and no audio representation")


# --- recordings on the simulated origin ---------------------------------------------------


@contextlib.asynccontextmanager
async def finished_broadcast(test_media: TestMedia, seconds: float) -> AsyncIterator[Origin]:
    """A finished broadcast: a static manifest listing every segment, all fetchable."""
    config = OriginConfig(shape="static", broadcast_duration=seconds, already_broadcast=seconds)
    async with Origin(config, ManualClock(), media=test_media) as origin:
        yield origin


async def test_unknown_video_quality_warns_and_records_the_best(capsys, tmp_path, test_media):
    output = tmp_path / "out.mkv"
    async with finished_broadcast(test_media, 10) as origin:
        code, _, err = await run_main(
            capsys, origin.manifest_url, str(output), "--video-quality", "no-such-id"
        )
    assert code == 0, err
    warning = next(line for line in err.splitlines() if "no-such-id" in line)
    assert warning.startswith("WARNING: video representation 'no-such-id' not found")
    assert "recording the best one" in warning
    assert "Traceback" not in err
    assert inspect(output).video_frames > 0


async def test_ffmpeg_not_found_is_said_before_recording(capsys, tmp_path, test_media):
    async with finished_broadcast(test_media, 10) as origin:
        code, _, err = await run_main(
            capsys,
            "--ffmpeg-path",
            "/nonexistent/ffmpeg",
            origin.manifest_url,
            str(tmp_path / "out.mkv"),
        )
        requests = sum(origin.stats.counts.values())
    assert code == 7
    assert_one_error_line(err, "ffmpeg not found at /nonexistent/ffmpeg")
    assert requests == 0  # not one request: said before the recording starts
    assert not (tmp_path / "out.mkv.segments").exists()


async def test_ffmpeg_not_found_before_the_interactive_picker(capsys, tmp_path, bad_server):
    url = str(bad_server.make_url("/drm.mpd"))
    code, out, err = await run_main(
        capsys, "-i", "--ffmpeg-path", "/nonexistent/ffmpeg", url, str(tmp_path / "o.mkv")
    )
    assert code == 7
    assert "Choose" not in out
    assert_one_error_line(err, "ffmpeg not found")


async def test_output_exists_without_overwrite_exits_2(capsys, tmp_path):
    output = tmp_path / "out.mkv"
    output.write_bytes(b"an earlier recording")
    code, _, err = await run_main(capsys, "https://cdn.example.test/live.mpd", str(output))
    assert code == 2
    assert_one_error_line(err, "already exists", "--overwrite")
    assert output.read_bytes() == b"an earlier recording"


async def test_output_directory_not_writable_exits_8(capsys, tmp_path):
    # Permissions do not stop root: a "directory" that is a regular file stops everyone.
    regular_file = tmp_path / "notes.txt"
    regular_file.write_text("not a directory")
    output = regular_file / "out.mkv"
    code, _, err = await run_main(capsys, "https://cdn.example.test/live.mpd", str(output))
    assert code == 8
    assert_one_error_line(err, "cannot write OUTPUT", "is a file, not a directory")


@pytest.mark.skipif(
    os.access("/", os.W_OK) and os.geteuid() == 0, reason="root writes to read-only directories"
)
async def test_read_only_output_directory_exits_8(capsys, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        code, _, err = await run_main(
            capsys, "https://cdn.example.test/live.mpd", str(locked / "out.mkv")
        )
    finally:
        locked.chmod(0o700)
    assert code == 8
    assert_one_error_line(err, "cannot write to directory")


def _can_mount_tmpfs(where: Path) -> bool:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    where.mkdir(exist_ok=True)
    probe = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(where)],
        capture_output=True,
        check=False,
    )
    if probe.returncode != 0:
        return False
    subprocess.run(["umount", str(where)], check=True)
    return True


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 24 MB file system (tmpfs): disk full is the kernel's ENOSPC, not a mock."""
    mount_point = tmp_path / "disk"
    if not _can_mount_tmpfs(mount_point):
        pytest.skip("disk full needs a small real file system: mounting tmpfs needs root")
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mount_point)], check=True
    )
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


async def test_disk_full_keeps_the_segments_and_a_rerun_merges_them(capsys, small_disk, test_media):
    # 21 MB of other files leave about 3 MB: a 60 s broadcast (about 5 MB) does not fit.
    # Freed, they leave room for the segments, the merge's per-track files and the output.
    filler = small_disk / "filler.bin"
    filler.write_bytes(b"\0" * (21 * 1024 * 1024))
    output = small_disk / "rec.mkv"
    async with finished_broadcast(test_media, 60) as origin:
        argv = [*FAST, "--concurrency", "2", origin.manifest_url, str(output)]
        code, _, err = await run_main(capsys, *argv)
        assert code == 8
        line = assert_one_error_line(err, "disk full", "kept in", "run the same command again")
        assert str(output) + ".segments" in line
        segments = output.with_name(output.name + ".segments")
        kept = [p for p in segments.rglob("*") if p.is_file() and p.stat().st_size > 10_000]
        assert len(kept) > 5
        assert not output.exists()

        # Free the space and do what the message says.
        filler.unlink()
        code, out, err = await run_main(capsys, *argv)
        expected_frames = origin.expected_frames(0, origin.segment_count - 1)
    assert code == 0, err
    assert "Missing        none" in out
    assert inspect(output).video_frames == expected_frames
