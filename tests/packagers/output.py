"""What a packager published, read with PyAV, and what a correct recording of it holds.

The expected recording comes from the packager's own files, never from the recorder's output:
each segment is demuxed after its init segment as soon as it is whole (packagers delete old
ones), and the directory is listed at the instant the recorder joins.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import os
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import av

# -- what the packager published ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SegmentNaming:
    """How a packager names its files: ``pattern`` has the groups ``track`` and ``key``."""

    pattern: re.Pattern[str]
    kinds: Mapping[str, str]  # the ``track`` group's value -> "video" | "audio"
    inits: Mapping[str, str]  # "video" | "audio" -> init segment file name
    # True when a segment file may show under its name before it is complete (Shaka writes
    # each file in place): only a file with a newer one beside it, or any file once the
    # packager has ended, is whole. False when the packager renames a finished file into
    # place (ffmpeg's NAME.tmp, nginx-rtmp's STREAM-raw.*).
    written_in_place: bool = True

    def parse(self, name: str) -> tuple[str, int] | None:
        match = self.pattern.fullmatch(name)
        if match is None or match["track"] not in self.kinds:
            return None
        return self.kinds[match["track"]], int(match["key"])


@dataclass(frozen=True, slots=True)
class SegmentFacts:
    """One published segment as PyAV reads it (seconds of the packager's timeline)."""

    kind: str
    key: int
    name: str
    frames: int
    start: float
    end: float  # last packet's start + its duration


def read_segment(init: bytes, body: bytes) -> tuple[int, float, float]:
    """Packets, first time and end of one segment, demuxed (not decoded) after its init."""
    starts: list[float] = []
    end = 0.0
    with av.open(io.BytesIO(init + body), format="mp4") as container:
        stream = container.streams[0]
        for packet in container.demux(stream):
            if packet.pts is None or packet.size == 0:
                continue
            start = float(packet.pts * packet.time_base)
            starts.append(start)
            end = max(end, start + float((packet.duration or 0) * packet.time_base))
    if not starts:
        raise ValueError("no packet")
    return len(starts), min(starts), end


# Seconds a recorder may take from its first manifest request to its first past download.
JOIN_GRACE = 3.0


class OutputWatcher:
    """Reads each segment the packager finishes, and notes what was on disk at the join.

    Packagers delete old segments (nginx-rtmp's cleanup, Shaka's window): reading each one as
    soon as it is whole keeps the facts of the whole broadcast.
    """

    def __init__(self, directory: Path, naming: SegmentNaming) -> None:
        self.directory = directory
        self.naming = naming
        self.facts: dict[tuple[str, int], SegmentFacts] = {}
        self.unreadable: dict[str, str] = {}
        self.first_seen: float | None = None
        self.on_disk_at_join: dict[str, set[int]] | None = None
        # What is still on disk JOIN_GRACE seconds after the join: a segment deleted sooner
        # may be gone before any recorder could ask for it, so either start is right.
        self.on_disk_after_grace: dict[str, set[int]] | None = None
        self.joined_at: float | None = None
        self._inits: dict[str, bytes] = {}

    def _listing(self) -> dict[str, list[tuple[int, str]]]:
        by_kind: dict[str, list[tuple[int, str]]] = {}
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return by_kind
        for name in names:
            parsed = self.naming.parse(name)
            if parsed is not None:
                by_kind.setdefault(parsed[0], []).append((parsed[1], name))
        for items in by_kind.values():
            items.sort()
        return by_kind

    def note_join(self) -> None:
        self.joined_at = time.monotonic()
        self.on_disk_at_join = self._keys_on_disk()
        asyncio.get_running_loop().call_later(JOIN_GRACE, self._note_after_grace)

    def _note_after_grace(self) -> None:
        self.on_disk_after_grace = self._keys_on_disk()

    def _keys_on_disk(self) -> dict[str, set[int]]:
        return {kind: {key for key, _ in items} for kind, items in self._listing().items()}

    def scan(self, *, final: bool = False) -> None:
        """Read the whole segments not read yet (``final``: the packager is done)."""
        for kind, items in self._listing().items():
            if items and self.first_seen is None:
                self.first_seen = time.monotonic()
            whole = items
            if self.naming.written_in_place and not final:
                whole = items[:-1]
            for key, name in whole:
                if (kind, key) in self.facts or name in self.unreadable:
                    continue
                self._read(kind, key, name)

    def _read(self, kind: str, key: int, name: str) -> None:
        try:
            init = self._inits.get(kind)
            if init is None:
                init = (self.directory / self.naming.inits[kind]).read_bytes()
                self._inits[kind] = init
            body = (self.directory / name).read_bytes()
            frames, start, end = read_segment(init, body)
        except FileNotFoundError:
            return  # deleted by the packager before the watcher came by; the loop is fast
        except (OSError, ValueError, av.error.FFmpegError) as exc:
            self.unreadable[name] = str(exc)
            return
        self.facts[(kind, key)] = SegmentFacts(kind, key, name, frames, start, end)

    async def next_segment(self, within: float) -> None:
        """Return once a new segment file shows up (or after ``within`` seconds).

        Joining right after one, the oldest segment on disk stays there for about one segment
        duration where the packager deletes one old segment per new one (Shaka).
        """
        before = self._keys_on_disk()
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            now = self._keys_on_disk()
            if any(now.get(kind, set()) - keys for kind, keys in before.items()):
                return
            await asyncio.sleep(0.02)

    async def run(self, every: float = 0.25) -> None:
        while True:
            self.scan()
            await asyncio.sleep(every)


@dataclass(frozen=True, slots=True)
class Expected:
    """What a perfect recording of this case holds, from the packager's own output."""

    video_frames: int
    video_span: float  # seconds from the first frame's start to the last frame's end
    av_start_offset: float  # audio start minus video start
    av_end_offset: float  # audio end minus video end
    first_keys: Mapping[str, int]  # the oldest segment the recording must start at, per track
    segments: int  # segments of both tracks from there to the end


def expected_recording(
    facts: Iterable[SegmentFacts], first_keys: Mapping[str, int], fps: int
) -> Expected:
    chosen = [f for f in facts if f.kind in first_keys and f.key >= first_keys[f.kind]]
    video = [f for f in chosen if f.kind == "video"]
    audio = [f for f in chosen if f.kind == "audio"]
    if not video or not audio:
        raise ValueError("the packager published no video or no audio")
    video_start = min(f.start for f in video)
    # As tests.recording.inspect measures: the last frame's start plus one frame.
    last_frame = max(f.end for f in video)
    last_start = max(f.start + (f.frames - 1) / fps for f in video)
    video_end = max(last_frame, last_start + 1 / fps)
    audio_start = min(f.start for f in audio)
    audio_end = max(f.end for f in audio)
    return Expected(
        video_frames=sum(f.frames for f in video),
        video_span=video_end - video_start,
        av_start_offset=audio_start - video_start,
        av_end_offset=audio_end - video_end,
        first_keys=dict(first_keys),
        segments=len(chosen),
    )


def start_candidates(
    past_kept: bool, facts: Iterable[SegmentFacts], watcher: OutputWatcher
) -> list[dict[str, int]]:
    """The segments a correct recording may start at, one track pair per candidate.

    A server that keeps the past: its first segments. One that deletes it: the oldest segment
    on disk when the recorder joined, or any later one up to the oldest still there
    ``JOIN_GRACE`` seconds on (the older ones may be deleted before any client could ask).
    """
    published: dict[str, list[int]] = {}
    for fact in facts:
        published.setdefault(fact.kind, []).append(fact.key)
    if past_kept:
        return [{kind: min(keys) for kind, keys in published.items()}]
    at_join = watcher.on_disk_at_join or {}
    after = watcher.on_disk_after_grace or at_join
    choices: dict[str, list[int]] = {}
    for kind, keys in at_join.items():
        if not keys:
            continue
        latest = min(after.get(kind) or keys)
        choices[kind] = sorted(k for k in keys if k <= latest)
    kinds = sorted(choices)
    combos = itertools.product(*(choices[kind] for kind in kinds))
    return [dict(zip(kinds, combo, strict=True)) for combo in combos]
