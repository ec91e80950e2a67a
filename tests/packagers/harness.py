"""What every real-packager case shares.

A case is real software in real time: one source clip, encoded once, is fed by ``ffmpeg -re -c
copy`` to a packager (or packaged by ffmpeg's own DASH muxer); a small aiohttp server serves the
packager's output directory and logs every request; the recorder joins late, as the real CLI in
a subprocess; a watcher reads every segment the packager publishes with PyAV, so the expected
recording comes from the packager's own output, never from what the recorder made.

All cases of the matrix run side by side (``run_cases``): the whole matrix takes about as long
as one case.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.packagers.output import (
    Expected,
    OutputWatcher,
    SegmentFacts,
    SegmentNaming,
    expected_recording,
    start_candidates,
)
from tests.packagers.programs import Command, running
from tests.packagers.served import Request, served_directory
from tests.recording import MediaReport, inspect

# -- the source clip ---------------------------------------------------------------------------

# Bump when the clip's bytes change, so a stale cached clip is not reused.
CLIP_VERSION = 1


@dataclass(frozen=True, slots=True)
class ClipSpec:
    seconds: int = 54
    fps: int = 30
    keyframe_every: int = 60  # frames: a keyframe every 2 s, so 2 s segments cut cleanly
    width: int = 320
    height: int = 180
    audio_rate: int = 48000

    @property
    def video_frames(self) -> int:
        return self.seconds * self.fps

    def file_name(self) -> str:
        return (
            f"packager-source-v{CLIP_VERSION}-{self.seconds}s-{self.width}x{self.height}"
            f"-{self.fps}fps-g{self.keyframe_every}-{self.audio_rate}hz.mp4"
        )


@dataclass(frozen=True, slots=True)
class SourceClip:
    path: Path
    spec: ClipSpec


def make_source_clip(cache_dir: Path, spec: ClipSpec, ffmpeg: str) -> SourceClip:
    """H.264 + AAC in MP4, made once and cached: every case copies it, none encodes."""
    path = cache_dir / spec.file_name()
    if not path.exists():
        cache_dir.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}.part.mp4")
        argv = [
            ffmpeg,
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            f"testsrc2=size={spec.width}x{spec.height}:rate={spec.fps}",
            "-f",
            "lavfi",
            "-i",
            f"sine=frequency=440:sample_rate={spec.audio_rate}",
            "-t",
            str(spec.seconds),
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            # No B-frames: decode order is presentation order, as most live encoders send.
            "-tune",
            "zerolatency",
            "-pix_fmt",
            "yuv420p",
            "-g",
            str(spec.keyframe_every),
            "-keyint_min",
            str(spec.keyframe_every),
            "-sc_threshold",
            "0",
            "-c:a",
            "aac",
            "-ar",
            str(spec.audio_rate),
            "-ac",
            "1",
            "-b:a",
            "64k",
            str(partial),
        ]
        subprocess.run(argv, check=True, stdin=subprocess.DEVNULL, timeout=120)
        os.replace(partial, path)
    return SourceClip(path, spec)


def find_ffmpeg() -> str | None:
    return shutil.which("ffmpeg")


# -- one case ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CaseSetup:
    """The programs and files of one case, made by the packager's module."""

    served: Path  # the directory the packager writes and the test server serves
    manifest: str  # the manifest's path under the server, such as "/live.mpd"
    naming: SegmentNaming
    producer: Command  # ffmpeg -re from the clip
    packager: Command | None = None  # a separate server (nginx, Shaka); None: ffmpeg packages
    kill_producer_after: float | None = None  # seconds after its start: SIGKILL, mid-segment
    packager_ends_by_itself: bool = False  # Shaka ends its input on a UDP timeout
    join_after: float | None = None  # seconds after the producer starts; None: Timing's


@dataclass(frozen=True, slots=True)
class PackagerCase:
    name: str
    software: str
    # The software this case needs and is not installed, as an install hint; None: all there.
    missing: Callable[[], str | None]
    setup: Callable[[Path, SourceClip], CaseSetup]
    # The server keeps every segment: the recording starts at the first one. Otherwise it
    # starts at the oldest one still on disk when the recorder joined.
    past_kept: bool
    # The start is a time the recorder can name without searching (0) and the $Time$ chain
    # knows each next time from the media: not a single HEAD request is needed.
    no_probe: bool


