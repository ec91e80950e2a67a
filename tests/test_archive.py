"""Past-recovery search strategies, driven by plain functions standing in for the server."""

from __future__ import annotations

import asyncio
import collections
import itertools
import math
import random
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from instarec.archive import (
    HEDGE_AFTER,
    Presence,
    SearchLimits,
    SearchStalled,
    StepResult,
    TimeChain,
    TimelineGap,
    candidate_times,
    find_first_number,
    find_first_time,
    find_seed,
    reaches_start,
    search_times,
    seed_targets,
)
from instarec.timeline import standard_rate


class NumberServer:
    def __init__(self, present: set[int]) -> None:
        self.present = present
        self.probes: list[int] = []

    async def probe(self, number: int) -> Presence:
        self.probes.append(number)
        return Presence.PRESENT if number in self.present else Presence.ABSENT


async def test_start_number_present_costs_one_probe() -> None:
    server = NumberServer(set(range(1, 301)))
    first = await find_first_number(server.probe, start_number=1, first_listed=296, guard=5)
    assert first == 1
    assert server.probes == [1]


async def test_retention_boundary_found_in_logarithmic_probes() -> None:
    oldest, listed = 7_000, 10_000
    server = NumberServer(set(range(oldest, listed + 5)))
    guard = 15
    first = await find_first_number(server.probe, start_number=1, first_listed=listed, guard=guard)
    assert first == oldest
    budget = 2 * math.ceil(math.log2(listed)) + guard + 2
    assert len(server.probes) <= budget, (len(server.probes), budget)


async def test_the_number_search_reports_each_lower_hit_and_gallops_in_rounds() -> None:
    oldest, listed = 7_000, 10_000
    present = set(range(oldest, listed + 5))
    asked_at_once: list[int] = []
    in_flight = 0

    async def probe(number: int) -> Presence:
        nonlocal in_flight
        in_flight += 1
        asked_at_once.append(in_flight)
        await asyncio.sleep(0)  # answers arrive together, as over a network
        in_flight -= 1
        return Presence.PRESENT if number in present else Presence.ABSENT

    reported: list[int] = []
    first = await find_first_number(
        probe, start_number=1, first_listed=listed, guard=15, on_found=reported.append
    )
    assert first == oldest
    assert reported == sorted(reported, reverse=True)
    assert reported[-1] == oldest
    assert all(number in present for number in reported)
    assert reported[0] >= listed - 16  # the first round's hits (1, 4, 16 below), not the end
    assert max(asked_at_once) >= 3  # the gallop asks several steps at once


async def test_gap_below_boundary_does_not_fool_the_search() -> None:
    # 990 is lost, but 900..989 are still there: the guard must look past the hole.
    present = set(range(900, 1100)) - {990}
    server = NumberServer(present)
    first = await find_first_number(server.probe, start_number=0, first_listed=1095, guard=3)
    assert first == 900


async def test_nothing_below_window() -> None:
    server = NumberServer(set(range(50, 60)))
    first = await find_first_number(server.probe, start_number=1, first_listed=50, guard=4)
    assert first is None


@settings(max_examples=60, deadline=None)
@given(
    oldest=st.integers(min_value=2, max_value=5000),
    extra=st.integers(min_value=1, max_value=3000),
    holes=st.lists(st.integers(min_value=0, max_value=7999), max_size=6),
    guard=st.integers(min_value=4, max_value=20),
)
async def test_first_number_property(oldest: int, extra: int, holes: list[int], guard: int) -> None:
    listed = oldest + extra
    # Holes shorter than the guard, never the listed segment itself nor the oldest one.
    present = set(range(oldest, listed + 1)) - {h for h in holes if oldest < h < listed}
    server = NumberServer(present)
    first = await find_first_number(server.probe, start_number=1, first_listed=listed, guard=guard)
    assert first == oldest


def test_candidate_times_cover_range_once() -> None:
    values = list(candidate_times(2000, low=1500, high=2600, grid=1000 / 30))
    assert sorted(values) == list(range(1500, 2601))
    # The grid points nearest the expectation come first.
    assert values[0] == 2000
    assert set(values[1:5]) == {2033, 2034, 1966, 1967}


