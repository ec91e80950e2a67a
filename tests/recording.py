"""Helpers for end-to-end recording tests: drive the origin's clock, inspect files with PyAV."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path

import av

from instarec.options import Options
from instarec.testing.clock import ManualClock
from instarec.testing.media import TestMedia
from instarec.testing.mpd import EPOCH
from instarec.testing.origin import Origin


def media_for_shape(shape: str, variable: TestMedia, constant: TestMedia) -> TestMedia:
    """``$Number$`` + ``@duration`` needs constant segment durations; every other shape varies."""
    return constant if shape == "number_duration" else variable


def fast_options(url: str, output: Path, **changes: object) -> Options:
    """Options for a simulated stream: quick polls, no pacing, short timeouts."""
    base = Options(
        mpd_url=url,
        output_path=output,
        poll_interval=0.02,
        live_end_timeout=20.0,
        past_segment_delay=0.0,
        download_retry_delay=0.01,
        concurrency=8,
    )
    return replace(base, **changes)


class RecorderClock:
    """The recorder's clock (``instarec.clock.Clock``) read from the origin's virtual one.

    With it a recording measures its own time (``--stop-after``, the live end timeout, the
    summary's wall time) in the seconds of the simulated broadcast, which pass in a fraction
    of the real time; its wall clock is the origin's (``EPOCH`` at virtual 0).
    """

    def __init__(self, virtual: ManualClock) -> None:
        self._virtual = virtual

    def monotonic(self) -> float:
        return self._virtual.now()

    def now(self) -> datetime:
        return EPOCH + timedelta(seconds=self._virtual.now())


@dataclass(slots=True)
class ClockDriver:
    """What the clock driver saw: the first index the manifest listed to the recorder."""

    first_listed: int | None = None


@contextlib.asynccontextmanager
async def running_clock(
    origin: Origin, clock: ManualClock, *, step: float = 0.5, every: float = 0.005
) -> AsyncIterator[ClockDriver]:
    """Advance the virtual clock ``step`` seconds every ``every`` real seconds.

    The clock only starts once the recorder fetched its first manifest, so the test knows what
    the manifest listed when the recording started (``first_listed``).
    """
    driver = ClockDriver()

    async def drive() -> None:
        while origin.stats.count(kind="manifest") == 0:  # noqa: ASYNC110 - polls the origin
            await asyncio.sleep(0.002)
        driver.first_listed = origin.listed_segments()[0]
        while True:
            await asyncio.sleep(every)
            if clock.now() < origin.duration + 120:
                clock.advance(step)

    task = asyncio.create_task(drive())
    try:
        yield driver
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@dataclass(frozen=True, slots=True)
class MediaReport:
    video_frames: int
    video_start: float | None
    video_end: float | None
    audio_start: float | None
    audio_end: float | None
    video_gaps: tuple[tuple[float, float], ...]  # (at, jump) where frames jump by > 1.5 frames
    frame_duration: float | None

    @property
    def video_duration(self) -> float:
        return (self.video_end or 0.0) - (self.video_start or 0.0)

    @property
    def audio_duration(self) -> float:
        return (self.audio_end or 0.0) - (self.audio_start or 0.0)


def inspect(path: Path) -> MediaReport:
    """Demux ``path`` (no decoding) and measure its streams."""
    video_pts: list[float] = []
    audio_start = audio_end = None
    frame_duration = None
    with av.open(str(path)) as container:
        video = container.streams.video[0] if container.streams.video else None
        audio = container.streams.audio[0] if container.streams.audio else None
        streams = [s for s in (video, audio) if s is not None]
        for packet in container.demux(*streams):
            if packet.pts is None or packet.size == 0:
                continue
            start = float(packet.pts * packet.time_base)
            end = start + float((packet.duration or 0) * packet.time_base)
            if packet.stream is video:
                video_pts.append(start)
                frame_duration = frame_duration or (
                    float(packet.duration * packet.time_base) if packet.duration else None
                )
            else:
                audio_start = start if audio_start is None else min(audio_start, start)
                audio_end = end if audio_end is None else max(audio_end, end)
    video_pts.sort()
    gaps = []
    if frame_duration:
        for before, after in itertools.pairwise(video_pts):
            if after - before > 1.5 * frame_duration:
                gaps.append((before, after - before))
    video_end = video_pts[-1] + (frame_duration or 0.0) if video_pts else None
    return MediaReport(
        video_frames=len(video_pts),
        video_start=video_pts[0] if video_pts else None,
        video_end=video_end,
        audio_start=audio_start,
        audio_end=audio_end,
        video_gaps=tuple(gaps),
        frame_duration=frame_duration,
    )
