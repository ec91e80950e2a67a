"""The chaos matrix: random broadcasts, faults and interruptions; every recording checked.

Usage::

    python -m instarec.testing.chaos --seeds 50            # seeds 0..49, two at a time
    python -m instarec.testing.chaos --seeds 20 --first 1000 --jobs 2
    python -m instarec.testing.chaos --seed 17 -v           # rerun one seed, keep its files

One seed is one *case*: a frozen :class:`ChaosCase` drawn from the seed alone (shape, length,
how much is already past, window, retention, holes in the past / in the window / at the live
edge, listed or omitted, timeline offset and timescale, fault mix on media, init and manifest
requests, kill -9 or Ctrl+C at a random moment). Every drawn parameter is printed on one line.

A run starts the simulated origin in this process on a fast :class:`SpeedClock` and runs the
real command line, ``python -m instarec URL OUTPUT --summary-file ...``, as a subprocess. With
``kill`` it is killed with SIGKILL once a random share of the media has been served, then the
same command runs again and must resume; with ``sigint`` it gets SIGINT and must exit 130 with
what it had merged.

The checks use only the origin's own model and request log, PyAV on the output file and the
summary JSON (never the recorder's logs):

* every frame of every segment the origin still served while the recorder ran is in the file,
  video and audio, each segment whole, no frame twice, nothing from a configured hole (a
  resume that got no manifest owes what the killed run kept; a segment only ever answered
  with faults until it expired is not owed);
* the tracks start and end together (within a segment);
* the summary's missing ranges are exactly the holes inside the recorded span (adjacent holes
  merged), no zero-length range, nothing else;
* no segment body is served twice to one run, and after a resume none is served again except
  those in flight at the kill;
* after Ctrl+C: exit 130, the file holds every segment served before the signal, nothing that
  was never served, and its holes are reported as missing (a recorder that finished before
  the interruption point never got the signal and must exit 0);
* the recording ends within a wall-time limit derived from the case.

``docs/chaos.md`` describes the draw, the checks and how to add a combination to the matrix.

A failing seed prints ``python -m instarec.testing.chaos --seed K`` and what was violated; the
exit status is 1 when any seed failed.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import dataclasses
import itertools
import json
import math
import os
import random
import shlex
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from instarec.testing.faults import Fault, FaultConfig
from instarec.testing.fmp4 import read_samples
from instarec.testing.media import MediaSpec, TestMedia, generate_media
from instarec.testing.origin import Origin, OriginConfig, RequestRecord

__all__ = [
    "FIELD_FAILURE_SEEDS",
    "CaseResult",
    "ChaosCase",
    "draw_case",
    "main",
    "reproduce_command",
    "run_case",
]

REPRODUCE = "python -m instarec.testing.chaos --seed {seed}"

# Seeds whose draw is the field failure of the issue, the first of each shape: 2 (instagram)
# and 4 (generic $Time$). Found by drawing (`--show 2 4`), listed so the suite runs them by name.
FIELD_FAILURE_SEEDS: tuple[int, ...] = (2, 4)

# A segment the recorder could reach for less than this many real seconds is not owed: it
# covers the start of a process, one fault retry and the recorder's first steps.
_REACH_GRACE = 3.0
# Times in the file and in the summary are rounded (to the millisecond in Matroska).
_TIME_TOLERANCE = 0.003
_RANGE_TOLERANCE = 0.05
# A body served this close before SIGKILL may not have reached the recorder's journal.
_IN_FLIGHT = 1.0
# The recorder's retry backoff doubles from 1 s (1, 2, 4, 8 s and a quarter of jitter): asks
# of one segment this far apart are one retry sequence.
_RETRY_GAP = 10.0
_SIGNATURE_SAMPLES = 8  # sizes of a segment's first samples that identify it in the loop
_DRAIN_LIMIT = 45.0  # real seconds from SIGINT to exit: the recorder's drain plus a merge


def _reachable(start: float, end: float, outage: tuple[float, float] | None) -> float:
    """Virtual seconds from ``start`` to ``end`` the server answered (outside ``outage``)."""
    span = end - start
    if outage is not None:
        span -= max(0.0, min(end, outage[1]) - max(start, outage[0]))
    return span


def reproduce_command(seed: int) -> str:
    return REPRODUCE.format(seed=seed)


# -- the case --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChaosFaults:
    """The fault mix of a case: probabilities per request of the kinds in ``kinds``."""

    error_503: float = 0.0
    error_429: float = 0.0
    reset: float = 0.0
    reset_mid_body: float = 0.0
    truncate: float = 0.0
    slow: float = 0.0
    slow_min: float = 2.0  # real seconds
    slow_max: float = 6.0
    kinds: tuple[str, ...] = ("media",)

    @property
    def total(self) -> float:
        return (
            self.error_503
            + self.error_429
            + self.reset
            + self.reset_mid_body
            + self.truncate
            + self.slow
        )

    def describe(self) -> str:
        if self.total <= 0:
            return "none"
        parts = [
            f"{name}={value:.3f}"
            for name, value in (
                ("503", self.error_503),
                ("429", self.error_429),
                ("reset", self.reset),
                ("reset_mid_body", self.reset_mid_body),
                ("truncate", self.truncate),
                ("slow", self.slow),
            )
            if value > 0
        ]
        if self.slow > 0:
            parts.append(f"stall={self.slow_min:g}-{self.slow_max:g}s")
        parts.append("on=" + "+".join(self.kinds))
        return ",".join(parts)


@dataclass(frozen=True, slots=True)
class ChaosCase:
    """Every parameter of one run; drawn from ``seed`` by :func:`draw_case`."""

    seed: int
    shape: str
    duration: float  # virtual seconds of broadcast
    already: float  # virtual seconds already broadcast when the recorder starts
    window: int
    retention: int | None
    gaps: tuple[int, ...]
    gaps_listed: bool
    timeline_offset: float  # seconds added to every media and timeline time
    timescale: int | None  # MPD timescale (None: the media's own)
    publish_frame_time: bool  # instagram: publishFrameTime present
    signal_end: bool
    faults: ChaosFaults
    speed: float
    interruption: str  # "none" | "kill" | "sigint"
    interrupt_at: float  # share of the expected media bodies served before the interruption
    container: str  # output extension
    label: str = ""  # "field-failure" for the known field failure
    # Virtual seconds from which to which every request is reset (the server unreachable).
    outage: tuple[float, float] | None = None
    # A new Period (an encoder restart: the timeline restarts at 0) from this virtual second;
    # period_new_ids: its representations take new ids.
    period_start: float | None = None
    period_new_ids: bool = False
    # Expiring URLs: a new token every this many virtual seconds, the old one refused some
    # seconds later; the recorder renews its URL with --refresh-url-command.
    token_rotation: float | None = None

    def line(self) -> str:
        """One line with every drawn parameter."""
        gaps = ",".join(map(str, self.gaps)) or "-"
        parts = [
            f"seed={self.seed}",
            *([f"[{self.label}]"] if self.label else []),
            f"shape={self.shape}",
            f"duration={self.duration:g}",
            f"already={self.already:g}",
            f"window={self.window}",
            f"retention={self.retention if self.retention is not None else 'all'}",
            f"gaps={gaps}",
            f"gaps_listed={'yes' if self.gaps_listed else 'no'}",
            f"offset={self.timeline_offset:.0f}",
            f"timescale={self.timescale or 'media'}",
        ]
        if self.shape == "instagram":
            parts.append(f"publishFrameTime={'yes' if self.publish_frame_time else 'no'}")
        parts += [
            f"end={'signalled' if self.signal_end else 'silent'}",
            f"faults={self.faults.describe()}",
            f"speed={self.speed:g}x",
            f"interrupt={self.interruption}"
            + (f"@{self.interrupt_at:.2f}" if self.interruption != "none" else ""),
            f"out={self.container}",
        ]
        if self.outage is not None:
            parts.append(f"outage={self.outage[0]:g}-{self.outage[1]:g}")
        if self.period_start is not None:
            ids = ",new-ids" if self.period_new_ids else ""
            parts.append(f"period={self.period_start:g}{ids}")
        if self.token_rotation is not None:
            parts.append(f"tokens={self.token_rotation:g}s")
        return " ".join(parts)


SEGMENT_SECONDS = 2.05  # mean segment length of the test media (1.8-2.3 s, or 2 s constant)


def _segments(seconds: float) -> int:
    return max(1, round(seconds / SEGMENT_SECONDS))


def _draw_gaps(rng: random.Random, count: int, listed_first: int, available: int) -> list[int]:
    """Holes in the past, in the window listed at the start, and at the live edge."""
    places: list[tuple[int, int]] = []
    if listed_first > 2:
        places.append((1, listed_first - 1))  # the past
    places.append((max(1, listed_first), max(1, available - 1)))  # the window at the start
    if available + 1 < count - 2:
        places.append((available, count - 2))  # still to come: the live edge
    gaps: set[int] = set()
    for _ in range(rng.choice((0, 1, 1, 2, 3, 4))):
        first, last = rng.choice(places)
        if last < first:
            continue
        start = rng.randint(first, last)
        run = rng.choice((1, 1, 1, 2, 3))
        gaps.update(i for i in range(start, start + run) if 1 <= i <= count - 2)
    return sorted(gaps)


def _field_failure(seed: int, rng: random.Random) -> ChaosCase:
    """The issue's field failure: 10 min of which 8 past, window 5, 10% of media failing,
    segments 40-41 and 150 answering 404 for ever."""
    return ChaosCase(
        seed=seed,
        shape=rng.choice(("instagram", "time")),
        duration=600.0,
        already=480.0,
        window=5,
        retention=None,
        gaps=(40, 41, 150),
        gaps_listed=True,
        timeline_offset=0.0,
        timescale=None,
        publish_frame_time=True,
        signal_end=True,
        faults=ChaosFaults(
            error_503=0.03,
            error_429=0.015,
            reset=0.02,
            reset_mid_body=0.02,
            slow=0.015,
            slow_min=2.0,
            slow_max=6.0,
            kinds=("media",),
        ),
        speed=20.0,
        interruption="none",
        interrupt_at=0.0,
        container=".mp4",
        label="field-failure",
    )


def _draw_faults(rng: random.Random) -> ChaosFaults:
    """A fault mix of 2-15 % of the requests (the draws in the order cases always made them)."""
    total = rng.uniform(0.02, 0.15)
    weights = {
        name: rng.random()
        for name in ("error_503", "error_429", "reset", "reset_mid_body", "truncate")
    }
    slow = min(rng.choice((0.0, 0.0, 0.005, 0.01, 0.02)), total / 2)
    scale = (total - slow) / sum(weights.values())
    kinds = ["media"]
    if rng.random() < 0.5:
        kinds.append("init")
    if rng.random() < 0.4:
        kinds.append("manifest")
    return ChaosFaults(
        **{name: round(w * scale, 4) for name, w in weights.items()},
        slow=slow,
        slow_min=2.0,
        slow_max=rng.choice((3.0, 4.0, 6.0)),
        kinds=tuple(kinds),
    )


def draw_case(seed: int) -> ChaosCase:
    """The case of ``seed``: the same on every machine and every run."""
    rng = random.Random(f"instarec-chaos:{seed}")
    if rng.random() < 0.08:
        return _field_failure(seed, rng)
    shape = rng.choice(("instagram", "instagram", "time", "number_timeline", "number_duration"))
    if rng.random() < 0.06:
        shape = "static"
    duration = float(rng.randrange(40, 900, 10))
    if shape == "static":
        already = duration + 5
    elif rng.random() < 0.15:
        already = 0.0
    else:
        already = float(round(duration * rng.uniform(0.2, 0.95)))
    window = rng.choice((3, 5, 5, 10, 30))
    retention = None
    if rng.random() < 0.3 and shape != "static":
        retention = rng.randint(max(window + 5, 20), 150)
    count = _segments(duration)
    available = min(count, _segments(already))
    listed_first = max(0, available - window)
    gaps = _draw_gaps(rng, count, listed_first, available)
    gaps_listed = rng.random() < 0.6
    timeline_offset = 0.0 if rng.random() < 0.6 else float(rng.randrange(3_600, 10_000_000))
    timescale = None if rng.random() < 0.6 else 90_000
    publish_frame_time = rng.random() < 0.7
    signal_end = rng.random() < 0.85
    faults = _draw_faults(rng) if rng.random() < 0.75 else ChaosFaults()
    speed = float(rng.choice((10, 15, 20, 20, 30)))
    if retention is not None:
        speed = float(rng.choice((8, 10, 12)))  # the oldest segments expire at this pace
    interruption = rng.choices(("none", "kill", "sigint"), weights=(5, 3, 2))[0]
    interrupt_at = round(rng.uniform(0.1, 0.9), 2) if interruption != "none" else 0.0
    container = rng.choice((".mkv", ".mkv", ".mp4"))
    case = ChaosCase(
        seed=seed,
        shape=shape,
        duration=duration,
        already=already,
        window=window,
        retention=retention,
        gaps=tuple(gaps),
        gaps_listed=gaps_listed,
        timeline_offset=timeline_offset,
        timescale=timescale,
        publish_frame_time=publish_frame_time,
        signal_end=signal_end,
        faults=faults,
        speed=speed,
        interruption=interruption,
        interrupt_at=interrupt_at,
        container=container,
    )
    # Drawn last: every seed keeps the case it drew before outages were part of the matrix.
    case = replace(case, outage=_draw_outage(rng, case))
    # From a stream of their own, for the same reason.
    return _draw_long_broadcast(random.Random(f"instarec-chaos-long:{seed}"), case)


def _draw_long_broadcast(rng: random.Random, case: ChaosCase) -> ChaosCase:
    """What long broadcasts bring: an encoder restart (a new Period, in the shapes whose
    packagers start one) and signed URLs that expire."""
    if case.shape in ("time", "number_timeline") and rng.random() < 0.2:
        start = float(round(rng.uniform(0.15, 0.85) * case.duration))
        case = replace(case, period_start=start, period_new_ids=rng.random() < 0.5)
    if rng.random() < 0.15:
        case = replace(case, token_rotation=float(rng.randrange(40, 200, 5)))
    return case


def token_grace(case: ChaosCase) -> float:
    """How long an old token is still accepted: three real seconds, time enough to run the
    refresh command however fast the stream runs."""
    return 3.0 * case.speed


def _draw_outage(rng: random.Random, case: ChaosCase) -> tuple[float, float] | None:
    """Now and then, a stretch of the live part during which the server answers nothing:
    shorter than the recorder's live end timeout (a longer one ends the recording, rightly),
    often longer than the window."""
    # After the recorder's first seconds: with no first manifest there is nothing to record.
    earliest = case.already + 3.0 * case.speed
    if rng.random() >= 0.15 or case.shape == "static" or case.duration - earliest < 30:
        return None
    longest = 0.6 * _live_end_timeout(case) * case.speed
    length = round(rng.uniform(0.2, 1.0) * min(longest, case.duration - earliest))
    start = round(rng.uniform(earliest, case.duration - length))
    return float(start), float(start + length)


# -- the origin for a case -------------------------------------------------------------------------


def build_config(case: ChaosCase, media: TestMedia) -> OriginConfig:
    """The origin configuration of ``case``."""
    faults = case.faults
    fault_config = FaultConfig(
        seed=case.seed,
        error_503=faults.error_503,
        error_429=faults.error_429,
        retry_after=1,
        reset=faults.reset,
        reset_mid_body=faults.reset_mid_body,
        truncate=faults.truncate,
        slow_first_byte=faults.slow,
        slow_first_byte_delay=faults.slow_min,
        slow_first_byte_max=faults.slow_max,
        kinds=frozenset(faults.kinds),
        outages=(case.outage,) if case.outage is not None else (),
    )
    return OriginConfig(
        shape=case.shape,
        broadcast_duration=case.duration,
        already_broadcast=case.already,
        window=case.window,
        retention=case.retention,
        gaps=frozenset(case.gaps),
        gaps_listed=case.gaps_listed,
        timeline_offset=case.timeline_offset,
        timescale=case.timescale,
        publish_frame_time=case.publish_frame_time,
        faults=fault_config,
        speed=case.speed,
        signal_end=case.signal_end,
        # Long enough that a resumed run still finds the manifest of a broadcast that just
        # ended: the resume is judged on its downloads, not on a race with the 404.
        end_signal_manifest_404_after=max(60.0, 4.0 * case.speed),
        media=media.spec,
        period_starts=(case.period_start,) if case.period_start is not None else (),
        period_new_ids=case.period_new_ids,
        token_rotation=case.token_rotation,
        token_grace=token_grace(case),
    )


# -- inspecting the file ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FileTimes:
    """Packet start times (seconds, sorted) per track kind, as PyAV demuxes the file, and the
    packets' sizes in the same order."""

    tracks: dict[str, list[float]]
    error: str | None = None
    sizes: dict[str, list[int]] = field(default_factory=dict)