def make_timeline(count: int, seed: int, frame: float = 1000 / 30) -> list[int]:
    """Segment starts in ms: whole numbers of frames, 54-69 frames (1.8-2.3 s) each."""
    rng = random.Random(seed)
    starts = [0]
    frames = 0
    for _ in range(count):
        frames += rng.randint(54, 69)
        starts.append(round(frames * frame))
    return starts


class TimeServer:
    def __init__(self, starts: list[int], missing: set[int] = frozenset()) -> None:
        self.starts = starts
        self.present = set(starts) - missing
        self.next = dict(itertools.pairwise(starts))
        self.steps: list[int] = []
        self.probes: list[int] = []

    async def step(self, time: int) -> StepResult | None:
        self.steps.append(time)
        if time not in self.present or time not in self.next:
            return None
        return StepResult(self.next[time], 1000 / 30)

    async def probe(self, time: int) -> Presence:
        self.probes.append(time)
        return Presence.PRESENT if time in self.present else Presence.ABSENT


def chain_for(server: TimeServer, known: list[int], gaps: list[TimelineGap]) -> TimeChain:
    def next_known(time: int) -> int | None:
        later = [k for k in known if k >= time]
        return min(later) if later else None

    return TimeChain(
        step=server.step,
        probe=server.probe,
        next_known=next_known,
        limits=SearchLimits(max_in_flight=10, chunk_size=100, miss_threshold=30000),
        typical_duration=2000,
        gaps=gaps,
    )


async def test_a_stalled_step_does_not_hold_up_the_segments_after_it() -> None:
    starts = make_timeline(30, seed=16)
    server = TimeServer(starts)
    known = [starts[-1]]  # the window
    reached_window = asyncio.Event()

    async def step(time: int) -> StepResult | None:
        known.append(time)  # as the recorder's offer makes a key known
        if time == starts[5]:
            # Stalls until everything after it is walked: only a second chain can do that.
            await asyncio.wait_for(reached_window.wait(), timeout=5)
        result = await server.step(time)
        if result is not None and result.next_time == starts[-1]:
            reached_window.set()
        return result

    chain = chain_for(server, known, [])
    chain.step = step
    chain.hedge_after = 0.05
    await chain.run(starts[0], frame_ticks=1000 / 30)
    assert set(server.steps) == set(starts[:-1])
    assert len(server.steps) == len(starts) - 1  # each segment stepped through once


async def test_chain_walks_to_the_window_without_probes() -> None:
    starts = make_timeline(300, seed=3)
    window = starts[-5:]
    server = TimeServer(starts)
    gaps: list[TimelineGap] = []
    steps = await chain_for(server, window, gaps).run(0)
    assert server.steps == starts[:-5]
    assert steps == len(starts) - 5
    assert server.probes == []
    assert gaps == []


async def test_a_chain_with_an_end_stops_there_without_a_probe() -> None:
    # A Period's tail: no known ground after it, only where the next Period begins. The
    # Period's last segment may end a little past that point.
    starts = make_timeline(12, seed=5)
    server = TimeServer(starts)
    gaps: list[TimelineGap] = []
    chain = replace(chain_for(server, [], gaps), end=starts[8] - 3)
    await chain.run(starts[2])
    assert server.steps == starts[2:8]  # the last one ends 3 ticks past the end
    assert server.probes == []
    assert gaps == []


async def test_chain_searches_past_a_missing_segment() -> None:
    starts = make_timeline(60, seed=4)
    lost = {starts[10], starts[30], starts[31]}
    server = TimeServer(starts, missing=lost)
    gaps: list[TimelineGap] = []
    await chain_for(server, starts[-3:], gaps).run(0)
    assert gaps == [TimelineGap(starts[10], starts[11]), TimelineGap(starts[30], starts[32])]
    visited = [t for t in server.steps if t not in lost]
    assert visited == [t for t in starts[:-3] if t not in lost]
    # Frame-grid ordering: two grid points per frame of distance, so a double loss (about 2 s
    # past the expectation) costs a few hundred probes, not the 30 000 of an exhaustive search.
    assert len(server.probes) < 400


