"""The simulated live origin: manifests, media, retention, gaps, faults, signatures, end signals."""

from __future__ import annotations

import asyncio
import itertools
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import pytest
from aiohttp import web
from lxml import etree

from instarec.manifest import Manifest, expand_segments, parse_manifest
from instarec.mp4 import parse_fragment, parse_init
from instarec.testing import fmp4
from instarec.testing.clock import ManualClock, SpeedClock
from instarec.testing.faults import FaultConfig, FaultPlan
from instarec.testing.media import MediaSpec, TestMedia, generate_media
from instarec.testing.origin import Origin, OriginConfig, build_parser, config_from_args

LIVE_SHAPES = ("instagram", "time", "number_timeline", "number_duration")
CONSTANT = MediaSpec(segment_durations="constant", duration=12.0)


@pytest.fixture(scope="module")
def constant_media(media_cache_dir: Path) -> TestMedia:
    return generate_media(CONSTANT, media_cache_dir)


def media_for(shape: str, test_media: TestMedia, constant_media: TestMedia) -> TestMedia:
    return constant_media if shape == "number_duration" else test_media


def config_for(shape: str, **kwargs: object) -> OriginConfig:
    if shape == "number_duration":
        kwargs.setdefault("media", CONSTANT)
    return OriginConfig(shape=shape, **kwargs)  # type: ignore[arg-type]


def source_ends(media: TestMedia, count: int) -> list[float]:
    """Segment end times (seconds) of the looped media, computed from the source index."""
    track = media.video or media.audio
    assert track is not None
    ends, elapsed = [], 0.0
    for i in range(count):
        elapsed += track.segments[i % len(track.segments)].d / track.timescale
        ends.append(elapsed)
    return ends


async def get(
    session: aiohttp.ClientSession, url: str, method: str = "GET", **headers: str
) -> tuple[int, dict[str, str], bytes]:
    async with session.request(method, url, headers=headers) as response:
        return response.status, dict(response.headers), await response.read()


async def manifest_at(session: aiohttp.ClientSession, origin: Origin) -> Manifest:
    status, _, body = await get(session, origin.manifest_url)
    assert status == 200
    return parse_manifest(body, origin.manifest_url)


def listed(manifest: Manifest, origin: Origin) -> dict[str, list]:
    """Media segments per content type, as a client expands them at the origin's now."""
    return {
        rep.content_type: expand_segments(manifest, rep, origin.wall_time())
        for rep in manifest.representations()
    }


@pytest.mark.parametrize("shape", LIVE_SHAPES)
async def test_window_moves_with_the_clock(
    shape: str, test_media: TestMedia, constant_media: TestMedia
) -> None:
    media = media_for(shape, test_media, constant_media)
    ends = source_ends(media, 400)
    clock = ManualClock()
    config = config_for(shape, already_broadcast=60.0, window=5)
    async with Origin(config, clock, media=media) as origin, aiohttp.ClientSession() as session:
        seen = []
        for now in (60.0, 75.0):
            clock.set(now)
            manifest = await manifest_at(session, origin)
            assert manifest.type == "dynamic"
            video = listed(manifest, origin)["video"]
            # The newest listed segment is the last one complete at `now`.
            newest = max(i for i, end in enumerate(ends) if end <= now)
            # number_duration has no list: the client's timeShiftBufferDepth arithmetic
            # includes both ends of the window.
            assert len(video) in ((5, 6) if shape == "number_duration" else (5,))
            assert video[-1].start + video[-1].duration == pytest.approx(ends[newest], abs=0.01)
            seen.append([s.url for s in video])
            # The next one is not there yet.
            status, _, _ = await get(session, origin.segment_url("video", newest + 1))
            assert status == 404
        assert seen[0] != seen[1]
        assert not set(seen[0]) & set(seen[1])  # 15 s moved the 5-segment window past itself


@pytest.mark.parametrize("shape", (*LIVE_SHAPES, "static"))
async def test_listed_segments_are_real_fmp4_matching_the_manifest(
    shape: str, test_media: TestMedia, constant_media: TestMedia
) -> None:
    media = media_for(shape, test_media, constant_media)
    clock = ManualClock()
    # Past one loop of the source so looped (tfdt-rewritten) segments are checked too.
    config = config_for(shape, broadcast_duration=60.0, already_broadcast=45.0, window=6)
    async with Origin(config, clock, media=media) as origin, aiohttp.ClientSession() as session:
        manifest = await manifest_at(session, origin)
        looped = origin.media
        for rep in manifest.representations():
            kind = rep.content_type
            assert kind in ("video", "audio")
            init = rep.init_segment()
            assert init is not None
            status, headers, init_bytes = await get(session, init.url)
            assert status == 200
            assert headers["Content-Type"] == f"{kind}/mp4"
            info = parse_init(init_bytes)
            assert info.handler == ("vide" if kind == "video" else "soun")
            segments = expand_segments(manifest, rep, origin.wall_time())
            expected = 30 if shape == "static" else 6
            assert abs(len(segments) - expected) <= 1
            for segment in segments:
                status, headers, body = await get(session, segment.url)
                assert status == 200, segment.url
                assert int(headers["Content-Length"]) == len(body)
                fragment = parse_fragment(
                    body, default_sample_duration=info.default_sample_duration
                )
                tfdt = fragment.base_media_decode_time
                assert tfdt is not None
                if shape == "instagram":
                    # Shared millisecond times: floor(tfdt * 1000 / media timescale) of the
                    # video; audio segment i starts within one AAC frame of video segment i.
                    if kind == "video":
                        assert segment.time == tfdt * 1000 // info.timescale
                    else:
                        assert abs(segment.time - tfdt * 1000 / info.timescale) <= 1024 / 48 + 1
                elif shape in ("time", "static", "number_timeline"):
                    assert rep.template is not None
                    assert rep.template.timescale == info.timescale
                    assert segment.time == tfdt
                else:  # number_duration: the number gives the time
                    assert segment.number is not None
                    assert abs(segment.start * info.timescale - tfdt) < 1024 + 1
                # The media index (t, d, size) describes the bytes served.
                if shape.startswith("number"):
                    assert segment.number is not None
                    index = segment.number - 1
                else:
                    index = next(
                        i
                        for i in range(looped.count)
                        if origin.segment_key(kind, i) == segment.time
                    )
                entry = looped.segment_info(kind, index)
                assert (entry.t, entry.d, entry.size) == (tfdt, fragment.duration, len(body))
                if kind == "video":
                    assert fragment.sample_count == looped.video_frames(index)


