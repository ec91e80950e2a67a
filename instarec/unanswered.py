"""Segments no request got an answer for, after every retry: asked again later.

A server that is down, or a network between that drops every connection, answers nothing for
a while: a minute of outage outlasts a download's retries (about 30 s of backoff) many times
over. A segment that got no answer is not known missing (a 404 says that): it is asked again
once the server answers anything again, or after a delay that grows each round, for as long
as the recording runs. When the recording ends, each one still waiting is asked one last time;
only then does a failure make it missing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from instarec.segments import SegmentRef

log = logging.getLogger(__name__)

# Seconds before the first re-ask; doubled each round up to the longest.
_FIRST_DELAY = 2.0
_LONGEST_DELAY = 30.0


class Unanswered:
    """The segments waiting to be asked again, each with its count of rounds so far."""

    def __init__(self, ask_again: Callable[[SegmentRef, int], None]) -> None:
        self._ask_again = ask_again  # queues a ref with its count of rounds so far
        self._waiting: dict[tuple[str, int], tuple[SegmentRef, int]] = {}
        self._timers: dict[tuple[str, int], asyncio.TimerHandle] = {}
        self._last_call = False

    def add(self, ref: SegmentRef, rounds: int) -> bool:
        """Ask ``ref`` again later; False when its last ask is over (it is missing then)."""
        if self._last_call:
            return False
        slot = (ref.track, ref.key)
        self._waiting[slot] = (ref, rounds)
        delay = min(_LONGEST_DELAY, _FIRST_DELAY * 2**rounds)
        loop = asyncio.get_running_loop()
        self._timers[slot] = loop.call_later(delay, self._release, slot)
        log.info("%s segment %d got no answer; asking again in %.0f s", ref.track, ref.key, delay)
        return True

    def answered(self) -> None:
        """The server answered a request: it is reachable again, ask every waiting one now."""
        if self._waiting:
            log.info("the server answers again: asking %d segments again", len(self._waiting))
            for slot in list(self._waiting):
                self._release(slot)

    def last_call(self) -> bool:
        """The recording ends: ask every waiting one a last time now; False when none was."""
        self._last_call = True
        waiting = bool(self._waiting)
        for slot in list(self._waiting):
            self._release(slot)
        return waiting

    def _release(self, slot: tuple[str, int]) -> None:
        timer = self._timers.pop(slot, None)
        if timer is not None:
            timer.cancel()
        waiting = self._waiting.pop(slot, None)
        if waiting is not None:
            ref, rounds = waiting
            self._ask_again(ref, rounds + 1)