async def test_single_loss_costs_a_few_waves_of_probes() -> None:
    starts = make_timeline(30, seed=8)
    server = TimeServer(starts, missing={starts[12]})
    gaps: list[TimelineGap] = []
    await chain_for(server, starts[-2:], gaps).run(0)
    assert gaps == [TimelineGap(starts[12], starts[13])]
    # 1.8-2.3 s segments: the next start is within 8 frames of 2 s, 2 grid times per frame,
    # probed in waves of 10.
    assert 0 < len(server.probes) <= 40


async def test_a_next_time_a_tick_off_finds_the_very_next_segment() -> None:
    # Media whose boxes put every next start a tick late (a packager's rounding of an odd last
    # sample): the segment just before the computed time is the next one, not the one after.
    starts = make_timeline(12, seed=6)
    server = TimeServer(starts)

    async def late_step(time: int) -> StepResult | None:
        result = await server.step(time)
        return None if result is None else StepResult(result.next_time + 1, 1000 / 30)

    gaps: list[TimelineGap] = []
    chain = chain_for(server, starts[-2:], gaps)
    chain.step = late_step
    await chain.run(0)
    assert [t for t in server.steps if t in server.present] == starts[:-2]
    assert gaps == []  # nothing is lost
    # Each miss is settled by the handful of probes just around it.
    assert len(server.probes) <= 6 * (len(starts) - 2)


async def test_a_search_finding_nothing_probes_the_frame_grid_only() -> None:
    # Everything between the miss and the window has left the server: the search must stop
    # after the grid times (and a tick either side), not go on to every tick of the range.
    starts = make_timeline(20, seed=9)
    server = TimeServer(starts, missing=set(starts[5:13]))
    gaps: list[TimelineGap] = []
    await chain_for(server, starts[13:], gaps).run(starts[4])
    assert gaps == [TimelineGap(starts[5], starts[13])]
    frames = (starts[13] - starts[5]) / (1000 / 30)
    assert len(server.probes) <= 4 * frames + 10


async def test_chain_gap_reaching_the_window_ends_at_the_window() -> None:
    starts = make_timeline(20, seed=5)
    server = TimeServer(starts, missing={starts[15], starts[16]})
    gaps: list[TimelineGap] = []
    await chain_for(server, starts[17:], gaps).run(0)
    assert gaps == [TimelineGap(starts[15], starts[17])]


async def walk_back(server: TimeServer, first_listed: int, **extra: Any) -> int:
    """``find_first_time`` on a millisecond timeline of 30 fps segments of about 2 s."""
    return await find_first_time(
        server.probe,
        hints=[0],
        first_listed=first_listed,
        typical_duration=2000,
        frame_ticks=1000 / 30,
        limits=SearchLimits(),
        **extra,
    )


async def test_find_first_time_uses_the_hint() -> None:
    starts = [s + 895 for s in make_timeline(100, seed=6)]
    server = TimeServer(starts)
    first = await find_first_time(
        server.probe,
        hints=[895, 0],
        first_listed=starts[-5],
        typical_duration=2000,
        frame_ticks=1000 / 30,
        limits=SearchLimits(),
    )
    assert first == 895
    assert server.probes == [895]


async def test_find_first_time_walks_back_to_the_oldest_retained() -> None:
    starts = make_timeline(100, seed=7)
    retained = starts[80:]
    server = TimeServer(retained)
    first = await walk_back(server, starts[95])
    assert first == starts[80]


async def test_the_backward_walk_reports_each_segment_as_it_finds_it() -> None:
    starts = make_timeline(40, seed=11)
    server = TimeServer(starts[20:])  # the older ones have left the server
    found: list[int] = []
    first = await walk_back(server, starts[30], on_found=found.append)
    assert first == starts[20]
    # Newest first, each as the search reached it (leaps skip some: the chain reads them).
    assert found == sorted(found, reverse=True)
    assert found[-1] == starts[20]
    assert set(found) <= set(starts[20:30])