async def test_instagram_next_time_follows_from_the_previous_segment(
    test_media: TestMedia,
) -> None:
    clock = ManualClock()
    config = OriginConfig(broadcast_duration=120.0, already_broadcast=120.0, window=60)
    async with (
        Origin(config, clock, media=test_media) as origin,
        aiohttp.ClientSession() as session,
    ):
        manifest = await manifest_at(session, origin)
        assert manifest.attributes["publishFrameTime"] == manifest.attributes["firstAvTimeMs"]
        times = [int(t) for t in re.findall(rb'<S t="(\d+)"', await _raw(session, origin))]
        assert times[0] == int(manifest.attributes["publishFrameTime"])
        video, audio = listed(manifest, origin)["video"], listed(manifest, origin)["audio"]
        assert [s.time for s in video] == [s.time for s in audio]
        info = parse_init((await get(session, origin.init_url("video")))[2])
        for current, following in itertools.pairwise(video):
            body = (await get(session, current.url))[2]
            fragment = parse_fragment(body)
            assert fragment.base_media_decode_time is not None
            end = fragment.base_media_decode_time + fragment.duration
            assert end * 1000 // info.timescale == following.time


async def _raw(session: aiohttp.ClientSession, origin: Origin) -> bytes:
    return (await get(session, origin.manifest_url))[2]


async def test_retention_and_gaps_404(test_media: TestMedia) -> None:
    clock = ManualClock()
    gaps = frozenset({5, 48})
    config = OriginConfig(shape="time", already_broadcast=100.0, retention=10, gaps=gaps, window=5)
    async with (
        Origin(config, clock, media=test_media) as origin,
        aiohttp.ClientSession() as session,
    ):
        ends = source_ends(test_media, 100)
        available = sum(1 for end in ends if end <= 100.0)
        assert origin.broadcast_segments() == list(range(available))

        async def status(i: int) -> int:
            return (await get(session, origin.segment_url("video", i)))[0]

        assert await status(0) == 404  # beyond retention
        assert await status(available - 11) == 404
        assert await status(available - 10) == 200
        assert await status(available - 1) == 200
        assert await status(available) == 404  # not broadcast yet
        # Gap 48 is listed as usual ...
        clock.set(ends[48] + 0.1)
        manifest = await manifest_at(session, origin)
        keys = [s.time for s in listed(manifest, origin)["video"]]
        assert origin.segment_key("video", 48) in keys
        # ... but 404 for ever, its neighbours fine.
        assert await status(48) == 404
        assert await status(47) == 200
        clock.advance(10)
        assert await status(48) == 404
        assert await status(49) == 200
        assert origin.stats.count(method="GET", kind="media", status=404) == 5


async def test_unretained_everything_past_is_fetchable(test_media: TestMedia) -> None:
    clock = ManualClock()
    config = OriginConfig(shape="number_timeline", already_broadcast=300.0, window=3)
    async with (
        Origin(config, clock, media=test_media) as origin,
        aiohttp.ClientSession() as session,
    ):
        manifest = await manifest_at(session, origin)
        numbers = [s.number for s in listed(manifest, origin)["audio"]]
        assert len(numbers) == 3 and numbers[0] > 100
        for i in (0, 1, 50, numbers[0] - 2):
            assert (await get(session, origin.segment_url("audio", i)))[0] == 200
        # Numbers are %05d in the template: the server only knows the padded name.
        url = origin.segment_url("audio", 1)
        assert "n00002.m4s" in url
        assert (await get(session, url.replace("n00002", "n2")))[0] == 404


async def raw_get(url: str) -> str:
    """One GET on a fresh connection, classified: "503", "429", "reset", "truncate", "200".

    A bare socket client, because aiohttp's client silently repeats an idempotent request
    once when the connection is reset, which would hide resets from the count.
    """
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        writer.write(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        data = await reader.read()
    except ConnectionResetError:
        return "reset"
    finally:
        writer.close()
    if not data:
        return "reset"
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    status = lines[0].split()[1]
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    if status == "429":
        assert headers["retry-after"] == "3"
    if status == "200" and len(body) < int(headers["content-length"]):
        return "truncate"
    return status


async def _fault_run(test_media: TestMedia, seed: int) -> tuple[list[str], dict[str, int]]:
    faults = FaultConfig(
        seed=seed,
        error_503=0.15,
        error_429=0.15,
        retry_after=3,
        reset=0.15,
        truncate=0.15,
        slow_first_byte=0.1,
        slow_first_byte_delay=0.2,
    )
    config = OriginConfig(shape="time", already_broadcast=40.0, faults=faults)
    async with Origin(config, ManualClock(), media=test_media) as origin:
        # Concurrent requests: verdicts depend on URL and attempt, not on arrival order.
        async def one(i: int) -> tuple[str, float]:
            started = time.monotonic()
            outcome = await raw_get(origin.segment_url("video", i % 12))
            return outcome, time.monotonic() - started

        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(one(i)) for i in range(60)]
        answers = [task.result() for task in tasks]
        # A slow answer is a 200 that came late: the client cannot tell it by its bytes, and
        # "fast" has no bound on a loaded machine. Each URL must have at least as many answers
        # that took the whole stall as the origin says it stalled.
        stalled = Counter(r.index for r in origin.request_log if r.fault == "slow")
        for index in range(12):
            late = sum(1 for i, (_, took) in enumerate(answers) if i % 12 == index and took >= 0.2)
            assert late >= stalled[index], (index, late, stalled[index])
        # Per URL the multiset of verdicts is fixed; list them URL by URL.
        per_url: dict[int, list[str]] = {}
        for i, (outcome, _) in enumerate(answers):
            per_url.setdefault(i % 12, []).append(outcome)
        outcomes = [o for i in sorted(per_url) for o in sorted(per_url[i])]
        return outcomes, dict(origin.stats.faults)


async def test_faults_occur_as_configured_and_are_seeded(test_media: TestMedia) -> None:
    outcomes, injected = await _fault_run(test_media, seed=7)
    counts = Counter(outcomes)
    for kind in ("503", "429", "reset", "truncate", "200"):
        assert counts[kind] > 0, counts
    assert injected.get("slow", 0) > 0, injected
    # What the client saw is what the origin says it injected (a stalled answer is a 200).
    assert {k: v for k, v in counts.items() if k != "200"} == {
        k: v for k, v in injected.items() if k != "slow"
    }
    again, _ = await _fault_run(test_media, seed=7)
    assert Counter(again) == counts
    other, _ = await _fault_run(test_media, seed=8)
    assert other != outcomes


