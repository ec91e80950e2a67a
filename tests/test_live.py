"""Manifest refreshes: Location, the server clock, and the end signals, on a real HTTP server."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import pytest
from aiohttp import web

from instarec.downloads import LiveActivity
from instarec.http import HttpClient
from instarec.live import LiveFollower, LivePolicy, ManifestSource, Snapshot
from instarec.testing.clock import ManualClock
from instarec.testing.media import TestMedia
from instarec.testing.origin import Origin, OriginConfig

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


class LeapingClock:
    """A clock on which every reading is ``step`` seconds after the last."""

    def __init__(self, step: float) -> None:
        self.step = step
        self.seconds = 0.0

    def monotonic(self) -> float:
        self.seconds += self.step
        return self.seconds

    def now(self) -> datetime:
        return datetime(2024, 1, 1, tzinfo=UTC) + timedelta(seconds=self.seconds)


async def _follow(test_media: TestMedia, recorded: Callable[[], int]) -> tuple[str, int, float]:
    """Follow a live origin whose media never moves on; what ended it, refreshes, clock."""
    clock = LeapingClock(step=20.0)
    config = OriginConfig(shape="time", broadcast_duration=60, already_broadcast=20)
    async with Origin(config, ManualClock(), media=test_media) as origin, HttpClient() as http:
        source = ManifestSource(http, origin.manifest_url, clock)
        first = await source.fetch()
        snapshots: list[Snapshot] = []
        follower = LiveFollower(
            source,
            LivePolicy(poll_interval=0.001, live_end_timeout=180.0),
            snapshots.append,
            lambda: LiveActivity(recorded(), None),
            asyncio.Event(),
            clock,
        )
        reason = await asyncio.wait_for(follower.run(first), 10)
        assert follower.idle == reason.startswith("no new segment")
    return reason, len(snapshots), clock.seconds


async def test_three_minutes_without_a_new_segment_end_the_broadcast(test_media: TestMedia) -> None:
    reason, refreshes, elapsed = await _follow(test_media, lambda: 7)
    assert reason == "no new segment for 180 s"
    assert elapsed > 180
    assert refreshes <= 180 / 20  # no refresh more than the clock needed to pass the timeout


async def test_segments_being_recorded_keep_the_broadcast_alive(test_media: TestMedia) -> None:
    counter = itertools.count()
    with pytest.raises(TimeoutError):
        # A segment recorded at every refresh: however much time passes, no end.
        await asyncio.wait_for(_follow(test_media, lambda: next(counter)), 1.0)
