"""Period changes of the simulated broadcast (an encoder restart, an ad break).

Pure code. At each period start the packager begins a new Period: its media timeline (tfdt,
``$Time$``) restarts at 0, its numbers restart at ``startNumber``, its files (init included)
live under their own directory, and its representations keep their ids or take new ones.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["PeriodPlan"]


@dataclass(frozen=True, slots=True)
class PeriodPlan:
    """Which segments each Period holds: ``firsts[p]`` is the index of its first segment."""

    firsts: tuple[int, ...] = (0,)
    count: int = 0
    new_ids: bool = False  # True: a Period's representation ids carry its number

    @classmethod
    def at(
        cls, starts: Sequence[float], period_starts: Sequence[float], new_ids: bool
    ) -> PeriodPlan:
        """Periods beginning at the first segment starting at or after each of
        ``period_starts`` (virtual seconds): a packager cuts at a segment boundary."""
        firsts = {0}
        for moment in period_starts:
            index = bisect.bisect_left(starts, moment - 1e-9)
            if 0 < index < len(starts):
                firsts.add(index)
        return cls(tuple(sorted(firsts)), len(starts), new_ids)

    @property
    def several(self) -> bool:
        return len(self.firsts) > 1

    def of(self, i: int) -> int:
        """The Period segment ``i`` belongs to."""
        return bisect.bisect_right(self.firsts, i) - 1

    def indexes(self, p: int) -> range:
        end = self.firsts[p + 1] if p + 1 < len(self.firsts) else self.count
        return range(self.firsts[p], end)

    def restart(self, times: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
        """(t, d) per segment with each Period's timeline starting at 0 (the first keeps its)."""
        out = list(times)
        for p, first in enumerate(self.firsts):
            if p == 0:
                continue
            base = times[first][0]
            for i in self.indexes(p):
                out[i] = (times[i][0] - base, times[i][1])
        return out

    def renumber(
        self, numbers: Sequence[int | None] | None, start_number: int
    ) -> list[int | None] | None:
        """Numbers restarting at ``start_number`` in each Period after the first (None: the
        shape names segments by time)."""
        if numbers is None:
            return None
        out = list(numbers)
        for p, first in enumerate(self.firsts):
            if p == 0:
                continue
            base = next((n for n in numbers[first:] if n is not None), start_number)
            for i in self.indexes(p):
                number = numbers[i]
                out[i] = None if number is None else number - base + start_number
        return out

    def rep_id(self, rep_id: str, p: int) -> str:
        return f"{rep_id}-p{p}" if self.new_ids and p else rep_id

    def directory(self, p: int) -> str:
        """Where a Period's files live under the media directory ("" for the first)."""
        return f"p{p}/" if p else ""

    def groups(self, indexes: Sequence[int]) -> list[tuple[int, list[int]]]:
        """``indexes`` (ascending) split by Period: (period, its indexes), in order."""
        out: list[tuple[int, list[int]]] = []
        for i in indexes:
            p = self.of(i)
            if not out or out[-1][0] != p:
                out.append((p, []))
            out[-1][1].append(i)
        return out
