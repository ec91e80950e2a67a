"""Manifest refreshes: Location, the server clock, and the end signals, on a real HTTP server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from instarec.http import HttpClient
from instarec.live import ManifestSource

MPD = """<?xml version="1.0"?>
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="{type}"
     profiles="urn:mpeg:dash:profile:isoff-live:2011" availabilityStartTime="2024-01-01T00:00:00Z"
     minBufferTime="PT2S" minimumUpdatePeriod="PT2S">
  {location}
  <Period id="p0" start="PT0S">
    <AdaptationSet contentType="video" mimeType="video/mp4">
      <Representation id="v" bandwidth="100000" codecs="avc1.42c01e" width="320" height="180">
        <SegmentTemplate timescale="1000" media="v-$Time$.m4s?sig=abc" initialization="v-init.mp4">
          <SegmentTimeline><S t="0" d="2000" r="4"/></SegmentTimeline>
        </SegmentTemplate>
      </Representation>
    </AdaptationSet>
  </Period>
  <UTCTiming schemeIdUri="urn:mpeg:dash:utc:http-iso:2014" value="/clock"/>
</MPD>
"""


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, list[str]]]:
    seen: list[str] = []

    async def first(request: web.Request) -> web.Response:
        seen.append(request.path_qs)
        body = MPD.format(type="dynamic", location="<Location>/moved/live.mpd?token=2</Location>")
        return web.Response(text=body, content_type="application/dash+xml")

    async def moved(request: web.Request) -> web.Response:
        seen.append(request.path_qs)
        body = MPD.format(type="static", location="")
        return web.Response(
            text=body,
            content_type="application/dash+xml",
            headers={"x-fb-video-broadcast-ended": "1"},
        )

    async def clock(request: web.Request) -> web.Response:
        seen.append(request.path_qs)
        return web.Response(text="2024-01-01T00:01:40Z")

    app = web.Application()
    app.router.add_get("/live.mpd", first)
    app.router.add_get("/moved/live.mpd", moved)
    app.router.add_get("/clock", clock)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}", seen
    await runner.cleanup()


async def test_refresh_follows_location_and_reads_the_server_clock(
    server: tuple[str, list[str]],
) -> None:
    base, seen = server
    async with HttpClient() as http:
        source = ManifestSource(http, f"{base}/live.mpd?token=1")
        first = await source.fetch()
        assert first.ended is None
        # The server's clock (100 s after the epoch above), not this machine's 2026 clock.
        assert first.now.year == 2024
        assert abs((first.now - first.manifest.availability_start_time).total_seconds() - 100) < 5
        assert source.url == f"{base}/moved/live.mpd?token=2"
        second = await source.fetch()
    assert seen == ["/live.mpd?token=1", "/clock", "/moved/live.mpd?token=2", "/clock"]
    assert second.ended == "the manifest became static"
    rep = next(second.manifest.representations())
    # Segment URLs resolve against where the manifest came from, query strings kept.
    assert rep.media_url(time=2000) == f"{base}/moved/v-2000.m4s?sig=abc"