def inspect_file(path: Path) -> FileTimes:
    """Demux ``path`` without decoding; PyAV is imported here so the package does not need it."""
    try:
        import av
    except ImportError as exc:  # the test extra brings PyAV
        return FileTimes({}, f"PyAV is not installed ({exc}): pip install 'instarec[test]'")
    packets: dict[str, list[tuple[float, int]]] = {}
    error = None
    try:
        with av.open(str(path)) as container:
            streams = [*container.streams.video[:1], *container.streams.audio[:1]]
            for packet in container.demux(*streams):
                if packet.pts is None or packet.size == 0:
                    continue
                kind = packet.stream.type
                t = float(packet.pts * packet.time_base)
                packets.setdefault(kind, []).append((t, packet.size))
    except av.error.FFmpegError as exc:
        error = f"PyAV cannot read {path.name}: {exc}"
    for values in packets.values():
        values.sort()
    return FileTimes(
        {kind: [t for t, _ in v] for kind, v in packets.items()},
        error,
        {kind: [size for _, size in v] for kind, v in packets.items()},
    )


# -- the origin's model ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TrackModel:
    """Segment times and sizes of one track, in seconds of the track's media clock.

    ``signatures`` holds the sizes of the first samples of each source segment of the looped
    media (segment ``i`` is source ``i % len(signatures)``); empty: not known.
    """

    kind: str
    starts: list[float]
    ends: list[float]
    frames: list[int]
    signatures: tuple[tuple[int, ...], ...] = ()

    def index_at(self, t: float) -> int | None:
        i = bisect.bisect_right(self.starts, t + _TIME_TOLERANCE) - 1
        if i < 0 or t > self.ends[i] + _TIME_TOLERANCE:
            return None
        return i

    def starts_like(self, i: int, sizes: Sequence[int]) -> bool:
        """Whether packets of these sizes can be the first ones of segment ``i``."""
        if not self.signatures:
            return True
        signature = self.signatures[i % len(self.signatures)]
        return tuple(sizes[: len(signature)]) == signature[: len(sizes)]


