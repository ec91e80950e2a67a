"""Where the recorder reads the time: one clock, passed to whatever needs it.

``SYSTEM_CLOCK`` is the machine's. A test gives the live follower (or a whole recording) a clock
of its own to make minutes pass at once; sleeping stays asyncio's.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Final, Protocol


class Clock(Protocol):
    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (only differences mean anything)."""
        ...

    def now(self) -> datetime:
        """The wall-clock time, timezone-aware UTC."""
        ...


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def now(self) -> datetime:
        return datetime.now(UTC)


SYSTEM_CLOCK: Final = SystemClock()
