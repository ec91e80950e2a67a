"""Past recovery: find the segments the manifest no longer lists.

Two addressing families need different strategies:

* ``$Number$``: the past is the numbers below the first listed one. ``find_first_number`` finds the
  oldest number the server still has with a logarithmic number of probes, then guards against a
  gap fooling the search.
* ``$Time$``: durations vary, so past times are unknown. ``TimeChain`` walks the timeline from a
  known segment: segment *i*'s own ``tfdt`` plus its summed sample durations give segment *i+1*'s
  time exactly. It only probes (HEAD) where a segment is missing.

Nothing here downloads a body: the functions are given ``probe`` and ``step`` callables, so the
same code serves the recorder (HTTP) and the unit tests (plain functions).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass

log = logging.getLogger(__name__)

Probe = Callable[[int], Awaitable[bool]]


@dataclass(frozen=True, slots=True)
class SearchLimits:
    """The archive-search knobs of the command line, in one place."""

    max_in_flight: int = 50  # --max-search-requests
    chunk_size: int = 500  # --search-chunk-size
    miss_threshold: int = 30000  # --end-stream-miss-threshold (timeline ticks, ms for Instagram)


async def probe_many(probe: Probe, candidates: Iterable[int], limit: int) -> dict[int, bool]:
    """Probe every candidate with at most ``limit`` requests in flight."""
    semaphore = asyncio.Semaphore(max(1, limit))
    results: dict[int, bool] = {}

    async def one(value: int) -> None:
        async with semaphore:
            results[value] = await probe(value)

    async with asyncio.TaskGroup() as group:
        for value in candidates:
            group.create_task(one(value))
    return results


async def find_first_number(
    probe: Probe,
    *,
    start_number: int,
    first_listed: int,
    guard: int,
    max_in_flight: int = 50,
) -> int | None:
    """Return the oldest segment number the server still serves, or ``None`` if none below.

    ``first_listed`` is the first number of the manifest's window (known to exist). The search
    tries ``start_number`` first (servers that keep everything answer at once), then steps down
    exponentially from the window and bisects the boundary between a miss and a hit. A gap (a
    single lost segment) could masquerade as that boundary, so ``guard`` numbers below it are
    probed too, in parallel: any hit there restarts the search from that hit.
    """
    if first_listed <= start_number:
        return None
    if await probe(start_number):
        return start_number
    floor = start_number  # known absent, and nothing below it can exist
    if start_number == 0 and first_listed > 1:
        # A timeline's startNumber numbers its first listed S; the broadcast itself usually
        # started at 1 (some packagers count from 0, which was just probed).
        if await probe(1):
            return 1
        floor = 1
    hit = first_listed  # known present
    while True:
        miss = floor
        step = 1
        while hit - step > floor:
            if await probe(hit - step):
                hit -= step
                step *= 2
            else:
                miss = hit - step
                break
        while hit - miss > 1:
            middle = (hit + miss) // 2
            if await probe(middle):
                hit = middle
            else:
                miss = middle
        # hit - 1 is absent (or the floor). A lost segment looks the same as the end of
        # retention: look ``guard`` numbers further down before believing it.
        below = range(hit - 2, max(floor + 1, hit - 1 - guard) - 1, -1)
        if not below:
            break
        found = await probe_many(probe, below, max_in_flight)
        hits = [number for number, present in found.items() if present]
        if not hits:
            break
        hit = min(hits)
        log.debug("archive search: segment %d exists below a gap", hit)
    return hit if hit < first_listed else None


def candidate_times(
    expected: int,
    *,
    low: int,
    high: int,
    grid: float | None = None,
) -> Iterator[int]:
    """Yield the integer times in ``[low, high]`` most likely to start the next segment first.

    Segments start on a frame boundary, so with a known frame duration (``grid``, in the same
    ticks) the times a whole number of frames from ``expected`` come first, nearest first; then
    their neighbours one tick away (timestamps rounded to a coarse timescale such as
    milliseconds drift off an exact grid over a long broadcast); then every other time in the
    range, by distance from ``expected``.
    """
    seen: set[int] = set()
    if grid and grid > 0:
        span = max(expected - low, high - expected)
        steps = int(span / grid) + 1
        for widen in (0, 1):
            for k in range(steps + 1):
                for sign in (1, -1) if k else (1,):
                    exact = expected + sign * k * grid
                    below, above = math.floor(exact) - widen, math.ceil(exact) + widen
                    for value in (below, above):
                        if low <= value <= high and value not in seen:
                            seen.add(value)
                            yield value
    for distance in range(0, max(expected - low, high - expected) + 1):
        for value in (expected + distance, expected - distance):
            if low <= value <= high and value not in seen:
                seen.add(value)
                yield value


async def search_times(
    probe: Probe,
    candidates: Iterator[int],
    limits: SearchLimits,
    *,
    pick: Callable[[list[int]], int] = min,
) -> int | None:
    """Probe candidates, most likely first; return a hit from the first wave that has one.

    Candidates are taken in batches of ``chunk_size`` and probed in waves of ``max_in_flight``
    concurrent requests, so a hit near the expected time costs about one wave, not a whole batch.
    ``pick`` chooses among a wave's hits (the earliest time forward, the latest backward).
    """
    wave_size = max(1, min(limits.max_in_flight, limits.chunk_size))
    while True:
        batch = [value for _, value in zip(range(limits.chunk_size), candidates, strict=False)]
        if not batch:
            return None
        for offset in range(0, len(batch), wave_size):
            wave = batch[offset : offset + wave_size]
            found = await probe_many(probe, wave, wave_size)
            hits = [value for value in wave if found[value]]
            if hits:
                return pick(hits)


@dataclass(frozen=True, slots=True)
class StepResult:
    """What one segment's boxes tell about the next one (times in template ticks)."""

    next_time: int
    frame_ticks: float | None = None  # one video frame (or audio frame) in template ticks
    # Other roundings of the next time, tried (HEAD) before a miss at ``next_time`` counts as a
    # gap: media and template timescales rarely divide each other.
    alternatives: tuple[int, ...] = ()
    # When ``next_time`` came from the segment's first moof only: the next time according to
    # the whole body (a segment may hold several moofs), asked for when ``next_time`` misses.
    verify: Callable[[], Awaitable[int | None]] | None = None