@dataclass(frozen=True, slots=True)
class Timing:
    join_after: float = 26.0  # seconds after the producer starts: >= 20 s after segment one
    live_end_timeout: float = 8.0
    poll_interval: float = 1.0
    # The recorder gets this long after the source's end plus its live end timeout to end by
    # itself; past it the harness kills it and the case fails for not noticing the end.
    end_slack: float = 15.0


@dataclass(frozen=True, slots=True)
class CaseResult:
    name: str
    skipped: str | None = None  # the install hint when the software is missing
    harness_error: str | None = None
    exit_code: int | None = None
    ended_by_itself: bool = False
    stderr: str = ""
    summary: Mapping[str, Any] | None = None
    requests: tuple[Request, ...] = ()
    report: MediaReport | None = None
    expected: tuple[Expected, ...] = ()  # one per start a correct recording may have
    joined_late: float | None = None  # seconds between the first segment and the join
    facts: tuple[SegmentFacts, ...] = ()
    on_disk_at_join: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    work_dir: Path | None = None  # the programs' logs, the recorder's -v log, the served files

    def heads(self, status: int | None = None) -> int:
        return sum(1 for r in self.requests if r.method == "HEAD" and status in (None, r.status))

    def describe(self) -> str:
        """The facts a failing assertion shows: enough to start a diagnosis."""
        lines = [f"case {self.name}: exit {self.exit_code}, ended by itself {self.ended_by_itself}"]
        if self.harness_error:
            lines.append(f"harness error: {self.harness_error}")
        if self.summary is not None:
            keys = ("end_reason", "segments_recorded", "segments_missing", "duration_seconds")
            lines.append("summary: " + ", ".join(f"{k}={self.summary.get(k)}" for k in keys))
            lines.append(f"archive: {self.summary.get('archive')}")
            lines.append(f"missing ranges: {self.summary.get('missing_ranges')}")
        lines.append(
            f"requests: {len(self.requests)}, HEAD {self.heads()} ({self.heads(404)} answered 404)"
        )
        if self.work_dir is not None:
            lines.append(f"logs and files: {self.work_dir}")
        lines.append(f"expected: {self.expected}")
        lines.append(f"recorded: {self.report}")
        lines.append("recorder stderr (tail):\n" + "\n".join(self.stderr.splitlines()[-25:]))
        return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class RecorderRun:
    exit_code: int | None
    ended_by_itself: bool  # False: still running at the deadline, stopped by the harness
    stderr: str
    summary: dict[str, Any] | None
    output: Path


async def record_with_cli(url: str, work: Path, timing: Timing, deadline: float) -> RecorderRun:
    """Run ``python -m instarec`` as a user would; stop it only when past ``deadline``."""
    output = work / "recording.mp4"
    summary_path = work / "summary.json"
    stderr_path = work / "recorder.stderr"
    argv = [
        sys.executable,
        "-m",
        "instarec",
        url,
        str(output),
        "--summary-file",
        str(summary_path),
        "--live-end-timeout",
        str(timing.live_end_timeout),
        "--poll-interval",
        str(timing.poll_interval),
        "--log-file",
        str(work / "recorder.log"),
    ]
    with stderr_path.open("wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=stderr,
            cwd=work,
        )
    ended_by_itself = True
    try:
        try:
            await asyncio.wait_for(process.wait(), max(1.0, deadline - time.monotonic()))
        except TimeoutError:
            ended_by_itself = False
            # SIGTERM is the recorder's Ctrl+C: it merges what it has, which helps a diagnosis.
            os.kill(process.pid, signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), 20)
    finally:
        if process.returncode is None:  # cancelled, or deaf to SIGTERM
            os.kill(process.pid, signal.SIGKILL)
            await process.wait()
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else None
    return RecorderRun(
        process.returncode,
        ended_by_itself,
        stderr_path.read_text(errors="replace"),
        summary,
        output,
    )


def _prepare(case: PackagerCase, work: Path, clip: SourceClip) -> CaseSetup:
    work.mkdir(parents=True, exist_ok=True)
    setup = case.setup(work, clip)
    setup.served.mkdir(parents=True, exist_ok=True)
    return setup


