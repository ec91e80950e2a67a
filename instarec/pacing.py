"""How hard the recorder presses a server: adapted to its pushback, not fixed in advance.

A server that is overloaded or rate-limits its clients says so: 429 (usually with
``Retry-After``), 503, or connections reset before an answer. One such answer among many is
noise (a busy moment, a flaky proxy) and the request's own retry handles it. When they become
dense, the recorder backs off as a whole, like TCP does: additive increase, multiplicative
decrease.

* The number of segment downloads at once (``download_slot``) is halved, down to one, and
  grows back by one per clean second up to ``--concurrency``.
* The rate of media requests (downloads and probes, ``start``) gets a cap just below the rate
  the server accepted over the last second (a concurrency limit alone cannot go below one
  request per round trip, far above a rate limit on a fast link); the cap grows 2 % per clean
  second and is lifted once it is far above what the recording asks for.
* ``Retry-After`` holds back every new request, not only the one that got it: the server
  told the client, not the connection, to wait.

Requests are judged over ``window`` seconds: at least ``min_answers`` answers, of which a share
``congested_share`` or more pushing back is congestion (as is a run of pushbacks in a row);
``clean_share`` or less is clean.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PaceSettings:
    ceiling: int = 8  # --concurrency: downloads at once never exceed it
    window: float = 1.0  # seconds of answers judged together
    min_answers: int = 12
    congested_share: float = 0.34
    clean_share: float = 0.02
    rate_backoff: float = 0.9  # the cap set on congestion, as a share of the accepted rate
    rate_growth: float = 1.02  # per clean window
    max_pause: float = 30.0  # a Retry-After longer than this holds back no more than this
    min_rate: float = 1.0  # requests per second, the lowest cap


@dataclass(frozen=True, slots=True)
class PaceState:
    """What the pace is at one moment (the summary and the tests read it)."""

    download_limit: int
    rate_cap: float | None
    backoffs: int  # times the recording backed off as a whole


class ServerPace:
    """The shared limits of one server, fed with the outcome of every media request."""

    def __init__(self, settings: PaceSettings | None = None) -> None:
        self._settings = settings or PaceSettings()
        self._limit = float(self._settings.ceiling)
        self._rate: float | None = None
        self._answers: collections.deque[tuple[float, bool]] = collections.deque()
        self._pushed = 0  # pushbacks among ``_answers``: counted, not summed per answer
        self._changed_at: float | None = None
        self._backed_off_at = -math.inf
        self._run = 0  # pushbacks in a row
        self._paused_until = 0.0
        self._next_start = 0.0
        self._demand: collections.deque[float] = collections.deque()  # recent start times
        self._active = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._backoffs = 0
        # Requests waiting for their start under a cap or a Retry-After: downloads, probes.
        self._urgent: collections.deque[asyncio.Future[None]] = collections.deque()
        self._lazy: collections.deque[asyncio.Future[None]] = collections.deque()
        self._ticker: asyncio.TimerHandle | None = None
        self._probes_turn = False

    def state(self) -> PaceState:
        return PaceState(int(self._limit), self._rate, self._backoffs)

    # -- the gates -------------------------------------------------------------------------

    async def start(self, *, urgent: bool = True) -> None:
        """Wait until a media request may start: after any Retry-After, within the rate cap.

        Under a cap the starts are handed out one by one, ``urgent`` requests (downloads) and
        probes by turns: a wave of probes (a search across a hole) would otherwise book the
        cap's next half minute ahead of the downloads, and the recording stalled behind it
        after an outage (chaos seeds 109 and 116).
        """
        now = _now()
        self._demand.append(now)
        if self._rate is None and now >= self._paused_until and not self._waiting():
            return
        waiter = asyncio.get_running_loop().create_future()
        (self._urgent if urgent else self._lazy).append(waiter)
        self._arm()
        await waiter

    def _waiting(self) -> bool:
        return any(not w.done() for w in (*self._urgent, *self._lazy))

    def _arm(self) -> None:
        if self._ticker is not None or not self._waiting():
            return
        at = self._paused_until
        if self._rate is not None:
            at = max(at, self._next_start)
        loop = asyncio.get_running_loop()
        self._ticker = loop.call_at(max(at, loop.time()), self._grant)

    def _grant(self) -> None:
        self._ticker = None
        now = _now()
        if now < self._paused_until:  # a Retry-After came meanwhile
            self._arm()
            return
        while (waiter := self._next_waiter()) is not None:
            waiter.set_result(None)
            if self._rate is not None:
                self._next_start = now + 1.0 / self._rate
                break
        self._arm()

    def _next_waiter(self) -> asyncio.Future[None] | None:
        # Turn about when both wait: under retention the probes finding the oldest segments
        # are as pressing as the downloads (chaos seed 106 lost three to a strict priority).
        queues = (self._lazy, self._urgent) if self._probes_turn else (self._urgent, self._lazy)
        self._probes_turn = not self._probes_turn
        for queue in queues:
            while queue:
                waiter = queue.popleft()
                if not waiter.done():
                    return waiter
        return None

    @contextlib.asynccontextmanager
    async def download_slot(self) -> AsyncIterator[None]:
        """Hold one of the download slots the server currently bears."""
        if self._active >= int(self._limit) or self._waiters:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
                elif waiter.done() and not waiter.cancelled():
                    self._active -= 1  # handed over just before the cancel: give it back
                    self._wake()
                raise
        else:
            self._active += 1
        try:
            yield
        finally:
            self._active -= 1
            self._wake()

    def _wake(self) -> None:
        while self._waiters and self._active < int(self._limit):
            waiter = self._waiters.popleft()
            if not waiter.done():
                self._active += 1
                waiter.set_result(None)

    # -- what the server answered ----------------------------------------------------------

    def note(self, *, pushback: bool, retry_after: float | None = None) -> None:
        """One media request's answer: ``pushback`` for 429, 503 or a reset connection."""
        now = _now()
        self._answers.append((now, pushback))
        self._pushed += pushback
        self._run = self._run + 1 if pushback else 0
        window = self._settings.window
        while self._answers and self._answers[0][0] < now - window:
            self._pushed -= self._answers.popleft()[1]
        while self._demand and self._demand[0] < now - window:
            self._demand.popleft()
        if self._changed_at is None:
            self._changed_at = now
        pushed = self._pushed
        share = pushed / len(self._answers)
        # Congestion is judged on a full sample (a stray fault among two answers is no
        # congestion); growth on what the slots and the cap let through.
        enough = len(self._answers) >= self._enough_answers()
        if self._congested(share, len(self._answers) >= self._settings.min_answers):
            if now - self._backed_off_at < window:
                return  # answers to requests started before the last back-off
            self._backed_off_at = now
            self._back_off(now, len(self._answers) - pushed, retry_after)
        elif not enough or now - self._changed_at < window:
            return
        elif share <= self._settings.clean_share:
            self._grow(now)
        elif self._rate is not None:
            # Under a cap, a few refusals mean the cap just passed the server's limit: ease off
            # by their share instead of holding there, refused a little every second.
            self._rate = max(self._settings.min_rate, self._rate * (1 - share))
        else:
            return
        self._changed_at = now

    def _enough_answers(self) -> int:
        """Answers a window needs to be judged: under a low rate cap fewer come than
        ``min_answers``, and a cap that waited for them would never grow back (five resets in
        a row under load once set the lowest cap, and the recording stalled behind it)."""
        # Few download slots bring few answers too: at one slot a window may hold fewer than
        # ``min_answers``, and the slots would never grow back after an outage halved them.
        let_through = 2 * int(self._limit)
        if self._rate is not None:
            let_through = min(let_through, int(self._rate * self._settings.window / 2))
        return max(1, min(self._settings.min_answers, let_through))

    def _congested(self, share: float, enough: bool) -> bool:
        # A rate limit refuses every request after its quota at once: a run of refusals in a
        # row (each then waits out its Retry-After, so their share over a second may stay
        # modest). Independent failures make such runs rare; a high share is congestion too.
        run = max(3, min(_RUN, int(self._limit)))
        return self._run >= run or (enough and share >= self._settings.congested_share)

    def _back_off(self, now: float, accepted: int, retry_after: float | None) -> None:
        settings = self._settings
        self._limit = max(1.0, self._limit / 2)
        if accepted:
            accepted_rate = accepted / settings.window
            self._rate = max(settings.min_rate, accepted_rate * settings.rate_backoff)
        # With nothing accepted (the server down, every request reset) there is no rate to
        # cap at: a cap at the lowest rate outlived a minute's outage by minutes, growing back
        # one request per second behind a backlog (chaos seeds 109 and 116). The downloads at
        # once are halved all the same, and a Retry-After still holds every request back.
        self._next_start = max(self._next_start, now)
        if retry_after:
            self._paused_until = max(self._paused_until, now + min(retry_after, settings.max_pause))
        self._backoffs += 1
        self._answers.clear()  # the next judgement is of answers under the new limits
        self._pushed = 0
        log.info(
            "the server pushes back: %d downloads at once, at most %.1f requests/s",
            int(self._limit),
            self._rate,
        )

    def _grow(self, now: float) -> None:
        self._limit = min(float(self._settings.ceiling), self._limit + 1)
        self._wake()
        if self._rate is not None:
            # Multiplicative near a server's limit, one request per second at least far below
            # it: from the lowest cap, 2 % a second would take minutes to be of use again.
            self._rate = max(self._rate * self._settings.rate_growth, self._rate + _RATE_STEP)
            asked = len(self._demand) / self._settings.window
            # Right after a back-off every request waits out its Retry-After, and the little
            # asked meanwhile says nothing of what the recording will ask once they are back.
            settled = now - self._backed_off_at >= _LIFT_AFTER * self._settings.window
            if settled and self._rate > 4 * max(asked, self._settings.min_rate):
                log.debug("request rate cap lifted (%.1f/s, asked %.1f/s)", self._rate, asked)
                self._rate = None


# Pushback answers in a row that mean congestion whatever their share: independent failures of
# one request in ten give five in a row about once in 100,000 answers.
_RUN = 5
# Windows after a back-off before a rate cap far above what is asked may be lifted.
_LIFT_AFTER = 10
# Requests per second a clean window adds to a rate cap at least.
_RATE_STEP = 1.0


def _now() -> float:
    return asyncio.get_running_loop().time()