async def test_fault_once_per_url_then_success(test_media: TestMedia) -> None:
    faults = FaultConfig(error_503=1.0, max_per_url=1, latency=0.05)
    config = OriginConfig(shape="time", already_broadcast=40.0, faults=faults)
    async with (
        Origin(config, ManualClock(), media=test_media) as origin,
        aiohttp.ClientSession() as session,
    ):
        url = origin.segment_url("video", 2)
        started = time.monotonic()
        assert (await get(session, url))[0] == 503
        assert time.monotonic() - started >= 0.05
        assert (await get(session, url))[0] == 200
        assert (await get(session, url))[0] == 200
        assert (await get(session, origin.manifest_url))[0] == 200  # manifests untouched
        stats = origin.stats
        assert stats.count(kind="media", status=503) == 1
        assert stats.count(kind="media", status=200) == 2


async def test_manifest_fails_now_and_then(test_media: TestMedia) -> None:
    faults = FaultConfig(seed=3, manifest_failure=0.4)
    config = OriginConfig(shape="time", already_broadcast=40.0, faults=faults)
    async with (
        Origin(config, ManualClock(), media=test_media) as origin,
        aiohttp.ClientSession() as session,
    ):
        statuses = Counter([(await get(session, origin.manifest_url))[0] for _ in range(30)])
        assert statuses[503] > 0 and statuses[200] > 0
        assert set(statuses) == {200, 503}
        assert origin.stats.count(kind="manifest", status=503) == statuses[503]


async def test_instagram_urls_need_their_signature(test_media: TestMedia) -> None:
    async with (
        Origin(OriginConfig(already_broadcast=30.0), ManualClock(), media=test_media) as origin,
        aiohttp.ClientSession() as session,
    ):
        assert "oh=" in origin.manifest_url and "oe=" in origin.manifest_url
        assert (await get(session, origin.manifest_url))[0] == 200
        assert (await get(session, origin.manifest_url.split("?")[0]))[0] == 403
        url = origin.segment_url("video", 3)
        assert (await get(session, url))[0] == 200
        assert (await get(session, url.split("?")[0]))[0] == 403
        assert (await get(session, re.sub(r"oh=[0-9a-f]+", "oh=deadbeef", url)))[0] == 403
        # A video signature does not open audio URLs.
        audio = origin.segment_url("audio", 3)
        video_query = url.split("?")[1]
        assert (await get(session, audio.split("?")[0] + "?" + video_query))[0] == 403
        assert origin.stats.count(status=403) == 4
    unsigned = OriginConfig(already_broadcast=30.0, signed=False)
    async with (
        Origin(unsigned, ManualClock(), media=test_media) as origin,
        aiohttp.ClientSession() as session,
    ):
        assert "?" not in origin.manifest_url
        assert (await get(session, origin.segment_url("video", 3)))[0] == 200


@pytest.mark.parametrize("shape", ["time", "instagram"])
async def test_rotating_tokens_expire_after_their_grace(shape: str, test_media: TestMedia) -> None:
    config = OriginConfig(shape=shape, already_broadcast=30.0, token_rotation=20.0, token_grace=5.0)
    clock = ManualClock()
    async with (
        Origin(config, clock, media=test_media) as origin,
        aiohttp.ClientSession() as session,
    ):
        first_url = origin.manifest_url
        assert re.search(r"[?&]sig=[0-9a-f]+&exp=45000$", first_url), first_url
        status, _, body = await get(session, first_url)
        assert status == 200
        manifest = parse_manifest(body, first_url)
        video = next(r for r in manifest.representations() if r.content_type == "video")
        segment = expand_segments(manifest, video, origin.wall_time())[-1].url
        init = video.init_segment()
        assert init is not None
        # The manifest's addresses carry the token it was asked with, and are served with it.
        for url in (segment, init.url):
            assert first_url.split("?")[1].split("&")[-2:] == url.split("?")[1].split("&")[-2:]
            assert (await get(session, url))[0] == 200
        assert (await get(session, first_url.split("&sig=")[0].split("?sig=")[0]))[0] == 403
        clock.set(44.9)  # the next token is out since 40 s: the first one still works
        second_url = origin.manifest_url
        assert second_url != first_url
        assert (await get(session, first_url))[0] == 200
        assert (await get(session, segment))[0] == 200
        status, _, body = await get(session, origin.base_url + "/current-url")
        assert (status, body.decode()) == (200, second_url + "\n")
        clock.set(45.0)
        assert (await get(session, first_url))[0] == 403
        assert (await get(session, segment))[0] == 403
        assert (await get(session, init.url, "HEAD"))[0] == 403
        assert (await get(session, second_url))[0] == 200
        assert (await get(session, origin.segment_url("video", 3)))[0] == 200
        forged = re.sub(r"sig=[0-9a-f]+", "sig=0123", second_url)
        assert (await get(session, forged))[0] == 403


async def test_an_expired_token_can_answer_410(test_media: TestMedia) -> None:
    config = OriginConfig(
        shape="time", already_broadcast=30.0, token_rotation=10.0, token_expired_status=410
    )
    clock = ManualClock()
    async with (
        Origin(config, clock, media=test_media) as origin,
        aiohttp.ClientSession() as session,
    ):
        url = origin.manifest_url
        clock.advance(60)
        assert (await get(session, url))[0] == 410
        assert (await get(session, origin.manifest_url))[0] == 200


async def test_head_and_range(test_media: TestMedia) -> None:
    config = OriginConfig(shape="time", already_broadcast=30.0)
    async with (
        Origin(config, ManualClock(), media=test_media) as origin,
        aiohttp.ClientSession() as session,
    ):
        url = origin.segment_url("video", 4)
        status, _, full = await get(session, url)
        size = len(full)
        assert status == 200 and size == origin.media.segment_info("video", 4).size

        status, headers, body = await get(session, url, "HEAD")
        assert (status, int(headers["Content-Length"]), body) == (200, size, b"")
        assert headers["Content-Type"] == "video/mp4"

        status, headers, body = await get(session, url, Range="bytes=0-99")
        assert (status, body, headers["Content-Range"]) == (206, full[:100], f"bytes 0-99/{size}")
        assert int(headers["Content-Length"]) == 100
        status, headers, body = await get(session, url, Range="bytes=100-")
        assert (status, body) == (206, full[100:])
        status, headers, body = await get(session, url, Range="bytes=-50")
        assert (status, body) == (206, full[-50:])
        status, headers, body = await get(session, url, Range=f"bytes=10-{size + 500}")
        assert (status, body) == (206, full[10:])
        status, headers, body = await get(session, url, Range=f"bytes={size}-")
        assert (status, headers.get("Content-Range")) == (416, f"bytes */{size}"), headers
        status, headers, body = await get(session, url, "HEAD", Range="bytes=0-0")
        assert (status, headers["Content-Length"], body) == (206, "1", b"")

        stats = origin.stats
        assert stats.count(method="HEAD") == 2
        assert stats.count(kind="media", status=206) == 5
        assert stats.bytes_served == size + 100 + (size - 100) + 50 + (size - 10)


