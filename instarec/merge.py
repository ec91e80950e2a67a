"""Turn the recorded segments into the output file.

Each track's init segment and media segments, concatenated in timeline order, form one valid
fragmented MP4. One ffmpeg call then muxes those per-track files with stream copy.

Timestamps are the delicate part. By default ffmpeg shifts every input file to start at zero on
its own, which desynchronises audio and video whenever the two tracks' first segments start at
different times (they usually do when recording joins a live stream). So the command uses
``-copyts`` to keep each input's own timestamps (taken from every fragment's ``tfdt``) and moves
all inputs by the *same* ``-itsoffset``: minus the earliest track start. The output then begins
at zero, the tracks keep their relative offset, and a segment missing in the middle stays a gap in
the timestamps instead of pulling the following media earlier.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from instarec.captions import iso639_2
from instarec.errors import FFmpegNotFoundError, MergeError, UsageError, storage_error
from instarec.parts import part_number
from instarec.subtitles import write_text_input

log = logging.getLogger(__name__)

__all__ = [
    "MergeResult",
    "TrackInput",
    "check_output_free",
    "existing_parts",
    "find_ffmpeg",
    "keeps_video",
    "merge_parts",
    "merge_periods",
    "merge_tracks",
    "output_format",
    "remove_parts_after",
]

FFMPEG_FIX = (
    "install ffmpeg (e.g. apt install ffmpeg) or `pip install 'instarec[ffmpeg]'`, "
    "or pass --ffmpeg-path"
)

# Seconds ffmpeg gets to exit after SIGTERM before it is killed; a stream-copy mux finishes its
# current write and closes the file almost at once, so a few seconds is plenty.
TERMINATE_TIMEOUT = 5.0

_COPY_CHUNK = 1024 * 1024
_INPUT_QUEUE = 1024  # packets read ahead per input (a few MB)


@dataclass(frozen=True, slots=True)
class _Container:
    muxer: str  # ffmpeg -f value
    faststart: bool  # MP4 family: move the moov box to the front for progressive playback
    audio_only: bool
    # The subtitle codec text tracks are written in (None: the container takes none): WebVTT
    # as read in Matroska, MP4's own timed text (a conversion of text, not of media) in MP4.
    subtitles: str | None = None


_CONTAINERS: dict[str, _Container] = {
    ".mp4": _Container("mp4", faststart=True, audio_only=False, subtitles="mov_text"),
    ".m4v": _Container("mp4", faststart=True, audio_only=False, subtitles="mov_text"),
    ".mov": _Container("mov", faststart=True, audio_only=False, subtitles="mov_text"),
    ".m4a": _Container("ipod", faststart=True, audio_only=True),
    ".mkv": _Container("matroska", faststart=False, audio_only=False, subtitles="webvtt"),
    ".ts": _Container("mpegts", faststart=False, audio_only=False),
}


# What a DASH role (ISO/IEC 23009-1 5.8.5.5) says to a player, as ffmpeg's stream dispositions:
# a player then offers a commentary or an audio description as such, not as one more language.
_DISPOSITIONS = {
    ("audio", "commentary"): "comment",
    ("audio", "description"): "visual_impaired",
    ("audio", "enhanced-audio-intelligibility"): "hearing_impaired",
    ("audio", "dub"): "dub",
    ("text", "caption"): "hearing_impaired",
    ("text", "forced-subtitle"): "forced",
    ("text", "description"): "descriptions",
}


@dataclass(frozen=True, slots=True)
class TrackInput:
    """One recorded track, ready to merge.

    ``segments`` are in timeline order; ``first_start`` is the first segment's decode time in
    seconds (its ``tfdt`` divided by the track timescale), the clock shared by all tracks.
    """

    kind: str  # "video" | "audio" | "text"
    init: Path
    segments: tuple[Path, ...]
    first_start: float
    # Seconds the media time is moved by to lie on the recording's clock: a later Period's
    # timeline restarts (see periods.py); first_start already includes it.
    shift: float = 0.0
    lang: str | None = None  # DASH @lang the output stream is tagged with (None: untagged)
    # The recorded track's name, its store tracks' prefix ("audio2"); "": the kind.
    track: str = ""
    role: str | None = None  # DASH Role@value: a commentary, a description... (dispositions)

    @property
    def name(self) -> str:
        return self.track or self.kind


@dataclass(frozen=True, slots=True)
class MergeResult:
    output: Path
    size: int  # bytes


def _container(output: Path) -> _Container:
    suffix = output.suffix.lower()
    try:
        return _CONTAINERS[suffix]
    except KeyError:
        known = ", ".join(_CONTAINERS)
        shown = suffix or "no extension"
        raise UsageError(
            f"unsupported output format {shown!r} for {output.name}: use one of {known}"
        ) from None


def output_format(output: Path) -> str:
    """The ffmpeg muxer for ``output``, chosen from its extension; UsageError if unsupported."""
    return _container(output).muxer


def keeps_video(output: Path) -> bool:
    """Whether ``output``'s container takes video (``.m4a`` does not)."""
    return not _container(output).audio_only