async def test_the_backward_walk_crosses_a_hole_of_several_segments() -> None:
    # Four lost segments (8 s) in the past of a timeline far from 0: not the broadcast's start.
    starts = [s + 5_000_000 for s in make_timeline(40, seed=12)]
    server = TimeServer(starts, missing=set(starts[10:14]))
    first = await walk_back(server, starts[30])
    assert first == starts[0]


@pytest.mark.parametrize("holes", [(), (200, 201, 202)])
async def test_the_backward_search_leaps_to_a_far_retention_edge(holes: tuple[int, ...]) -> None:
    # 345 segments retained below the window: walked one by one, a server deleting one
    # segment per segment length would take the oldest before the walk got there.
    starts = make_timeline(400, seed=15)
    server = TimeServer(starts[50:], missing={starts[i] for i in holes})
    found: list[int] = []
    first = await walk_back(server, starts[395], on_found=found.append)
    assert first == starts[50]
    assert len(found) <= 2 * (2 * math.ceil(math.log2(345)) + 2), found


class StallingTimeServer(TimeServer):
    """A server whose answer about some times comes ``stall`` seconds late, every time."""

    def __init__(self, starts: list[int], missing: set[int], slow: set[int], stall: float) -> None:
        super().__init__(starts, missing)
        self.slow = slow
        self.stall = stall

    async def probe(self, time: int) -> Presence:
        if time in self.slow:
            await asyncio.sleep(self.stall)
        return await super().probe(time)


async def test_a_leap_into_a_hole_neither_waits_out_a_stalled_probe_nor_asks_twice() -> None:
    # Chaos seed 106: the three segments below the window are lost, so the first leap back
    # (two segment lengths) finds nothing, and one of its probes stalls (a retry's backoff, a
    # stalled answer). Waiting it out before looking further held the walk at the hole while
    # the server deleted what lay below; and the walk's steps asked again every time the
    # leap had been told was absent.
    starts = list(range(0, 120_000, 2000))  # 2 s segments of 60 frames
    listed = 50
    holes = {starts[47], starts[48], starts[49]}
    stalled = starts[48] + 10 * 1000 // 30  # a frame edge inside the leap's range
    server = StallingTimeServer(starts[20:], missing=holes, slow={stalled}, stall=3.0)
    loop = asyncio.get_running_loop()
    began = loop.time()
    found: dict[int, float] = {}
    first = await walk_back(
        server, starts[listed], on_found=lambda t: found.setdefault(t, loop.time() - began)
    )
    assert first == starts[20]
    # Below the hole within the patience of a leap, not the stall (a leap may land further).
    assert min(t for start, t in found.items() if start <= starts[46]) < 2.0, found
    asked_twice = {t for t, n in collections.Counter(server.probes).items() if n > 1}
    assert asked_twice <= {stalled}, sorted(asked_twice)[:10]


async def test_a_leap_whose_segments_answer_late_holds_up_neither_the_walk_nor_the_leaps() -> None:
    # Chaos seed 193: the first listed segment and the one before it are holes, and the only
    # start within reach of the first leap answered 429, its retry due after the leap's
    # patience. The leaps went on only after that patience, the look one segment back (into
    # the hole) waited out another, and the oldest segments expired meanwhile.
    starts = list(range(0, 120_000, 2000))  # 2 s segments of 60 frames
    listed = 50
    holes = {starts[49], starts[50]}
    slow = {starts[47], starts[48]}  # within a segment length of where the first leap lands
    server = StallingTimeServer(starts[23:], missing=holes, slow=slow, stall=3.0)
    loop = asyncio.get_running_loop()
    began = loop.time()
    found: dict[int, float] = {}
    first = await walk_back(
        server, starts[listed], on_found=lambda t: found.setdefault(t, loop.time() - began)
    )
    assert first == starts[23]
    assert found[starts[23]] < HEDGE_AFTER / 2, found  # no patience waited out on the way
    asked_twice = {t for t, n in collections.Counter(server.probes).items() if n > 1}
    assert not asked_twice, sorted(asked_twice)[:10]