@dataclass(frozen=True, slots=True)
class TimelineGap:
    """Template times ``[start, end)`` where no segment could be found (``end`` None: open)."""

    start: int
    end: int | None


Step = Callable[[int], Awaitable["StepResult | None"]]


@dataclass(slots=True)
class TimeChain:
    """Walks a ``$Time$`` timeline forward from a known segment until it meets known ground.

    ``step(t)`` fetches (or reads from disk) the segment at ``t`` and returns where the next one
    starts, or ``None`` on a 404. ``next_known(t)`` gives the smallest time ``>= t`` that the live
    poller already holds: the chain stops there, so past and live meet without duplicate or
    overlap. At a missing segment the chain probes forward for the next start.
    """

    step: Step
    probe: Probe
    next_known: Callable[[int], int | None]
    limits: SearchLimits
    typical_duration: int
    gaps: list[TimelineGap]

    async def run(self, start: int, *, frame_ticks: float | None = None) -> int:
        """Walk from ``start``; return the number of segments stepped through."""
        time = start
        steps = 0
        alternatives: tuple[int, ...] = ()
        verify: Callable[[], Awaitable[int | None]] | None = None
        while True:
            bound = self.next_known(time)
            # A chain may start on a key already known (a seed, a hint fetched earlier).
            own_start = steps == 0 and time == bound
            if bound is not None and time >= bound and not own_start:
                if time > bound:
                    log.warning("chain overshot a known segment (%d > %d)", time, bound)
                return steps
            result = await self.step(time)
            steps += 1
            if result is not None:
                if result.next_time <= time:
                    log.warning("segment at %d does not advance the timeline; chain stops", time)
                    return steps
                time = result.next_time
                alternatives = result.alternatives
                verify = result.verify
                frame_ticks = result.frame_ticks or frame_ticks
                continue
            whole = await verify() if verify is not None else None
            verify = None
            if whole is not None and whole != time:
                log.debug("the whole segment ends at %d, not %d: several moofs", whole, time)
                time = whole
                alternatives = ()
                continue
            rounded = await self._try_alternatives(alternatives, bound)
            alternatives = ()
            if rounded is not None:
                time = rounded
                continue
            found = await self._search_after_gap(time, bound, frame_ticks)
            self.gaps.append(TimelineGap(time, found if found is not None else bound))
            if found is None:
                return steps
            time = found

    async def _try_alternatives(
        self, alternatives: tuple[int, ...], bound: int | None
    ) -> int | None:
        for value in alternatives:
            if bound is not None and value >= bound:
                continue
            if await self.probe(value):
                return value
        return None

    async def _search_after_gap(
        self, missing: int, bound: int | None, frame_ticks: float | None
    ) -> int | None:
        high = missing + self.limits.miss_threshold
        if bound is not None:
            high = min(high, bound - 1)
        if high <= missing:
            return None
        expected = min(missing + _on_grid(self.typical_duration, frame_ticks), high)
        log.info("segment at %d is missing: searching for the next one", missing)
        return await search_times(
            self.probe,
            candidate_times(expected, low=missing + 1, high=high, grid=frame_ticks),
            self.limits,
            pick=min,
        )


