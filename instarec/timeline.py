"""One selected track's timeline as the recorder knows it: keys seen, floor, $Time$ rounding."""

from __future__ import annotations

import bisect
import logging
import math
from dataclasses import dataclass, field
from fractions import Fraction

from instarec.manifest import Representation
from instarec.mp4 import InitInfo
from instarec.segments import TrackKind

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Timeline:
    """The keys of one track known so far (listed, found by the archive, or on disk)."""

    kind: TrackKind
    rep: Representation
    period_start: float = 0.0
    init: InitInfo | None = None
    keys: list[int] = field(default_factory=list)
    key_set: set[int] = field(default_factory=set)
    listed_end: int | None = None  # end (ticks) of the last listed $Time$ segment
    listed_max_number: int | None = None
    rounding: str = "round"  # how this server turns media time into $Time$ values
    # Oldest key worth fetching: the first listed one until the archive search finds older
    # ones. A manifest turning static may list everything since the start; what lies below
    # the floor is past the server's retention (or unwanted with --no-past).
    floor: int | None = None

    def roundings(self, exact: Fraction) -> tuple[int, ...]:
        """The $Time$ values ``exact`` may be published as, the learned rounding first."""
        if exact.denominator == 1:
            return (int(exact),)
        values = {"floor": math.floor(exact), "round": round(exact), "ceil": math.ceil(exact)}
        ordered = [values[self.rounding]] + [values[m] for m in ("floor", "round", "ceil")]
        return tuple(dict.fromkeys(ordered))

    def learn_rounding(self, key: int, media_time: int) -> None:
        """Learn the server's rounding from a segment whose $Time$ and tfdt are both known."""
        if self.init is None:
            return
        exact = Fraction(media_time * self.timescale, self.init.timescale)
        if exact.denominator == 1:
            return
        for mode, value in (
            ("floor", math.floor(exact)),
            ("round", round(exact)),
            ("ceil", math.ceil(exact)),
        ):
            if value == key:
                if mode != self.rounding:
                    log.debug("%s: $Time$ values are the %s of the media time", self.kind, mode)
                    self.rounding = mode
                return

    def add(self, key: int) -> bool:
        if key in self.key_set:
            return False
        self.key_set.add(key)
        bisect.insort(self.keys, key)
        return True

    def discard(self, key: int) -> None:
        """Forget a key that turned out not to exist (a wrong guess of the chain)."""
        if key in self.key_set:
            self.key_set.remove(key)
            self.keys.pop(bisect.bisect_left(self.keys, key))

    def next_known(self, key: int) -> int | None:
        index = bisect.bisect_left(self.keys, key)
        return self.keys[index] if index < len(self.keys) else None

    @property
    def timescale(self) -> int:
        template = self.rep.template
        return template.timescale if template else 1

    def seconds(self, ticks: int) -> float:
        template = self.rep.template
        offset = template.presentation_time_offset if template else 0
        return self.period_start + (ticks - offset) / self.timescale