def track_models(origin: Origin) -> dict[str, TrackModel]:
    media = origin.media
    test_media = origin.test_media
    assert test_media is not None
    models = {}
    for track in test_media.tracks():
        infos = [media.segment_info(track.kind, i) for i in range(origin.segment_count)]  # type: ignore[attr-defined]  # LoopedMedia behind Origin.media's object
        starts = [info.t / track.timescale for info in infos]
        ends = [(info.t + info.d) / track.timescale for info in infos]
        signatures = tuple(
            tuple(s.size for s in read_samples(track.segment_data(j))[:_SIGNATURE_SAMPLES])
            for j in range(test_media.source_count)
        )
        frames = [info.sample_count for info in infos]
        models[track.kind] = TrackModel(track.kind, starts, ends, frames, signatures)
    return models


def on_recording_clock(
    models: dict[str, TrackModel], origin: Origin, first_period: int
) -> dict[str, TrackModel]:
    """The models' times where a recording begun in Period ``first_period`` puts them.

    A later Period's media clock restarts at its first segment (each track's own), and the
    recorder places it at the Period's start, counted from the Period it began in
    (``instarec.periods``); the first Period keeps its media clock.
    """
    b = origin.broadcast
    if not b.periods.several:
        return models
    firsts = b.periods.firsts

    def period_start(p: int) -> float:
        return b.media.start_seconds(firsts[p]) if p else 0.0

    base = period_start(first_period)
    placed = {}
    for kind, model in models.items():
        starts, ends = list(model.starts), list(model.ends)
        for p in range(len(firsts)):
            shift = period_start(p) - base - (model.starts[firsts[p]] if p else 0.0)
            for i in b.periods.indexes(p):
                starts[i] += shift
                ends[i] += shift
        placed[kind] = replace(model, starts=starts, ends=ends)
    return placed