def check_output_free(output: Path, overwrite: bool, *, split: bool = False) -> None:
    """UsageError when what the merge writes exists and may not be replaced: ``output``, or,
    when the recording is ``split``, any part of it (``NAME.NNN.EXT``).

    Any part, not only those the merge will write: a part an earlier recording left would sit
    beside the new ones as if it continued them. Asked when the command line is read (before
    any download), and again just before the merge writes: a file may have appeared while the
    broadcast was recorded.
    """
    if overwrite:
        return
    if not split:
        if output.exists():
            raise UsageError(
                f"{str(output)!r} already exists: pass --overwrite or choose another name"
            )
        return
    existing = existing_parts(output)
    if existing:
        raise UsageError(
            f"{str(existing[0])!r} already exists (a part of an earlier recording into "
            f"{output.name}): pass --overwrite or choose another name"
        )


def existing_parts(output: Path) -> list[Path]:
    """The files named as parts of ``output``, in part order."""
    try:
        entries = list(output.parent.iterdir())
    except OSError:
        return []  # no directory to list: nothing there (the writability check says more)
    numbered = [(n, path) for path in entries if (n := part_number(output, path)) is not None]
    return [path for _, path in sorted(numbered)]


def remove_parts_after(output: Path, count: int) -> None:
    """Remove the parts of ``output`` numbered past ``count`` (an overwritten recording's): they
    would read as the continuation of the new ones."""
    for path in existing_parts(output):
        number = part_number(output, path)
        if number is not None and number > count:
            try:
                path.unlink()
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise storage_error(exc, "remove", path) from exc
            log.info("removed %s, a part of the overwritten recording", path)


def find_ffmpeg(configured: str = "ffmpeg") -> str:
    """Locate the ffmpeg executable, before any recording starts.

    ``configured`` is ``--ffmpeg-path``: a path (anything with a directory separator) must point
    to an executable file; a bare command name is looked up on PATH. When the default name is
    not on PATH, the binary bundled by the ``ffmpeg`` extra (imageio-ffmpeg) is used if present.
    """
    if os.sep in configured or (os.altsep is not None and os.altsep in configured):
        path = Path(configured).expanduser()
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
        raise FFmpegNotFoundError(f"ffmpeg not found at {configured}: {FFMPEG_FIX}")
    found = shutil.which(configured)
    if found is not None:
        return found
    if configured == "ffmpeg":
        bundled = _bundled_ffmpeg()
        if bundled is not None:
            return bundled
    raise FFmpegNotFoundError(f"ffmpeg not found ({configured!r} is not on PATH): {FFMPEG_FIX}")


def _bundled_ffmpeg() -> str | None:
    try:
        import imageio_ffmpeg  # optional extra: only a fallback
    except ImportError:
        return None
    try:
        exe = imageio_ffmpeg.get_ffmpeg_exe()
    except RuntimeError:
        # imageio-ffmpeg installed without a binary for this platform.
        return None
    log.debug("using the ffmpeg bundled with imageio-ffmpeg: %s", exe)
    return str(exe)


