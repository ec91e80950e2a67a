"""On a resume, the segments an earlier run kept below the first window, as ground the
``$Time$`` past is walked from.

The server goes on deleting its oldest segments while the recorder is away, and what the
earlier run had not reached lies in the gaps between and below the stretches it kept. Walked
back from the new window alone, those gaps are reached only after a search per segment or
leap across every kept stretch above them, each slowed by holes and stalled answers: long
enough under retention for the oldest of them to expire (chaos seed 106: 47 stream seconds).
So every gap is taken on at once.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from instarec.archive import (
    HEDGE_AFTER,
    Presence,
    SearchLimits,
    find_first_time,
    find_seed,
    seed_targets,
)
from instarec.recovery import TimeChains, contained
from instarec.store import StoredSegment
from instarec.timeline import Timeline

# Kept segments whose ends and starts lie this close (seconds) follow each other unbroken.
_ADJOINING = 0.001

# Segments of a gap between kept stretches one chain walks; a longer gap is split by seeds.
_SEEDED_SPAN = 8


def kept_stretches(kept: Sequence[StoredSegment]) -> list[tuple[int, int]]:
    """The first and last keys of each run of unbroken ``kept`` segments (in timeline order)."""
    if not kept:
        return []
    stretches = []
    first = kept[0].key
    for segment, after in itertools.pairwise(kept):
        if (
            segment.duration is None
            or abs(segment.start + segment.duration - after.start) > _ADJOINING
        ):
            stretches.append((first, segment.key))
            first = after.key
    stretches.append((first, kept[-1].key))
    return stretches


class KeptGround:
    """What an earlier run of this recording kept below each track's first window.

    The server is asked for the first segment of each kept stretch: while it has that one, it
    has the whole gap after the stretch (retention deletes the oldest first), and a chain
    walks the gap from the stretch's last segment, with chains from seeds when the gap is
    long. A gap no such chain walks may hold the edge of retention: it is walked back from
    the stretch above it, as a fresh recording walks back from its window, leaping to where
    the server's segments begin. The window is walked back from too, down to the newest
    kept segment (a hole no chain crosses may lie between), and the search for the oldest
    segment starts from the oldest kept one. Below a kept segment the server no longer has,
    nothing is asked (``probe``).
    """

    def __init__(
        self,
        chains: TimeChains,
        kept: Mapping[str, Sequence[StoredSegment]],
        limits: SearchLimits,
    ) -> None:
        self._chains = chains
        self._kept = kept
        self._limits = limits
        # Per track, the newest kept segment the server answered it no longer has.
        self._gone: dict[str, int] = {}

    async def probe(self, timeline: Timeline, time_value: int) -> Presence:
        """``TimeChains.probe``, without asking below a kept segment the server no longer
        has: retention deleted those first. A search's last word (every time within the
        miss threshold) then costs no request where it lies on expired ground."""
        gone = self._gone.get(timeline.name)
        if gone is not None and time_value < gone:
            return Presence.ABSENT
        return await self._chains.probe(timeline, time_value)

    def gone(self, timeline: Timeline, key: int) -> None:
        """Kept segment ``key`` has left the server."""
        self._gone[timeline.name] = max(key, self._gone.get(timeline.name, key))

    def _below(self, timeline: Timeline, first_listed: int) -> list[StoredSegment]:
        # A time kept for the leading track only is no ground for a track derived from it:
        # the chain through it offers what the derived track lacks there.
        derived = [
            {s.key for s in self._kept.get(t.name, ())} for t in self._chains.derived(timeline)
        ]
        return [
            s
            for s in self._kept.get(timeline.name, ())
            if s.key < first_listed and all(s.key in keys for keys in derived)
        ]

    def unkept(self, timeline: Timeline, first_listed: int, hints: list[int]) -> list[int]:
        """The start hints worth asking the server: one on disk tells nothing of what the
        server still has, and would end the search before it began."""
        kept = {s.key for s in self._below(timeline, first_listed)}
        return [hint for hint in hints if hint not in kept]

    def start(
        self,
        timeline: Timeline,
        first_listed: int,
        typical: int,
        frame: float | None,
        group: asyncio.TaskGroup,
        walked: set[int],
    ) -> int:
        """Start the chains and walks over the gaps in ``group``; return where the search for
        the oldest segment starts (the oldest kept key, which joins ``walked``: a chain from
        it would only read what is on disk), or ``first_listed`` when nothing is kept."""
        stretches = kept_stretches(self._below(timeline, first_listed))
        if not stretches:
            return first_listed
        oldest = stretches[0][0]
        walked.add(oldest)
        self._chains.lower_floor(timeline, oldest)
        walk = _GapWalk(self, self._chains, timeline, typical, frame, self._limits, group)
        chained = [group.create_task(walk.chain_on(first, last)) for first, last in stretches]
        for index in range(1, len(stretches)):
            below = (stretches[index - 1][1], chained[index - 1])
            group.create_task(walk.across(stretches[index][0], chained[index], below))
        group.create_task(walk.down(first_listed, stretches[-1][1]))
        return oldest


@dataclass(frozen=True, slots=True)
class _GapWalk:
    """The chains and walks over the gaps between kept stretches of one track."""

    ground: KeptGround
    chains: TimeChains
    timeline: Timeline
    typical: int
    frame: float | None
    limits: SearchLimits
    group: asyncio.TaskGroup

    async def chain_on(self, first: int, last: int) -> Presence:
        """Chain from the last segment of a kept stretch while the server still has its
        first (then it has the whole gap after the stretch, with a stretch's length to spare
        before retention reaches it); the answer about the first, UNKNOWN when slow."""
        there = await _soon(self.group.create_task(self._ask(first)))
        if there is Presence.PRESENT:
            self._chain(last)
        return there

    async def _ask(self, key: int) -> Presence:
        # Asked to the end in the background: a slow answer still marks expired ground.
        answer = await self.chains.probe(self.timeline, key)
        if answer is Presence.ABSENT:
            self.ground.gone(self.timeline, key)
        return answer

    async def across(
        self,
        first: int,
        there: asyncio.Task[Presence],
        below: tuple[int, asyncio.Task[Presence]],
    ) -> None:
        """The gap below a kept stretch (``first``: its first key; ``there``: the answer
        about it), down to the end of the stretch below (``below``: its last key, and
        whether a chain walks on from there): walked back from ``first`` unless that chain
        walks it, else shared by chains from seeds when long."""
        bottom, chained = below
        if (await there) is Presence.ABSENT:
            return  # nothing here, nor below: retention deletes the oldest first
        if (await chained) is not Presence.PRESENT:
            # The gap may hold the edge of retention: the walk leaps to where the server's
            # segments begin, a chain from each find.
            await self.down(first, bottom)
            return
        # One chain takes a long gap a round trip per segment, and every stall or 429 on
        # its way costs it seconds while retention goes on: chains from seeds share it.
        spans = int((first - bottom) / self.typical) // _SEEDED_SPAN
        for target in seed_targets(bottom, first, spans, self.frame):
            self.group.create_task(contained(self._seeded(target), f"{self.timeline.name}: a seed"))

    async def _seeded(self, target: int) -> None:
        seed = await find_seed(
            lambda t: self.ground.probe(self.timeline, t),
            target,
            typical_duration=self.typical,
            frame_ticks=self.frame,
            limits=self.limits.in_timescale(self.timeline.timescale),
        )
        if seed is not None and self.timeline.add(seed):  # the chain below stops here
            self._chain(seed)

    async def down(self, top: int, bottom: int) -> None:
        """Walk back from ``top`` (a segment the server has, or may have) as a fresh
        recording does from its window, until a find reaches ``bottom`` (the chain from
        that find walks on through the kept stretch): the walk is then stopped."""
        reached = asyncio.Event()

        def on_found(time_value: int) -> None:
            self._chain(time_value)
            if time_value <= bottom:
                reached.set()

        walk = asyncio.ensure_future(
            contained(self._walk(top, on_found), f"{self.timeline.name}: the walk from {top}")
        )
        stop = asyncio.ensure_future(reached.wait())
        try:
            await asyncio.wait({walk, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            walk.cancel()
            stop.cancel()
            await asyncio.wait({walk, stop})
        if not walk.cancelled():
            walk.result()  # a failure of the walk is the recording's

    async def _walk(self, top: int, on_found: Callable[[int], None]) -> None:
        await find_first_time(
            lambda t: self.ground.probe(self.timeline, t),
            hints=(),  # asked by the search for the oldest segment
            first_listed=top,
            typical_duration=self.typical,
            frame_ticks=self.frame,
            limits=self.limits.in_timescale(self.timeline.timescale),
            on_found=on_found,
        )

    def _chain(self, start: int) -> None:
        chain = self.chains.chain_from(
            self.timeline, start, origin="archive", frame_ticks=self.frame
        )
        self.group.create_task(contained(chain, f"{self.timeline.name}: the chain from {start}"))


async def _soon(answer: asyncio.Task[Presence]) -> Presence:
    """``answer``, or UNKNOWN when it is slow to come: what waits for it may have segments
    to fetch before they expire."""
    done, _ = await asyncio.wait({answer}, timeout=HEDGE_AFTER)
    return answer.result() if done else Presence.UNKNOWN