@pytest.mark.parametrize("shape", LIVE_SHAPES)
async def test_end_of_broadcast_signals(
    shape: str, test_media: TestMedia, constant_media: TestMedia
) -> None:
    media = media_for(shape, test_media, constant_media)
    clock = ManualClock()
    config = config_for(
        shape, broadcast_duration=30.0, already_broadcast=20.0, end_signal_manifest_404_after=10.0
    )
    async with Origin(config, clock, media=media) as origin, aiohttp.ClientSession() as session:
        end = origin.duration
        assert abs(end - 30.0) < 1.2  # whole segments
        last = origin.segment_count - 1
        clock.set(end - 0.5)
        status, headers, body = await get(session, origin.manifest_url)
        assert status == 200 and not origin.ended
        assert b'type="dynamic"' in body
        assert "x-fb-video-broadcast-ended" not in headers

        clock.set(end + 1.0)
        assert origin.ended
        status, headers, body = await get(session, origin.manifest_url)
        assert status == 200
        manifest = parse_manifest(body, origin.manifest_url)
        if shape == "instagram":
            assert manifest.type == "dynamic"
            assert headers["x-fb-video-broadcast-ended"] == "1"
        else:
            assert manifest.type == "static"
            assert manifest.media_presentation_duration == pytest.approx(end, abs=0.01)
            assert "x-fb-video-broadcast-ended" not in headers
        assert (await get(session, origin.segment_url("video", last)))[0] == 200
        # Nothing beyond the end, ever.
        # The key is the path's last occurrence of it (the port or a signed query may hold it).
        key = origin.segment_key("video", last)
        path, mark, query = origin.segment_url("video", last).partition("?")
        head, _, tail = path.rpartition(str(key))
        beyond = f"{head}{key + 1}{tail}{mark}{query}"
        assert (await get(session, beyond))[0] == 404

        clock.set(end + 10.5)
        assert (await get(session, origin.manifest_url))[0] == 404
        assert (await get(session, origin.segment_url("video", last)))[0] == 200


async def test_number_duration_live_edge_follows_utc_timing(constant_media: TestMedia) -> None:
    clock = ManualClock()
    config = config_for("number_duration", already_broadcast=50.0, window=4)
    async with (
        Origin(config, clock, media=constant_media) as origin,
        aiohttp.ClientSession() as session,
    ):
        manifest = await manifest_at(session, origin)
        timing = manifest.utc_timing[0]
        assert timing.scheme == "urn:mpeg:dash:utc:http-iso:2014"
        status, _, body = await get(session, timing.value)
        assert status == 200
        server_now = datetime.fromisoformat(body.decode().replace("Z", "+00:00"))
        assert manifest.availability_start_time is not None
        assert (server_now - manifest.availability_start_time).total_seconds() == 50.0
        segments = listed(manifest, origin)["video"]
        # 2 s segments: 25 complete at 50 s, numbers start at 1.
        assert segments[-1].number == 25
        for segment in segments:
            assert (await get(session, segment.url))[0] == 200
        status, _, _ = await get(session, origin.segment_url("video", 25))
        assert status == 404


async def test_helpers_for_tests(test_media: TestMedia) -> None:
    clock = ManualClock()
    config = OriginConfig(already_broadcast=30.0, gaps={3})
    async with Origin(config, clock, media=test_media) as origin:
        ends = source_ends(test_media, 40)
        done = [i for i, end in enumerate(ends) if end <= 30.0]
        assert origin.broadcast_segments() == done
        clock.advance(10)
        assert origin.broadcast_segments(since=30.0) == [
            i for i, end in enumerate(ends) if 30.0 < end <= 40.0
        ]
        frames = [s.sample_count for s in test_media.video.segments]  # type: ignore[union-attr]
        assert origin.expected_frames(0, 5) == sum(frames[:6]) - frames[3]
        assert origin.gaps == frozenset({3})
        assert origin.broadcast_start == origin.wall_time(0.0)