def part_path(output: Path) -> Path:
    """Where ffmpeg writes before the atomic rename: same directory, so os.replace is atomic."""
    return output.with_name(f"{output.stem}.part{output.suffix}")


class _TrackFeed:
    """One track streamed into ffmpeg through a pipe: init, then every segment, in order.

    No concatenated copy of the recording is written first (hours of media are gigabytes, and
    the copy doubled the merge's disk traffic): a thread copies the files into the pipe with
    ``sendfile`` while ffmpeg reads it as ``pipe:N``.
    """

    def __init__(self, track: TrackInput) -> None:
        self.track = track
        self.read_fd, self._write_fd = os.pipe()
        _widen_pipe(self._write_fd)
        self.error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"pipe:{self.read_fd}"

    def feed(self) -> None:
        """Copy the track into the pipe (blocking: run it in a thread); errors kept in
        ``error``. A reader that stopped (ffmpeg failed or was stopped) ends the copy."""
        try:
            with open(self._write_fd, "wb", buffering=0) as pipe:
                for src in (self.track.init, *self.track.segments):
                    _copy_into(src, pipe.fileno())
        except BrokenPipeError:
            return  # ffmpeg's own exit status says why it stopped reading
        except OSError as exc:
            self.error = exc

    def close_read_end(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.read_fd)

    def close(self) -> None:
        """Both ends, for a feed that never started (ffmpeg could not be run)."""
        self.close_read_end()
        with contextlib.suppress(OSError):
            os.close(self._write_fd)


def _copy_into(src: Path, out_fd: int) -> None:
    with src.open("rb") as inp:
        size = os.fstat(inp.fileno()).st_size
        offset = 0
        try:
            while offset < size:
                sent = os.sendfile(out_fd, inp.fileno(), offset, min(size - offset, 1 << 24))
                if sent == 0:
                    break
                offset += sent
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.ENOSYS) or offset:
                raise
            # No sendfile into a pipe on this system: copy through a buffer.
            while chunk := inp.read(_COPY_CHUNK):
                os.write(out_fd, chunk)  # a short write is impossible on a blocking pipe


def _feed_failure(feeds: Sequence[_TrackFeed]) -> MergeError | None:
    for feed in feeds:
        error = feed.error
        if isinstance(error, FileNotFoundError):
            return MergeError(f"recorded {feed.track.name} file is missing: {error.filename}")
        if error is not None:
            return MergeError(f"cannot read the recorded {feed.track.name} segments: {error}")
    return None


def build_command(
    ffmpeg: str,
    tracks: Sequence[TrackInput],
    inputs: Sequence[str],
    target: Path,
    muxer: str,
    *,
    faststart: bool,
    subtitles: str | None = None,
) -> list[str]:
    """The ffmpeg argument list muxing ``inputs`` (one per track) into ``target``.

    A text track's input is a WebVTT file whose cues are already on the output's clock
    (``text_input``); ``subtitles`` is the codec they are written in.
    """
    base = min(track.first_start for track in tracks)
    cmd = [
        ffmpeg,
        "-nostdin",
        "-hide_banner",
        "-loglevel",
        "error",
        "-nostats",
        # The target is our own temporary name; a leftover from an interrupted merge is stale.
        "-y",
        # Keep each input's tfdt-based timestamps instead of shifting every file to zero alone.
        "-copyts",
    ]
    for track, inp in zip(tracks, inputs, strict=True):
        if track.kind == "text":
            cmd += ["-f", "webvtt", "-i", inp]
            continue
        offset = f"{track.shift - base:.6f}"
        # use_tfdt: fragment times come from each tfdt, which is what keeps gaps and the A/V
        # offset. It is the default (and a plain concatenation reads the same without it), but
        # segments carrying a sidx would otherwise let the sidx times win. The same -itsoffset
        # on every input moves the earliest track to zero and keeps the others where they are.
        cmd += ["-use_tfdt", "1", "-itsoffset", offset]
        # Each input is a pipe read by its own ffmpeg thread: with the default queue of eight
        # packets that thread soon waits for the muxer, and ffmpeg polls a waiting input every
        # 10 ms (a 6-minute merge took 10 s instead of 0.2 s).
        cmd += ["-thread_queue_size", str(_INPUT_QUEUE), "-i", inp]
    for index, track in enumerate(tracks):
        selector = {"video": "v", "audio": "a", "text": "s"}[track.kind]
        cmd += ["-map", f"{index}:{selector}:0"]
    cmd += ["-c", "copy"]
    if subtitles is not None and subtitles != "webvtt":
        cmd += ["-c:s", subtitles]
    for index, track in enumerate(tracks):
        cmd += stream_tags(index, track.kind, track.lang, track.role, muxer)
    if faststart:
        cmd += ["-movflags", "+faststart"]
    cmd += ["-f", muxer, str(target)]
    return cmd