def audio_edges(video_starts_ms: list[int]) -> list[int]:
    """48 kHz audio cut at the AAC frame (1024 samples) nearest to each video edge."""
    return [round(ms * 48 / 1024) * 1024 for ms in video_starts_ms]


async def test_a_walk_behind_another_track_jumps_to_where_that_one_got() -> None:
    video = make_timeline(40, seed=13)
    audio = audio_edges(video)
    server = TimeServer(audio[20:])  # the older ones have left the server
    found: list[tuple[int, int]] = []  # (start, probes spent until then)
    first = await find_first_time(
        server.probe,
        hints=[0],
        first_listed=audio[30],
        typical_duration=96000,
        frame_ticks=1024,
        limits=SearchLimits().in_timescale(48000),
        on_found=lambda t: found.append((t, len(server.probes))),
        peer_oldest=lambda: video[20] * 48.0,  # the video's walk already reached segment 20
    )
    assert first == audio[20]
    assert found[0][0] == audio[20]  # straight there, not one segment at a time
    assert audio[20] in server.probes[:9]  # among the first asked


async def test_a_lead_that_keeps_missing_is_no_longer_followed() -> None:
    # The other track is cut elsewhere: its starts lie mid-segment here.
    video = make_timeline(40, seed=14)
    audio = audio_edges(video)
    server = TimeServer(audio[20:])
    walked: list[int] = []

    def peer() -> float:
        return (walked[-1] if walked else audio[30]) - 48000.0  # a second below this walk

    unled = TimeServer(audio[20:])
    for target, lead in ((server, peer), (unled, None)):
        first = await find_first_time(
            target.probe,
            hints=[0],
            first_listed=audio[30],
            typical_duration=96000,
            frame_ticks=1024,
            limits=SearchLimits().in_timescale(48000),
            on_found=walked.append if lead else None,
            peer_oldest=lead,
        )
        assert first == audio[20]
    assert len(server.probes) <= len(unled.probes) + 3 * 9


def test_the_first_segment_is_the_start_when_the_search_reached_time_zero() -> None:
    limits = SearchLimits(miss_threshold=30000)
    # MPEG-TS times: the broadcast's first segment at 1.4 s, nothing between 0 and it.
    assert reaches_start(1400, hints=[0], typical_duration=2000, limits=limits)
    assert reaches_start(895, hints=[895, 0], typical_duration=2000, limits=limits)
    # Far from 0 with no hint naming it: older segments may have expired.
    assert not reaches_start(160_000, hints=[0], typical_duration=2000, limits=limits)


def test_seed_targets_split_the_span_on_the_frame_grid() -> None:
    frame = 1000 / 30
    targets = seed_targets(895, 895 + 600_000, 4, frame)
    assert len(targets) == 3
    for index, target in enumerate(targets, start=1):
        assert abs(target - (895 + 150_000 * index)) <= frame
        frames = (target - 895) / frame
        assert abs(frames - round(frames)) * frame <= 0.5


async def test_find_seed_returns_an_exact_segment_start() -> None:
    starts = make_timeline(400, seed=9)
    server = TimeServer(starts)
    seed = await find_seed(
        server.probe,
        starts[200] + 700,
        typical_duration=2000,
        frame_ticks=1000 / 30,
        limits=SearchLimits(max_in_flight=50),
    )
    assert seed in set(starts)
    assert abs(seed - (starts[200] + 700)) <= 2300
    assert len(server.probes) <= 150


async def test_find_seed_tolerates_a_grid_that_drifted_by_a_tick() -> None:
    # Hours into a broadcast, millisecond times can sit one tick off the frame grid that the
    # search extrapolates from its anchor.
    frame = 1000 / 30
    starts = [t + 1 for t in make_timeline(400, seed=10)]
    server = TimeServer(starts)
    # A target on the undrifted grid, ten frames after segment 300's start.
    target = round((round((starts[300] - 1) / frame) + 10) * frame)
    seed = await find_seed(
        server.probe,
        target,
        typical_duration=2000,
        frame_ticks=1000 / 30,
        limits=SearchLimits(max_in_flight=50),
    )
    assert seed in set(starts)
    assert len(server.probes) <= 600  # an exhaustive search of the window would take ~4000


