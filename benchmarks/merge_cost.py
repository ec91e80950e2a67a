"""What the final ffmpeg merge of a long recording costs, per output container.

A recording of ``--hours`` of the test media (looped) is written as the recorder stores it
(one init and one file per segment and track), then merged into each container twice, side by
side in one sitting:

* ``streamed``: instarec's merge, each track fed to ffmpeg through a pipe;
* ``copy-first``: the merge as it was before, each track concatenated into one file first,
  then ffmpeg reading those files (the same ffmpeg command otherwise).

Each merge runs in a fresh child process, which measures itself: wall time, the peak RSS of
ffmpeg (``RUSAGE_CHILDREN``), and bytes read and written (``/proc/self/io`` after ffmpeg was
reaped includes ffmpeg's own counts): ``rchar``/``wchar`` count every read and write call
(pipes included), ``write_bytes`` what went to the storage layer.

Run ``python -m benchmarks.merge_cost --help``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from instarec import merge
from instarec.merge import TrackInput, find_ffmpeg, merge_tracks
from instarec.testing.media import LoopedMedia, MediaSpec, generate_media

CONTAINERS = (".mp4", ".mkv", ".ts")


@dataclass(frozen=True, slots=True)
class MergeCost:
    method: str
    container: str
    wall: float
    ffmpeg_peak_rss_mb: float
    read_mb: float  # rchar: every read call, pipes included
    written_mb: float  # wchar: every write call, pipes included
    storage_written_mb: float  # write_bytes: what reached the storage layer
    output_mb: float


def write_recording(root: Path, hours: float) -> list[TrackInput]:
    """The segments of ``hours`` of looped test media, stored as the recorder would."""
    media = generate_media(MediaSpec())
    count = int(hours * 3600 / 2.0)
    looped = LoopedMedia(media, count)
    tracks = []
    for track in media.tracks():
        directory = root / track.kind
        directory.mkdir(parents=True, exist_ok=True)
        init = directory / "init.mp4"
        init.write_bytes(track.init)
        paths = []
        for i in range(count):
            path = directory / f"{i:06d}.m4s"
            path.write_bytes(looped.segment_bytes(track.kind, i))
            paths.append(path)
        first = looped.segment_info(track.kind, 0).t / track.timescale
        tracks.append(TrackInput(track.kind, init, tuple(paths), first))
    return tracks


def _io() -> dict[str, int]:
    with open("/proc/self/io") as io:
        return {key: int(value) for key, _, value in (line.partition(": ") for line in io)}


async def _copy_first(tracks: list[TrackInput], output: Path, ffmpeg: str) -> None:
    """The merge before streaming: a concatenated copy of each track, then ffmpeg on files."""
    work = output.parent / "work"
    work.mkdir(exist_ok=True)
    inputs = []
    for track in tracks:
        dest = work / f"{track.kind}.mp4"
        with dest.open("wb") as out:
            for src in (track.init, *track.segments):
                with src.open("rb") as inp:
                    shutil.copyfileobj(inp, out, 1 << 20)
        inputs.append(str(dest))
    container = merge._container(output)
    cmd = merge.build_command(
        ffmpeg, tracks, inputs, output, container.muxer, faststart=container.faststart
    )
    proc = await asyncio.create_subprocess_exec(*cmd, stdin=subprocess.DEVNULL)
    if await proc.wait() != 0:
        raise RuntimeError(f"ffmpeg failed: {cmd}")
    shutil.rmtree(work)


def measure_one(tracks_file: Path, method: str, container: str, out_dir: Path) -> MergeCost:
    """Run in the child: one merge, measured from inside."""
    tracks = [
        TrackInput(t["kind"], Path(t["init"]), tuple(Path(p) for p in t["segments"]), t["first"])
        for t in json.loads(tracks_file.read_text())
    ]
    ffmpeg = find_ffmpeg()
    output = out_dir / f"out{container}"
    before = _io()
    started = time.monotonic()
    if method == "streamed":
        asyncio.run(merge_tracks(tracks, output, ffmpeg=ffmpeg, overwrite=True))
    else:
        asyncio.run(_copy_first(tracks, output, ffmpeg))
    wall = time.monotonic() - started
    after = _io()
    size = output.stat().st_size
    output.unlink()
    mb = 1e6
    return MergeCost(
        method=method,
        container=container,
        wall=wall,
        ffmpeg_peak_rss_mb=resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
        read_mb=(after["rchar"] - before["rchar"]) / mb,
        written_mb=(after["wchar"] - before["wchar"]) / mb,
        storage_written_mb=(after["write_bytes"] - before["write_bytes"]) / mb,
        output_mb=size / mb,
    )


def run_child(tracks_file: Path, method: str, container: str, out_dir: Path) -> MergeCost:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.merge_cost", "--child", str(tracks_file), method,
         container, str(out_dir)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return MergeCost(**json.loads(done.stdout))


def markdown(costs: list[MergeCost], hours: float, recording_mb: float, runs: int) -> str:
    lines = [
        f"Merge of a {hours:g}-hour recording ({recording_mb:.0f} MB of segments, video and "
        f"audio), medians of {runs} runs, streamed and copy-first side by side:",
        "",
        "| container | method | wall | ffmpeg peak RSS | read (calls) | written (calls) "
        "| written to storage | output |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for container in CONTAINERS:
        for method in ("streamed", "copy-first"):
            mine = [c for c in costs if c.container == container and c.method == method]
            if not mine:
                continue

            def med(field: str, mine: list[MergeCost] = mine) -> float:
                return statistics.median(getattr(c, field) for c in mine)

            lines.append(
                f"| {container} | {method} | {med('wall'):.2f} s "
                f"| {med('ffmpeg_peak_rss_mb'):.0f} MB | {med('read_mb'):.0f} MB "
                f"| {med('written_mb'):.0f} MB | {med('storage_written_mb'):.0f} MB "
                f"| {med('output_mb'):.0f} MB |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.merge_cost", description=__doc__)
    parser.add_argument("--hours", type=float, default=3.0, help="recording length (default 3)")
    parser.add_argument("--runs", type=int, default=3, help="merges per method and container")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--output", type=Path, help="also write the Markdown table here")
    args = parser.parse_args(argv)
    if args.child:
        tracks_file, method, container, out_dir = args.child
        cost = measure_one(Path(tracks_file), method, container, Path(out_dir))
        print(json.dumps(asdict(cost)))
        return 0
    with tempfile.TemporaryDirectory(prefix="instarec-merge-") as tmp:
        root = Path(tmp)
        print(f"writing {args.hours:g} hours of segments ...", file=sys.stderr, flush=True)
        tracks = write_recording(root / "segments", args.hours)
        recording_mb = sum(p.stat().st_size for t in tracks for p in (t.init, *t.segments)) / 1e6
        tracks_file = root / "tracks.json"
        tracks_file.write_text(
            json.dumps(
                [
                    {"kind": t.kind, "init": str(t.init), "first": t.first_start,
                     "segments": [str(p) for p in t.segments]}
                    for t in tracks
                ]
            )
        )  # fmt: skip
        costs = []
        for run in range(args.runs):
            for container in CONTAINERS:
                for method in ("streamed", "copy-first"):
                    cost = run_child(tracks_file, method, container, root)
                    print(f"run {run + 1}: {cost}", file=sys.stderr, flush=True)
                    costs.append(cost)
    text = markdown(costs, args.hours, recording_mb, args.runs)
    print(text)
    if args.output is not None:
        args.output.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
