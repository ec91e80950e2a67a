"""What the user sees while recording: a status line on a terminal, log lines otherwise.

The recorder takes a :class:`ProgressSnapshot` whenever asked; :func:`make_reporter` builds the
coroutine that asks a few times a second and shows it:

* on a terminal, one status line redrawn in place (``\\r`` + erase to end of line), kept
  shorter than the terminal so it never wraps; log records clear it, print, and redraw it
  (:class:`StatusAwareHandler`);
* elsewhere (a pipe, a file, a service's journal), a plain ``INFO`` log line every few
  seconds, so nothing but text ends up in the log;
* with ``-q``, nothing at all.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TextIO

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ProgressSnapshot:
    """A consistent view of a recording, taken by the recorder a few times a second."""

    elapsed: float  # wall seconds since the recording started
    archive_active: bool  # past recovery still running
    archive_seconds: float  # media seconds recorded from the past (archive refs)
    live_seconds: float  # media seconds recorded at the live edge
    segments_done: int
    segments_missing: int
    segments_queued: int  # waiting or in flight
    archive_queued: int  # archive segments not yet downloaded
    bytes_done: int
    behind_live: float | None  # seconds between the newest listed segment's end and now


# A coroutine function, not any awaitable: the recorder hands its result to a TaskGroup.
Reporter = Callable[[Callable[[], ProgressSnapshot]], Coroutine[Any, Any, None]]

TTY_REFRESH = 0.25  # seconds between two redraws of the status line
LOG_EVERY = 5.0  # seconds between two progress log lines when stderr is not a terminal
RATE_WINDOW = 5.0  # seconds of history behind the byte and segment rates


# --- formatting ----------------------------------------------------------------------------


def format_duration(seconds: float) -> str:
    """``0:07``, ``12:03``, ``1:02:03``: media or wall time, whole seconds."""
    total = max(0, round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}:{minutes:02d}:{secs:02d}"
    return f"{minutes}:{secs:02d}"


def format_bytes(count: float) -> str:
    """Decimal units, as download tools show them: ``950 B``, ``12.3 MB``, ``1.20 GB``."""
    if count < 1000:
        return f"{count:.0f} B"
    for unit, scale in (("kB", 1e3), ("MB", 1e6), ("GB", 1e9), ("TB", 1e12)):
        value = count / scale
        if value < 1000 or unit == "TB":
            return f"{value:.2f} {unit}" if value < 10 else f"{value:.1f} {unit}"
    raise AssertionError("unreachable")


@dataclass(frozen=True, slots=True)
class Rates:
    bytes_per_second: float | None
    segments_per_second: float | None


class RateMeter:
    """Byte and segment rates over the last ``window`` seconds of snapshots."""

    def __init__(self, window: float = RATE_WINDOW) -> None:
        self._window = window
        self._samples: deque[tuple[float, int, int]] = deque()

    def add(self, snapshot: ProgressSnapshot) -> Rates:
        now = snapshot.elapsed
        self._samples.append((now, snapshot.bytes_done, snapshot.segments_done))
        # Keep one sample older than the window so the span always covers it.
        while len(self._samples) > 2 and self._samples[1][0] <= now - self._window:
            self._samples.popleft()
        then, bytes_then, segments_then = self._samples[0]
        span = now - then
        if span <= 0:
            return Rates(None, None)
        return Rates(
            (snapshot.bytes_done - bytes_then) / span,
            (snapshot.segments_done - segments_then) / span,
        )


def archive_eta(snapshot: ProgressSnapshot, segments_per_second: float | None) -> float | None:
    """Seconds until the known archive segments are downloaded, at the current rate.

    None while nothing is known yet or nothing is moving. The search may still find more
    past segments (the ``$Time$`` chain discovers them one by one), so this is a lower bound.
    """
    if not snapshot.archive_active or snapshot.archive_queued == 0:
        return None
    if not segments_per_second or segments_per_second <= 0:
        return None
    return snapshot.archive_queued / segments_per_second


def status_text(snapshot: ProgressSnapshot, rates: Rates) -> str:
    """One line: recorded media, segments, bytes and rate, distance to the live edge, ETA."""
    parts: list[str] = []
    if snapshot.archive_active or snapshot.archive_seconds:
        recorded = (
            f"archive {format_duration(snapshot.archive_seconds)}"
            f" + live {format_duration(snapshot.live_seconds)}"
        )
        if not snapshot.archive_active:
            total = snapshot.archive_seconds + snapshot.live_seconds
            recorded = f"recorded {format_duration(total)} ({recorded})"
        parts.append(recorded)
    else:
        parts.append(f"recorded {format_duration(snapshot.live_seconds)}")
    segments = f"{snapshot.segments_done} segments"
    if snapshot.segments_missing:
        segments += f", {snapshot.segments_missing} missing"
    if snapshot.segments_queued:
        segments += f", {snapshot.segments_queued} queued"
    parts.append(segments)
    size = format_bytes(snapshot.bytes_done)
    if rates.bytes_per_second is not None:
        size += f" at {format_bytes(rates.bytes_per_second)}/s"
    parts.append(size)
    if snapshot.behind_live is not None:
        parts.append(f"{snapshot.behind_live:.1f} s behind live")
    if snapshot.archive_active:
        eta = archive_eta(snapshot, rates.segments_per_second)
        if eta is not None:
            parts.append(f"archive ETA {format_duration(eta)}")
        else:
            parts.append("searching the archive")
    return " | ".join(parts)


# --- terminal status line ------------------------------------------------------------------


class StatusLine:
    """A line at the bottom of a terminal, redrawn in place."""

    def __init__(self, stream: TextIO, width: Callable[[], int] | None = None) -> None:
        self._stream = stream
        self._width = width or (lambda: shutil.get_terminal_size((80, 24)).columns)
        self._text = ""
        self._shown = False

    def show(self, text: str) -> None:
        # One column short of the width: writing the last column makes some terminals wrap.
        limit = max(10, self._width() - 1)
        if len(text) > limit:
            text = text[: limit - 1] + "…"
        self._text = text
        self._stream.write("\r\x1b[K" + text)
        self._stream.flush()
        self._shown = True

    def clear(self) -> None:
        if self._shown:
            self._stream.write("\r\x1b[K")
            self._stream.flush()
            self._shown = False

    def redraw(self) -> None:
        if self._text and not self._shown:
            self._stream.write(self._text)
            self._stream.flush()
            self._shown = True

    def forget(self) -> None:
        """Clear the line and stop redrawing it (the recording is over)."""
        self.clear()
        self._text = ""


class StatusAwareHandler(logging.StreamHandler[TextIO]):
    """A console handler that moves the status line out of the way of each record."""

    def __init__(self, stream: TextIO, status: StatusLine) -> None:
        super().__init__(stream)
        self._status = status

    def emit(self, record: logging.LogRecord) -> None:
        self._status.clear()
        super().emit(record)
        self._status.redraw()


# --- reporters -----------------------------------------------------------------------------


def make_reporter(
    *,
    status: StatusLine | None,
    quiet: bool,
    refresh: float = TTY_REFRESH,
    log_every: float = LOG_EVERY,
) -> Reporter | None:
    """The reporter to hand to ``record()``: a status line, periodic logs, or None (``-q``)."""
    if quiet:
        return None
    if status is not None:
        return _terminal_reporter(status, refresh)
    return _log_reporter(log_every)


def _terminal_reporter(status: StatusLine, refresh: float) -> Reporter:
    async def report(current: Callable[[], ProgressSnapshot]) -> None:
        meter = RateMeter()
        try:
            while True:
                snapshot = current()
                status.show(status_text(snapshot, meter.add(snapshot)))
                await asyncio.sleep(refresh)
        finally:
            # Cancelled when the downloads are over: leave a clean line for the summary.
            status.forget()

    return report


def _log_reporter(every: float) -> Reporter:
    async def report(current: Callable[[], ProgressSnapshot]) -> None:
        meter = RateMeter(window=max(RATE_WINDOW, every))
        meter.add(current())
        while True:
            await asyncio.sleep(every)
            snapshot = current()
            log.info("progress: %s", status_text(snapshot, meter.add(snapshot)))

    return report