def stream_tags(index: int, kind: str, lang: str | None, role: str | None, muxer: str) -> list[str]:
    """The ffmpeg options tagging output stream ``index``: its language and role."""
    args: list[str] = []
    # Matroska names languages by ISO 639-2/B, MP4 by ISO 639-2/T.
    code = iso639_2(lang, bibliographic=muxer == "matroska")
    if code is not None:
        args += [f"-metadata:s:{index}", f"language={code}"]
    disposition = _DISPOSITIONS.get((kind, (role or "").lower()))
    if disposition is not None:
        args += [f"-disposition:{index}", disposition]
    return args


def _select_tracks(tracks: Sequence[TrackInput], container: _Container) -> list[TrackInput]:
    for track in tracks:
        if track.kind not in ("video", "audio", "text"):
            raise ValueError(f"unknown track kind {track.kind!r}")
    selected = [t for t in tracks if t.segments]
    if container.subtitles is None and any(t.kind == "text" for t in selected):
        log.warning(
            "the %s container takes no text subtitles: they are left out (use .mkv or .mp4)",
            container.muxer,
        )
        selected = [t for t in selected if t.kind != "text"]
    for track in tracks:
        if not track.segments:
            log.warning("no %s segment was recorded: the output has no %s", track.name, track.name)
    if container.audio_only:
        if any(t.kind == "video" for t in selected):
            log.info("audio-only output: the video track is left out")
        selected = [t for t in selected if t.kind == "audio"]
        if not selected:
            raise MergeError("nothing to write to an audio-only output: no audio was recorded")
    if not selected:
        raise MergeError("nothing to merge: no segment was recorded")
    return selected


async def merge_tracks(
    tracks: Sequence[TrackInput],
    output: Path,
    *,
    ffmpeg: str,
    overwrite: bool,
) -> MergeResult:
    """Mux the recorded tracks into ``output`` with one ffmpeg stream-copy call.

    The output appears under its final name only once complete (written to a ``.part`` name in
    the same directory, then renamed). Cancelling terminates ffmpeg and removes the partial file.
    """
    (result,) = await merge_parts([(output, tracks)], ffmpeg=ffmpeg, overwrite=overwrite)
    return result