def _fetchable_count(origin: Origin) -> int:
    """Segments the recorder can still get: the retained ones now and every one to come."""
    b = origin.broadcast
    retained = b.retained(origin.now)
    return b.count - (retained.start if len(retained) else 0)


# -- running a case --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RecorderRun:
    """One process of the recorder."""

    started: float  # real seconds
    ended: float
    virtual_start: float
    virtual_end: float
    returncode: int | None  # None: it had to be killed at the wall-time limit
    interrupted_at: float | None  # real time of SIGKILL/SIGINT
    interrupted_virtual: float | None
    stderr_tail: str


@dataclass(frozen=True, slots=True)
class CaseResult:
    case: ChaosCase
    violations: tuple[str, ...]
    notes: tuple[str, ...]
    wall_time: float
    workdir: Path | None  # kept when asked for, or when the case failed and keep_failed is set

    @property
    def passed(self) -> bool:
        return not self.violations

    def report(self) -> str:
        verdict = "PASS" if self.passed else "FAIL"
        lines = [f"{verdict} {self.case.line()} ({self.wall_time:.1f} s)"]
        if not self.passed:
            lines.append(f"  reproduce: {reproduce_command(self.case.seed)}")
            lines += [f"  violated: {v}" for v in self.violations]
        lines += [f"  note: {n}" for n in self.notes]
        if self.workdir is not None:
            lines.append(f"  files kept in {self.workdir}")
        return "\n".join(lines)


def wall_limit(case: ChaosCase, count: int) -> float:
    """Real seconds a run may take: the live part at its speed, the past, retries and stalls."""
    live = max(case.duration - case.already, 0.0) / case.speed
    past = min(case.already, case.duration) / SEGMENT_SECONDS
    requests = 2 * count
    stalls = case.faults.slow * requests * case.faults.slow_max / 4  # four slots stall at once
    retries = case.faults.total * requests * 0.5
    end = 0.0 if case.signal_end else _live_end_timeout(case)
    restart = 30.0 if case.interruption == "kill" else 0.0
    # The outage itself, then a download's retries and the first re-ask of what got no answer.
    outage = (case.outage[1] - case.outage[0]) / case.speed + 35.0 if case.outage else 0.0
    return 30.0 + live + past * 0.05 + stalls + retries + end + restart + outage


def _live_end_timeout(case: ChaosCase) -> float:
    # Longer than the longest stall plus a retry: a slow manifest is no end of the broadcast.
    return max(10.0, case.faults.slow_max + 6.0)


def recorder_command(
    case: ChaosCase, url: str, output: Path, summary: Path, log: Path
) -> list[str]:
    """What a user would type for a stream running ``case.speed`` times faster than real."""
    poll = max(0.05, round(2.0 / case.speed, 3))  # the manifest's minimumUpdatePeriod, sped up
    return [
        sys.executable,
        "-m",
        "instarec",
        url,
        str(output),
        "--summary-file",
        str(summary),
        "--log-file",
        str(log),
        "--poll-interval",
        str(poll),
        "--live-end-timeout",
        str(_live_end_timeout(case)),
        *(_refresh_option(url) if case.token_rotation is not None else ()),
    ]


def _refresh_option(url: str) -> list[str]:
    """--refresh-url-command as a user would write it: ask the service for the current URL."""
    parts = urlsplit(url)
    endpoint = f"{parts.scheme}://{parts.netloc}/current-url"
    script = (
        "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1]).read().decode())"
    )
    command = f"{shlex.quote(sys.executable)} -c {shlex.quote(script)} {shlex.quote(endpoint)}"
    return ["--refresh-url-command", command]


async def _run_recorder(
    command: Sequence[str],
    workdir: Path,
    number: int,
    limit: float,
    origin: Origin,
    interrupt: tuple[signal.Signals, Callable[[], bool]] | None,
) -> RecorderRun:
    stdout = (workdir / f"run{number}.stdout").open("wb")
    stderr_path = workdir / f"run{number}.stderr"
    stderr = stderr_path.open("wb")
    started = time.monotonic()
    virtual_start = origin.clock.now()
    interrupted_at = interrupted_virtual = None
    try:
        process = await asyncio.create_subprocess_exec(
            *command,
            cwd=workdir,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,  # its ffmpeg children can be ended with it
        )
        returncode: int | None = None
        deadline = started + limit
        try:
            while True:
                try:
                    returncode = await asyncio.wait_for(process.wait(), timeout=0.01)
                    break
                except TimeoutError:
                    pass
                if interrupt is not None and interrupted_at is None and interrupt[1]():
                    interrupted_at = time.monotonic()
                    interrupted_virtual = origin.clock.now()
                    process.send_signal(interrupt[0])
                    if interrupt[0] is signal.SIGINT:
                        deadline = min(deadline, interrupted_at + _DRAIN_LIMIT)
                if time.monotonic() > deadline:
                    break
        finally:
            if returncode is None or interrupt is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
            if returncode is None:
                await process.wait()
    finally:
        stdout.close()
        stderr.close()
    text = stderr_path.read_text(errors="replace")
    return RecorderRun(
        started=started,
        ended=time.monotonic(),
        virtual_start=virtual_start,
        virtual_end=origin.clock.now(),
        returncode=returncode,
        interrupted_at=interrupted_at,
        interrupted_virtual=interrupted_virtual,
        stderr_tail=text[-1500:],
    )


def _media_for(case: ChaosCase, cache_dir: Path | None) -> TestMedia:
    constant = case.shape == "number_duration"
    spec = MediaSpec(segment_durations="constant" if constant else "variable")
    return generate_media(spec, cache_dir)