async def find_first_time(
    probe: Probe,
    *,
    hints: Iterable[int],
    first_listed: int,
    typical_duration: int,
    frame_ticks: float | None,
    limits: SearchLimits,
    hint_probe: Probe | None = None,
) -> int:
    """Return the oldest segment start still served at or before ``first_listed``.

    Hints (the broadcast's first frame time, 0) are tried first with ``hint_probe`` (by default
    ``probe``; the recorder fetches the segment itself, which the chain needs anyway): when one
    answers, no search is needed. Otherwise walk backward from the window one segment at a
    time, probing the times where the previous segment most likely starts; stop when none
    answers within three typical durations (or the miss threshold).
    """
    hints = list(hints)
    for hint in hints:
        if hint < first_listed and await (hint_probe or probe)(hint):
            return hint
    # Times start at 0, or a little below it where a server names segments by their
    # presentation time (ffmpeg's AAC priming): never search below the lowest hint.
    lowest = min([0, *hints])
    oldest = first_listed
    reach = min(3 * typical_duration, limits.miss_threshold)
    while oldest > lowest:
        low = max(lowest, oldest - reach)
        expected = max(low, oldest - _on_grid(typical_duration, frame_ticks))
        candidates = candidate_times(expected, low=low, high=oldest - 1, grid=frame_ticks)
        if frame_ticks:
            # Starts sit on the frame grid: probing only grid times keeps a miss cheap.
            candidates = _grid_only(candidates, expected, frame_ticks)
        found = await search_times(probe, candidates, limits, pick=max)
        if found is None:
            break
        oldest = found
    return oldest


def _on_grid(duration: int, grid: float | None) -> int:
    """``duration`` rounded to a whole number of frames: segment starts sit on the frame grid."""
    if not grid:
        return duration
    return round(max(1, round(duration / grid)) * grid)


def _grid_only(candidates: Iterator[int], expected: int, grid: float) -> Iterator[int]:
    for value in candidates:
        offset = (value - expected) / grid
        if abs(offset - round(offset)) * grid <= 2.0:
            yield value


def seed_targets(start: int, end: int, chains: int, frame_ticks: float | None) -> list[int]:
    """Times splitting ``[start, end)`` into ``chains`` equal spans, on the frame grid.

    Both ends are known segment starts; each target is put on the grid of the nearer one, since
    timestamps rounded to a coarse timescale drift off a grid extrapolated over hours.
    """
    targets = []
    for index in range(1, chains):
        target = start + (end - start) * index // chains
        if frame_ticks:
            if target - start <= end - target:
                target = start + round(round((target - start) / frame_ticks) * frame_ticks)
            else:
                target = end - round(round((end - target) / frame_ticks) * frame_ticks)
        targets.append(target)
    return targets


async def find_seed(
    probe: Probe,
    target: int,
    *,
    typical_duration: int,
    frame_ticks: float | None,
    limits: SearchLimits,
) -> int | None:
    """A segment start near ``target``: any hit is exact, since only segment starts answer."""
    return await search_times(
        probe,
        candidate_times(
            target,
            low=target - typical_duration,
            high=target + typical_duration,
            grid=frame_ticks,
        ),
        limits,
        pick=min,
    )
