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
import itertools
import logging
import math
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, replace

from instarec.errors import NetworkError
from instarec.options import DEFAULTS

log = logging.getLogger(__name__)


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
        for task in done:
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
            bound = self.next_known(time)
            # A chain may start on a key already known (a seed, a hint fetched earlier).
            own_start = steps == 0 and time == bound
            if bound is not None and time >= bound and not own_start:
                if time > bound:
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
            if self.hedge_after is not None and frame_ticks:
                done, _ = await asyncio.wait({stepping}, timeout=self.hedge_after)
                if not done:
                    hedges.create_task(self._hedge(time, bound, frame_ticks))
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
    answers within the miss threshold. Before the walk, and again past each hole it crosses,
    the search leaps back (``_leap_back``): a server deleting its past at one segment per
    segment length must not outrun a walk of one round trip or two per segment. ``on_found``
    is told of every segment start found, as it is found; ``peer_oldest`` tells where another
    track's walk has got to, and a step tries there first (``PeerLead``).
    """
    hints = list(hints)
    # A time asked once is not asked again by a later step: one a leap found absent lies
    # where the walk's steps look next (the ground just below a hole the leap landed in).
    probe = _Absences(probe).probe
    for hint in hints:
        if hint < first_listed and await ask(hint_probe or probe, hint, limits):
            return hint
    # Times start at 0, or a little below it where a server names segments by their
    # presentation time (ffmpeg's AAC priming): never search below the lowest hint.
    lowest = min([0, *hints])
    oldest = first_listed
    reach = _backward_reach(typical_duration, limits)
    # A few probes at a time near one usual length back keep a step to a round trip or two.
    near = replace(limits, max_in_flight=min(limits.max_in_flight, _WALK_NEAR_WIDTH))
    lead = PeerLead(peer_oldest, frame_ticks)
    found_one = on_found or (lambda _: None)
    leap = True
    while oldest > lowest:
        if leap:
            oldest = await _leap_back(
                probe, oldest, lowest, typical_duration, frame_ticks, limits, lead, found_one
            )
            leap = False
        back = _SearchBack(probe, lead, frame_ticks, oldest, lowest)
        found = await _walk_step(back, max(lowest, oldest - reach), typical_duration, near, limits)
        # A step that landed far below (across a hole, or where the other track's walk got)
        # leaps on from there.
        leap = found is not None and oldest - found > 2 * typical_duration
        lead.judge(found)
        if found is None:
            break
        oldest = found
        # A server deleting its past may drop this segment while the walk goes on: the
        # caller starts its download now, not after the walk.
        found_one(found)
    return oldest


async def _walk_step(
    back: _SearchBack, low: int, typical: int, near: SearchLimits, limits: SearchLimits
) -> int | None:
    """One step of the backward walk: an older segment start down to ``low``, if any.

    Any older segment will do, not only the one just before: the chain forward from the oldest
    reads every start in between from the media. So the first hit ends a step, and a stalled
    probe holds up nothing. The few probes around one usual length back come first (a
    miss there only steers); then the whole reach, whose miss is the walk's last word.
    """
    expected, near_low, near_high = _one_back(back.oldest, low, typical, back.grid)
    found = await back.search(expected, near_low, near_high, near, patience=HEDGE_AFTER)
    if found is None:
        found = await back.search(expected, low, back.oldest - 1, limits)
    return found


async def _leap_back(
    probe: Probe,
    oldest: int,
    lowest: int,
    typical: int,
    grid: float | None,
    limits: SearchLimits,
    lead: PeerLead,
    on_found: Callable[[int], None],
) -> int:
    """The oldest segment start found by leaps back from ``oldest``, for the walk to go on from.

    Leaps of 2, 4, 8, ... segment lengths while a segment start lies within a segment length of
    where each lands, then halving between the farthest hit and the nearest miss, with a look
    one segment back before each halving (its miss ends the leaps): about 3·log2(N) searches
    instead of N steps. A miss is expired ground, the time before the broadcast, or a hole;
    the walk crosses holes. Only on a known frame grid (else each search probes every tick).
    """
    if not grid:
        return oldest
    distance = 2 * typical
    miss: int | None = None  # the lowest target whose neighbourhood held no segment start
    step_next = False
    while True:
        if step_next:
            # While halving, every other search looks one segment back first: the edge of
            # retention is usually right there, and a halving search that misses costs a whole
            # neighbourhood of probes while the server deletes what lies just below.
            step_next = False
            around = _one_back(oldest, lowest, typical, grid)
            found = await _leap_search(probe, lead, grid, oldest, lowest, around, limits)
            if found is None:
                return oldest
            oldest = found
            on_found(found)
            continue
        if miss is None:
            target = max(oldest - distance, lowest + typical)
            distance *= 2
        elif oldest - miss <= 3 * typical:
            return oldest
        else:
            target = (oldest + miss) // 2
        if target >= oldest - typical:
            return oldest
        # On the grid of the nearest known start: a grid extrapolated over hours drifts.
        target = oldest - _on_grid(oldest - target, grid)
        around = (target, max(lowest, target - typical), min(oldest - 1, target + typical))
        found = await _leap_search(probe, lead, grid, oldest, lowest, around, limits)
        if found is None:
            miss = target if miss is None else max(miss, target)
            step_next = True
            continue
        oldest = found
        on_found(found)
        step_next = miss is not None
        if miss is None and target <= lowest + typical:
            return oldest
        if miss is not None and found <= miss:
            return oldest  # below the miss (another track's lead): nothing left to halve


async def _leap_search(
    probe: Probe,
    lead: PeerLead,
    grid: float,
    oldest: int,
    lowest: int,
    around: tuple[int, int, int],
    limits: SearchLimits,
) -> int | None:
    """A leap's search around ``(expected, low, high)``; its miss only steers the next one."""
    back = _SearchBack(probe, lead, grid, oldest, lowest)
    found = await back.search(*around, limits, patience=HEDGE_AFTER)
    lead.judge(found)
    return found


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
    ) -> int | None:
        """The first start found in ``[low, high]``, nearest ``expected`` first (``patience``:
        see ``search_times``; only where a miss is not the walk's last word)."""
        candidates = _walk_candidates(expected, low, high, self.grid)
        led = self.lead.first(candidates, self.oldest, self.lowest)
        return await search_times(self.probe, led, limits, first_hit=True, patience=patience)


class _Absences:
    """The times the server said it does not have, during one backward search.

    Below the window an absent time stays absent: it is no segment start, or its segment has
    left the server for good. The leaps, the looks one segment back and the walk's near and
    full searches cover overlapping ranges; remembered, a time costs one request, not one per
    search (under faults each request risks a retry's backoff).
    """

    def __init__(self, probe: Probe) -> None:
        self._probe = probe
        self._absent: set[int] = set()

    async def probe(self, value: int) -> Presence:
        if value in self._absent:
            return Presence.ABSENT
        answer = await self._probe(value)
        if answer is Presence.ABSENT:
            self._absent.add(value)
        return answer


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


def _walk_candidates(expected: int, low: int, high: int, grid: float | None) -> Iterator[int]:
    candidates = candidate_times(expected, low=low, high=high, grid=grid)
    if grid:
        # Starts sit on the frame grid: probing only grid times keeps a miss cheap.
        return _grid_only(candidates, expected, grid)
    return candidates


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