async def _drive(
    setup: CaseSetup, watcher: OutputWatcher, clip: SourceClip, work: Path, timing: Timing
) -> tuple[RecorderRun, tuple[Request, ...]]:
    """Start the server and programs, join late with the recorder, wait for both ends."""
    async with contextlib.AsyncExitStack() as stack:
        url_base, requests = await stack.enter_async_context(
            served_directory(setup.served, watcher.note_join, setup.manifest)
        )
        watching = asyncio.create_task(watcher.run())
        stack.callback(watching.cancel)
        packager = None
        if setup.packager is not None:
            packager = await stack.enter_async_context(running(setup.packager, work))
        producer = await stack.enter_async_context(running(setup.producer, work))
        started = time.monotonic()
        if setup.kill_producer_after is not None:
            killer = asyncio.get_running_loop().call_later(setup.kill_producer_after, producer.kill)
            stack.callback(killer.cancel)
        await asyncio.sleep(setup.join_after or timing.join_after)
        await watcher.next_segment(within=3.0)
        deadline = started + clip.spec.seconds + timing.live_end_timeout + timing.end_slack
        recording = asyncio.create_task(
            record_with_cli(url_base + setup.manifest, work, timing, deadline)
        )
        stack.callback(recording.cancel)  # a harness failure must not leave it running
        # The packager's end: the producer stops (or is killed), then the packager writes its
        # last segment; after that every file on disk is whole.
        await producer.wait(deadline - time.monotonic())
        if packager is not None and setup.packager_ends_by_itself:
            await packager.wait(max(1.0, deadline - time.monotonic()))
        elif packager is not None:
            await asyncio.sleep(1.0)  # nginx closes the stream's last fragment on disconnect
        watching.cancel()
        watcher.scan(final=True)
        run = await recording
        return run, tuple(requests.requests)


async def run_case(
    case: PackagerCase, clip: SourceClip, work: Path, timing: Timing = Timing()
) -> CaseResult:
    missing = case.missing()
    if missing is not None:
        return CaseResult(case.name, skipped=missing)
    setup = _prepare(case, work, clip)
    watcher = OutputWatcher(setup.served, setup.naming)
    run, requests = await _drive(setup, watcher, clip, work, timing)
    report = inspect(run.output) if run.output.exists() else None
    facts = tuple(sorted(watcher.facts.values(), key=lambda f: (f.kind, f.key)))
    error = f"unreadable segments: {watcher.unreadable}" if watcher.unreadable else None
    try:
        expected = tuple(
            expected_recording(facts, first_keys, clip.spec.fps)
            for first_keys in start_candidates(case.past_kept, facts, watcher)
        )
    except ValueError as exc:
        expected = ()
        error = f"{error}; {exc}" if error else str(exc)
    joined_late = None
    if watcher.first_seen is not None and watcher.joined_at is not None:
        joined_late = watcher.joined_at - watcher.first_seen
    on_disk = watcher.on_disk_at_join or {}
    return CaseResult(
        case.name,
        harness_error=error,
        exit_code=run.exit_code,
        ended_by_itself=run.ended_by_itself,
        stderr=run.stderr,
        summary=run.summary,
        requests=requests,
        report=report,
        expected=expected,
        joined_late=joined_late,
        facts=facts,
        on_disk_at_join={kind: tuple(sorted(keys)) for kind, keys in on_disk.items()},
        work_dir=work,
    )


async def run_cases(
    cases: Iterable[PackagerCase], clip: SourceClip, root: Path, timing: Timing = Timing()
) -> dict[str, CaseResult]:
    """Every case at once: producers, packagers and recordings all run side by side."""
    cases = list(cases)

    async def one(case: PackagerCase) -> CaseResult:
        try:
            return await run_case(case, clip, root / case.name, timing)
        except (OSError, TimeoutError, ValueError) as exc:
            return CaseResult(case.name, harness_error=f"{type(exc).__name__}: {exc}")

    async with asyncio.TaskGroup() as group:
        tasks = {case.name: group.create_task(one(case)) for case in cases}
    return {name: task.result() for name, task in tasks.items()}
