"""Past-recovery search strategies, driven by plain functions standing in for the server."""

from __future__ import annotations

import itertools
import math
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from instarec.archive import (
    SearchLimits,
    StepResult,
    TimeChain,
    TimelineGap,
    candidate_times,
    find_first_number,
    find_first_time,
    find_seed,
    seed_targets,
)


class NumberServer:
    def __init__(self, present: set[int]) -> None:
        self.present = present
        self.probes: list[int] = []

    async def probe(self, number: int) -> bool:
        self.probes.append(number)
        return number in self.present


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

    async def probe(self, time: int) -> bool:
        self.probes.append(time)
        return time in self.present


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


async def test_chain_gap_reaching_the_window_ends_at_the_window() -> None:
    starts = make_timeline(20, seed=5)
    server = TimeServer(starts, missing={starts[15], starts[16]})
    gaps: list[TimelineGap] = []
    await chain_for(server, starts[17:], gaps).run(0)
    assert gaps == [TimelineGap(starts[15], starts[17])]


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
    first = await find_first_time(
        server.probe,
        hints=[0],
        first_listed=starts[95],
        typical_duration=2000,
        frame_ticks=1000 / 30,
        limits=SearchLimits(),
    )
    assert first == starts[80]


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