async def test_chain_asks_the_whole_body_when_the_first_moof_misleads() -> None:
    # Segments of several moofs: the first moof alone says the next segment starts one frame
    # later. The chain must take the whole body's answer, not search.
    starts = make_timeline(40, seed=11)
    server = TimeServer(starts)

    async def first_moof_step(time: int) -> StepResult | None:
        server.steps.append(time)
        if time not in server.present or time not in server.next:
            return None
        whole_end = server.next[time]

        async def verify() -> int | None:
            return whole_end

        return StepResult(time + 33, 1000 / 30, verify=verify)

    gaps: list[TimelineGap] = []
    chain = chain_for(server, starts[-2:], gaps)
    chain.step = first_moof_step
    await chain.run(0)
    assert [t for t in server.steps if t in server.present] == starts[:-2]
    assert server.probes == []
    assert gaps == []


class FlakyTimeServer(TimeServer):
    """A server whose probes of some times fail (unknown) a few times before they answer."""

    def __init__(self, starts: list[int], missing: set[int], flaky: dict[int, int]) -> None:
        super().__init__(starts, missing)
        self.failures_left = dict(flaky)

    async def probe(self, time: int) -> Presence:
        self.probes.append(time)
        if self.failures_left.get(time, 0) > 0:
            self.failures_left[time] -= 1
            return Presence.UNKNOWN
        return Presence.PRESENT if time in self.present else Presence.ABSENT


QUICK_RETRY = SearchLimits(
    max_in_flight=10, chunk_size=100, miss_threshold=30000, unknown_delay=0.0
)


async def test_an_unknown_probe_is_asked_again_never_taken_for_a_miss() -> None:
    # Segments every 2000 ticks; 6000 and 8000 are lost; the probe of 10000 fails twice first.
    starts = list(range(0, 30000, 2000))
    server = FlakyTimeServer(starts, missing={6000, 8000}, flaky={10000: 2})
    gaps: list[TimelineGap] = []
    chain = chain_for(server, [28000], gaps)
    chain.limits = QUICK_RETRY
    await chain.run(0, frame_ticks=1000 / 30)
    # Had the failed probe counted as a miss, the search would have found 12000 next.
    assert gaps == [TimelineGap(6000, 10000)]
    assert server.probes.count(10000) == 3
    assert 10000 in server.steps


async def test_a_probe_that_never_answers_stalls_the_search_loudly() -> None:
    starts = list(range(0, 30000, 2000))
    server = FlakyTimeServer(starts, missing={6000}, flaky={8000: 100})
    chain = chain_for(server, [28000], [])
    chain.limits = SearchLimits(max_in_flight=10, chunk_size=100, unknown_delay=0.0)
    with pytest.raises(SearchStalled):
        await chain.run(0, frame_ticks=1000 / 30)


async def test_number_search_asks_unknown_numbers_again() -> None:
    class FlakyNumbers(NumberServer):
        def __init__(self, present: set[int]) -> None:
            super().__init__(present)
            self.failed: set[int] = set()

        async def probe(self, number: int) -> Presence:
            if number not in self.failed:  # every number fails once
                self.failed.add(number)
                self.probes.append(number)
                return Presence.UNKNOWN
            return await super().probe(number)

    server = FlakyNumbers(set(range(400, 1100)))
    first = await find_first_number(
        server.probe, start_number=0, first_listed=1095, guard=3, limits=QUICK_RETRY
    )
    assert first == 400


async def test_a_stalled_number_probe_is_joined_not_waited_for() -> None:
    # Probes of 160-175 never answer (the bisection's midpoints land there): other probes
    # split the range meanwhile, the boundary is found and reported, the stalled ones stop.
    present = set(range(154, 300))
    stalled = range(160, 176)
    asked: list[int] = []
    never = asyncio.Event()

    async def probe(number: int) -> Presence:
        asked.append(number)
        if number in stalled:
            await never.wait()
        return Presence.PRESENT if number in present else Presence.ABSENT

    reported: list[int] = []
    first = await asyncio.wait_for(
        find_first_number(
            probe,
            start_number=1,
            first_listed=258,
            guard=3,
            limits=SearchLimits(hedge_after=0.01),
            on_found=reported.append,
        ),
        5,
    )
    assert first == 154
    assert any(number in stalled for number in asked)
    assert reported[-1] == 154


