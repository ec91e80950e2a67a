"""Watching while recording: a running ffmpeg fed each track's segments as they arrive.

One ffmpeg process reads every track from a pipe of its own (the init segment, then the media
segments in presentation order, which ``order.TrackCursor`` decides) and writes, with stream
copy, either an MPEG-TS stream on stdout (OUTPUT ``-``: ``instarec URL - | mpv -``) or the
OUTPUT file itself (``--live-merge``: fragmented MP4 or Matroska that plays at any moment).

Each track is fed by a task of its own: ffmpeg interleaves its inputs by timestamp and stops
reading the track that is ahead, so a single writer would block on the leading track while
ffmpeg waits for the other. With one writer per track each blocks only on its own pipe; what
waits is on disk (the store), never in memory.

ffmpeg runs in a session of its own: a Ctrl+C in the terminal is the recorder's to handle; the
recorder then closes the pipes and ffmpeg finishes the output (a Matroska file's cues and
duration, an MP4's index). Killed outright, the recorder's pipes close with it and ffmpeg
finishes what it received all the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import select
import signal
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Protocol

from instarec.errors import FFmpegNotFoundError
from instarec.merge import FFMPEG_FIX, output_format, stop_ffmpeg, stream_tags
from instarec.order import Settling, TrackCursor
from instarec.store import SegmentStore, StoredSegment

log = logging.getLogger(__name__)

# Seconds between looks at the store while a track waits for its next segment (real time:
# a player a tenth of a second late is not noticed).
POLL_INTERVAL = 0.05
_STDERR_LINES = 20
_INPUT_QUEUE = 1024  # packets ffmpeg reads ahead per input


class MuxEnd(Enum):
    """How the live mux ended."""

    FINISHED = "finished"  # every segment fed, ffmpeg finished the output
    READER_GONE = "reader gone"  # stdout's reader (the player) closed the pipe
    FAILED = "failed"  # ffmpeg stopped on an error of its own
    NOTHING = "nothing"  # the recording ended before any segment was recorded


@dataclass(frozen=True, slots=True)
class MuxOutcome:
    end: MuxEnd
    detail: str = ""  # ffmpeg's last error line, when it failed


@dataclass(frozen=True, slots=True)
class MuxTrack:
    """A recorded track the live mux feeds, and how its output stream is tagged."""

    name: str  # the store's name ("video", "audio2")
    kind: str  # "video" | "audio"
    lang: str | None = None  # None: untagged (a recording of one video and one audio)
    role: str | None = None


class TrackStates(Protocol):
    """The recording as the live mux sees it, track by track."""

    def settling(self, track: str, after: int | None, over: bool) -> Settling:
        """What may still come after key ``after`` (None: the track's start)."""

    def version(self, track: str) -> Hashable:
        """Changes whenever what ``settling`` or the store say of ``track`` may have changed:
        while it does not, a track waiting for its next segment need not look again (sorting
        the store's hours of segments forty times a second would cost the recording)."""


def output_args(path: Path | None) -> list[str]:
    """ffmpeg's output options for the live mux: stdout as MPEG-TS (``path`` None) or ``path``
    in its extension's container, written so that it plays while it grows."""
    if path is None:
        return ["-f", "mpegts", "pipe:1"]
    muxer = output_format(path)
    args: list[str] = []
    if muxer in ("mp4", "mov", "ipod"):
        # A plain MP4 is unreadable until its moov is written at the end: fragments make it
        # playable at once (the moov, empty of samples, comes first, so no +faststart is
        # needed). The trailer appends the index (mfra), from which players also read the
        # duration; nothing is rewritten in place (a global sidx would move the whole file
        # to make room at the front, leaving it unreadable while it moves).
        args += ["-movflags", "+frag_keyframe+empty_moov+default_base_moof"]
        args += ["-frag_duration", "2000000"]  # audio-only: no keyframe cuts the fragments
    # Every packet reaches the file (or the pipe) at once, not when a 32 kB buffer fills.
    args += ["-flush_packets", "1", "-f", muxer, str(path)]
    return args


class LiveMux:
    """Feeds the recorded tracks to ffmpeg while the recording goes on; ``finish()`` says the
    recording is over (everything on disk is then fed and the output finished)."""

    def __init__(
        self,
        store: SegmentStore,
        tracks: Sequence[MuxTrack],
        states: TrackStates,
        target: Path | None,
        ffmpeg: str,
        on_reader_gone: Callable[[], None],
    ) -> None:
        self._store = store
        self._tracks = {track.name: track for track in tracks}
        self._cursors = {track.name: TrackCursor(track.name) for track in tracks}
        self._states = states
        self.target = target
        self._ffmpeg = ffmpeg
        self._on_reader_gone = on_reader_gone
        self._over = asyncio.Event()
        self._seen: dict[str, Hashable] = {}
        self.outcome: MuxOutcome | None = None

    def finish(self) -> None:
        self._over.set()

    @property
    def reader_gone(self) -> bool:
        """Whether the stream stopped because its reader (stdout's player) went away."""
        return self.outcome is not None and self.outcome.end is MuxEnd.READER_GONE

    async def run(self) -> MuxOutcome:
        firsts = await self._first_batches()
        if not firsts:
            self.outcome = MuxOutcome(MuxEnd.NOTHING)
            return self.outcome
        self.outcome = await self._mux(firsts)
        return self.outcome

    # -- the start: every track's first segment ------------------------------------------------

    async def _first_batches(self) -> dict[str, list[StoredSegment]]:
        """Wait until each track knows its first segment (ffmpeg needs every input's start to
        line them up), or the recording is over; the first segments ready per track."""
        firsts: dict[str, list[StoredSegment]] = {}
        while True:
            over = self._over.is_set()
            for track in self._cursors:
                if track not in firsts:
                    batch = self._ready(track, over)
                    if batch:
                        firsts[track] = batch
            if len(firsts) == len(self._cursors) or over:
                return firsts
            await self._pause()

    def _ready(self, track: str, over: bool) -> list[StoredSegment]:
        """The next segments of ``track``, when something changed since it last looked."""
        version = (over, self._states.version(track))
        if version == self._seen.get(track):
            return []
        self._seen[track] = version
        cursor = self._cursors[track]
        after = cursor.last.key if cursor.last is not None else None
        settling = self._states.settling(track, after, over)
        return cursor.ready(self._store.segments(track), settling)

    async def _pause(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._over.wait(), POLL_INTERVAL)

    # -- ffmpeg ------------------------------------------------------------------------------

    async def _mux(self, firsts: dict[str, list[StoredSegment]]) -> MuxOutcome:
        tracks = list(firsts)
        pipes = [os.pipe() for _ in tracks]
        base = min(firsts[t][0].start + self._store.offset(t) for t in tracks)
        cmd = self._command(tracks, [read for read, _ in pipes], base)
        log.debug("running %s", " ".join(cmd))
        try:
            proc = await asyncio.create_subprocess_exec(
                *cmd,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=None if self.target is None else asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                pass_fds=[read for read, _ in pipes],
                start_new_session=True,
            )
        except OSError as exc:
            for read, write in pipes:
                os.close(read)
                os.close(write)
            raise FFmpegNotFoundError(
                f"cannot run {cmd[0]}: {exc.strerror or exc}: {FFMPEG_FIX}"
            ) from exc
        for read, _ in pipes:
            os.close(read)  # ffmpeg holds its own copy
        try:
            return await self._supervise(proc, tracks, [write for _, write in pipes], firsts)
        except BaseException:
            await stop_ffmpeg(proc)
            raise

    def _command(self, tracks: Sequence[str], reads: Sequence[int], base: float) -> list[str]:
        cmd = [self._ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-nostats"]
        # The recording's own timestamps (tfdt), every input moved by the same amount: the
        # earliest track starts at 0, the other keeps its offset, a lost segment stays a gap.
        cmd += ["-y", "-copyts"]
        for track, read in zip(tracks, reads, strict=True):
            offset = f"{self._store.offset(track) - base:.6f}"
            cmd += ["-use_tfdt", "1", "-itsoffset", offset]
            cmd += ["-thread_queue_size", str(_INPUT_QUEUE), "-i", f"pipe:{read}"]
        muxer = "mpegts" if self.target is None else output_format(self.target)
        tags: list[str] = []
        for index, name in enumerate(tracks):
            fed = self._tracks[name]
            cmd += ["-map", f"{index}:{'v' if fed.kind == 'video' else 'a'}:0"]
            tags += stream_tags(index, fed.kind, fed.lang, fed.role, muxer)
        return [*cmd, "-c", "copy", *tags, *output_args(self.target)]

    async def _supervise(
        self,
        proc: asyncio.subprocess.Process,
        tracks: Sequence[str],
        writes: Sequence[int],
        firsts: dict[str, list[StoredSegment]],
    ) -> MuxOutcome:
        tail: deque[str] = deque(maxlen=_STDERR_LINES)
        assert proc.stderr is not None
        async with asyncio.TaskGroup() as group:
            reading = group.create_task(_read_lines(proc.stderr, tail))
            feeding = group.create_task(self._feed_all(tracks, writes, firsts))
            exiting = group.create_task(proc.wait())
            await asyncio.wait({feeding, exiting}, return_when=asyncio.FIRST_COMPLETED)
            # ffmpeg gone before the last segment: its pipes are dead, the feeders stop.
            early = not feeding.done()
            feeding.cancel()
            await exiting
            await reading
        return self._judge(proc.returncode, early, tail)

    def _judge(self, status: int | None, early: bool, tail: deque[str]) -> MuxOutcome:
        if not early and status == 0:
            return MuxOutcome(MuxEnd.FINISHED)
        if self.target is None and (status == -signal.SIGPIPE or _reader_gone(1)):
            self._on_reader_gone()
            return MuxOutcome(MuxEnd.READER_GONE)
        detail = tail[-1] if tail else f"exit status {status}"
        # The recording goes on: archiving it is what matters most, and its segments are kept.
        where = "stdout" if self.target is None else str(self.target)
        log.warning("ffmpeg stopped writing %s (%s); the recording goes on", where, detail)
        return MuxOutcome(MuxEnd.FAILED, detail)

    # -- feeding -----------------------------------------------------------------------------

    async def _feed_all(
        self, tracks: Sequence[str], writes: Sequence[int], firsts: dict[str, list[StoredSegment]]
    ) -> None:
        loop = asyncio.get_running_loop()
        writers: list[asyncio.StreamWriter] = []
        try:
            for write in writes:
                pipe = os.fdopen(write, "wb", buffering=0)
                transport, protocol = await loop.connect_write_pipe(
                    lambda: asyncio.streams.FlowControlMixin(loop=loop), pipe
                )
                writers.append(asyncio.StreamWriter(transport, protocol, None, loop))
            async with asyncio.TaskGroup() as group:
                for track, writer in zip(tracks, writers, strict=True):
                    group.create_task(self._feed(track, writer, firsts[track]))
        finally:
            for writer in writers:
                writer.close()
            for write in writes[len(writers) :]:
                with contextlib.suppress(OSError):
                    os.close(write)

    async def _feed(
        self, track: str, writer: asyncio.StreamWriter, batch: list[StoredSegment]
    ) -> None:
        """The init, then each segment as it becomes the next, until the recording is over."""
        try:
            await _send(writer, self._store.init_path(track, create=False))
            while True:
                for segment in batch:
                    await _send(writer, segment.path)
                over = self._over.is_set()
                batch = self._ready(track, over)
                if over and not batch:
                    break
                if not batch:
                    await self._pause()
            # Drained: closing now ends ffmpeg's input at the last segment (the protocol has no
            # close waiter to await).
            writer.close()
        except (BrokenPipeError, ConnectionResetError):
            return  # ffmpeg stopped reading: its exit status says why


async def _send(writer: asyncio.StreamWriter, path: Path) -> None:
    # A segment is a few hundred kB to a few MB: read whole, off the event loop.
    data = await asyncio.to_thread(path.read_bytes)
    writer.write(data)
    await writer.drain()


async def _read_lines(stream: asyncio.StreamReader, tail: deque[str]) -> None:
    while line := await stream.readline():
        text = line.decode(errors="replace").strip()
        if text:
            tail.append(text)
            log.debug("ffmpeg: %s", text)


def _reader_gone(fd: int) -> bool:
    """Whether the pipe ``fd`` writes into has lost its reader (poll reports an error)."""
    try:
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        events = poller.poll(0)
    except OSError:
        return False
    return any(mask & (select.POLLERR | select.POLLHUP) for _, mask in events)