async def merge_parts(
    parts: Sequence[tuple[Path, Sequence[TrackInput]]],
    *,
    ffmpeg: str,
    overwrite: bool,
) -> list[MergeResult]:
    """Mux each ``(output, tracks)`` with an ffmpeg stream-copy call of its own, in turn.

    The outputs take their final names together, once every one is complete: until then each
    is written to a ``.part`` name beside it, and whatever stops the merge (an error, a
    cancellation) removes those. A failed merge thus leaves no part behind to block its rerun.
    """
    outputs = [output for output, _ in parts]
    for output in outputs:
        _container(output)  # an unsupported extension fails before any work
    await asyncio.to_thread(_check_outputs_free, outputs, overwrite)
    targets: list[Path] = []
    try:
        for output, tracks in parts:
            targets.append(part_path(output))
            await _mux(tracks, output, targets[-1], ffmpeg)
        sizes = [_written_size(target) for target in targets]
        for target, output in zip(targets, outputs, strict=True):
            _rename(target, output)
    except BaseException:
        # Never leave a half-written file behind, whatever stopped us (error or cancellation).
        for target in targets:
            with contextlib.suppress(FileNotFoundError):
                target.unlink()
        raise
    for output, size in zip(outputs, sizes, strict=True):
        log.info("wrote %s (%d bytes)", output, size)
    return [MergeResult(output, size) for output, size in zip(outputs, sizes, strict=True)]


def _check_outputs_free(outputs: Sequence[Path], overwrite: bool) -> None:
    for output in outputs:
        check_output_free(output, overwrite)


async def merge_periods(
    pieces: Sequence[Sequence[TrackInput]], output: Path, *, ffmpeg: str, overwrite: bool
) -> MergeResult:
    """Mux each Period's ``pieces`` (its tracks) on its own, then join them into ``output``.

    The concat demuxer is what lets a track change init segment (a Period's) in stream copy;
    each Period is placed at its start on the recording's clock.
    """
    if len(pieces) == 1:
        return await merge_tracks(pieces[0], output, ffmpeg=ffmpeg, overwrite=overwrite)
    container = _container(output)
    await asyncio.to_thread(_check_outputs_free, [output], overwrite)
    directory = output.with_name(f".{output.stem}.periods")
    target = part_path(output)
    starts = [
        min(
            t.first_start
            for t in tracks
            if t.segments
            and (t.kind == "audio" or not container.audio_only)
            and (t.kind != "text" or container.subtitles is not None)
        )
        for tracks in pieces
    ]
    try:
        directory.mkdir(exist_ok=True)
    except OSError as exc:
        raise storage_error(exc, "create", directory) from exc
    try:
        paths = [directory / f"{n:03d}{output.suffix}" for n in range(len(pieces))]
        for path, tracks in zip(paths, pieces, strict=True):
            await _mux(tracks, output, path, ffmpeg)
        await concat_pieces(paths, starts, output, target, ffmpeg)
        size = _written_size(target)
        _rename(target, output)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            target.unlink()
        raise
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    log.info("wrote %s (%d bytes, %d Periods)", output, size, len(pieces))
    return MergeResult(output, size)


