"""The adaptive pace: backing off when a server pushes back, growing back when it answers."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

from instarec.pacing import PaceSettings, ServerPace
from instarec.recorder import record
from instarec.testing.clock import ManualClock
from instarec.testing.faults import FaultConfig, RateLimit
from instarec.testing.media import TestMedia
from instarec.testing.origin import Origin, OriginConfig
from tests.recording import fast_options, inspect

QUICK = PaceSettings(ceiling=8, window=0.05, min_answers=12)


async def answers(pace: ServerPace, pushbacks: list[bool], *, spread: float = 0.06) -> None:
    """Feed answers evenly over ``spread`` seconds (a little more than one window)."""
    for pushback in pushbacks:
        pace.note(pushback=pushback, retry_after=None)
        await asyncio.sleep(spread / len(pushbacks))


async def test_dense_pushback_halves_the_downloads_and_caps_the_rate() -> None:
    pace = ServerPace(QUICK)
    for pushback in [True, False] * 10:  # within one window: one back-off
        pace.note(pushback=pushback)
    state = pace.state()
    assert state.backoffs == 1
    assert state.download_limit == 4
    assert state.rate_cap is not None and state.rate_cap > 0


async def test_scattered_failures_are_noise_not_congestion() -> None:
    pace = ServerPace(QUICK)
    for _ in range(5):
        await answers(pace, [True] + [False] * 11)
    assert pace.state().backoffs == 0
    assert pace.state().download_limit == 8
    assert pace.state().rate_cap is None


async def test_clean_answers_grow_the_limit_back_one_per_window() -> None:
    pace = ServerPace(QUICK)
    await answers(pace, [True] * 20)
    await answers(pace, [True] * 20)
    loop = asyncio.get_running_loop()
    seen = [(loop.time(), pace.state().download_limit)]
    assert seen[0][1] <= 2
    while pace.state().download_limit < 8 and loop.time() - seen[0][0] < 5:
        for _ in range(3):
            pace.note(pushback=False)
        seen.append((loop.time(), pace.state().download_limit))
        await asyncio.sleep(0.005)
    changes = [(t, b - a) for (_, a), (t, b) in itertools.pairwise(seen) if b != a]
    # The pushbacks of the last window may still lower it once; from then on it only grows.
    falls = [i for i, (_, step) in enumerate(changes) if step < 0]
    rises = changes[falls[-1] + 1 :] if falls else changes
    assert len(falls) <= 1
    assert seen[-1][1] == 8
    assert all(step == 1 for _, step in rises), rises  # additive: one at a time
    times = [t for t, _ in rises]
    assert all(b - a >= QUICK.window * 0.9 for a, b in itertools.pairwise(times))


async def test_the_lowest_rate_cap_grows_back_on_the_answers_it_lets_through() -> None:
    # Chaos seeds 59 and 93 under load: five resets in a row set the lowest cap, under which
    # fewer answers come per window than a judgement needed; the cap never grew again and the
    # recording stalled behind it with hundreds of segments queued.
    settings = PaceSettings(ceiling=8, window=0.05, min_answers=12, min_rate=40.0)
    pace = ServerPace(settings)
    pace.note(pushback=False)
    for _ in range(5):
        pace.note(pushback=True)
    assert pace.state().rate_cap == settings.min_rate  # 2 answers a window at most
    loop = asyncio.get_running_loop()
    began = loop.time()
    while loop.time() - began < 1.5:
        await pace.start()
        pace.note(pushback=False)
    state = pace.state()
    assert state.download_limit == settings.ceiling
    # About 28 windows: a step of one request per second in each clean one, most of them.
    assert state.rate_cap is None or state.rate_cap >= settings.min_rate + 15, state


async def test_a_server_that_accepts_nothing_halves_the_downloads_but_gets_no_rate_cap() -> None:
    # An outage resets every request: no accepted rate to cap at. A cap at the lowest rate
    # outlived a minute's outage by minutes (chaos seeds 109 and 116).
    pace = ServerPace(QUICK)
    for _ in range(5):
        pace.note(pushback=True)
    state = pace.state()
    assert state.backoffs == 1
    assert state.download_limit == QUICK.ceiling // 2
    assert state.rate_cap is None


async def test_download_slots_follow_the_limit() -> None:
    pace = ServerPace(QUICK)
    for _ in range(20):  # within one window: one back-off, to 4
        pace.note(pushback=True)
    running = 0
    most = 0
    release = asyncio.Event()

    async def download() -> None:
        nonlocal running, most
        async with pace.download_slot():
            running += 1
            most = max(most, running)
            await release.wait()
            running -= 1

    tasks = [asyncio.create_task(download()) for _ in range(8)]
    await asyncio.sleep(0.01)
    assert running == 4
    release.set()
    await asyncio.gather(*tasks)
    assert most == 4


async def test_retry_after_holds_back_every_new_request() -> None:
    pace = ServerPace(QUICK)
    loop = asyncio.get_running_loop()
    began = loop.time()
    for _ in range(6):  # refusals in a row: a rate limit's
        pace.note(pushback=True, retry_after=0.3)
    await pace.start()
    assert loop.time() - began >= 0.25


async def test_under_a_rate_cap_a_download_does_not_wait_behind_every_probe() -> None:
    # Chaos seeds 109 and 116: after an outage, a wave of probes booked the low cap's next
    # half minute, and the downloads queued behind them recorded nothing meanwhile.
    pace = ServerPace(PaceSettings(ceiling=8, window=1.0, min_answers=12, min_rate=20.0))
    for pushback in [False] + [True] * 5:  # one accepted, then a rate limit's refusals in a row
        pace.note(pushback=pushback)
    assert pace.state().rate_cap == 20.0  # one request each 50 ms
    order: list[str] = []

    async def request(name: str, *, urgent: bool) -> None:
        await pace.start(urgent=urgent)
        order.append(name)

    async with asyncio.TaskGroup() as group:
        for n in range(10):
            group.create_task(request(f"probe {n}", urgent=False))
        await asyncio.sleep(0.01)  # the probes wait first
        group.create_task(request("download", urgent=True))
    # Downloads and probes take turns: the download starts among the first three, not last.
    assert "download" in order[:3], order
    assert len(order) == 11


def test_the_origin_rate_limit_serves_n_per_sliding_second() -> None:
    limit = RateLimit(3)
    assert [limit.admit(t) for t in (0.0, 0.1, 0.2, 0.3)] == [True, True, True, False]
    assert limit.admit(1.05)  # 0.0 left the window
    assert not limit.admit(1.06)


async def test_a_rate_limited_origin_is_recorded_whole_with_few_refusals(
    tmp_path: Path, test_media: TestMedia
) -> None:
    # A finished $Number$ broadcast (the manifest lists its last window, the server keeps
    # every segment), served at most 60 media requests per second: the recorder meets the
    # limit within the first seconds, then stays under it.
    config = OriginConfig(
        shape="number_timeline",
        broadcast_duration=200,
        already_broadcast=205,
        media=test_media.spec,
        faults=FaultConfig(rate_limit=20, retry_after=1),
    )
    output = tmp_path / "limited.mp4"
    async with Origin(config, ManualClock(), media=test_media) as origin:
        summary = await record(
            fast_options(origin.manifest_url, output, past_segment_delay=0.0),
            install_signal_handlers=False,
        )
        expected = origin.expected_frames(0, origin.segment_count - 1)
        log = [e for e in origin.request_log if e.kind in ("media", "init")]

    report = inspect(output)
    assert report.video_frames == expected
    assert report.video_gaps == ()
    assert summary.gaps == ()
    first = log[0].real_time
    later = [e for e in log if e.real_time > first + 3.0]
    refused = [e for e in later if e.fault == "rate"]
    assert len(later) > 100  # the recovery lasts well past its first seconds
    assert len(refused) <= 0.1 * len(later), (len(refused), len(later))
