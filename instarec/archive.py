"""Search strategies for segments the manifest no longer lists (pure: ``recovery.py`` runs
them against the server).

Two addressing families need different strategies:

* ``$Number$``: the past is the numbers below the first listed one. ``find_first_number`` finds the
  oldest number the server still has with a logarithmic number of probes, then guards against a
  gap fooling the search.
* ``$Time$``: durations vary, so past times are unknown. ``TimeChain`` walks the timeline from a
  known segment: segment *i*'s own ``tfdt`` plus its summed sample durations give segment *i+1*'s
  time exactly. It only probes (HEAD) where a segment is missing.

Nothing here does I/O: the functions are given ``probe`` and ``step`` callables, so the same
code serves the recorder (HTTP, through ``recovery.py``) and the unit tests (plain functions).

A probe has three outcomes (``Presence``): present, absent, and unknown (the request failed even
after its retries). Unknown is never taken for absent: the searches ask again, with a pause, and
give up with ``SearchStalled`` rather than conclude that a segment does not exist.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import itertools
import logging
import math
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from instarec.errors import NetworkError
from instarec.options import DEFAULTS

log = logging.getLogger(__name__)

_T = TypeVar("_T")


class Presence(enum.Enum):
    """What one probe learned about one candidate segment."""

    PRESENT = "present"
    ABSENT = "absent"  # the server answered that it does not have it (404/410)
    UNKNOWN = "unknown"  # no usable answer, even after the request's own retries


Probe = Callable[[int], Awaitable[Presence]]


class SearchStalled(NetworkError):
    """A candidate stayed unknown after every retry: the search cannot tell where segments are."""


@dataclass(frozen=True, slots=True)
class SearchLimits:
    """The archive-search knobs of the command line, in one place."""

    max_in_flight: int = DEFAULTS.max_search_requests
    chunk_size: int = DEFAULTS.search_chunk_size
    # --end-stream-miss-threshold, in ticks of the timeline searched: the command line gives
    # milliseconds of media, converted per timeline by ``in_timescale``.
    miss_threshold: int = DEFAULTS.end_stream_miss_threshold
    unknown_retries: int = 6  # times an unknown answer is asked again before SearchStalled
    unknown_delay: float = 1.0  # seconds before the first re-ask; doubles, capped at 30 s
    # Seconds a boundary probe may go unanswered before another probe joins it: a HEAD answers
    # in a round trip; longer is a retry's backoff or a stalled answer.
    hedge_after: float = 0.5

    def in_timescale(self, timescale: int) -> SearchLimits:
        """These limits for a timeline of ``timescale`` ticks per second (miss_threshold in ms)."""
        ticks = max(1, self.miss_threshold * timescale // 1000)
        return replace(self, miss_threshold=ticks)


async def ask(probe: Probe, value: int, limits: SearchLimits) -> bool:
    """Whether ``value`` exists; an unknown answer is asked again, never taken for a miss."""
    for attempt in range(limits.unknown_retries + 1):
        answer = await probe(value)
        if answer is not Presence.UNKNOWN:
            return answer is Presence.PRESENT
        if attempt < limits.unknown_retries:
            await asyncio.sleep(min(30.0, limits.unknown_delay * 2**attempt))
    raise SearchStalled(
        f"the server gave no answer about a segment (time or number {value}) after "
        f"{limits.unknown_retries + 1} tries"
    )


async def probe_many(
    probe: Probe, candidates: Iterable[int], limits: SearchLimits
) -> dict[int, bool]:
    """Ask about every candidate with at most ``limits.max_in_flight`` probes in flight."""
    semaphore = asyncio.Semaphore(max(1, limits.max_in_flight))
    results: dict[int, bool] = {}

    async def one(value: int) -> None:
        async with semaphore:
            results[value] = await ask(probe, value, limits)

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
    limits: SearchLimits | None = None,
    on_found: Callable[[int], None] | None = None,
) -> int | None:
    """Return the oldest segment number the server still serves, or ``None`` if none below.

    ``first_listed`` is the first number of the manifest's window (known to exist). The search
    tries ``start_number`` first (servers that keep everything answer at once), then steps
    down exponentially from the window, several steps asked at once (a server deleting its
    oldest segments meanwhile must not win by the round trips), and bisects the boundary
    between a miss and a hit (``NumberBoundary``). A gap (a lost segment or a few) could
    masquerade as the boundary, so ``guard`` numbers below it are probed too, in parallel: any
    hit there restarts the search from that hit. ``on_found`` is told of each lower hit as it
    is found: every number from there up exists, and the caller can start downloading them
    before the search ends.
    """
    limits = limits or SearchLimits()
    report = on_found or (lambda _: None)
    if first_listed <= start_number:
        return None
    # Broadcasts usually number from 1 (some packagers count from 0), whatever startNumber
    # the manifest shows today.
    openers = [start_number, 1] if start_number == 0 and first_listed > 1 else [start_number]
    boundary = NumberBoundary(probe, limits, report, miss=start_number - 1, hit=first_listed)
    hit = await boundary.run(openers)
    # Nothing below an opener that answered absent can exist.
    floor = max((n for n in openers if n in boundary.absent), default=start_number - 1)
    while True:
        # hit - 1 is absent (or the floor). A lost segment looks the same as the end of
        # retention: look ``guard`` numbers further down before believing it.
        below = range(hit - 2, max(floor + 1, hit - 1 - guard) - 1, -1)
        if not below:
            break
        found = await probe_many(probe, below, limits)
        hits = [number for number, present in found.items() if present]
        if not hits:
            break
        report(min(hits))
        log.debug("archive search: segment %d exists below a gap", min(hits))
        boundary = NumberBoundary(probe, limits, report, miss=floor, hit=min(hits))
        hit = await boundary.run([])
    return hit if hit < first_listed else None


class NumberBoundary:
    """Finds the lowest present number between ``miss`` (absent) and ``hit`` (present).

    A gallop of quadruplings down from ``hit`` (``_GALLOP_WIDTH`` asked at once) until one misses,
    then bisection. Nothing waits for a round: each answer narrows the range at once, probes
    the range no longer holds are stopped, and a probe unanswered ``hedge_after`` seconds (a
    503's Retry-After, a stalled answer) is joined by one more probe splitting what is left,
    so a slow answer holds up only itself while the server deletes its oldest segments.
    """

    def __init__(
        self,
        probe: Probe,
        limits: SearchLimits,
        report: Callable[[int], None],
        *,
        miss: int,
        hit: int,
    ) -> None:
        self._probe = probe
        self._limits = limits
        self._report = report
        self.miss, self.hit = miss, hit
        self.absent: set[int] = set()
        self._running: dict[asyncio.Task[bool], tuple[int, float]] = {}
        self._gallop = hit  # the gallop asks hit - 4**k, k = 0, 1, ...
        self._exponent = 0
        self._galloping = True
        self._gallop_asked: set[int] = set()

    async def run(self, openers: list[int]) -> int:
        """Ask ``openers`` one at a time first, then gallop and bisect; the lowest hit."""
        loop = asyncio.get_running_loop()
        pending = list(openers)
        try:
            while self.hit - self.miss > 1:
                now = loop.time()
                late = sum(
                    1 for _, started in self._running.values() if now - started > self._hedge
                )
                width = 1 if pending or not self._galloping else _GALLOP_WIDTH
                while len(self._running) < min(width + late, self._limits.max_in_flight):
                    value = self._next_candidate(pending)
                    if value is None:
                        break
                    self._start(value, now)
                if not self._running:
                    break
                await self._settle(now)
        finally:
            for task in self._running:
                task.cancel()
            if self._running:
                await asyncio.wait(self._running)
        return self.hit

    @property
    def _hedge(self) -> float:
        return self._limits.hedge_after

    def _start(self, value: int, now: float) -> None:
        task = asyncio.ensure_future(ask(self._probe, value, self._limits))
        self._running[task] = (value, now)

    def _next_candidate(self, pending: list[int]) -> int | None:
        asked = {value for value, _ in self._running.values()}
        while pending:
            value = pending.pop(0)
            if self.miss < value < self.hit and value not in asked:
                return value
        while self._galloping:
            value = self._gallop - (1 << (2 * self._exponent))
            if value <= self.miss:
                self._galloping = False
                break
            self._exponent += 1
            if value < self.hit and value not in asked:
                self._gallop_asked.add(value)
                return value
        # The midpoint of the widest stretch no probe covers yet.
        marks = sorted({self.miss, self.hit, *(v for v in asked if self.miss < v < self.hit)})
        low, high = max(itertools.pairwise(marks), key=lambda pair: pair[1] - pair[0])
        return (low + high) // 2 if high - low > 1 else None

    async def _settle(self, now: float) -> None:
        """Wait for an answer (or for the next probe to become late) and narrow the range."""
        on_time = [started for _, started in self._running.values() if now - started <= self._hedge]
        timeout = min(on_time) + self._hedge - now if on_time else None
        done, _ = await asyncio.wait(
            self._running, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        # Newest first, as asked: answers that come together are taken in one order whatever
        # the tasks' hashes (a run is then reproducible, and each hit is reported).
        for task in sorted(done, key=lambda t: self._running[t][0], reverse=True):
            value, _ = self._running.pop(task)
            if task.result():
                if value < self.hit:
                    self.hit = value
                    self._report(value)
            else:
                self.absent.add(value)
                if self.miss < value < self.hit:
                    self.miss = value
                if value in self._gallop_asked:
                    self._galloping = False  # the boundary is above: bisect from here
        for task, (value, _) in list(self._running.items()):
            if not self.miss < value < self.hit:
                task.cancel()
                del self._running[task]
                await asyncio.wait([task])


# Steps of the gallop asked at once, each four times further down than the one before: a round
# trip (or one slow answer) per factor of 64. Quadrupling rather than doubling costs one more
# bisection step but half the gallop's probes (the gallop always overshoots the boundary).
_GALLOP_WIDTH = 3


def candidate_times(
    expected: int,
    *,
    low: int,
    high: int,
    grid: float | None = None,
    every_tick: bool = True,
) -> Iterator[int]:
    """Yield the integer times in ``[low, high]`` most likely to start the next segment first.

    Segments start on a frame boundary, so with a known frame duration (``grid``, in the same
    ticks) the times a whole number of frames from ``expected`` come first, nearest first; then
    their neighbours one tick away (timestamps rounded to a coarse timescale such as
    milliseconds drift off an exact grid over a long broadcast); then every other time in the
    range, by distance from ``expected`` (unless ``every_tick`` is false and a grid is known).
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
        if not every_tick:
            return
    for distance in range(0, max(expected - low, high - expected) + 1):
        for value in (expected + distance, expected - distance):
            if low <= value <= high and value not in seen:
                seen.add(value)
                yield value


def _stop_unpreferred(
    running: dict[asyncio.Task[bool], int],
    stopped: list[asyncio.Task[bool]],
    pick: Callable[[list[int]], int],
    best: int,
) -> None:
    """Stop the probes whose hit ``pick`` would not prefer to ``best``: they cannot change the
    answer, so their retries are not waited out."""
    for task, value in list(running.items()):
        if pick([best, value]) == best:
            task.cancel()
            stopped.append(task)
            del running[task]


def _start_probes(
    probe: Probe,
    candidates: Iterator[int],
    limits: SearchLimits,
    running: dict[asyncio.Task[bool], int],
    width: int,
) -> bool:
    """Start probes of the next candidates until ``width`` run; True when none is left."""
    while len(running) < width:
        value = next(candidates, None)
        if value is None:
            return True
        running[asyncio.ensure_future(ask(probe, value, limits))] = value
    return False


async def search_times(
    probe: Probe,
    candidates: Iterator[int],
    limits: SearchLimits,
    *,
    pick: Callable[[list[int]], int] = min,
    first_hit: bool = False,
    patience: float | None = None,
) -> int | None:
    """Probe candidates, most likely first; return ``pick`` of the hits once a hit is found.

    With ``first_hit`` the first segment found is the answer (``pick`` of the hits that
    answered at once) and the other probes stop: for a caller to whom any segment start in the
    range will do.

    Up to ``max_in_flight`` probes (at most ``chunk_size``) are in flight at once, and a new
    candidate starts as soon as any probe answers, so one stalled request holds up only itself.
    Once a hit is found no new candidate starts, but every probe already started that could
    give a hit ``pick`` prefers is waited for (asked again while its answer is unknown): a
    nearer segment among them must not be passed over; the others are stopped. ``pick``
    chooses among those hits (the earliest time forward, the latest backward).

    With ``patience``, the probes still unanswered ``patience`` seconds after every candidate
    was asked are stopped: under faults a search finding nothing lasts as long as its slowest
    probe, while a server deleting its past goes on. Only where a miss decides nothing for good.
    """
    width = max(1, min(limits.max_in_flight, limits.chunk_size))
    hits: list[int] = []
    running: dict[asyncio.Task[bool], int] = {}
    stopped: list[asyncio.Task[bool]] = []
    exhausted = False
    loop = asyncio.get_running_loop()
    deadline: float | None = None
    try:
        while True:
            if not hits and not exhausted:
                exhausted = _start_probes(probe, candidates, limits, running, width)
            if not running:
                return pick(hits) if hits else None
            if patience is not None and exhausted and deadline is None:
                deadline = loop.time() + patience
            timeout = None if deadline is None else max(0.0, deadline - loop.time())
            done, _ = await asyncio.wait(
                running, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if not done:  # out of patience: the stragglers are stopped below
                return pick(hits) if hits else None
            for task in done:
                value = running.pop(task)
                if task.result():
                    hits.append(value)
            if hits and first_hit:
                return pick(hits)  # of those that answered at once
            if hits:
                _stop_unpreferred(running, stopped, pick, pick(hits))
    finally:
        for task in running:
            task.cancel()
        if running or stopped:
            await asyncio.wait([*running, *stopped])


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


# Seconds a chain step may take before the chain also walks on from further ahead: a segment
# answers in a round trip or two; longer is a stalled answer or a retry's backoff.
HEDGE_AFTER = 1.0


@dataclass(slots=True)
class TimeChain:
    """Walks a ``$Time$`` timeline forward from a known segment until it meets known ground.

    ``step(t)`` fetches (or reads from disk) the segment at ``t`` and returns where the next one
    starts, or ``None`` on a 404. ``next_known(t)`` gives the smallest time ``>= t`` that the live
    poller already holds: the chain stops there, so past and live meet without duplicate or
    overlap. At a missing segment the chain probes forward for the next start.

    A step that takes longer than ``hedge_after`` seconds (a stalled answer, a retry's backoff)
    holds up every segment after it, while a server deleting its past may take them: the
    chain then looks for a segment start a little further on (``_hedge``) and walks from
    there too, up to known ground; the stalled chain stops where that one started.
    """

    step: Step
    probe: Probe
    next_known: Callable[[int], int | None]
    limits: SearchLimits
    typical_duration: int
    gaps: list[TimelineGap]
    hedge_after: float | None = HEDGE_AFTER
    # One frame's length as the caller knows it (from other segments of the track), read
    # whenever the chain has none of its own yet: a search past a miss without a frame grid
    # probes every tick up to known ground, tens of thousands of requests for a hole of a few
    # seconds.
    known_frame: Callable[[], float | None] = lambda: None
    # Where the timeline ends (a Period's end, where the next Period begins): the chain stops
    # there as at known ground. None: it ends where the segments do.
    end: int | None = None
    # Called with a step's time when the step is slower than ``hedge_after``: what waits on
    # that segment may be looked after meanwhile.
    on_stall: Callable[[int], Coroutine[Any, Any, None]] | None = None

    async def run(self, start: int, *, frame_ticks: float | None = None) -> int:
        """Walk from ``start``; return the number of segments stepped through."""
        try:
            async with asyncio.TaskGroup() as hedges:
                return await self._walk(start, frame_ticks, hedges)
        except BaseExceptionGroup as failure:
            # Callers handle a chain's own errors (SearchStalled, NetworkError), not a group.
            if len(failure.exceptions) == 1:
                raise failure.exceptions[0] from None
            raise

    async def _walk(self, start: int, frame_ticks: float | None, hedges: asyncio.TaskGroup) -> int:
        time = start
        steps = 0
        alternatives: tuple[int, ...] = ()
        verify: Callable[[], Awaitable[int | None]] | None = None
        while True:
            frame_ticks = frame_ticks or self.known_frame()
            known = self.next_known(time)
            bound = (
                known if self.end is None or (known is not None and known < self.end) else self.end
            )
            # A chain may start on a key already known (a seed, a hint fetched earlier).
            own_start = steps == 0 and time == known
            if bound is not None and time >= bound and not own_start:
                if time > bound and bound == known:
                    log.warning("chain overshot a known segment (%d > %d)", time, bound)
                return steps
            result = await self._step_or_hedge(time, bound, frame_ticks, hedges)
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
            if found is None or found - time > _near_span(frame_ticks):
                self.gaps.append(TimelineGap(time, found if found is not None else bound))
            # else the next segment only sits a tick or two from where its time was computed
            if found is None:
                return steps
            time = found

    async def _step_or_hedge(
        self,
        time: int,
        bound: int | None,
        frame_ticks: float | None,
        hedges: asyncio.TaskGroup,
    ) -> StepResult | None:
        stepping = asyncio.ensure_future(self.step(time))
        try:
            if self.hedge_after is not None and (frame_ticks or self.on_stall is not None):
                done, _ = await asyncio.wait({stepping}, timeout=self.hedge_after)
                if not done and frame_ticks:
                    hedges.create_task(self._hedge(time, bound, frame_ticks))
                if not done and self.on_stall is not None:
                    hedges.create_task(self.on_stall(time))
            return await stepping
        finally:
            if not stepping.done():
                stepping.cancel()

    async def _hedge(self, stalled: int, bound: int | None, frame_ticks: float) -> None:
        """Walk on from the first segment start found past ``stalled``, while it waits."""
        high = stalled + 2 * self.typical_duration
        if bound is not None:
            high = min(high, bound - 1)
        if high <= stalled:
            return
        expected = min(high, stalled + _on_grid(self.typical_duration, frame_ticks))
        candidates = _walk_candidates(expected, stalled + 1, high, frame_ticks)
        seed = await search_times(self.probe, candidates, self.limits, first_hit=True)
        known = self.next_known(stalled + 1)
        if seed is None or (known is not None and known <= seed):
            return  # nothing there, or the ground up to it is known already
        log.debug("a step at %d is slow: a chain also walks from %d", stalled, seed)
        await self.run(seed, frame_ticks=frame_ticks)

    async def _try_alternatives(
        self, alternatives: tuple[int, ...], bound: int | None
    ) -> int | None:
        for value in alternatives:
            if bound is not None and value >= bound:
                continue
            if await ask(self.probe, value, self.limits):
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
        # First the few times around the miss, on their own: a time computed a tick or a frame
        # off (a packager's odd last sample, a first segment named unlike the rest) must find
        # the very next segment, not the one a typical duration later.
        near_span = _near_span(frame_ticks)
        near = [
            value
            for value in _near_times(missing, frame_ticks)
            if 0 <= value <= min(high, missing + near_span) and (bound is None or value < bound)
        ]
        limits = replace(self.limits, max_in_flight=max(1, len(near)))
        found = await search_times(self.probe, iter(near), limits, pick=min)
        if found is not None:
            return found
        # With a frame grid, segment starts sit on it (a tick either side for a coarse
        # timescale): probing every tick of a long range finds nothing more, at thousands of
        # requests where the segments after a miss have left the server.
        rest = (
            value
            for value in candidate_times(
                expected, low=missing + 1, high=high, grid=frame_ticks, every_tick=False
            )
            if value not in near
        )
        return await search_times(self.probe, rest, self.limits, pick=min)


_NEAR_FRAMES = 2  # how far past a miss (in frames) a next segment means a misnamed time


def _near_times(missing: int, frame_ticks: float | None) -> list[int]:
    """The likeliest starts of a segment whose computed time ``missing`` was not found."""
    next_frame = missing + (frame_ticks or 3.0)
    ordered = [missing - 1, missing + 1, missing - 2, missing + 2]
    return list(dict.fromkeys([*ordered, math.floor(next_frame), math.ceil(next_frame)]))


def _near_span(frame_ticks: float | None) -> int:
    """Ticks after a miss where the next segment means a misnamed time, not a lost segment."""
    return math.ceil(_NEAR_FRAMES * (frame_ticks or 1.0)) + 1


async def find_first_time(
    probe: Probe,
    *,
    hints: Iterable[int],
    first_listed: int,
    typical_duration: int,
    frame_ticks: float | None,
    limits: SearchLimits,
    hint_probe: Probe | None = None,
    on_found: Callable[[int], None] | None = None,
    peer_oldest: PeerOldest | None = None,
) -> int:
    """Return the oldest segment start still served at or before ``first_listed``.

    Hints (the broadcast's first frame time, 0) are tried first with ``hint_probe`` (by default
    ``probe``; the recorder fetches the segment itself, which the chain needs anyway): when one
    answers, no search is needed. Otherwise walk backward from the window one segment at a
    time, probing the times where the previous segment most likely starts; stop when none
    answers within the miss threshold. Beside the walk, and again past each hole it crosses,
    the search leaps back (``_Leaps``): a server deleting its past at one segment per segment
    length must not outrun a walk of one round trip or two per segment. The walk goes on
    from the oldest start either has found, as soon as it is found. ``on_found`` is told of
    every older segment start, as it is found (oldest so far, newest first); ``peer_oldest``
    tells where another track's walk has got to, and a step tries there first (``PeerLead``).
    """
    hints = list(hints)
    oldest = _Oldest(first_listed, on_found or (lambda _: None))
    probes = _SharedProbes(probe, oldest.record)
    for hint in hints:
        if hint < first_listed:
            if await ask(hint_probe or probe, hint, limits):
                return hint
            probes.answered(hint, Presence.ABSENT)
    # Times start at 0, or a little below it where a server names segments by their
    # presentation time (ffmpeg's AAC priming): never search below the lowest hint.
    below = _Below(min([0, *hints]), typical_duration, frame_ticks, limits, peer_oldest)
    try:
        return await _BackwardSearch(probes.probe, oldest, below).run()
    finally:
        await probes.close()


async def _walk_step(
    back: _SearchBack, low: int, typical: int, near: SearchLimits, limits: SearchLimits
) -> int | None:
    """One step of the backward walk: an older segment start down to ``low``, if any.

    Any older segment will do, not only the one just before: the chain forward from the oldest
    reads every start in between from the media. So the first hit ends a step, and a stalled
    probe holds up nothing. The likeliest times around one usual length back come first, a
    few at a time (a miss there only steers); then the whole reach, whose miss is the walk's
    last word. The near search waits for none of its last answers: the probes are shared, so
    the whole reach's search takes over those still running and goes on past them. Near the
    edge of retention a step whose segment sits in a retry's backoff (a 429's Retry-After)
    takes the one below instead of waiting, while the server deletes one segment per segment
    length.
    """
    expected, near_low, near_high = _one_back(back.oldest, low, typical, back.grid)
    found = await back.search(
        expected, near_low, near_high, near, patience=0.0, first=_WALK_NEAR_PROBES
    )
    if found is None:
        found = await back.search(expected, low, back.oldest - 1, limits)
    return found


@dataclass(frozen=True, slots=True)
class _Below:
    """What one backward search knows of the timeline below the window."""

    lowest: int  # no segment starts below this time
    typical: int  # a usual segment length
    grid: float | None  # one frame: segment starts sit on this grid
    limits: SearchLimits
    peer_oldest: PeerOldest | None


class _Oldest:
    """The oldest segment start one backward search has found so far, shared by its walk, its
    leaps and the answers that come in after their search stopped waiting for them."""

    def __init__(self, start: int, report: Callable[[int], None]) -> None:
        self.value = start
        self._report = report
        self._moved = asyncio.Event()

    def record(self, found: int) -> bool:
        """Take ``found`` if it is older; the caller hears of it at once (its chain starts)."""
        if found >= self.value:
            return False
        self.value = found
        self._report(found)
        self._moved.set()
        self._moved = asyncio.Event()
        return True

    async def unless_moved(self, work: Awaitable[_T]) -> tuple[bool, _T | None]:
        """Run ``work`` until it ends, or until an older start is found (it is then stopped:
        whatever it was searching lies above ground known now). (ended, its result)."""
        task = asyncio.ensure_future(work)
        moved = asyncio.ensure_future(self._moved.wait())
        try:
            await asyncio.wait({task, moved}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            moved.cancel()
            task.cancel()  # a no-op when it ended
            await asyncio.wait({task, moved})
        if task.cancelled():
            return False, None
        return True, task.result()


class _SharedProbes:
    """The probes of one backward search, shared by its walk and its leaps.

    A time is asked once at a time: a search asking for a time already in flight waits for
    that answer. A search that stops waiting (out of patience, or beaten by another hit)
    leaves its probes running: under faults the one segment start a search was looking for
    often sits in a retry's backoff (a 429's Retry-After outlasts the patience), and
    ``on_present`` hears of it whenever it answers, not a search later. Below the window an
    absent time stays absent (no segment start, or its segment has left the server for good):
    the walk's and the leaps' searches cover overlapping ranges, and a time asked once costs
    one request, not one per search. A present one is taken as soon as it answers: asked
    again, it would only tell what is known.
    """

    def __init__(self, probe: Probe, on_present: Callable[[int], object]) -> None:
        self._probe = probe
        self._on_present = on_present
        self._answers: dict[int, Presence] = {}
        self._running: dict[int, asyncio.Future[Presence]] = {}

    def answered(self, value: int, answer: Presence) -> None:
        """What the server said of ``value`` when asked another way (a start hint)."""
        self._answers[value] = answer

    async def probe(self, value: int) -> Presence:
        known = self._answers.get(value)
        if known is not None:
            return known
        running = self._running.get(value)
        if running is None:
            running = asyncio.ensure_future(self._probe(value))
            self._running[value] = running
            running.add_done_callback(functools.partial(self._settled, value))
        return await asyncio.shield(running)

    def _settled(self, value: int, running: asyncio.Future[Presence]) -> None:
        del self._running[value]
        if running.cancelled() or running.exception() is not None:
            return  # a waiting search sees the failure; nobody else needs it
        answer = running.result()
        if answer is not Presence.UNKNOWN:
            self._answers[value] = answer  # an unknown one is asked again
        if answer is Presence.PRESENT:
            self._on_present(value)

    async def close(self) -> None:
        """Stop the probes still running: the search is over."""
        running = list(self._running.values())
        for future in running:
            future.cancel()
        if running:
            await asyncio.wait(running)


class _BackwardSearch:
    """The walk back from the window, one segment at a time, with leaps running beside it.

    Each step searches below the oldest start known. When a leap (or a late answer) finds an
    older one, the step in progress stops and the walk goes on from there: the segments the
    server deletes first are the oldest, so the walk must be where they are, not finishing a
    search a leap has made pointless. A step that finds nothing within reach ends the walk,
    once the leaps still running have nothing older either.
    """

    def __init__(self, probe: Probe, oldest: _Oldest, below: _Below) -> None:
        self._probe = probe
        self._oldest = oldest
        self._below = below
        self._lead = PeerLead(below.peer_oldest, below.grid)
        self._leaps: asyncio.Task[int | None] | None = None

    async def run(self) -> int:
        try:
            self._leap()
            while self._oldest.value > self._below.lowest:
                start = self._oldest.value
                self._leap_past_their_miss()
                if not await self._step(start) and not await self._leaps_go_older(start):
                    break
            return self._oldest.value
        finally:
            await self._stop_leaps()

    async def _step(self, start: int) -> bool:
        """One step down from ``start``; False when nothing lies within reach below it."""
        below = self._below
        back = _SearchBack(self._probe, self._lead, below.grid, start, below.lowest)
        low = max(below.lowest, start - _backward_reach(below.typical, below.limits))
        # A few probes at a time near one usual length back keep a step to a round trip or two.
        near = replace(
            below.limits, max_in_flight=min(below.limits.max_in_flight, _WALK_NEAR_WIDTH)
        )
        ended, found = await self._oldest.unless_moved(
            _walk_step(back, low, below.typical, near, below.limits)
        )
        if not ended:
            return True  # an older start was found meanwhile: the walk goes on from there
        self._lead.judge(found)
        if found is None:
            return False
        self._oldest.record(found)
        if start - found > 2 * below.typical:
            # Across a hole, or to where the other track's walk got: leap on from there.
            self._leap()
        return True

    async def _leaps_go_older(self, start: int) -> bool:
        """Whether the leaps still running find a start older than ``start``."""
        while self._leaps is not None and not self._leaps.done():
            ended, _ = await self._oldest.unless_moved(asyncio.shield(self._leaps))
            if not ended:
                break
        return self._oldest.value < start

    def _leap_past_their_miss(self) -> None:
        """Leaps that ended at a miss the walk has got below leap on from there: the miss was
        a hole, or a search that gave up on the one answer held in a retry's backoff, and
        the retention edge may still lie far below."""
        leaps = self._leaps
        if leaps is None or not leaps.done() or leaps.cancelled():
            return
        miss = leaps.result()
        if miss is not None and self._oldest.value < miss:
            self._leap()

    def _leap(self) -> None:
        """Start leaping back from the oldest start, unless the leaps still run (they go on
        from the oldest start there is, whoever found it). Only on a known frame grid: without
        it each leap's search would probe every tick."""
        if not self._below.grid:
            return
        if self._leaps is not None:
            if not self._leaps.done():
                return
            self._leaps.result()  # a failure of the last leaps is the search's
        self._leaps = asyncio.ensure_future(_Leaps(self._probe, self._oldest, self._below).run())

    async def _stop_leaps(self) -> None:
        leaps = self._leaps
        if leaps is None:
            return
        leaps.cancel()
        await asyncio.wait({leaps})
        if not leaps.cancelled() and (failure := leaps.exception()) is not None:
            raise failure


class _Leaps:
    """Leaps back from the oldest start known, several at once, beside the walk.

    Leaps of 2, 4, 8, ... segment lengths, ``_LEAP_WIDTH`` searched at once, while a segment
    start lies within a segment length of where they land; then ``_LEAP_WIDTH`` points at once
    split the span between the oldest start and the nearest miss below it, down to a few
    segment lengths: about log2(N)/4 + log5(N) rounds instead of N steps. A miss is expired
    ground, the time before the broadcast, or a hole; only one below the oldest start known
    bounds the leaps (the walk crosses holes). Every find is taken at once, so the walk goes
    on from it while the round's other searches run; a search that another's find has made
    pointless stops.
    """

    def __init__(self, probe: Probe, oldest: _Oldest, below: _Below) -> None:
        self._probe = probe
        self._oldest = oldest
        self._below = below
        self._lead = PeerLead(below.peer_oldest, below.grid)

    async def run(self) -> int | None:
        """Leap until the span left is a few segment lengths; the miss below it, if any."""
        miss = await self._gallop()
        while miss is not None:
            if miss >= self._oldest.value:
                # The walk or a late answer got below the miss (a hole, or a hit that
                # answered after its search gave up): leap on from there.
                miss = await self._gallop()
                continue
            nearer = await self._split(miss)
            if nearer is None:
                return miss
            miss = nearer
        return None

    async def _gallop(self) -> int | None:
        """Leap back farther and farther; the nearest miss below the oldest start, if any."""
        below = self._below
        floor = below.lowest + below.typical
        distance = 2 * below.typical
        while True:
            base = self._oldest.value
            # Each leap from where the one before landed, as one leap at a time would go.
            offsets = list(itertools.accumulate(distance * 2**k for k in range(_LEAP_WIDTH)))
            distance *= 2**_LEAP_WIDTH
            targets = self._targets(base, [max(floor, base - offset) for offset in offsets])
            if not targets:
                return None
            misses = await self._round(base, targets)
            if misses:
                return max(misses)
            if base - offsets[-1] <= floor:
                return None  # the lowest time a segment can start at was reached

    async def _split(self, miss: int) -> int | None:
        """Search points splitting the span from the oldest start down to ``miss``; the
        nearest miss below the oldest start then, None when the span is down to a few
        segment lengths (the walk's steps do the rest)."""
        base = self._oldest.value
        span = base - miss
        if span <= 3 * self._below.typical:
            return None
        parts = _LEAP_WIDTH + 1
        targets = self._targets(base, [base - span * i // parts for i in range(1, parts)])
        if not targets:
            return None
        return max([miss, *await self._round(base, targets)])

    def _targets(self, base: int, targets: list[int]) -> list[int]:
        """``targets`` more than a segment length below ``base``, on its frame grid (a grid
        extrapolated over hours drifts), each once."""
        below = self._below
        placed = [
            base - _on_grid(base - target, below.grid)
            for target in targets
            if target < base - below.typical
        ]
        return list(dict.fromkeys(placed))

    async def _round(self, base: int, targets: list[int]) -> list[int]:
        """Search around every target at once; the targets that found nothing, below the
        oldest start known by then (a miss above it is a hole, not a bound)."""
        # The round's searches share the probes in flight one search alone would have.
        limits = replace(
            self._below.limits,
            max_in_flight=max(1, self._below.limits.max_in_flight // len(targets)),
        )
        searches = {
            asyncio.ensure_future(self._search(base, target, limits)): target for target in targets
        }
        found: dict[int, int | None] = {}
        try:
            while searches:
                done, _ = await asyncio.wait(searches, return_when=asyncio.FIRST_COMPLETED)
                for search in done:
                    found[searches.pop(search)] = search.result()
                self._drop_pointless(searches)
        finally:
            for search in searches:
                search.cancel()
            if searches:
                await asyncio.wait(searches)
        hits = [value for value in found.values() if value is not None]
        self._lead.judge(min(hits, default=None))
        return [
            target
            for target, value in found.items()
            if value is None and target < self._oldest.value
        ]

    def _drop_pointless(self, searches: dict[asyncio.Task[int | None], int]) -> None:
        """Stop the searches that can only find starts newer than the oldest one known."""
        for search, target in list(searches.items()):
            if target - self._below.typical >= self._oldest.value:
                search.cancel()
                del searches[search]

    async def _search(self, base: int, target: int, limits: SearchLimits) -> int | None:
        """A leap's search within a segment length of ``target``; its miss only steers."""
        below = self._below
        back = _SearchBack(self._probe, self._lead, below.grid, base, below.lowest)
        low, high = max(below.lowest, target - below.typical), min(base - 1, target + below.typical)
        found = await back.search(target, low, high, limits, patience=HEDGE_AFTER, grid_points=True)
        if found is not None:
            self._oldest.record(found)
        return found


# Leaps searched at once: a round (its misses wait out their patience) per four doublings.
_LEAP_WIDTH = 4


def _one_back(oldest: int, low: int, typical: int, grid: float | None) -> tuple[int, int, int]:
    """Where the segment before ``oldest`` most likely starts: (expected, low, high)."""
    expected = max(low, oldest - _on_grid(typical, grid))
    half = max(1, typical // 2)
    return expected, max(low, expected - half), min(oldest - 1, expected + half)


@dataclass(frozen=True, slots=True)
class _SearchBack:
    """One search for a segment start below ``oldest``, the peer's lead first."""

    probe: Probe
    lead: PeerLead
    grid: float | None
    oldest: int
    lowest: int

    async def search(
        self,
        expected: int,
        low: int,
        high: int,
        limits: SearchLimits,
        *,
        patience: float | None = None,
        first: int | None = None,
        grid_points: bool = False,
    ) -> int | None:
        """The first start found in ``[low, high]``, nearest ``expected`` first (``patience``:
        see ``search_times``; only where a miss is not the walk's last word). Only the
        ``first`` likeliest times, or (``grid_points``) only the times a whole number of
        frames from ``oldest``: a leap's search that misses costs several hundred requests
        otherwise, and only steers."""
        if grid_points and self.grid:
            candidates = _grid_points(self.oldest, expected, low, high, self.grid)
        else:
            candidates = _walk_candidates(expected, low, high, self.grid)
        if first is not None:
            candidates = itertools.islice(candidates, first)
        led = self.lead.first(candidates, self.oldest, self.lowest)
        return await search_times(self.probe, led, limits, first_hit=True, patience=patience)


PeerOldest = Callable[[], float | None]
"""The oldest segment start another track's backward walk has found, in this track's ticks."""

_PEER_MISSES = 3  # steps in a row a peer's lead gave no hit before it is no longer followed


class PeerLead:
    """Where another track's walk has got to, as the likeliest start of this track's segments.

    Packagers cut the audio at the video's segment edges (at the nearest audio frame), so the
    segment starts of one track are, within a frame, those of the other. When one track's walk
    is ahead (the other's frames are shorter, so its steps cost more probes, or it met a hole
    later), the other tries the grid points next to the leader's oldest start before its own
    candidates and, on a hit, jumps there: a few probes instead of a search per step, and the
    two tracks keep pace with a server deleting its oldest segments. Any older start will
    do, since the chain forward reads every start in between from the media. A lead that
    keeps missing (tracks cut independently) is no longer followed.
    """

    def __init__(self, peer_oldest: PeerOldest | None, grid: float | None) -> None:
        self._peer_oldest = peer_oldest
        self._grid = grid
        self._followed: float | None = None
        self._tried: set[int] = set()
        self._misses = 0

    def first(self, candidates: Iterator[int], oldest: int, lowest: int) -> Iterator[int]:
        """``candidates``, led by the times next to the peer's oldest start whenever it moves."""
        seen: set[int] = set()
        for value in candidates:
            for lead in self._times(oldest, lowest):
                if lead not in seen:
                    seen.add(lead)
                    yield lead
            if value not in seen:
                seen.add(value)
                yield value

    def judge(self, found: int | None) -> None:
        """Count a step whose lead gave no hit; stop following a lead that keeps missing."""
        if self._tried:
            self._misses = 0 if found in self._tried else self._misses + 1
        self._tried = set()

    def _times(self, oldest: int, lowest: int) -> list[int]:
        if self._peer_oldest is None or self._misses >= _PEER_MISSES:
            return []
        peer = self._peer_oldest()
        if peer is None or peer == self._followed or peer >= oldest - 0.5 * (self._grid or 1):
            return []
        self._followed = peer
        if self._grid:
            # On this track's own grid, counted from its oldest start: the nearest frame edge,
            # then one frame either side (the peer's edge rounded the other way).
            exact = oldest - round((oldest - peer) / self._grid) * self._grid
            points = [exact, exact - self._grid, exact + self._grid]
        else:
            points = [peer, peer - 1, peer + 1]
        times: list[int] = []
        for point in points:
            for value in (round(point), math.floor(point), math.ceil(point)):
                if lowest <= value < oldest and value not in times:
                    times.append(value)
        self._tried.update(times)
        return times


def reaches_start(
    oldest: int, *, hints: Iterable[int], typical_duration: int, limits: SearchLimits
) -> bool:
    """Whether ``oldest``, found by ``find_first_time``, is the broadcast's first segment.

    It is when a hint named it, or when the search below it reached the lowest time a
    broadcast can start at (a timeline starting a little after 0, as MPEG-TS times do).
    """
    hints = list(hints)
    if oldest in hints:
        return True
    return oldest - _backward_reach(typical_duration, limits) <= min([0, *hints])


def _backward_reach(typical_duration: int, limits: SearchLimits) -> int:
    """How far below a found segment ``find_first_time`` looks for an older one.

    The miss threshold, at least two segments: a hole of a few segments in the past must not
    pass for the start of the broadcast.
    """
    return max(2 * typical_duration, limits.miss_threshold)


_WALK_NEAR_WIDTH = 8
# The likeliest times a step asks a few at a time (about eight frames either side of one
# usual length back) before the whole reach: in a hole, a few rounds, not a few hundred probes.
_WALK_NEAR_PROBES = 4 * _WALK_NEAR_WIDTH


def _walk_candidates(expected: int, low: int, high: int, grid: float | None) -> Iterator[int]:
    candidates = candidate_times(expected, low=low, high=high, grid=grid)
    if grid:
        # Starts sit on the frame grid: probing only grid times keeps a miss cheap.
        return _grid_only(candidates, expected, grid)
    return candidates


def _grid_points(anchor: int, expected: int, low: int, high: int, grid: float) -> Iterator[int]:
    """The times in ``[low, high]`` a whole number of frames from ``anchor`` (a segment start),
    rounded down and up, nearest ``expected`` first: a start rounded to whole ticks as
    ``anchor`` was is one of the two."""
    centre = round((anchor - expected) / grid)
    seen: set[int] = set()
    for k in range(int((high - low) / grid) + 2):
        for frames in (centre + k, centre - k) if k else (centre,):
            exact = anchor - frames * grid
            for value in (math.floor(exact), math.ceil(exact)):
                if low <= value <= high and value not in seen:
                    seen.add(value)
                    yield value


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
    """A segment start near ``target``: any hit is exact, since only segment starts answer.

    Any segment start will do, so the first hit ends the search, and the probes go out in
    small waves: about one grid point in thirty starts a segment, and a wave of fifty would
    mostly ask after the answer is known. The segment holding ``target`` starts or ends within
    half its length of it, so the grid points (and their neighbours one tick away) within
    ``SEED_REACH`` of a typical length are enough; a seed only saves time, so the search stops
    there rather than probe every tick (media whose times drifted off the frame grid), and the
    chain below walks on instead.
    """
    reach = typical_duration * SEED_REACH
    candidates = candidate_times(
        target,
        low=math.floor(target - reach),
        high=math.ceil(target + reach),
        grid=frame_ticks,
        every_tick=False,
    )
    return await search_times(
        probe,
        itertools.islice(candidates, SEED_BUDGET),
        replace(limits, max_in_flight=min(limits.max_in_flight, SEED_WAVE)),
        pick=min,
        first_hit=True,
    )


SEED_WAVE = 12  # probes in flight while looking for a seed
SEED_REACH = 0.7  # of a typical segment length on either side of the target (segments vary)
SEED_BUDGET = 400  # probes, where no frame grid bounds the candidates
