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

from instarec.manifest import Manifest, expand_segments, parse_manifest
from instarec.mp4 import parse_fragment, parse_init
from instarec.testing.clock import ManualClock, SpeedClock
from instarec.testing.faults import FaultConfig
from instarec.testing.media import MediaSpec, TestMedia, generate_media
from instarec.testing.origin import Origin, OriginConfig

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
        async def one(i: int) -> str:
            started = time.monotonic()
            outcome = await raw_get(origin.segment_url("video", i % 12))
            if outcome == "200" and time.monotonic() - started >= 0.2:
                return "slow"
            return outcome

        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(one(i)) for i in range(60)]
        outcomes = [task.result() for task in tasks]
        # Per URL the multiset of verdicts is fixed; list them URL by URL.
        per_url: dict[int, list[str]] = {}
        for i, outcome in enumerate(outcomes):
            per_url.setdefault(i % 12, []).append(outcome)
        return [o for i in sorted(per_url) for o in sorted(per_url[i])], dict(origin.stats.faults)


async def test_faults_occur_as_configured_and_are_seeded(test_media: TestMedia) -> None:
    outcomes, injected = await _fault_run(test_media, seed=7)
    counts = Counter(outcomes)
    for kind in ("503", "429", "reset", "truncate", "slow", "200"):
        assert counts[kind] > 0, counts
    # What the client saw is what the origin says it injected.
    assert {k: v for k, v in counts.items() if k != "200"} == injected
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
        beyond = origin.segment_url("video", last).replace(
            str(origin.segment_key("video", last)), str(origin.segment_key("video", last) + 1)
        )
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
