"""Virtual clocks for the simulated origin.

The origin never reads the real time to decide what has been broadcast: it asks a clock for
the *virtual* number of seconds since the broadcast started. Tests use :class:`ManualClock`
and move time explicitly, so every manifest and every 404 is deterministic; benchmarks and
the command line use :class:`SpeedClock`, which runs ``speed`` times faster than real time.

A clock created without a start value is *anchored* by the origin when it starts, at the
configuration's ``already_broadcast`` seconds; a start value given explicitly always wins.
"""

from __future__ import annotations

import time
from typing import Protocol, runtime_checkable

__all__ = ["Clock", "ManualClock", "SpeedClock"]


@runtime_checkable
class Clock(Protocol):
    """What the origin needs from a clock."""

    def now(self) -> float:
        """Virtual seconds since the broadcast started."""
        ...

    def anchor(self, already_broadcast: float) -> None:
        """Called once by the origin on start; sets the start if none was given."""
        ...


class ManualClock:
    """A clock that only moves when told to: ``clock.advance(seconds)`` or ``clock.set(t)``."""

    def __init__(self, start: float | None = None) -> None:
        self._now = 0.0 if start is None else float(start)
        self._anchored = start is not None

    def now(self) -> float:
        return self._now

    def anchor(self, already_broadcast: float) -> None:
        if not self._anchored:
            self._now = float(already_broadcast)
            self._anchored = True

    def advance(self, seconds: float) -> float:
        """Move virtual time forward by ``seconds`` and return the new time."""
        if seconds < 0:
            raise ValueError("a clock cannot go backwards")
        self._now += seconds
        self._anchored = True
        return self._now

    def set(self, now: float) -> None:
        """Jump to virtual time ``now`` (forward only)."""
        if now < self._now:
            raise ValueError("a clock cannot go backwards")
        self._now = float(now)
        self._anchored = True

    def __repr__(self) -> str:
        return f"ManualClock(now={self._now:.3f})"


class SpeedClock:
    """virtual = start_offset + speed × (monotonic − t0), t0 taken when anchored."""

    def __init__(self, speed: float = 1.0, start_offset: float | None = None) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.speed = float(speed)
        self._offset = 0.0 if start_offset is None else float(start_offset)
        self._anchored = start_offset is not None
        self._t0 = time.monotonic()

    def now(self) -> float:
        return self._offset + self.speed * (time.monotonic() - self._t0)

    def anchor(self, already_broadcast: float) -> None:
        # Restart the real-time origin so that time spent generating media before the server
        # is up does not count as broadcast time.
        if not self._anchored:
            self._offset = float(already_broadcast)
            self._anchored = True
        else:
            self._offset = self.now()
        self._t0 = time.monotonic()

    def __repr__(self) -> str:
        return f"SpeedClock(speed={self.speed}, now={self.now():.3f})"