async def run_case(
    case: ChaosCase,
    workdir: Path,
    *,
    cache_dir: Path | None = None,
    media: TestMedia | None = None,
) -> CaseResult:
    """Run ``case`` with files under ``workdir`` and check it; never raises on a violation."""
    began = time.monotonic()
    if media is None:
        media = await asyncio.to_thread(_media_for, case, cache_dir)
    config = build_config(case, media)
    notes: list[str] = []
    await asyncio.to_thread(workdir.mkdir, parents=True, exist_ok=True)
    output = workdir / f"recording{case.container}"
    summary_path = workdir / "summary.json"
    log_path = workdir / "recorder.log"
    async with Origin(config, media=media) as origin:
        models = track_models(origin)
        limit = wall_limit(case, origin.segment_count)
        command = recorder_command(case, origin.manifest_url, output, summary_path, log_path)
        bodies_expected = 2 * max(_fetchable_count(origin) - len(case.gaps), 1)
        interrupt = None
        if case.interruption != "none":
            threshold = max(1, round(case.interrupt_at * bodies_expected))
            signum = signal.SIGKILL if case.interruption == "kill" else signal.SIGINT

            seen = {"entries": 0, "bodies": 0}

            def reached() -> bool:
                # Count the new entries only. Past its bound the log drops its oldest entries
                # and stays as long, so "new" is counted from every entry ever logged (the
                # length alone stopped moving, and a case with a probe storm was never
                # interrupted).
                log = origin.request_log
                dropped = origin.request_log_dropped
                new = log[max(0, seen["entries"] - dropped) :]
                seen["entries"] = dropped + len(log)
                seen["bodies"] += sum(1 for s in new if s.kind == "media" and s.complete)
                return seen["bodies"] >= threshold

            interrupt = (signum, reached)
        runs = [await _run_recorder(command, workdir, 1, limit, origin, interrupt)]
        if case.interruption == "kill" and runs[0].interrupted_at is not None:
            remaining = max(limit - (time.monotonic() - began), 30.0)
            runs.append(await _run_recorder(command, workdir, 2, remaining, origin, None))
        served = origin.request_log
        await asyncio.to_thread(_write_request_log, workdir / "requests.jsonl", served, began)
        if origin.request_log_dropped:
            notes.append(f"the request log dropped {origin.request_log_dropped} entries")
        first_period = ServedLedger(case, origin, runs, served).first_period()
        models = on_recording_clock(models, origin, first_period)
        checker = Checker(case, origin, models, runs, served, limit)
        try:
            violations = checker.check(output, summary_path)
        except Exception as exc:  # noqa: BLE001 - a checker bug fails its seed, not the run
            detail = "".join(traceback.format_exception(exc)[-3:]).strip()
            violations = [f"the checker raised {exc!r} (a runner bug): {detail}"]
        notes += checker.notes
    return CaseResult(case, tuple(violations), tuple(notes), time.monotonic() - began, workdir)


def _write_request_log(path: Path, served: Sequence[RequestRecord], began: float) -> None:
    """The origin's log beside the recording, for whoever diagnoses a failing seed."""
    with path.open("w") as out:
        for s in served:
            entry = dataclasses.asdict(s)
            entry["real_time"] = round(s.real_time - began, 4)
            entry["virtual_time"] = round(s.virtual_time, 3)
            out.write(json.dumps(entry) + "\n")


# -- the checks ------------------------------------------------------------------------------------


