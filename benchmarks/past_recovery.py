"""Past-recovery benchmark: how fast is the whole archive of a broadcast recovered?

Side by side, on the project's simulated origin with added per-request latency, for each case:

* ``instarec``: this project, run as a subprocess (``python -m instarec URL OUT ...``);
* ``original``: the original tool (``instarec==1.8.0`` from PyPI, in its own virtualenv);
* ``limit``: the same archive URLs (both tracks, plus the init segments), all known in advance,
  fetched with aiohttp at the same concurrency, each body written to a file (no fsync), no
  merge.

Each tool run gets a fresh origin in this process, so request counts never mix. The origin is a
small subclass that notes when each archive segment (a segment older than the manifest's window
when the tool starts) was served: "recovery" is the time from the tool's launch to the last of
them, which is what past recovery costs; "wall" is launch to exit (it also holds the live tail,
the end detection and the ffmpeg merge).

Peak RSS and CPU come from ``/proc/<pid>`` (the tool process alone, sampled) and from ``wait4``
(the tool plus the children it waited for: ffmpeg, and the original's ffprobe calls).

Run ``python -m benchmarks.past_recovery --help``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from instarec import mp4
from instarec.testing import fmp4
from instarec.testing.faults import FaultConfig
from instarec.testing.media import MediaSpec, SegmentInfo, TestMedia, generate_media
from instarec.testing.origin import Origin, OriginConfig

log = logging.getLogger(__name__)

THIS_FILE = Path(__file__).resolve()
BENCH_DIR = THIS_FILE.parent
RESULTS_DIR = BENCH_DIR / "results"
ORIGINAL_SPEC = "instarec==1.8.0"
DEFAULT_ORIGINAL_VENV = Path(tempfile.gettempdir()) / "instarec-original-venv"
# The original tool treats its first argument as an Instagram username unless it contains
# "live-dash" and ".mpd": a URL fragment satisfies that test without reaching the server.
ORIGINAL_URL_SUFFIX = "#live-dash"
# instarec's default --end-stream-miss-threshold (timeline milliseconds); as segment numbers it
# is the guard probed below a $Number$ boundary.
MISS_THRESHOLD_MS = 30000
BENCH_SECONDS = 35.2  # source media of the $Time$ cases, looped (see run_benchmark)
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KB = 1024


# -- cases ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Case:
    key: str
    title: str
    shape: str  # origin shape
    duration: float  # broadcast length, seconds
    tail: float  # seconds still to broadcast when a tool starts (0: already over)
    retention: int | None = None
    original: bool = True  # the original tool only records Instagram-shaped ($Time$) streams
    rate_limit: float | None = None  # media requests the origin serves per second (429 above)
    limit: bool = True  # the known-URL downloader knows nothing of a rate limit: not run there


def build_cases(quick: bool, only: Sequence[str]) -> list[Case]:
    minutes = (10, 30) if quick else (10, 30, 60, 180)
    retention = 300 if quick else 1000
    cases = [
        Case(
            f"time-{m}min", f"{_length(m)} archive ($Time$, instagram)", "instagram", m * 60.0, 10.0
        )
        for m in minutes
    ]
    # Live, like the others, so that every tool ends the same way. The retained range moves
    # on by one segment every 2 s meanwhile; segments that leave it before a tool reaches
    # them are not counted as missed.
    cases.append(
        Case(
            f"number-retain{retention}",
            f"$Number$ archive, last {retention} segments retained (number_timeline)",
            "number_timeline",
            max(3600.0, retention * 2.0 * 1.5),
            10.0,
            retention=retention,
            original=False,
        )
    )
    rate_minutes, rate = (10, 50.0) if quick else (30, 100.0)
    cases.append(
        Case(
            "ratelimit",
            f"{_length(rate_minutes)} $Number$ archive, origin serving {rate:.0f} media "
            "requests/s (429 with Retry-After above)",
            "number_timeline",
            rate_minutes * 60.0,
            10.0,
            original=False,
            rate_limit=rate,
            limit=False,
        )
    )
    if only:
        cases = [c for c in cases if any(c.key.startswith(o) for o in only)]
    return cases


def _length(minutes: int) -> str:
    return f"{minutes // 60}-hour" if minutes >= 60 else f"{minutes}-minute"


# -- media --------------------------------------------------------------------------------------


def millisecond_media(media: TestMedia, work: Path) -> TestMedia:
    """The same media with the video track remuxed to a 1000 Hz timescale.

    The original tool takes the next segment's ``$Time$`` from ffprobe's ``duration_ts`` of the
    growing video file, i.e. in the video track's own timescale; that is the URL's millisecond
    value only when the video timescale is 1000 (as on the Instagram streams it was written for).
    On the default test media (15360 Hz) it asks for wrong times and finds the past by brute
    force, so both tools are measured on media they were both designed for.
    """
    video = media.video
    assert video is not None
    source = work / "video-native.mp4"
    target = work / "video-ms.mp4"
    source.write_bytes(video.init + video.data)
    subprocess.run(
        [
            ffmpeg_path(),
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-i",
            str(source),
            "-c",
            "copy",
            "-video_track_timescale",
            "1000",
            "-f",
            "mp4",
            "-movflags",
            "+frag_keyframe+empty_moov+default_base_moof",
            str(target),
        ],
        check=True,
        capture_output=True,
    )
    raw = target.read_bytes()
    init, spans = fmp4.split_fragmented(raw)
    info = mp4.parse_init(init)
    parts = [fmp4.styp() + raw[start:end] for start, end in spans]
    if len(parts) != media.source_count:
        raise RuntimeError(f"remux made {len(parts)} fragments, not {media.source_count}")
    segments, offsets, position = [], [], 0
    for part in parts:
        frag = mp4.parse_fragment(part, default_sample_duration=info.default_sample_duration)
        assert frag.base_media_decode_time is not None
        segments.append(
            SegmentInfo(frag.base_media_decode_time, frag.duration, len(part), frag.sample_count)
        )
        offsets.append(position)
        position += len(part)
    bandwidth = max(math.ceil(s.size * 8 * info.timescale / s.d) for s in segments)
    remuxed = replace(
        video,
        timescale=info.timescale,
        bandwidth=bandwidth,
        init=init,
        segments=tuple(segments),
        track_id=info.track_id,
        data=b"".join(parts),
        offsets=tuple(offsets),
    )
    return replace(media, video=remuxed)


def ffmpeg_path() -> str:
    found = shutil.which("ffmpeg")
    if found is None:
        raise SystemExit("ffmpeg is needed on PATH")
    return found


# -- the origin, with archive timing ------------------------------------------------------------


class TimedOrigin(Origin):
    """The simulated origin, noting when archive segments are served.

    ``archive`` (segment indexes) is set just before a tool starts; every 2xx GET of one of them
    is recorded per track with its time, so the benchmark knows when past recovery finished and
    how much of it was done, without keeping a record per request.
    """

    def __init__(self, config: OriginConfig, *, media: TestMedia) -> None:
        super().__init__(config, media=media)
        self.archive: range = range(0)
        self.fetched: dict[str, set[int]] = {}
        self.last_archive_served: float | None = None
        self.duplicate_gets = 0

    def mark_archive(self) -> range:
        listed = self.listed_segments()
        retained = self.retained_segments()
        first_listed = listed[0] if listed else self.segment_count
        first_retained = min(retained) if retained else first_listed
        self.archive = range(first_retained, first_listed)
        return self.archive

    def required_archive(self) -> list[int]:
        """Archive indexes still retained now (with retention, the oldest drop out as time runs)."""
        retained = self.retained_segments()
        lowest = min(retained) if retained else self.segment_count
        return [i for i in self.archive if i >= lowest]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        response = await super()._handle(request)
        if request.method == "GET" and 200 <= response.status < 300:
            kind, track, index = self.broadcast.route(request.path)
            if kind == "media" and track is not None and index in self.archive:
                seen = self.fetched.setdefault(track, set())
                if index in seen:
                    self.duplicate_gets += 1
                seen.add(index)
                self.last_archive_served = time.monotonic()
        return response


def origin_config(case: Case, latency: float, media: TestMedia) -> OriginConfig:
    return OriginConfig(
        shape=case.shape,
        broadcast_duration=case.duration,
        already_broadcast=max(0.0, case.duration - case.tail),
        window=5,
        retention=case.retention,
        faults=FaultConfig(latency=latency, rate_limit=case.rate_limit),
        speed=1.0,
        # Long enough that neither tool ever meets a 404 manifest before it saw the end:
        # the original polls a 404 manifest for ever.
        end_signal_manifest_404_after=3600.0,
        media=media.spec,
    )


# -- running one process ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProcessStats:
    exit_code: int | None  # None: killed at the time cap
    wall: float
    peak_rss_mb: float  # VmHWM of the process itself (sampled every 50 ms)
    peak_rss_tree_mb: float  # wait4: the process or any child it waited for (ffmpeg, ffprobe)
    cpu_own: float  # user+sys seconds of the process itself (sampled)
    cpu_tree: float  # wait4: the process plus the children it waited for
    cpu_user: float = 0.0  # the user part of cpu_own (the system part is the rest)
    # (seconds since launch, RSS MB, user+sys seconds) of the process itself, every 50 ms
    samples: tuple[tuple[float, float, float], ...] = ()


def _proc_sample(pid: int) -> tuple[int | None, float | None, int | None, float | None]:
    """(VmHWM in kB, user+sys seconds, VmRSS in kB, user seconds) of a running process; None
    where unreadable."""
    hwm = cpu = rss = user = None
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    hwm = int(line.split()[1])
                elif line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        # fields[0] is field 3 (state): utime and stime are fields 14 and 15
        cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK
        user = int(fields[11]) / CLK_TCK
    except (OSError, IndexError, ValueError):
        pass
    return hwm, cpu, rss, user


def run_process(
    argv: Sequence[str], *, env: dict[str, str], cwd: Path, log_path: Path, cap: float
) -> tuple[ProcessStats, float]:
    """Run argv to completion (or kill it after ``cap`` seconds); return its stats and launch time.

    Blocking (call it in a thread): it samples /proc while waiting, and reaps the child with
    ``wait4`` itself to get that child's own resource usage.
    """
    with log_path.open("wb") as log_file:
        started = time.monotonic()
        proc = subprocess.Popen(
            list(argv), stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=env, cwd=cwd,
        )  # fmt: skip
    hwm_kb, cpu_own, cpu_user, killed = 0, 0.0, 0.0, False
    samples: list[tuple[float, float, float]] = []
    try:
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            hwm, cpu, rss, user = _proc_sample(proc.pid)
            hwm_kb = max(hwm_kb, hwm or 0)
            cpu_own = max(cpu_own, cpu or 0.0)
            cpu_user = max(cpu_user, user or 0.0)
            if rss is not None:
                samples.append((time.monotonic() - started, rss / 1024, cpu_own))
            if time.monotonic() - started > cap:
                killed = True
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.05)
    except BaseException:
        proc.kill()
        os.wait4(proc.pid, 0)
        raise
    wall = time.monotonic() - started
    code = os.waitstatus_to_exitcode(status)
    proc.returncode = code  # reaped here, not by Popen
    stats = ProcessStats(
        exit_code=None if killed else code,
        wall=wall,
        peak_rss_mb=hwm_kb / 1024,
        peak_rss_tree_mb=usage.ru_maxrss / 1024,
        cpu_own=cpu_own,
        cpu_tree=usage.ru_utime + usage.ru_stime,
        cpu_user=cpu_user,
        samples=tuple(samples),
    )
    return stats, started


# -- one tool run -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RunResult:
    tool: str
    finished: bool
    exit_code: int | None
    recovery: float | None  # launch -> last archive segment served (None: archive incomplete)
    wall: float
    archive_segments: int  # archive segments (per track) when the tool started
    archive_fetched: dict[str, int]  # distinct archive segments fetched, per track
    duplicate_gets: int  # archive segments fetched more than once
    requests: dict[str, int]  # "METHOD kind status" -> count
    media_head: int
    media_get: int
    bytes_served: int
    peak_rss_mb: float
    peak_rss_tree_mb: float
    cpu_own: float
    cpu_tree: float
    cpu_user: float  # of cpu_own
    cpu_to_recovery: float | None  # cpu_own when the last archive segment was served
    output_seconds: float | None  # duration of the file written (ffprobe)
    broadcast_seconds: float
    summary: dict | None = None  # instarec's --summary-file
    note: str = ""
    samples: tuple[tuple[float, float, float], ...] = ()  # see ProcessStats
    refused_late: int = 0  # 429s of a rate-limited origin later than 3 s after the launch


def stats_dict(origin: Origin) -> tuple[dict[str, int], int, int, int]:
    stats = origin.stats
    requests = {
        f"{method} {kind} {status}": n for (method, kind, status), n in sorted(stats.counts.items())
    }
    return (
        requests,
        stats.count(method="HEAD", kind="media"),
        stats.count(method="GET", kind="media"),
        stats.bytes_served,
    )


def probe_duration(path: Path) -> float | None:
    ffprobe = shutil.which("ffprobe")
    if ffprobe is None or not path.exists():
        return None
    done = subprocess.run(
        [ffprobe, "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", str(path)],
        capture_output=True,
        text=True,
    )
    try:
        return float(done.stdout.strip())
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class Settings:
    latency: float
    concurrency: int
    runs: int
    original_runs: int
    original_cap: float
    tool_cap: float
    poll_interval: float
    live_end_timeout: float
    original_venv: Path
    instarec_python: str
    work: Path
    native_timescale: bool
    tools: tuple[str, ...]
    # Seconds between one run's end and the next one's start. ext4 skips inodes freed in the
    # last 30 s or so when it allocates one, scanning its tables for others: a run started
    # right after the previous one deleted its thousands of segment files paid about 3 s more
    # system CPU for its own file creations (3-hour archive) than one started on a settled
    # file system.
    settle: float = 30.0


async def run_tool(
    tool: str, case: Case, settings: Settings, media: TestMedia, run_index: int
) -> RunResult:
    config = origin_config(case, settings.latency, media)
    run_dir = settings.work / f"{case.key}-{tool}-{run_index}"
    run_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    # ffmpeg/ffprobe must be on PATH for the original tool
    env["PATH"] = os.pathsep.join([str(Path(ffmpeg_path()).parent), env.get("PATH", "")])
    env["PYTHONUNBUFFERED"] = "1"
    async with TimedOrigin(config, media=media) as origin:
        archive = origin.mark_archive()
        output = run_dir / "out.mp4"
        summary_path = run_dir / "summary.json"
        cap = settings.tool_cap
        if tool == "instarec":
            # The defaults, but for how quickly the end is noticed (both tools alike).
            argv = [
                settings.instarec_python, "-m", "instarec", origin.manifest_url, str(output),
                "--poll-interval", str(settings.poll_interval),
                "--live-end-timeout", str(settings.live_end_timeout),
                "--concurrency", str(settings.concurrency),
                "--overwrite", "-q",
                "--summary-file", str(summary_path),
            ]  # fmt: skip
        elif tool == "original":
            argv = [
                str(settings.original_venv / "bin" / "instarec"),
                origin.manifest_url + ORIGINAL_URL_SUFFIX, str(output),
                "--poll-interval", str(settings.poll_interval),
                "--live-end-timeout", str(settings.live_end_timeout),
                "--past-segment-delay", "0",
                "-q",
            ]  # fmt: skip
            cap = settings.original_cap
        elif tool == "limit":
            urls = [origin.init_url(kind) for kind in ("video", "audio")]
            urls += [origin.segment_url(kind, i) for i in archive for kind in ("video", "audio")]
            url_file = run_dir / "urls.json"
            url_file.write_text(json.dumps(urls))
            argv = [
                sys.executable, str(THIS_FILE),
                "--fetch-urls", str(url_file), "--concurrency", str(settings.concurrency),
            ]  # fmt: skip
        else:
            raise ValueError(tool)
        proc, started = await asyncio.to_thread(
            run_process, argv, env=env, cwd=run_dir, log_path=run_dir / "log.txt", cap=cap
        )
        fetched = {track: len(seen) for track, seen in origin.fetched.items()}
        required = origin.required_archive()
        complete = bool(required) and all(
            origin.fetched.get(track, set()).issuperset(required) for track in ("video", "audio")
        )
        expired = len(archive) - len(required)
        recovery = None
        if complete and origin.last_archive_served is not None:
            recovery = origin.last_archive_served - started
        requests, media_head, media_get, served = stats_dict(origin)
        duplicates = origin.duplicate_gets
        refused_late = sum(
            1 for r in origin.request_log if r.fault == "rate" and r.real_time > started + 3.0
        )
        broadcast_seconds = origin.duration
    summary = None
    if summary_path.exists():
        try:
            summary = json.loads(summary_path.read_text())
        except ValueError:
            summary = None
    output_seconds = probe_duration(output) if tool != "limit" else None
    note = (
        f"{expired} archive segments left the retention window during the run; " if expired else ""
    )
    if proc.exit_code is None:
        done = min(fetched.values()) if fetched else 0
        note += (
            f"did not finish in {cap / 60:.0f} min: {done}/{len(archive)} archive segments "
            f"({100 * done / max(1, len(archive)):.0f}%)"
        )
    elif not complete:
        note += f"archive incomplete: {fetched} of {len(required)} per track"
    result = RunResult(
        tool=tool,
        finished=proc.exit_code is not None,
        exit_code=proc.exit_code,
        recovery=recovery,
        wall=proc.wall,
        archive_segments=len(archive),
        archive_fetched=fetched,
        duplicate_gets=duplicates,
        requests=requests,
        media_head=media_head,
        media_get=media_get,
        bytes_served=served,
        peak_rss_mb=proc.peak_rss_mb,
        peak_rss_tree_mb=proc.peak_rss_tree_mb,
        cpu_own=proc.cpu_own,
        cpu_tree=proc.cpu_tree,
        cpu_user=proc.cpu_user,
        cpu_to_recovery=_cpu_at(proc.samples, recovery),
        output_seconds=output_seconds,
        broadcast_seconds=broadcast_seconds,
        summary=summary,
        note=note,
        samples=proc.samples,
        refused_late=refused_late,
    )
    # the recordings are big (a 3-hour archive is about 1 GB): keep only the logs
    for leftover in run_dir.iterdir():
        if leftover.name not in ("log.txt", "summary.json"):
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)
    return result


def _cpu_at(samples: Sequence[tuple[float, float, float]], at: float | None) -> float | None:
    """The process's own CPU seconds at ``at`` seconds after its launch (the last sample
    before it), None when there is no such sample."""
    if at is None:
        return None
    before = [cpu for t, _, cpu in samples if t <= at]
    return before[-1] if before else None


# -- the limit: every URL known, fetched at the same concurrency --------------------------------


async def fetch_all(urls: list[str], concurrency: int, into: Path) -> dict[str, float | int]:
    """Every URL, ``concurrency`` at a time, each body written to its own file under ``into``
    (as any downloader keeps what it fetched; no fsync), deleted at the end."""
    semaphore = asyncio.Semaphore(concurrency)
    total = 0
    started = time.monotonic()
    connector = aiohttp.TCPConnector(limit=concurrency)
    into.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240 - once, before any request
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(index: int, url: str) -> None:
            nonlocal total
            async with semaphore, session.get(url) as response:
                if response.status == 404:
                    return  # left the retention window meanwhile: the tools meet it too
                response.raise_for_status()
                with (into / f"{index:06d}").open("wb") as body:
                    async for chunk in response.content.iter_chunked(1 << 16):
                        body.write(chunk)
                        total += len(chunk)

        async with asyncio.TaskGroup() as group:
            for index, url in enumerate(urls):
                group.create_task(one(index, url))
    seconds = time.monotonic() - started
    shutil.rmtree(into)
    return {"seconds": seconds, "bytes": total, "requests": len(urls)}


# -- summaries ----------------------------------------------------------------------------------


def median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def median_run(runs: Sequence[RunResult]) -> RunResult:
    """The run whose recovery (else wall) time is the median: its counts represent the tool."""
    ordered = sorted(runs, key=lambda r: (r.recovery is None, r.recovery or r.wall))
    return ordered[(len(ordered) - 1) // 2]


@dataclass(slots=True)
class CaseReport:
    case: Case
    latency: float
    concurrency: int
    archive_segments: int = 0
    runs: dict[str, list[RunResult]] = field(default_factory=dict)
    targets: list[dict] = field(default_factory=list)

    def recovery(self, tool: str) -> float | None:
        return median([r.recovery for r in self.runs.get(tool, [])])

    def wall(self, tool: str) -> float | None:
        return median([r.wall for r in self.runs.get(tool, [])])


def _target(report: CaseReport, target: str, value: str, met: bool) -> None:
    report.targets.append({"target": target, "value": value, "met": met})


def evaluate_targets(report: CaseReport) -> None:
    """The targets of the issue "As fast as the network allows, with the default options"."""
    case = report.case
    mine = report.runs.get("instarec")
    if not mine:
        return
    recovery = report.recovery("instarec")
    limit = report.recovery("limit")
    heads = max(r.media_head for r in mine)
    if case.key == "time-10min":
        _limit_target(report, recovery, limit, 1.5)
        _target(report, "<= 300 HEAD probes", f"{heads} media HEAD", heads <= 300)
        _speedup_target(report, recovery)
    elif case.key == "time-180min":
        _limit_target(report, recovery, limit, 1.2)
        _target(report, "<= 1000 HEAD probes", f"{heads} media HEAD", heads <= 1000)
        rss = max(r.peak_rss_mb for r in mine)
        _target(report, "peak RSS of instarec's own process < 120 MB", f"{rss:.0f} MB", rss < 120)
        cpu = median([r.cpu_own for r in mine])
        limit_runs = report.runs.get("limit", [])
        limit_cpu = median([r.cpu_own for r in limit_runs])
        to_recovery = median([r.cpu_to_recovery for r in mine])
        limit_to_recovery = median([r.cpu_to_recovery for r in limit_runs])
        _target(
            report,
            "CPU (user + system) <= 1.5 x the known-URL downloader's",
            f"{cpu:.1f} s vs {limit_cpu:.1f} s = {ratio(cpu, limit_cpu)} x "
            f"(up to the last archive segment: {fmt_s(to_recovery)} vs "
            f"{fmt_s(limit_to_recovery)} = {ratio(to_recovery, limit_to_recovery)} x)"
            if cpu is not None and limit_cpu is not None
            else "n/a",
            cpu is not None and limit_cpu is not None and cpu <= 1.5 * limit_cpu,
        )
    elif case.key.startswith("number-"):
        guard = math.ceil(MISS_THRESHOLD_MS / 1000 / 2.0)
        bound = 2 * math.log2(max(2, report.archive_segments)) + guard
        _target(
            report,
            f"probes <= 2*log2(N) + threshold (N={report.archive_segments}, threshold {guard}: "
            f"{bound:.0f})",
            f"{heads} media HEAD",
            heads <= bound,
        )
        _limit_target(report, recovery, limit, 1.2)
    elif case.rate_limit is not None:
        allowed = (2 * report.archive_segments + 2) / case.rate_limit
        complete = all(r.recovery is not None for r in mine)
        _target(report, "no segment lost", "complete" if complete else "INCOMPLETE", complete)
        _target(
            report,
            f"recovery <= 1.3 x what the rate limit allows ({2 * report.archive_segments + 2} "
            f"requests at {case.rate_limit:.0f}/s = {allowed:.1f} s)",
            f"{fmt_s(recovery)} = {ratio(recovery, allowed)} x",
            recovery is not None and recovery <= 1.3 * allowed,
        )
        refused = max(r.refused_late for r in mine)
        _target(report, "few 429s after the first seconds", f"{refused} after 3 s", True)


def _limit_target(
    report: CaseReport, recovery: float | None, limit: float | None, factor: float
) -> None:
    _target(
        report,
        f"recovery <= {factor} x the known-URL limit",
        f"{fmt_s(recovery)} vs {fmt_s(limit)} = {ratio(recovery, limit)} x",
        recovery is not None and limit is not None and recovery <= factor * limit,
    )


def _speedup_target(report: CaseReport, recovery: float | None) -> None:
    original = report.runs.get("original")
    if not original or recovery is None:
        return
    finished = [r.recovery for r in original if r.recovery is not None]
    if finished:
        speedup = statistics.median(finished) / recovery
        value, met = f"{speedup:.1f} x faster", speedup >= 20
    else:
        bound = max(r.wall for r in original) / recovery
        value, met = f"> {bound:.1f} x (the original did not finish)", bound >= 20
    _target(report, ">= 20 x faster than instarec 1.8.0", value, met)


def fmt_s(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f} s"


def ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "—"
    return f"{a / b:.2f}"


def requests_text(run: RunResult) -> str:
    """Media and init requests by method and status (manifest polls listed apart)."""
    by: Counter[str] = Counter()
    manifest = 0
    for key, n in run.requests.items():
        method, kind, status = key.split()
        if kind == "manifest":
            manifest += n
        elif kind in ("media", "init"):
            by[f"{method} {status}"] += n
    parts = [f"{k}: {v}" for k, v in sorted(by.items())]
    return ", ".join(parts) + f" (+{manifest} manifest)"


def markdown(reports: Sequence[CaseReport], settings: Settings) -> str:
    lines = [
        f"Latency {settings.latency * 1000:.0f} ms per request, concurrency "
        f"{settings.concurrency}, {os.cpu_count()} cores; times are medians over the runs.",
        "",
    ]
    for report in reports:
        case = report.case
        lines += [
            f"### {case.title}: {report.archive_segments} archive segments per track",
            "",
            "| tool | runs | recovery | wall | archive fetched | media+init requests "
            "| MB served | peak RSS (own / +children) | CPU own: user + sys (+children) "
            "| CPU per 1000 segments | vs limit | vs original |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        limit = report.recovery("limit")
        original = report.recovery("original")
        for tool in ("limit", "instarec", "original"):
            runs = report.runs.get(tool)
            if not runs:
                continue
            rep = median_run(runs)
            recovery = report.recovery(tool)
            fetched = min(rep.archive_fetched.values()) if rep.archive_fetched else 0
            rec_text = fmt_s(recovery) if recovery is not None else rep.note or "incomplete"
            lines.append(
                f"| {tool} | {len(runs)} | {rec_text} | {fmt_s(report.wall(tool))} "
                f"| {fetched}/{rep.archive_segments} | {requests_text(rep)} "
                f"| {rep.bytes_served / 1e6:.1f} "
                f"| {rep.peak_rss_mb:.0f} / {rep.peak_rss_tree_mb:.0f} MB "
                f"| {rep.cpu_own:.1f} s: {rep.cpu_user:.1f} + {rep.cpu_own - rep.cpu_user:.1f} "
                f"({rep.cpu_tree:.1f} s) "
                f"| {1000 * rep.cpu_own / max(1, 2 * rep.archive_segments):.2f} s "
                f"| {ratio(recovery, limit) if tool != 'limit' else '1'} "
                f"| {ratio(recovery, original) if tool != 'original' and original else '—'} |"
            )
        if case.shape == "instagram":
            floor = report.archive_segments * report.latency
            lines.append(
                f"\nChain floor (segments × latency): {floor:.2f} s; instarec recovery / floor = "
                f"{ratio(report.recovery('instarec'), floor)}."
            )
        notes = [
            f"{r.tool} run {i + 1}: {r.note}"
            for tool_runs in report.runs.values()
            for i, r in enumerate(tool_runs)
            if r.note
        ]
        for r in report.runs.get("instarec", []) + report.runs.get("original", []):
            if (
                case.retention is None
                and r.output_seconds is not None
                and r.output_seconds < r.broadcast_seconds - 5
            ):
                notes.append(
                    f"{r.tool}: output {r.output_seconds:.0f} s of a "
                    f"{r.broadcast_seconds:.0f} s broadcast"
                )
        if notes:
            lines.append("")
            lines += [f"- {n}" for n in notes]
        if report.targets:
            lines += ["", "| target | measured | met |", "| --- | --- | --- |"]
            for t in report.targets:
                lines.append(f"| {t['target']} | {t['value']} | {'yes' if t['met'] else 'NO'} |")
        lines.append("")
    return "\n".join(lines)


# -- the report: Markdown and plots ------------------------------------------------------------


def write_report(reports: Sequence[CaseReport], text: str, stamp: str, *, name: str) -> None:
    """``results/<name>.md`` and its plots, replaced by each run of that name."""
    plots = _plots(reports, name)
    links = "".join(f"\n![{title}]({file})\n" for title, file in plots)
    header = f"# Past recovery, measured {stamp}\n\n"
    (RESULTS_DIR / f"{name}.md").write_text(header + text + links)


def _plots(reports: Sequence[CaseReport], name: str) -> list[tuple[str, str]]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("no plots: pip install -e '.[bench]' for matplotlib", file=sys.stderr)
        return []
    sweep = sorted(
        (r for r in reports if r.case.shape == "instagram"), key=lambda r: r.case.duration
    )
    made: list[tuple[str, str]] = []
    if sweep:
        minutes = [r.case.duration / 60 for r in sweep]
        figure, axes = plt.subplots(1, 2, figsize=(11, 4))
        for tool in ("limit", "instarec", "original"):
            points = [(m, r.recovery(tool)) for m, r in zip(minutes, sweep, strict=True)]
            shown = [(m, v) for m, v in points if v is not None]
            if shown:
                axes[0].plot(*zip(*shown, strict=True), marker="o", label=tool)
        axes[0].set(xlabel="archive length (minutes)", ylabel="recovery (s)", xscale="log",
                    yscale="log", title="Recovery time (20 ms per request)")  # fmt: skip
        axes[0].legend()
        heads = [max(x.media_head for x in r.runs.get("instarec", [])) for r in sweep]
        axes[1].plot(minutes, heads, marker="o", label="instarec")
        axes[1].set(xlabel="archive length (minutes)", ylabel="HEAD probes", xscale="log",
                    title="HEAD probes")  # fmt: skip
        figure.tight_layout()
        made.append(("recovery time and HEAD probes against archive length", f"{name}-sweep.png"))
        figure.savefig(RESULTS_DIR / made[-1][1], dpi=100)
        plt.close(figure)
        longest = sweep[-1]
        runs = longest.runs.get("instarec", [])
        if runs and median_run(runs).samples:
            made.append(_resources_plot(plt, longest, name))
    return made


def _resources_plot(plt: Any, report: CaseReport, name: str) -> tuple[str, str]:
    figure, rss_axis = plt.subplots(figsize=(8, 4))
    cpu_axis = rss_axis.twinx()
    for tool, style in (("instarec", "-"), ("limit", "--")):
        runs = report.runs.get(tool)
        if not runs or not median_run(runs).samples:
            continue
        t, rss, cpu = zip(*median_run(runs).samples, strict=True)
        rss_axis.plot(t, rss, style, color="tab:blue", label=f"{tool} RSS")
        cpu_axis.plot(t, cpu, style, color="tab:red", label=f"{tool} CPU")
    rss_axis.set(xlabel="seconds since launch", ylabel="RSS (MB)",
                 title=f"{report.case.title}: memory and CPU")  # fmt: skip
    cpu_axis.set_ylabel("user + system CPU (s)")
    figure.legend(loc="upper left")
    figure.tight_layout()
    file = f"{name}-resources.png"
    figure.savefig(RESULTS_DIR / file, dpi=100)
    plt.close(figure)
    return (f"RSS and CPU over the {report.case.title}", file)


# -- setup and main -----------------------------------------------------------------------------


def ensure_original(venv: Path) -> None:
    executable = venv / "bin" / "instarec"
    if executable.exists():
        return
    print(f"installing {ORIGINAL_SPEC} into {venv} ...", file=sys.stderr, flush=True)
    python3 = shutil.which("python3") or sys.executable
    subprocess.run([python3, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", ORIGINAL_SPEC], check=True)


DEFAULT_TOOLS = ("limit", "instarec", "original")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.past_recovery",
        description="Past recovery of long archives: instarec vs the original tool vs the "
        "known-URL limit, on the simulated origin with per-request latency.",
    )
    add = parser.add_argument
    add("--quick", action="store_true", help="short run: a 30-minute long case, 1 run, caps")
    add("--runs", type=int, default=None, help="runs per tool (median reported; default 3)")
    add("--original-runs", type=int, default=1, help="runs of the original tool (default 1)")
    add("--latency", type=float, default=0.02, help="seconds added to every request")
    add("--concurrency", type=int, default=8, help="parallel downloads (instarec and limit)")
    add("--original-cap", type=float, default=None, help="seconds before the original is "
        "stopped (default 900; 120 with --quick)")  # fmt: skip
    add("--tool-cap", type=float, default=3600.0, help="seconds before any other run is stopped")
    add("--cases", nargs="*", default=(), help="case keys (prefixes) to run: time-10min, "
        "time-180min, number-retain1000")  # fmt: skip
    add("--tools", nargs="*", default=DEFAULT_TOOLS)
    add("--original-venv", type=Path, default=DEFAULT_ORIGINAL_VENV,
        help=f"virtualenv with {ORIGINAL_SPEC} (created when missing)")  # fmt: skip
    add("--instarec-python", default=sys.executable, help="interpreter that runs instarec")
    add("--native-timescale", action="store_true", help="keep the test media's 15360 Hz video "
        "timescale (the original tool then cannot chain; see the module docs)")  # fmt: skip
    add("--keep-work", action="store_true", help="keep the work directory (logs)")
    add("--settle", type=float, default=30.0, help="seconds between one run's end and the next "
        "one's start, for the file system to settle (default 30)")  # fmt: skip
    add("--fetch-urls", type=Path, help=argparse.SUPPRESS)
    return parser


async def settle(seconds: float, since: float | None) -> None:
    """Wait until ``seconds`` have passed since the previous run ended at ``since``
    (see Settings.settle)."""
    if since is not None:
        await asyncio.sleep(max(0.0, since + seconds - time.monotonic()))


async def run_benchmark(args: argparse.Namespace) -> int:
    runs = args.runs or (1 if args.quick else 3)
    original_cap = args.original_cap or (120.0 if args.quick else 900.0)
    work = Path(tempfile.mkdtemp(prefix="instarec-bench-"))
    settings = Settings(
        latency=args.latency,
        concurrency=args.concurrency,
        runs=runs,
        original_runs=min(args.original_runs, runs),
        original_cap=original_cap,
        tool_cap=args.tool_cap,
        poll_interval=0.5,
        live_end_timeout=30.0,
        original_venv=args.original_venv,
        instarec_python=args.instarec_python,
        work=work,
        native_timescale=args.native_timescale,
        tools=tuple(args.tools),
        settle=args.settle,
    )
    if "original" in settings.tools:
        ensure_original(settings.original_venv)
    # 1056 frames at 30 fps: the loop lasts 35 200 ms exactly. The default 928-frame source
    # lasts 30 933.3 ms, so each loop of its millisecond remux started 1/3 ms off the frame
    # grid: times no encoder produces, which sent every seed search to probing tick by tick.
    time_media = await asyncio.to_thread(generate_media, MediaSpec(duration=BENCH_SECONDS))
    if not settings.native_timescale:
        time_media = await asyncio.to_thread(millisecond_media, time_media, work)
    number_media = await asyncio.to_thread(generate_media, MediaSpec(segment_durations="constant"))
    reports = []
    last_end: float | None = None
    for case in build_cases(args.quick, args.cases):
        media = time_media if case.shape == "instagram" else number_media
        report = CaseReport(case, settings.latency, settings.concurrency)
        tools = [
            tool
            for tool in settings.tools
            if not (tool == "original" and not case.original)
            and not (tool == "limit" and not case.limit)
        ]
        # Run by run, the tools side by side: a noisy minute weighs on every tool alike.
        stopped: set[str] = set()
        for i in range(runs):
            for tool in tools:
                count = settings.original_runs if tool == "original" else runs
                if i >= count or tool in stopped:
                    continue
                await settle(settings.settle, last_end)
                print(f"{case.key}: {tool} run {i + 1}/{count} ...", file=sys.stderr, flush=True)
                result = await run_tool(tool, case, settings, media, i)
                last_end = time.monotonic()
                report.archive_segments = result.archive_segments
                report.runs.setdefault(tool, []).append(result)
                print(
                    f"  recovery {fmt_s(result.recovery)}, wall {result.wall:.2f} s, "
                    f"exit {result.exit_code}, HEAD {result.media_head}, GET {result.media_get}, "
                    f"CPU {result.cpu_own:.1f} s, RSS {result.peak_rss_mb:.0f} MB {result.note}",
                    file=sys.stderr,
                    flush=True,
                )
                if not result.finished:
                    stopped.add(tool)  # a capped run is not repeated
        evaluate_targets(report)
        reports.append(report)
    text = markdown(reports, settings)
    print(text)
    RESULTS_DIR.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    # A run of some cases or tools only must not replace the whole report.
    whole = not args.cases and set(args.tools) == set(DEFAULT_TOOLS)
    name = ("report-quick" if args.quick else "report") if whole else "report-partial"
    write_report(reports, text, stamp, name=name)
    payload = {
        "started": stamp,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "settings": {k: str(v) for k, v in asdict(settings).items()},
        "cases": [
            {
                "case": asdict(r.case),
                "archive_segments": r.archive_segments,
                "medians": {
                    tool: {"recovery": r.recovery(tool), "wall": r.wall(tool)} for tool in r.runs
                },
                "runs": {tool: [asdict(x) for x in xs] for tool, xs in r.runs.items()},
                "targets": r.targets,
            }
            for r in reports
        ],
    }
    out = RESULTS_DIR / f"{stamp}.json"
    out.write_text(json.dumps(payload, indent=1))
    print(f"\nresults: {out}", file=sys.stderr)
    if args.keep_work:
        print(f"work directory (logs): {work}", file=sys.stderr)
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.fetch_urls is not None:
        urls = json.loads(args.fetch_urls.read_text())
        into = args.fetch_urls.parent / "bodies"
        print(json.dumps(asyncio.run(fetch_all(urls, args.concurrency, into))))
        return 0
    return asyncio.run(run_benchmark(args))


if __name__ == "__main__":
    sys.exit(main())