async def test_a_stalled_probe_holds_up_only_itself() -> None:
    # The likeliest candidate stalls until a later one is asked: the others go on meanwhile,
    # and once a hit is found no new candidate starts.
    release = asyncio.Event()
    asked: list[int] = []

    async def probe(value: int) -> Presence:
        asked.append(value)
        if value == 50:
            await release.wait()
            return Presence.ABSENT
        if value == 42:
            release.set()  # reached while 50 is still in flight
        return Presence.PRESENT if value in (40, 42) else Presence.ABSENT

    found = await search_times(
        probe, iter([50, 51, 49, 52, 48, 45, 42, 40, 60]), SearchLimits(max_in_flight=2)
    )
    assert found == 42
    assert asked.index(42) > asked.index(50)
    assert 40 not in asked and 60 not in asked


async def test_a_hit_waits_for_nearer_candidates_in_flight() -> None:
    # 42 answers at once, 41 (also present, earlier) slowly: the earliest must be chosen.
    async def probe(value: int) -> Presence:
        if value == 41:
            await asyncio.sleep(0.05)
        return Presence.PRESENT if value in (41, 42) else Presence.ABSENT

    found = await search_times(probe, iter([41, 42, 43]), SearchLimits(max_in_flight=3))
    assert found == 41


async def test_a_hit_stops_the_probes_that_cannot_beat_it() -> None:
    # Searching backward (pick=max): 39 answers first; 38 stalls but could only lose to it.
    stalled = asyncio.Event()

    async def probe(value: int) -> Presence:
        if value == 38:
            await stalled.wait()  # never set: only cancelling ends it
        return Presence.PRESENT if value in (38, 39) else Presence.ABSENT

    found = await asyncio.wait_for(
        search_times(probe, iter([39, 38, 37]), SearchLimits(max_in_flight=3), pick=max), 5
    )
    assert found == 39


def test_miss_threshold_is_milliseconds_of_media_in_every_timescale() -> None:
    limits = SearchLimits(miss_threshold=30000)
    assert limits.in_timescale(1000).miss_threshold == 30000
    assert limits.in_timescale(90000).miss_threshold == 2_700_000
    assert limits.in_timescale(48000).miss_threshold == 1_440_000


@pytest.mark.parametrize(
    ("frames", "milliseconds", "rate"),
    [
        (55, 1833, 30.0),  # 33.327 ms a frame as rounded: a grid 0.6 s off after an hour
        (60, 2002, 30000 / 1001),
        (50, 2000, 25.0),
        (57, 1900, 30.0),
    ],
)
def test_a_rate_rounded_by_a_millisecond_timescale_is_the_standard_one(
    frames: int, milliseconds: int, rate: float
) -> None:
    assert standard_rate(frames * 1000 / milliseconds) == rate


def test_a_rate_far_from_every_standard_one_is_kept() -> None:
    assert standard_rate(48000 / 1024) == 48000 / 1024  # AAC frames at 48 kHz
    assert standard_rate(27.5) == 27.5


async def test_a_slow_step_is_reported_while_it_waits() -> None:
    # What waits on a late segment (the audio sharing a video's times) is looked after while
    # the step sits in its retries, not after them (chaos seed 204).
    starts = make_timeline(10, seed=7)
    server = TimeServer(starts)
    stalled: list[int] = []

    async def step(time: int) -> StepResult | None:
        if time == starts[4]:
            await asyncio.sleep(0.3)
        return await server.step(time)

    async def on_stall(time: int) -> None:
        stalled.append(time)

    chain = replace(
        chain_for(server, [starts[-1]], []), step=step, hedge_after=0.05, on_stall=on_stall
    )
    await chain.run(0)
    assert stalled == [starts[4]]