async def test_done_when_instagram_begun_eight_minutes_ago_at_20x(test_media: TestMedia) -> None:
    """Issue 'done when': 10-minute broadcast, 8 minutes in, 20x; starts fast, ffmpeg plays it."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        pytest.skip("ffmpeg not on PATH")
    config = OriginConfig(broadcast_duration=600.0, already_broadcast=480.0, speed=20.0)
    async with Origin(config, media=test_media) as origin, aiohttp.ClientSession() as session:
        assert isinstance(origin.clock, SpeedClock)
        assert 480.0 <= origin.now < 500.0
        manifest = await manifest_at(session, origin)
        video = listed(manifest, origin)["video"]
        assert len(video) == 5
        assert video[-1].start > 470.0
        process = await asyncio.create_subprocess_exec(
            ffmpeg,
            "-hide_banner",
            "-nostdin",
            "-i",
            origin.manifest_url,
            "-t",
            "5",
            "-f",
            "null",
            "-",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
        assert process.returncode == 0, stderr[-2000:]
        frames = [int(n) for n in re.findall(rb"frame=\s*(\d+)", stderr)]
        assert frames and frames[-1] >= 145  # 5 s at 30 fps
        assert origin.stats.count(kind="media", status=200) >= 4


def test_cli_prints_the_manifest_url_and_serves_it(media_cache_dir: Path) -> None:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "instarec.testing.origin",
            "--shape",
            "number_timeline",
            "--duration",
            "60",
            "--already",
            "20",
            "--cache-dir",
            str(media_cache_dir),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/manifest.mpd")

        async def fetch() -> tuple[int, dict[str, str], bytes]:
            async with aiohttp.ClientSession() as session:
                return await get(session, url)

        status, _, body = asyncio.run(fetch())
        assert status == 200 and b"$Number%05d$" in body
    finally:
        process.send_signal(2)  # SIGINT, like Ctrl+C
        process.wait(timeout=10)
    assert process.returncode == 130


async def _ffmpeg_plays(
    ffmpeg: str, origin: Origin, clock: ManualClock, seconds: float
) -> tuple[int | None, str]:
    """ffmpeg reads ``seconds`` of the live stream while the test moves time at about 4x.

    Returns ffmpeg's exit status (None when it was stopped for looping) and its stderr.
    """
    process = await asyncio.create_subprocess_exec(
        ffmpeg,
        "-hide_banner",
        "-nostdin",
        "-i",
        origin.manifest_url,
        "-t",
        str(seconds),
        "-f",
        "null",
        "-",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    lines: list[str] = []

    async def advance() -> None:
        while True:
            await asyncio.sleep(0.05)
            clock.advance(0.2)

    async def read() -> bool:
        """Whether ffmpeg ran into the non-monotonic loop (it then never ends by itself)."""
        assert process.stderr is not None
        async for raw in process.stderr:
            line = raw.decode(errors="replace")
            lines.append(line)
            if "non monotonically increasing dts" in line:
                return True
        return False

    async with asyncio.TaskGroup() as group:
        mover = group.create_task(advance())
        try:
            looping = await asyncio.wait_for(read(), timeout=60)
        finally:
            mover.cancel()
            if process.returncode is None and (looping or not lines):
                process.kill()
    returncode = await process.wait()
    return (None if looping else returncode), "".join(lines)


@pytest.mark.parametrize("shape", ("instagram", "time"))
async def test_ffmpeg_plays_from_the_first_second(shape: str, test_media: TestMedia) -> None:
    """Started at virtual 0 and played at once, the origin plays in ffmpeg without a hitch.

    At virtual 0 no segment is complete yet; an empty SegmentTimeline there sent ffmpeg 5.1
    into an endless loop on the first segment ("non monotonically increasing dts").
    """
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        pytest.skip("ffmpeg not on PATH")
    clock = ManualClock()
    async with Origin(OriginConfig(shape=shape), clock, media=test_media) as origin:
        # On air from the moment the first segment exists, with that segment listed.
        assert origin.now == origin.first_publication == origin.segment_end(0)
        assert origin.listed_segments() == [0]
        returncode, stderr = await _ffmpeg_plays(ffmpeg, origin, clock, 5)
        assert "non monotonically" not in stderr
        assert returncode == 0, stderr[-2000:]
        frames = [int(n) for n in re.findall(r"frame=\s*(\d+)", stderr)]
        assert frames and abs(frames[-1] - 150) <= 1, stderr[-2000:]  # 5 s at 30 fps
        # It played from the first segment, each one fetched once.
        fetched = Counter(
            r.index
            for r in origin.request_log
            if r.kind == "media" and r.track == "video" and r.status == 200
        )
        assert fetched[0] == 1 and max(fetched.values()) == 1, fetched


@pytest.mark.parametrize("shape", LIVE_SHAPES)
async def test_no_manifest_before_the_first_segment(
    shape: str, test_media: TestMedia, constant_media: TestMedia
) -> None:
    """Like a packager that has not written its first MPD: 404, then one listed segment."""
    media = media_for(shape, test_media, constant_media)
    clock = ManualClock(start=0.0)  # an explicit start wins over the first publication
    async with Origin(config_for(shape), clock, media=media) as origin:
        assert origin.now == 0.0
        first = origin.first_publication
        assert first == origin.segment_end(0)
        async with aiohttp.ClientSession() as session:
            clock.set(first - 0.01)
            status, _, body = await get(session, origin.manifest_url)
            assert status == 404, body
            assert origin.request_log[-1].kind == "manifest"
            assert origin.request_log[-1].status == 404
            clock.set(first)
            manifest = await manifest_at(session, origin)
            assert manifest.type == "dynamic"
            tracks = listed(manifest, origin)
            assert set(tracks) == {"video", "audio"}
            for kind, segments in tracks.items():
                assert [s.url for s in segments] == [origin.segment_url(kind, 0)]
    # Without an explicit start, an origin asked to start earlier starts on air.
    async with Origin(config_for(shape, already_broadcast=0.5), ManualClock(), media=media) as o:
        assert o.now == o.first_publication


def timeline_of(body: bytes, content_type: str) -> list[dict[str, str]]:
    """The S elements (attributes) of one AdaptationSet, by content type or rep id prefix."""
    root = etree.fromstring(body)
    ns = {"d": "urn:mpeg:dash:schema:mpd:2011"}
    for rep in root.iterfind(".//d:Representation", ns):
        mime = rep.get("mimeType") or rep.getparent().get("mimeType") or ""
        if mime.startswith(content_type):
            return [dict(s.attrib) for s in rep.iterfind(".//d:S", ns)]
    raise AssertionError(f"no {content_type} representation")


@pytest.mark.parametrize("shape", ("instagram", "time", "number_timeline"))
async def test_omitted_gaps_leave_a_jump_in_the_timeline(shape: str, test_media: TestMedia) -> None:
    gaps = {6, 7}
    config = OriginConfig(
        shape=shape, already_broadcast=25.0, window=8, gaps=gaps, gaps_listed=False
    )
    async with (
        Origin(config, ManualClock(), media=test_media) as origin,
        aiohttp.ClientSession() as session,
    ):
        listed_now = origin.listed_segments()
        assert len(listed_now) == 8 and not gaps & set(listed_now)
        assert {5, 8} <= set(listed_now)
        body = await _raw(session, origin)
        manifest = parse_manifest(body, origin.manifest_url)
        for kind, segments in listed(manifest, origin).items():
            assert [s.url for s in segments] == [origin.segment_url(kind, i) for i in listed_now]
            for segment in segments:
                assert (await get(session, segment.url))[0] == 200, segment.url
            # The S after the hole says where it starts.
            entries = timeline_of(body, kind)
            after_hole = entries[listed_now.index(8)]
            expected_t = (
                origin.segment_key(kind, 8)  # instagram: shared milliseconds
                if shape == "instagram"
                else origin.media.segment_info(kind, 8).t  # type: ignore[attr-defined]
            )
            assert int(after_hole["t"]) == expected_t
        if shape == "number_timeline":
            # The hole consumed no number: segment 8 is the one after segment 5.
            assert origin.segment_key("video", 8) == origin.segment_key("video", 5) + 1
            with pytest.raises(KeyError):
                origin.segment_key("video", 6)
        else:
            # The hole's own URL is still a 404.
            assert (await get(session, origin.segment_url("video", 6)))[0] == 404


async def test_omitted_gaps_longer_than_the_window(test_media: TestMedia) -> None:
    """A hole longer than the window leaves the manifest as before it: never an empty list."""
    gaps = set(range(4, 12))
    clock = ManualClock()
    config = OriginConfig(shape="time", window=3, gaps=gaps, gaps_listed=False)
    async with Origin(config, clock, media=test_media) as origin:
        clock.set(origin.segment_end(10))
        assert origin.listed_segments() == [1, 2, 3]
        clock.set(origin.segment_end(12))
        assert origin.listed_segments() == [2, 3, 12]
    # number_duration lists nothing, so omitting changes nothing: the gap still 404s.
    config = config_for("number_duration", already_broadcast=30.0, gaps={3}, gaps_listed=False)
    media = generate_media(CONSTANT)
    async with (
        Origin(config, ManualClock(), media=media) as origin,
        aiohttp.ClientSession() as session,
    ):
        assert b"SegmentTimeline" not in await _raw(session, origin)
        assert (await get(session, origin.segment_url("video", 3)))[0] == 404
        assert (await get(session, origin.segment_url("video", 4)))[0] == 200


@pytest.mark.parametrize("shape", ("instagram", "time", "number_duration"))
@pytest.mark.parametrize("offset", (1.4, 100_000.0))
async def test_timeline_offset_moves_every_media_time(
    shape: str, offset: float, test_media: TestMedia, constant_media: TestMedia
) -> None:
    media = media_for(shape, test_media, constant_media)
    config = config_for(shape, already_broadcast=12.0, timeline_offset=offset, window=3)
    async with (
        Origin(config, ManualClock(), media=media) as origin,
        aiohttp.ClientSession() as session,
    ):
        body = await _raw(session, origin)
        manifest = parse_manifest(body, origin.manifest_url)
        for kind in ("video", "audio"):
            track = media.track(kind)
            shift = round(offset * track.timescale)
            for i in origin.listed_segments():
                served = (await get(session, origin.segment_url(kind, i)))[2]
                tfdt = parse_fragment(served).base_media_decode_time
                assert tfdt == track.segments[i].t + shift
            if shape == "time":
                first = timeline_of(body, kind)[0]
                assert int(first["t"]) == track.segments[origin.listed_segments()[0]].t + shift
        for rep in manifest.representations():
            assert rep.template is not None and rep.template.presentation_time_offset == 0
        if shape == "instagram":
            video = media.track("video")
            first_ms = round(offset * video.timescale) * 1000 // video.timescale
            assert manifest.attributes["publishFrameTime"] == str(first_ms)
            assert manifest.attributes["firstAvTimeMs"] == str(first_ms)
            assert origin.segment_key("audio", 0) == first_ms


async def test_mpd_timescale_differs_from_the_media(
    test_media: TestMedia, constant_media: TestMedia
) -> None:
    config = OriginConfig(shape="time", already_broadcast=20.0, timescale=90_000, window=4)
    async with (
        Origin(config, ManualClock(), media=test_media) as origin,
        aiohttp.ClientSession() as session,
    ):
        manifest = await manifest_at(session, origin)
        for rep in manifest.representations():
            kind = rep.content_type
            track = test_media.track(kind)
            assert rep.template is not None and rep.template.timescale == 90_000
            segments = expand_segments(manifest, rep, origin.wall_time())
            assert [s.time for s in segments] == [
                round(track.segments[i].t * 90_000 / track.timescale)
                for i in origin.listed_segments()
            ]
            for current, following in itertools.pairwise(segments):
                assert current.time + round(current.duration * 90_000) == following.time
            for segment in segments:
                status, _, body = await get(session, segment.url)
                assert status == 200
                tfdt = parse_fragment(body).base_media_decode_time
                assert tfdt is not None
                assert abs(tfdt / track.timescale - segment.time / 90_000) < 1 / 90_000
    config = config_for("number_duration", already_broadcast=20.0, timescale=90_000)
    async with (
        Origin(config, ManualClock(), media=constant_media) as origin,
        aiohttp.ClientSession() as session,
    ):
        manifest = await manifest_at(session, origin)
        for rep in manifest.representations():
            assert rep.template is not None
            assert (rep.template.timescale, rep.template.duration) == (90_000, 180_000)
    # Instagram keeps its milliseconds.
    config = OriginConfig(already_broadcast=20.0, timescale=90_000)
    async with Origin(config, ManualClock(), media=test_media) as origin:
        assert (
            origin.segment_key("video", 1)
            == test_media.track("video").segments[1].t * 1000 // 15360
        )


async def test_publish_frame_time_can_be_left_out(test_media: TestMedia) -> None:
    config = OriginConfig(already_broadcast=20.0, publish_frame_time=False)
    async with (
        Origin(config, ManualClock(), media=test_media) as origin,
        aiohttp.ClientSession() as session,
    ):
        manifest = await manifest_at(session, origin)
        assert "publishFrameTime" not in manifest.attributes
        assert "firstAvTimeMs" not in manifest.attributes
        assert "loapStreamId" in manifest.attributes


def test_stall_lengths_are_seeded_within_their_range() -> None:
    config = FaultConfig(
        seed=4, slow_first_byte=1.0, slow_first_byte_delay=2.0, slow_first_byte_max=6.0
    )
    plan, again = FaultPlan(config), FaultPlan(config)
    stalls = [plan.verdict("media", "GET", f"video/{i % 5}").stall for i in range(40)]
    assert all(2.0 <= s <= 6.0 for s in stalls)
    assert len({round(s, 6) for s in stalls}) > 30  # drawn, not fixed
    # The same URL and attempt stall alike whatever order the requests come in.
    shuffled = [(i % 5, i // 5) for i in range(40)]
    shuffled.reverse()
    by_url_attempt = {}
    for url, _ in shuffled:
        attempt = sum(1 for key in by_url_attempt if key[0] == url)
        by_url_attempt[(url, attempt)] = again.verdict("media", "GET", f"video/{url}").stall
    assert [by_url_attempt[(i % 5, i // 5)] for i in range(40)] == stalls
    fixed = FaultPlan(FaultConfig(slow_first_byte=1.0, slow_first_byte_delay=0.5))
    assert {fixed.verdict("media", "GET", f"v/{i}").stall for i in range(5)} == {0.5}
    with pytest.raises(ValueError):
        FaultConfig(slow_first_byte_delay=3.0, slow_first_byte_max=2.0)


async def test_a_stall_waits_its_drawn_length(test_media: TestMedia) -> None:
    faults = FaultConfig(
        seed=1, slow_first_byte=1.0, slow_first_byte_delay=0.05, slow_first_byte_max=0.3
    )
    config = OriginConfig(shape="time", already_broadcast=20.0, faults=faults)
    expected = FaultPlan(faults).verdict("media", "GET", "video/2").stall
    async with (
        Origin(config, ManualClock(), media=test_media) as origin,
        aiohttp.ClientSession() as session,
    ):
        started = time.monotonic()
        assert (await get(session, origin.segment_url("video", 2)))[0] == 200
        assert time.monotonic() - started >= expected
        (record,) = [r for r in origin.request_log if r.kind == "media"]
        assert record.fault == "slow" and record.complete


async def _read_until_reset(url: str) -> tuple[bytes, bool]:
    """Everything a bare client reads from one GET, and whether it ended with a reset."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    data = b""
    try:
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        writer.write(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        while chunk := await reader.read(65536):
            data += chunk
    except ConnectionResetError:
        return data, True
    finally:
        writer.close()
    return data, False


async def test_reset_during_the_body_is_not_a_truncation(test_media: TestMedia) -> None:
    for fault, field in (("reset_mid_body", "reset_mid_body"), ("truncate", "truncate")):
        faults = FaultConfig(**{field: 1.0})  # type: ignore[arg-type]
        config = OriginConfig(shape="time", already_broadcast=20.0, faults=faults)
        async with Origin(config, ManualClock(), media=test_media) as origin:
            size = origin.media.segment_info("video", 3).size
            data, reset = await _read_until_reset(origin.segment_url("video", 3))
            head, _, body = data.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200")
            assert f"Content-Length: {size}".encode() in head
            assert 0 < len(body) < size
            assert reset is (fault == "reset_mid_body")
            (record,) = origin.request_log
            assert (record.status, record.fault, record.size) == (200, fault, size)
            assert record.bytes_sent == size // 2 == len(body)
            assert not record.complete
            assert origin.stats.faults == {fault: 1}


async def _manifest_fault_run(test_media: TestMedia, seed: int) -> tuple[list[str], int]:
    faults = FaultConfig(
        seed=seed,
        error_503=0.15,
        error_429=0.15,
        retry_after=3,
        reset=0.15,
        truncate=0.15,
        reset_mid_body=0.15,
        kinds=frozenset({"manifest"}),
    )
    config = OriginConfig(shape="time", already_broadcast=20.0, faults=faults)
    async with Origin(config, ManualClock(), media=test_media) as origin:
        outcomes = []
        for _ in range(40):
            data, reset = await _read_until_reset(origin.manifest_url)
            if not data:
                outcomes.append("reset")
                continue
            head, _, body = data.partition(b"\r\n\r\n")
            status = head.split()[1].decode()
            length = int(re.search(rb"Content-Length: (\d+)", head).group(1))  # type: ignore[union-attr]
            if status == "200" and len(body) < length:
                status = "reset_mid_body" if reset else "truncate"
            outcomes.append(status)
        media = [await raw_get(origin.segment_url("video", i)) for i in range(5)]
        media_faults = sum(outcome != "200" for outcome in media)
        assert [r.kind for r in origin.request_log].count("manifest") == 40
        return outcomes, media_faults


async def test_manifest_requests_get_the_media_faults(test_media: TestMedia) -> None:
    outcomes, media_faults = await _manifest_fault_run(test_media, seed=2)
    counts = Counter(outcomes)
    for outcome in ("503", "429", "reset", "truncate", "reset_mid_body", "200"):
        assert counts[outcome] > 0, counts
    assert media_faults == 0  # only the manifest was asked for
    again, _ = await _manifest_fault_run(test_media, seed=2)
    assert again == outcomes  # drawn by manifest request number


async def test_request_log(test_media: TestMedia) -> None:
    clock = ManualClock()
    faults = FaultConfig(reset=1.0, max_per_url=1, kinds=frozenset({"init"}))
    config = OriginConfig(shape="time", already_broadcast=20.0, faults=faults)
    async with (
        Origin(config, clock, media=test_media) as origin,
        aiohttp.ClientSession() as session,
    ):
        size = origin.media.segment_info("video", 2).size
        await get(session, origin.manifest_url)
        clock.advance(1.5)
        await get(session, origin.segment_url("video", 2))
        await get(session, origin.segment_url("video", 2), Range="bytes=0-99")
        await get(session, origin.segment_url("audio", 1), "HEAD")
        await get(session, origin.segment_url("video", 200))  # not broadcast yet
        assert await raw_get(origin.init_url("video")) == "reset"
        await get(session, origin.init_url("video"))
        log = origin.request_log
        summary = [(r.method, r.kind, r.track, r.index, r.status, r.fault) for r in log]
        assert summary == [
            ("GET", "manifest", None, None, 200, None),
            ("GET", "media", "video", 2, 200, None),
            ("GET", "media", "video", 2, 206, None),
            ("HEAD", "media", "audio", 1, 200, None),
            ("GET", "media", "video", 200, 404, None),
            ("GET", "init", "video", None, 0, "reset"),
            ("GET", "init", "video", None, 200, None),
        ]
        assert [r.complete for r in log] == [True, True, False, False, False, False, True]
        assert log[1].bytes_sent == log[1].size == size
        assert (log[2].bytes_sent, log[2].size, log[2].range) == (100, size, "bytes=0-99")
        assert log[3].bytes_sent == 0
        assert log[0].virtual_time == 20.0 and log[1].virtual_time == 21.5
        assert log[1].path == urlsplit(origin.segment_url("video", 2)).path
        assert sum(r.bytes_sent for r in log) == origin.stats.bytes_served
        assert all(a.real_time <= b.real_time for a, b in itertools.pairwise(log))
    small = OriginConfig(shape="time", already_broadcast=20.0, request_log_size=2)
    async with (
        Origin(small, ManualClock(), media=test_media) as origin,
        aiohttp.ClientSession() as session,
    ):
        for i in range(5):
            await get(session, origin.segment_url("video", i))
        assert [r.index for r in origin.request_log] == [3, 4]
        assert origin.request_log_dropped == 3


def test_command_line_flags_reach_the_config() -> None:
    args = build_parser().parse_args(
        [
            "--shape", "time",
            "--gaps", "3",
            "--gaps-omitted",
            "--timeline-offset", "1.4",
            "--timescale", "90000",
            "--no-publish-frame-time",
            "--pslow", "0.1",
            "--slow-delay", "2",
            "--slow-delay-max", "6",
            "--preset-mid-body", "0.05",
            "--manifest-faults",
            "--token-rotation", "30",
            "--token-grace", "4",
            "--token-expired-status", "410",
        ]
    )  # fmt: skip
    config = config_from_args(args)
    assert (config.gaps_listed, config.timeline_offset, config.timescale) == (False, 1.4, 90000)
    assert (config.token_rotation, config.token_grace, config.token_expired_status) == (30, 4, 410)
    assert not config.publish_frame_time
    faults = config.faults
    assert (faults.slow_first_byte_delay, faults.slow_first_byte_max) == (2.0, 6.0)
    assert faults.reset_mid_body == 0.05
    assert faults.kinds == {"media", "init", "manifest"}
    defaults = config_from_args(build_parser().parse_args([]))
    assert defaults == OriginConfig(media=defaults.media)


# --------------------------------------------------------------------------- packager habits


@pytest.mark.parametrize("shape", LIVE_SHAPES)
async def test_last_sample_duration_zero_ends_every_segment_one_sample_short(
    shape: str, test_media: TestMedia, constant_media: TestMedia
) -> None:
    media = media_for(shape, test_media, constant_media)
    config = config_for(shape, already_broadcast=45.0, window=4, last_sample_duration_zero=True)
    async with (
        Origin(config, ManualClock(), media=media) as origin,
        aiohttp.ClientSession() as session,
    ):
        looped = origin.media
        for kind in ("video", "audio"):
            track = media.track(kind)
            default = parse_init(track.init).default_sample_duration
            # Past one loop of the source too: the habit applies after the tfdt rewrite.
            for i in (*origin.listed_segments(), 0, len(track.segments) + 1):
                status, _, body = await get(session, origin.segment_url(kind, i))
                assert status == 200
                samples = fmp4.read_samples(body, default)
                source = fmp4.read_samples(track.segment_data(i % len(track.segments)), default)
                assert [s.duration for s in samples] == [s.duration for s in source[:-1]] + [0]
                fragment = parse_fragment(body, default_sample_duration=default)
                entry = looped.segment_info(kind, i)
                assert fragment.base_media_decode_time == entry.t  # tfdt exactly as without
                short = entry.t + sum(s.duration for s in samples)
                assert short + source[-1].duration == looped.segment_info(kind, i + 1).t


async def test_last_sample_duration_zero_names_the_first_time_segment_zero(
    test_media: TestMedia,
) -> None:
    # nginx-rtmp: the first fragment is named 0 while its video tfdt is 21 ms.
    offset = 0.021
    config = OriginConfig(
        shape="time",
        already_broadcast=10.0,
        window=10,
        timeline_offset=offset,
        last_sample_duration_zero=True,
    )
    async with (
        Origin(config, ManualClock(), media=test_media) as origin,
        aiohttp.ClientSession() as session,
    ):
        body = await _raw(session, origin)
        manifest = parse_manifest(body, origin.manifest_url)
        for rep in manifest.representations():
            kind = rep.content_type
            track = test_media.track(kind)
            tfdts = [track.segments[i].t + round(offset * track.timescale) for i in range(3)]
            segments = expand_segments(manifest, rep, origin.wall_time())
            # Segment 0 is named and listed from 0 to the next segment's real time ...
            assert [s.time for s in segments[:3]] == [0, tfdts[1], tfdts[2]]
            assert timeline_of(body, kind)[0] == {"t": "0", "d": str(tfdts[1])}
            assert origin.segment_key(kind, 0) == 0
            for segment, tfdt in zip(segments[:3], tfdts, strict=True):
                status, _, served = await get(session, segment.url)
                assert status == 200
                # ... while its bytes keep their own time.
                assert parse_fragment(served).base_media_decode_time == tfdt
    # Without an offset segment 0 starts at 0 anyway: names are the tfdt, as without the flag.
    config = OriginConfig(shape="time", already_broadcast=10.0, last_sample_duration_zero=True)
    async with Origin(config, ManualClock(), media=test_media) as origin:
        for kind in ("video", "audio"):
            times = [origin.broadcast.media_time(kind, i)[0] for i in range(4)]
            assert [origin.segment_key(kind, i) for i in range(4)] == times


async def test_start_number_follows_the_window_while_files_keep_their_numbers(
    constant_media: TestMedia,
) -> None:
    clock = ManualClock()
    config = config_for(
        "number_duration", already_broadcast=30.0, window=4, start_number_follows_window=True
    )
    async with (
        Origin(config, clock, media=constant_media) as origin,
        aiohttp.ClientSession() as session,
    ):
        firsts = []
        for now in (30.0, 50.0):
            clock.set(now)
            manifest = await manifest_at(session, origin)
            assert manifest.type == "dynamic"
            assert manifest.availability_start_time == origin.broadcast_start
            first = origin.listed_segments()[0]
            for rep in manifest.representations():
                kind = rep.content_type
                template = rep.template
                assert template is not None
                assert template.presentation_time_offset == 0
                # startNumber is the window's first segment, not segment 0's number ...
                assert template.start_number == origin.segment_key(kind, first) == first + 1
                # ... and that file is still the segment of that absolute number.
                url = rep.media_url(number=template.start_number)
                status, _, body = await get(session, url)
                assert status == 200
                tfdt = parse_fragment(body).base_media_decode_time
                assert tfdt == origin.broadcast.media_time(kind, first)[0]
                assert (await get(session, origin.segment_url(kind, 0)))[0] == 200
            firsts.append(first)
        assert firsts[1] - firsts[0] == 10  # 20 s of 2 s segments later
        # The end: the static manifest describes the whole broadcast from its first number.
        clock.set(origin.duration + 1)
        manifest = await manifest_at(session, origin)
        assert manifest.type == "static"
        assert {rep.template.start_number for rep in manifest.representations()} == {1}  # type: ignore[union-attr]
    # Without an end signal (Shaka's own way) the frozen manifest keeps its last window's number.
    config = config_for(
        "number_duration",
        broadcast_duration=40.0,
        already_broadcast=60.0,
        window=4,
        signal_end=False,
        start_number_follows_window=True,
    )
    async with (
        Origin(config, ManualClock(), media=constant_media) as origin,
        aiohttp.ClientSession() as session,
    ):
        manifest = await manifest_at(session, origin)
        assert manifest.type == "dynamic"
        numbers = {rep.template.start_number for rep in manifest.representations()}  # type: ignore[union-attr]
        assert numbers == {origin.segment_count - 4 + 1}


async def test_start_number_follows_window_leaves_other_shapes_alone(
    test_media: TestMedia,
) -> None:
    for follows in (False, True):
        config = OriginConfig(
            shape="time", already_broadcast=30.0, start_number_follows_window=follows
        )
        async with (
            Origin(config, ManualClock(), media=test_media) as origin,
            aiohttp.ClientSession() as session,
        ):
            body = await _raw(session, origin)
            assert b"startNumber" not in body


def test_command_line_flags_for_packager_habits() -> None:
    args = build_parser().parse_args(
        [
            "--shape",
            "number_duration",
            "--last-sample-duration-zero",
            "--start-number-follows-window",
        ]
    )
    config = config_from_args(args)
    assert config.last_sample_duration_zero and config.start_number_follows_window
    defaults = config_from_args(build_parser().parse_args([]))
    assert not defaults.last_sample_duration_zero and not defaults.start_number_follows_window


async def test_a_subclass_sees_every_answer(test_media: TestMedia) -> None:
    # The benchmarks time past recovery by the origin's last archive answer this way.
    seen: list[tuple[str, int]] = []

    class Watching(Origin):
        async def _handle(self, request: web.Request) -> web.StreamResponse:
            response = await super()._handle(request)
            seen.append((request.path, response.status))
            return response

    config = OriginConfig(shape="time", already_broadcast=20.0)
    async with (
        Watching(config, ManualClock(), media=test_media) as origin,
        aiohttp.ClientSession() as session,
    ):
        await get(session, origin.manifest_url)
        await get(session, origin.segment_url("video", 0))
    assert [status for _, status in seen] == [200, 200]