def _ranges(indexes: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted indexes as inclusive runs: [3, 4, 5, 9] -> [(3, 5), (9, 9)]."""
    runs: list[tuple[int, int]] = []
    for i in sorted(set(indexes)):
        if runs and runs[-1][1] == i - 1:
            runs[-1] = (runs[-1][0], i)
        else:
            runs.append((i, i))
    return runs


def _describe_indexes(indexes: Iterable[int]) -> str:
    return ",".join(f"{a}" if a == b else f"{a}-{b}" for a, b in _ranges(indexes))


@dataclass(frozen=True)
class ServedLedger:
    """What the origin's request log says the recorder was given, and so owes in its file."""

    case: ChaosCase
    origin: Origin
    runs: list[RecorderRun]
    served: list[RequestRecord]

    def served_indexes(self, kind: str) -> list[int]:
        """Indexes of the ``kind`` segments the origin served in full, sorted."""
        return sorted(
            {
                s.index
                for s in self.served
                if s.kind == "media" and s.track == kind and s.complete and s.index is not None
            }
        )

    def owed(self) -> set[int]:
        """Segments the origin served long enough, while a recorder ran, to be owed."""
        b = self.origin.broadcast
        grace = _REACH_GRACE + self.case.faults.slow_max * (self.case.faults.slow > 0)
        retention = self.case.retention
        # A run that never got a manifest can fetch nothing (see _kept_before_kill).
        runs = [r for r in self.runs if self.got_manifest(r)]
        first_periods = {id(run): self.first_period(run) for run in runs}
        owed = set()
        for i in range(b.count):
            if i in b.gaps:
                continue
            available = 0.0 if b.shape == "static" else b.ends[i]
            expires = math.inf
            if retention is not None and i + retention < b.count:
                expires = b.ends[i + retention]
            for run in runs:
                if b.periods.of(i) < first_periods[id(run)]:
                    continue  # see first_period: no address of it in the run's manifests
                # A run that ended by itself should have stayed until the end of the broadcast.
                end = run.interrupted_virtual if run.interrupted_virtual is not None else math.inf
                reach = _reachable(
                    max(available, run.virtual_start), min(expires, end), self.case.outage
                )
                if reach >= grace * self.case.speed:
                    owed.add(i)
                    break
        return owed

    def first_period(self, run: RecorderRun | None = None) -> int:
        """The Period the first manifest a recorder got (``run``'s, else the first run's) lists
        first. Earlier ones had left the manifest: nothing tells the recorder their addresses,
        and it owes none of their segments but what an earlier run had finished (the journal
        keeps no address to finish the rest with). The summary's times are on the media clock
        of the Period the first run began in."""
        b = self.origin.broadcast
        for record in self.served:
            if run is not None and not run.started <= record.real_time <= run.ended:
                continue
            if record.kind == "manifest" and record.complete:
                listed = b.listed(record.virtual_time)
                return b.periods.of(listed[0]) if len(listed) else 0
        return 0

    def got_manifest(self, run: RecorderRun) -> bool:
        """Whether the origin answered ``run`` a manifest in full."""
        return any(
            s.kind == "manifest" and s.complete and run.started <= s.real_time <= run.ended
            for s in self.served
        )

    def lost_to_faults(self, kind: str) -> set[int]:
        """``kind`` segments the origin never really served: every answer it gave while the
        segment was fetchable was an injected fault, and the recorder was still asking when
        it expired: asked again every ``_RETRY_GAP`` real seconds at most, up to an answer
        404 after its retention ended (or a stalled answer that turned 404 during the stall).

        Retries wait real seconds while retention runs on the sped-up clock: at 12x a segment
        kept for 28 segments lives under 5 real seconds, which three or four faults in a row
        and their backoff can outlast. Such a segment is not owed (at real speed it would
        take a server failing it for a minute). One the recorder stopped asking for while it
        was still there stays owed.
        """
        b = self.origin.broadcast
        asked: dict[int, list[RequestRecord]] = {}
        for s in self.served:
            if s.kind == "media" and s.track == kind and s.method == "GET" and s.index is not None:
                asked.setdefault(s.index, []).append(s)
        lost = set()
        for i, answers in asked.items():
            if i in b.gaps:
                continue
            there = [s for s in answers if b.fetchable(i, s.virtual_time)]
            expired = [
                s
                for s in answers
                if s.status == 404 and s.fault is None and s.virtual_time >= b.ends[i]
                if not b.fetchable(i, s.virtual_time)
            ]
            # A stalled answer is decided when the stall ends: a 404 to a segment fetchable
            # when asked is one whose retention ended during the stall (seconds of real time
            # are a minute of the sped-up clock).
            expired += [
                s for s in there if s.status == 404 and s.fault == Fault.SLOW_FIRST_BYTE.value
            ]
            if not there or not expired:
                continue
            if any(s.fault is None or s.complete for s in there):
                continue  # served once at least: owed
            times = sorted(s.real_time for s in [*there, min(expired, key=lambda s: s.real_time)])
            if all(b - a <= _RETRY_GAP for a, b in itertools.pairwise(times)):
                lost.add(i)
        return lost

    def kept_before_kill(self, kind: str) -> set[int] | None:
        """After a kill -9 whose resume never got a manifest (the broadcast's was gone), the
        ``kind`` segments the killed run had downloaded: all the recording can hold then.

        The resume can only merge what the killed run kept (as documented), so what that run
        had not reached yet was lost with the kill, not by the recorder; owing it would blame
        the resume for the origin's 404. None in every other case.
        """
        if self.case.interruption != "kill" or len(self.runs) < 2:
            return None
        if self.got_manifest(self.runs[1]):
            return None
        kill, resumed = self.runs[0].interrupted_at, self.runs[1].started
        assert kill is not None
        return {
            s.index
            for s in self.served
            if s.kind == "media" and s.track == kind and s.complete and s.index is not None
            if s.real_time < resumed and self.handed(s) < kill - _IN_FLIGHT
        }

    def handed(self, s: RequestRecord) -> float:
        """The latest real time at which the body of ``s`` can have been handed over.

        The log keeps arrival times; a stalled answer goes out up to ``slow_max`` later.
        """
        return s.real_time + (self.case.faults.slow_max if s.fault == "slow" else 0.0)


def file_offset(
    times: FileTimes,
    summary: dict[str, Any] | None,
    models: dict[str, TrackModel],
    ledger: ServedLedger,
) -> float | None:
    """Media-clock time of the file's zero.

    The file starts with the first frame of a segment the origin served in full, but not
    always the earliest one served: a body handed over just before a kill -9 may never
    reach the recorder's store, and by the resume it may have expired (taking the earliest
    for the file's start used to shift every packet of such a recording by a segment or
    more). Frame times cannot tell segments apart (frames are evenly spaced in every
    track), their sizes can: the file's first packets must have the sizes of the
    candidate's first samples, which the looped media repeats only once a loop. Of the
    served segments that match, the one the summary names as the start wins, else the
    earliest; when none matches, the earliest served.
    """
    firsts = [(v[0], kind) for kind, v in times.tracks.items() if v and kind in models]
    if not firsts:
        return None
    first, kind = min(firsts)
    served = ledger.served_indexes(kind)
    if not served:
        return None
    model = models[kind]
    sizes = times.sizes.get(kind, [])
    matching = [i for i in served if model.starts_like(i, sizes)] or served
    claimed = [
        track["start_seconds"] - times.tracks[track["kind"]][0]
        for track in (summary or {}).get("tracks", [])
        if isinstance(track.get("start_seconds"), int | float)
        and times.tracks.get(track.get("kind"))
    ]

    def rank(i: int) -> tuple[bool, int]:
        offset = model.starts[i] - first
        return (any(abs(offset - c) <= _RANGE_TOLERANCE for c in claimed), -i)

    return model.starts[max(matching, key=rank)] - first


def segments_in_file(
    times: FileTimes,
    summary: dict[str, Any] | None,
    models: dict[str, TrackModel],
    ledger: ServedLedger,
    violations: list[str],
) -> dict[str, dict[int, int]]:
    """Packets per segment index per track; stray and repeated packets are violations."""
    offset = file_offset(times, summary, models, ledger)
    present: dict[str, dict[int, int]] = {kind: {} for kind in models}
    if offset is None:
        violations.append("the origin served no media segment in full")
        return present
    for kind, model in models.items():
        values = times.tracks.get(kind, [])
        if not values:
            violations.append(f"no {kind} in the file")
            continue
        repeated = sum(1 for a, b in itertools.pairwise(values) if b - a < 0.0005)
        if repeated:
            violations.append(f"{repeated} {kind} packets twice (same timestamp)")
        stray = []
        counts = present[kind]
        for t in values:
            i = model.index_at(t + offset)
            if i is None:
                stray.append(t)
            else:
                counts[i] = counts.get(i, 0) + 1
        if stray:
            violations.append(
                f"{len(stray)} {kind} packets outside every segment of the origin "
                f"(first at {stray[0]:.3f} s in the file)"
            )
    return present


@dataclass
class Checker:
    case: ChaosCase
    origin: Origin
    models: dict[str, TrackModel]
    runs: list[RecorderRun]
    served: list[RequestRecord]
    limit: float
    notes: list[str] = field(default_factory=list)

    @property
    def ledger(self) -> ServedLedger:
        return ServedLedger(self.case, self.origin, self.runs, self.served)

    def check(self, output: Path, summary_path: Path) -> list[str]:
        violations: list[str] = []
        violations += self._process_checks()
        summary = self._summary(summary_path, violations)
        if not output.exists():
            violations.append(f"no output file {output.name}")
            return violations
        times = inspect_file(output)
        if times.error is not None:
            violations.append(times.error)
            return violations
        present = segments_in_file(times, summary, self.models, self.ledger, violations)
        if self._signalled():
            violations += self._sigint_content(present)
        else:
            violations += self._content(present)
        violations += self._together(present)
        if summary is not None:
            violations += self._holes(summary, present)
        violations += self._refetches()
        return violations

    # -- processes and summary

    def _signalled(self) -> bool:
        """Whether the recorder got its Ctrl+C (not when it finished before the point)."""
        return self.case.interruption == "sigint" and self.runs[0].interrupted_at is not None

    def _process_checks(self) -> list[str]:
        problems = []
        final = self.runs[-1]
        wall = sum(r.ended - r.started for r in self.runs)
        if final.returncode is None:
            problems.append(
                f"the recorder did not exit within the wall-time limit ({self.limit:.0f} s); "
                f"stderr ends: {final.stderr_tail[-300:]!r}"
            )
        elif wall > self.limit:
            problems.append(f"wall time {wall:.1f} s over the limit of {self.limit:.0f} s")
        # A recorder that finished before the interruption point never got the signal: it
        # owes a normal exit (it was expected to say 130 for a Ctrl+C it never saw).
        expected_code = 130 if self._signalled() else 0
        if final.returncode is not None and final.returncode != expected_code:
            tail = final.stderr_tail.strip().splitlines()[-3:]
            problems.append(f"exit status {final.returncode}, expected {expected_code}: {tail}")
        if self.case.interruption != "none" and self.runs[0].interrupted_at is None:
            self.notes.append("the recorder finished before the interruption point")
        if b"Traceback" in "".join(r.stderr_tail for r in self.runs).encode():
            problems.append("a traceback on stderr")
        return problems

    def _summary(self, path: Path, violations: list[str]) -> dict[str, Any] | None:
        if not path.exists():
            violations.append("no summary file")
            return None
        try:
            summary = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            violations.append(f"the summary file is not JSON: {exc}")
            return None
        if not isinstance(summary, dict):
            violations.append("the summary file is not a JSON object")
            return None
        if bool(summary.get("interrupted")) != self._signalled():
            violations.append(f"summary says interrupted={summary.get('interrupted')}")
        return summary

    # -- the file against the model

    def _partial(self, present: dict[str, dict[int, int]]) -> list[str]:
        problems = []
        for kind, counts in present.items():
            model = self.models[kind]
            partial = [i for i, n in counts.items() if n != model.frames[i]]
            if partial:
                detail = ", ".join(
                    f"{i}: {counts[i]}/{model.frames[i]}" for i in sorted(partial)[:5]
                )
                problems.append(f"{kind} segments not whole in the file ({len(partial)}; {detail})")
            in_gaps = sorted(set(counts) & set(self.origin.gaps))
            if in_gaps:
                problems.append(f"{kind} frames of configured holes {in_gaps}")
        return problems

    def _content(self, present: dict[str, dict[int, int]]) -> list[str]:
        problems = self._partial(present)
        reachable = self.ledger.owed()
        for kind in self.models:
            owed = self.ledger.kept_before_kill(kind)
            if owed is None:
                owed = reachable
            elif kind == "video" or len(self.models) == 1:
                self.notes.append("the resume found no manifest: it owes what the killed run kept")
            lost = sorted((owed - set(present[kind])) & self.ledger.lost_to_faults(kind))
            if lost:
                self.notes.append(
                    f"{kind} segments only ever answered with faults until they expired: "
                    f"{_describe_indexes(lost)}"
                )
            missing = sorted(owed - set(present[kind]) - set(lost))
            if missing:
                problems.append(
                    f"{kind} segments the origin served are missing from the file: "
                    f"{_describe_indexes(missing)} ({len(missing)} of {len(owed)} owed)"
                )
        return problems

    def _sigint_content(self, present: dict[str, dict[int, int]]) -> list[str]:
        problems = self._partial(present)
        signalled = self.runs[0].interrupted_at
        for kind in self.models:
            full = [s for s in self.served if s.kind == "media" and s.track == kind and s.complete]
            # Handed over before the signal: a stalled answer goes out after its arrival.
            before = {
                s.index for s in full if signalled is None or self.ledger.handed(s) < signalled
            }
            ever = {s.index for s in full}
            have = set(present[kind])
            lost = sorted(i for i in before - have if i is not None)
            if lost:
                problems.append(
                    f"{kind} segments served before Ctrl+C are missing from the file: "
                    f"{_describe_indexes(lost)}"
                )
            unserved = sorted(have - ever)
            if unserved:
                problems.append(
                    f"{kind} segments in the file were never served: {_describe_indexes(unserved)}"
                )
        return problems

    def _together(self, present: dict[str, dict[int, int]]) -> list[str]:
        """Video and audio start and end within one segment of each other, wherever the server
        kept both long enough.

        A segment lost to faults until it expired (see ``_lost_to_faults``) counts as there:
        at the edge of retention it can make one track start later, and it is not owed. So do
        the segments no run could be expected to reach (not owed): a run killed after it had
        one track's oldest segments but not yet the other's, whose resume came after those
        expired, leaves one track starting earlier, and no recorder could do better.
        """
        if len(present) < 2 or not all(present.values()):
            return []
        if self._signalled() or self.ledger.kept_before_kill("video") is not None:
            # Cut short (Ctrl+C, or a kill -9 whose resume found no manifest): the file holds
            # what each track's walk into the past had reached, and they walk apart.
            return []
        video = set(present["video"]) | self.ledger.lost_to_faults("video")
        audio = set(present["audio"]) | self.ledger.lost_to_faults("audio")
        owed = self.ledger.owed()
        first, last = sorted((min(video), min(audio)))
        apart_at_start = last - first > 1 and any(i in owed for i in range(first, last))
        if apart_at_start or abs(max(video) - max(audio)) > 1:
            return [
                f"the tracks do not start and end together: video segments "
                f"{min(video)}-{max(video)}, audio {min(audio)}-{max(audio)}"
            ]
        return []

    # -- holes

    def _holes(self, summary: dict[str, Any], present: dict[str, dict[int, int]]) -> list[str]:
        problems = []
        reported: dict[str, list[tuple[float, float | None]]] = {k: [] for k in self.models}
        for item in summary.get("missing_ranges", []):
            start, end = item.get("start_seconds"), item.get("end_seconds")
            if end is not None and start is not None and end - start < _RANGE_TOLERANCE:
                problems.append(f"a zero-length missing range at {start}")
            for kind in item.get("tracks", []):
                reported.setdefault(kind, []).append((start, end))
        for kind, model in self.models.items():
            have = sorted(present[kind])
            if not have:
                continue
            # Whatever the reason (a configured hole, a segment expired while no recorder ran,
            # the part a Ctrl+C left undone), a hole in the file is a missing range.
            absent = [i for i in range(have[0], have[-1] + 1) if i not in present[kind]]
            expected = [(model.starts[a], model.ends[b]) for a, b in _ranges(absent)]
            got = sorted(reported.get(kind, []), key=lambda r: r[0])
            if not _same_ranges(expected, got):
                problems.append(
                    f"{kind} missing ranges {_format_ranges(got)}, expected "
                    f"{_format_ranges(expected)} (holes {_describe_indexes(absent) or 'none'})"
                )
        return problems

    # -- the request log

    def _refetches(self) -> list[str]:
        problems = []
        kill = self.runs[0].interrupted_at if self.case.interruption == "kill" else None
        resumed = self.runs[1].started if kill is not None and len(self.runs) > 1 else None
        first_run: dict[tuple[str, int], float] = {}
        again_same_run: set[tuple[str, int]] = set()
        again_after_resume: list[tuple[str, int]] = []
        seen: dict[tuple[str, int], int] = {}
        # The log is in the order the answers were decided, so a stalled answer to the first
        # run can come after answers to the second: go by arrival, which says whose request it
        # was.
        for s in sorted(self.served, key=lambda s: s.real_time):
            if s.kind != "media" or not s.complete or s.index is None or s.track is None:
                continue
            key = (s.track, s.index)
            # Whose request: the second process did not exist before it started, and the
            # origin shares this event loop, so it can stamp a request of the first process a
            # few milliseconds after the kill.
            run = 0 if resumed is None or s.real_time < resumed else 1
            if key in seen:
                if seen[key] == run:
                    again_same_run.add(key)
                elif kill is not None and first_run[key] < kill - _IN_FLIGHT:
                    again_after_resume.append(key)
                continue
            seen[key] = run
            if run == 0:
                # A stalled body goes out after its arrival, not before (it was subtracted).
                first_run[key] = self.ledger.handed(s)
        if again_same_run:
            problems.append(
                f"{len(again_same_run)} segment bodies served twice to one run: "
                f"{_describe_keys(again_same_run)}"
            )
        if again_after_resume:
            problems.append(
                f"{len(again_after_resume)} segments fetched again after the resume although "
                f"served more than {_IN_FLIGHT:g} s before the kill: "
                f"{_describe_keys(again_after_resume)}"
            )
        return problems


def _describe_keys(keys: Iterable[tuple[str, int]]) -> str:
    by_track: dict[str, list[int]] = {}
    for track, index in keys:
        by_track.setdefault(track, []).append(index)
    return "; ".join(f"{t} {_describe_indexes(v)}" for t, v in sorted(by_track.items()))


def _same_ranges(
    expected: Sequence[tuple[float, float]], got: Sequence[tuple[float | None, float | None]]
) -> bool:
    if len(expected) != len(got):
        return False
    for (a, b), (c, d) in zip(expected, got, strict=True):
        if c is None or d is None:
            return False
        if abs(a - c) > _RANGE_TOLERANCE or abs(b - d) > _RANGE_TOLERANCE:
            return False
    return True


def _format_ranges(ranges: Sequence[tuple[float | None, float | None]]) -> str:
    def show(value: float | None) -> str:
        return "?" if value is None else f"{value:.2f}"

    return "[" + ", ".join(f"{show(a)}-{show(b)}" for a, b in ranges) + "]" if ranges else "none"


# -- the command line ------------------------------------------------------------------------------


def run_seed(seed: int, keep: Path | None = None, cache_dir: Path | None = None) -> CaseResult:
    """Seed ``seed``'s case in a directory of its own (under ``keep`` when given, else removed
    afterwards unless the case failed: a failure's log and request log are what a diagnosis
    needs, and a race may not come back); a function of its own so that a process pool can
    run it."""
    case = draw_case(seed)
    root = Path(tempfile.mkdtemp(prefix=f"instarec-chaos-{seed}-"))
    workdir = keep / f"seed-{seed}" if keep is not None else root
    if keep is not None and workdir.exists():
        shutil.rmtree(workdir)
    try:
        result = asyncio.run(run_case(case, workdir, cache_dir=cache_dir))
    finally:
        if keep is not None:
            shutil.rmtree(root, ignore_errors=True)
    if keep is None and result.passed:
        shutil.rmtree(root, ignore_errors=True)
        result = dataclasses.replace(result, workdir=None)
    elif keep is None:
        # The logs and the file are kept; the segments left behind are large.
        for path in root.iterdir():
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
    return result


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m instarec.testing.chaos",
        description="Record random broadcasts with random faults and check every recording.",
    )
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--seeds", type=int, metavar="N", help="run N seeds")
    which.add_argument("--seed", type=int, action="append", metavar="K", help="run seed K")
    which.add_argument("--show", type=int, nargs="+", metavar="K", help="print cases, run none")
    parser.add_argument("--first", type=int, default=0, help="first seed of --seeds (default 0)")
    parser.add_argument("--jobs", type=int, default=2, help="cases run at once (default 2)")
    parser.add_argument("--keep", type=Path, help="keep every case's files under this directory")
    parser.add_argument("--cache-dir", type=Path, help="test media cache directory")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="keep the files of a --seed run, print logs"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.show:
        for seed in args.show:
            print(draw_case(seed).line())
        return 0
    seeds = args.seed if args.seed else list(range(args.first, args.first + args.seeds))
    keep = args.keep
    if keep is None and args.verbose and args.seed:
        keep = Path(tempfile.mkdtemp(prefix="instarec-chaos-"))
    # Media first, once, so parallel cases do not all encode it.
    generate_media(MediaSpec(), args.cache_dir)
    generate_media(MediaSpec(segment_durations="constant"), args.cache_dir)
    failed: list[CaseResult] = []
    from concurrent.futures import ProcessPoolExecutor, as_completed

    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = {pool.submit(run_seed, seed, keep, args.cache_dir): seed for seed in seeds}
        for future in as_completed(futures):
            result = future.result()
            print(result.report(), flush=True)
            if args.verbose and not result.passed and result.workdir is not None:
                log = result.workdir / "recorder.log"
                if log.exists():
                    print("  recorder log ends:", *log.read_text().splitlines()[-40:], sep="\n    ")
            if not result.passed:
                failed.append(result)
    print(f"{len(seeds) - len(failed)} passed, {len(failed)} failed", flush=True)
    for result in sorted(failed, key=lambda r: r.case.seed):
        print(f"{reproduce_command(result.case.seed)}  # {result.violations[0]}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
