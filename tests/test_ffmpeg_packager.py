"""Recording a stream packaged by real software: ffmpeg's own DASH muxer, in real time."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web

from instarec.recorder import record
from tests.recording import fast_options, inspect

FFMPEG = shutil.which("ffmpeg")
SECONDS = 14
FPS = 30


# ffmpeg's default names segments by $Number$; with $Time$ names its -streaming mode writes one
# moof per frame and (5.1) names AAC segments by their time minus the encoder priming.
NAMINGS = {
    "number": [],
    "time": ["-media_seg_name", "chunk-$RepresentationID$-$Time$.m4s"],
}


@pytest.mark.skipif(FFMPEG is None, reason="ffmpeg is not installed")
@pytest.mark.parametrize("naming", sorted(NAMINGS))
async def test_records_ffmpeg_dash_muxer_live_output_from_its_first_frame(
    naming: str, tmp_path: Path
) -> None:
    served = tmp_path / "live"
    served.mkdir()
    heads: list[str] = []

    @web.middleware
    async def count_heads(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.method == "HEAD":
            heads.append(request.path)
        return await handler(request)

    app = web.Application(middlewares=[count_heads])
    app.router.add_static("/", served)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    assert FFMPEG is not None
    packager = await asyncio.create_subprocess_exec(
        FFMPEG,
        "-hide_banner",
        "-loglevel",
        "error",
        "-re",
        "-f",
        "lavfi",
        "-i",
        f"testsrc2=size=320x180:rate={FPS}",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=48000",
        "-t",
        str(SECONDS),
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-g",
        str(FPS),
        "-keyint_min",
        str(FPS),
        "-sc_threshold",
        "0",
        "-c:a",
        "aac",
        "-f",
        "dash",
        "-streaming",
        "1",
        "-seg_duration",
        "1",
        "-window_size",
        "3",
        "-extra_window_size",
        "100",
        "-remove_at_exit",
        "0",
        *NAMINGS[naming],
        str(served / "live.mpd"),
        stdin=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    output = tmp_path / "packaged.mp4"
    try:
        # Join late: the first segments have left the 3-segment window by then.
        await asyncio.sleep(6)
        assert (served / "live.mpd").exists()
        options = fast_options(
            f"http://127.0.0.1:{port}/live.mpd", output, poll_interval=0.5, live_end_timeout=15
        )
        summary = await asyncio.wait_for(record(options, install_signal_handlers=False), 60)
        _, stderr = await packager.communicate()
        assert packager.returncode == 0, stderr.decode()
    finally:
        if packager.returncode is None:
            packager.kill()
            await packager.wait()
        await runner.cleanup()

    report = inspect(output)
    # Every frame ffmpeg encoded, from the first one, though recording started 6 s late.
    assert report.video_frames == SECONDS * FPS
    assert report.video_gaps == ()
    assert report.video_duration == pytest.approx(SECONDS, abs=0.05)
    assert abs(report.audio_duration - report.video_duration) < 0.1
    assert summary.archive_complete
    if naming == "time":
        # The chain walks the media itself, one whole body per step (a moof per frame here):
        # no probing at all.
        assert heads == []