async def concat_pieces(
    pieces: Sequence[Path], starts: Sequence[float], output: Path, target: Path, ffmpeg: str
) -> None:
    """Join files each starting at 0 into ``target``, piece ``i`` placed at ``starts[i]`` minus
    ``starts[0]`` (ffmpeg's concat demuxer, stream copy): one file per Period, whose timelines
    restarted, become one timeline with the Periods' gaps kept."""
    container = _container(output)
    listing = target.with_name(target.name + ".ffconcat")
    lines = ["ffconcat version 1.0"]
    for index, piece in enumerate(pieces):
        lines.append("file '" + str(piece.resolve()).replace("'", "'\\''") + "'")
        if index + 1 < len(pieces):
            # The next piece begins where its Period does, not where this one's media ends.
            lines.append(f"duration {starts[index + 1] - starts[index]:.6f}")
    listing.write_text("\n".join(lines) + "\n")
    cmd = [ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-nostats", "-y"]
    cmd += ["-f", "concat", "-safe", "0", "-i", str(listing), "-map", "0", "-c", "copy"]
    if container.faststart:
        cmd += ["-movflags", "+faststart"]
    cmd += ["-f", container.muxer, str(target)]
    try:
        await _run_ffmpeg(cmd, [])
    finally:
        listing.unlink(missing_ok=True)


async def _mux(tracks: Sequence[TrackInput], output: Path, target: Path, ffmpeg: str) -> None:
    """Run ffmpeg writing ``tracks`` into ``target`` in ``output``'s container."""
    container = _container(output)
    selected = _select_tracks(tracks, container)
    base = min(track.first_start for track in selected)
    texts: list[Path] = []
    try:
        for n, track in enumerate(t for t in selected if t.kind == "text"):
            texts.append(target.with_name(f".{target.name}.{n}.vtt"))
            # The cues go where the other tracks' -itsoffset puts their media.
            shift = track.shift - base
            await asyncio.to_thread(write_text_input, track.init, track.segments, shift, texts[-1])
        feeds = [_TrackFeed(track) for track in selected if track.kind != "text"]
        urls = iter(feed.url for feed in feeds)
        files = iter(str(path) for path in texts)
        cmd = build_command(
            ffmpeg,
            selected,
            [next(files) if track.kind == "text" else next(urls) for track in selected],
            target,
            container.muxer,
            faststart=container.faststart,
            subtitles=container.subtitles,
        )
        log.debug("running %s", " ".join(cmd))
        await _run_ffmpeg(cmd, feeds)
    finally:
        for path in texts:
            path.unlink(missing_ok=True)


def _written_size(target: Path) -> int:
    """The size of what ffmpeg wrote to ``target``; MergeError when it wrote nothing."""
    try:
        size = target.stat().st_size
    except FileNotFoundError:
        raise MergeError("ffmpeg exited without writing the output") from None
    if size == 0:
        raise MergeError("ffmpeg wrote an empty output")
    return size


# A pipe holds 64 KiB by default: the feeding thread and ffmpeg then take turns every 64 KiB,
# thousands of wake-ups per gigabyte. 1 MiB is what an unprivileged process may ask for.
_PIPE_SIZE = 1 << 20


def _widen_pipe(fd: int) -> None:
    setting = getattr(fcntl, "F_SETPIPE_SZ", None)  # Linux only
    if setting is not None:
        with contextlib.suppress(OSError):  # above the system's limit: the default size serves
            fcntl.fcntl(fd, setting, _PIPE_SIZE)


def _rename(target: Path, output: Path) -> None:
    """Give ffmpeg's output its final name atomically."""
    try:
        os.replace(target, output)
    except OSError as exc:
        raise storage_error(exc, "write", output) from exc


async def _run_ffmpeg(cmd: Sequence[str], feeds: Sequence[_TrackFeed]) -> None:
    try:
        proc = await asyncio.create_subprocess_exec(
            *cmd,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            pass_fds=[feed.read_fd for feed in feeds],
        )
    except OSError as exc:
        for feed in feeds:
            feed.close()
        raise FFmpegNotFoundError(
            f"cannot run {cmd[0]}: {exc.strerror or exc}: {FFMPEG_FIX}"
        ) from exc
    for feed in feeds:
        feed.close_read_end()  # ffmpeg holds its own copy
    writers = [asyncio.ensure_future(asyncio.to_thread(feed.feed)) for feed in feeds]
    try:
        _, stderr = await proc.communicate()
    except asyncio.CancelledError:
        await stop_ffmpeg(proc)
        raise
    finally:
        # Once ffmpeg is gone a writer ends at once (its pipe is broken).
        if writers:
            await asyncio.wait(writers)
    failure = _feed_failure(feeds)
    if failure is not None:
        raise failure
    if proc.returncode != 0:
        lines = [line for line in stderr.decode(errors="replace").splitlines() if line.strip()]
        last = lines[-1].strip() if lines else f"exit status {proc.returncode}"
        raise MergeError(f"ffmpeg failed: {last}")


async def stop_ffmpeg(proc: asyncio.subprocess.Process) -> None:
    """Terminate ffmpeg (it then finishes its output), then kill it if it has not exited
    after TERMINATE_TIMEOUT."""
    if proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    try:
        await asyncio.wait_for(proc.wait(), TERMINATE_TIMEOUT)
    except TimeoutError:
        log.warning("ffmpeg did not exit after SIGTERM, killing it")
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
