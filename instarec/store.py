"""The ``.segments`` directory of a recording and its journal.

Layout under the root the caller chooses (``<output>.segments/``)::

    journal.jsonl             header line (format version + fingerprint), then one line per event
    <track>/init.mp4
    <track>/<key:020d>.m4s    key = $Number$ / $Time$ / list index, zero-padded (sign kept)

A file is written through :meth:`SegmentStore.writer` (or ``write_file``): its bytes go to
``<name>.part``, which is renamed when the writer's context ends cleanly and deleted when it
does not; only then does :meth:`SegmentStore.commit` append its journal line, after checking the
file is there with the right size. Lines arriving during one fsync share the next batch, written
and fsynced together, in a thread, off the event loop.

A kill -9 or a crash cannot lose a file the journal names: its bytes are in the page cache. Only
a reboot can (a power cut), so the files are not fsynced one by one. Each run journals the
machine's boot id; on open, the files journalled under another boot are checked for whole boxes
and dropped when they are not. Where the boot cannot be told (not Linux), every batch fsyncs the
files it names and their directories before its lines instead. On open, a torn last line is
ignored (and cut off), entries whose file is absent or has the wrong size are dropped, and stray
``.part`` files are deleted: what is left is exactly what can be merged, and a rerun downloads
only the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import shutil
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import IO, Any, Final

from instarec.errors import StorageError, storage_error
from instarec.mp4 import FragmentInfo, FragmentScanner, Mp4Error, parse_fragment, parse_init

log = logging.getLogger(__name__)

JOURNAL_NAME: Final = "journal.jsonl"
JOURNAL_VERSION: Final = 1
INIT_NAME: Final = "init.mp4"
PART_SUFFIX: Final = ".part"
_TRACK_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


@dataclass(frozen=True, slots=True)
class StoredSegment:
    track: str
    key: int
    start: float  # seconds
    duration: float | None  # seconds
    size: int  # bytes
    media_time: int | None  # tfdt, in the track's media timescale
    media_duration: int | None  # sum of sample durations, in the track's media timescale
    path: Path


@dataclass(frozen=True, slots=True)
class TrackPlace:
    """Where a track was recorded from: its Period's start on the presentation timeline and
    the seconds from its media time to presentation time (s), and its representation."""

    period_start: float
    shift: float
    representation: str


@dataclass(frozen=True, slots=True)
class MissingSegment:
    track: str
    key: int
    start: float
    duration: float | None


class SegmentWriter:
    """A body on its way to ``path``, written to ``<path>.part`` (see ``write_file``).

    The bytes also pass through a ``FragmentScanner``: a media segment's timing is known when
    the last byte is written, without reading the file back.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.part = path.with_name(path.name + PART_SUFFIX)
        self.size = 0
        self.scanner = FragmentScanner()
        self._file: IO[bytes] | None = None

    def write(self, chunk: bytes) -> None:
        try:
            if self._file is None:
                self._file = open(self.part, "wb")  # noqa: SIM115 - closed by finish or abort
            self._file.write(chunk)
        except OSError as exc:
            raise storage_error(exc, "write", self.part) from exc
        self.size += len(chunk)
        self.scanner.feed(chunk)

    def restart(self) -> None:
        """Start the body over (a retried download): what was written is dropped."""
        if self._file is not None:
            try:
                self._file.seek(0)
                self._file.truncate()
            except OSError as exc:
                raise storage_error(exc, "write", self.part) from exc
        self.size = 0
        self.scanner.restart()

    def fragment(self, default_sample_duration: int | None) -> FragmentInfo:
        """The written segment's timing (Mp4Error when it is not a media segment)."""
        return self.scanner.fragment(default_sample_duration=default_sample_duration)

    async def finish(self, *, durable: bool = True) -> None:
        """Give the body its final name, durable there (body and rename) unless the caller
        makes it so itself: the store does, for a whole batch of journal lines at once."""
        if self._file is None:
            self.write(b"")  # an empty body is a file too
        assert self._file is not None
        file, self._file = self._file, None
        try:
            file.flush()
            if durable:
                # fsync can take a while on slow disks: keep the event loop free.
                await asyncio.to_thread(os.fsync, file.fileno())
            file.close()
            os.replace(self.part, self.path)
            if durable:
                await asyncio.to_thread(_fsync_dir, self.path.parent)
        except OSError as exc:
            raise storage_error(exc, "write", self.path) from exc
        finally:
            file.close()

    def abort(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        with contextlib.suppress(FileNotFoundError):
            self.part.unlink()


@contextlib.asynccontextmanager
async def write_file(path: Path, *, durable: bool = True) -> AsyncIterator[SegmentWriter]:
    """``path`` holds the whole body written in the context, or nothing if the context fails
    (an error, a cancellation): never a partial file."""
    writer = SegmentWriter(path)
    try:
        yield writer
        await writer.finish(durable=durable)
    except BaseException:
        writer.abort()
        raise


class _Journal:
    """Appends whole lines to the journal; lines that arrive while one fsync runs are written
    and synced together by the next, after the files they name and those files' directories
    (a line must never name a body or a rename that a power cut could still undo). One thread
    hop per batch, not per file: the fsyncs of a segment each cost a hop and a wake-up.

    ``append`` returns once its line is durable; ``append_soon`` does not wait (a download slot
    goes on to its next segment meanwhile), and a failure of its batch is raised by the next
    call or by ``flush``.
    """

    def __init__(self, path: Path, *, sync_files: bool = True) -> None:
        self._path = path
        self._sync_files = sync_files
        self._pending: list[bytes] = []
        self._files: set[Path] = set()
        self._lock = asyncio.Lock()
        self._queued = 0  # lines ever queued
        self._durable = 0  # lines known to be on disk
        self._waiting: set[asyncio.Task[None]] = set()
        self._failure: BaseException | None = None
        # The batch a thread writes: a cancelled caller cannot stop the thread.
        self._writing: set[asyncio.Future[None]] = set()

    async def append(self, line: bytes, file: Path | None = None) -> None:
        await self._make_durable(self._enqueue(line, file))

    def append_soon(self, line: bytes, file: Path | None = None) -> None:
        task = asyncio.ensure_future(self._make_durable(self._enqueue(line, file)))
        self._waiting.add(task)
        task.add_done_callback(self._settled)

    async def flush(self) -> None:
        """Wait until every line queued is durable; raise what kept one from being so."""
        await self.settle()
        if self._failure is not None:
            raise self._failure

    async def settle(self) -> None:
        """Wait for the writes under way, failed or not: once a recording has stopped (even
        cancelled), nothing more is written to its journal behind the caller's back."""
        while self._waiting or self._writing:
            await asyncio.wait([*self._waiting, *self._writing])

    def _enqueue(self, line: bytes, file: Path | None) -> int:
        if self._failure is not None:
            raise self._failure
        self._pending.append(line)
        if file is not None:
            self._files.add(file)
        self._queued += 1
        return self._queued

    def _settled(self, task: asyncio.Task[None]) -> None:
        self._waiting.discard(task)
        if not task.cancelled() and task.exception() is not None and self._failure is None:
            self._failure = task.exception()

    async def _make_durable(self, ticket: int) -> None:
        async with self._lock:
            if self._durable >= ticket:
                return  # an earlier holder of the lock wrote it with its batch
            batch, self._pending = self._pending, []
            files, self._files = self._files, set()
            upto = self._queued
            synced = files if self._sync_files else set()
            writing = asyncio.ensure_future(
                asyncio.to_thread(_sync_then_append, synced, self._path, batch)
            )
            self._writing.add(writing)
            writing.add_done_callback(self._writing.discard)
            try:
                await asyncio.shield(writing)
            except BaseException:
                # Written again with the next batch (a line twice is harmless: the last wins).
                self._pending[:0] = batch
                self._files |= files
                raise
            self._durable = upto


class SegmentStore:
    """Files of one recording, indexed by (track, key); use :meth:`open`."""

    def __init__(self, root: Path, fingerprint: Mapping[str, str]) -> None:
        # Use SegmentStore.open(): it creates or loads the directory.
        self._root = root
        self._fingerprint = dict(fingerprint)
        self._journal = root / JOURNAL_NAME
        self._index = _Index(root)
        self._track_dirs: set[str] = set()
        self._boot = current_boot()  # known: files are not fsynced one by one (module docs)
        self._journal_appender = _Journal(self._journal, sync_files=self._boot is None)
        self.resumed = False

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(cls, root: Path, fingerprint: Mapping[str, str]) -> SegmentStore:
        """Create ``root`` or resume from its journal.

        ``fingerprint`` identifies the recording (manifest URL without query, representation
        ids...): a journal with another fingerprint raises StorageError rather than mixing two
        recordings in one file.
        """
        store = cls(root, fingerprint)
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise storage_error(exc, "create the segment directory", root) from exc
        if not root.is_dir():
            raise StorageError(f"{root} exists and is not a directory")
        try:
            if store._journal.exists():
                store._load()
            else:
                store._create()
            _delete_part_files(store._root)
        except OSError as exc:
            raise storage_error(exc, "use the segment directory", root) from exc
        return store

    @classmethod
    def open_existing(cls, root: Path) -> SegmentStore | None:
        """Reopen a recording's directory with the fingerprint its journal holds, if any.

        This is how segments recorded earlier are merged when the manifest is gone.
        """
        fingerprint = kept_fingerprint(root)
        return None if fingerprint is None else cls.open(root, fingerprint)

    def _create(self) -> None:
        if _data_files(self._root):
            raise StorageError(
                f"{self._root} already holds files but no {JOURNAL_NAME}: it is not a recording "
                "that can be resumed; pass --overwrite or choose another output"
            )
        header = {"type": "header", "version": JOURNAL_VERSION, "fingerprint": self._fingerprint}
        self._append(header)
        _note_boot(self._journal, self._index, self._boot)

    def _load(self) -> None:
        # Fail now, not at the first commit, when the directory cannot be written.
        with self._journal.open("ab"):
            pass
        records = _read_journal(self._journal)
        if not records or records[0].get("type") != "header":
            if not records and not _data_files(self._root):
                # Killed while writing the header: nothing was recorded yet, start afresh.
                self._journal.unlink()
                self._create()
                return
            raise StorageError(
                f"{self._journal} is not an instarec journal; pass --overwrite or choose "
                "another output"
            )
        _check_header(records[0], self._root, self._fingerprint)
        self.resumed = True
        for record in records[1:]:
            try:
                self._index.apply(record)
            except (KeyError, TypeError, ValueError):
                log.warning("journal %s: skipping malformed entry %r", self._journal, record)
        self._index.drop_damaged()
        self._index.verify_after_reboot(self._boot)
        _adopt_unjournalled(self._root, self._index, self._journal)
        _note_boot(self._journal, self._index, self._boot)

    # ------------------------------------------------------------------ paths

    @property
    def root(self) -> Path:
        return self._root

    @property
    def journal_path(self) -> Path:
        return self._journal

    @property
    def fingerprint(self) -> Mapping[str, str]:
        return dict(self._fingerprint)

    @property
    def partial_output(self) -> bool:
        """The output was merged from this store before the broadcast was all recorded."""
        return self._index.partial_output

    def writer(
        self, track: str, key: int | None = None
    ) -> contextlib.AbstractAsyncContextManager[SegmentWriter]:
        """Write the init segment (``key`` None) or segment ``key`` of ``track``: see
        ``write_file``; :meth:`commit` or :meth:`commit_init` journals it afterwards."""
        path = self.init_path(track) if key is None else self.segment_path(track, key)
        return write_file(path, durable=False)  # commit syncs it with its journal line

    def init_path(self, track: str, *, create: bool = True) -> Path:
        return self._track_dir(track, create) / INIT_NAME

    def segment_path(self, track: str, key: int, *, create: bool = True) -> Path:
        """Final path of a segment (the downloader writes ``<path>.part`` then renames)."""
        return self._track_dir(track, create) / _segment_name(key)

    def _track_dir(self, track: str, create: bool) -> Path:
        path = self._root / _check_track(track)
        if create and track not in self._track_dirs:
            try:
                path.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise storage_error(exc, "create", path) from exc
            self._track_dirs.add(track)
        return path

    # ------------------------------------------------------------------ queries

    def has_init(self, track: str) -> bool:
        return track in self._index.inits

    def has(self, track: str, key: int) -> bool:
        return key in self._index.segments.get(track, {})

    def tracks(self) -> list[str]:
        return sorted(set(self._index.segments) | set(self._index.inits) | set(self._index.missing))

    def segments(self, track: str) -> list[StoredSegment]:
        """Committed segments of ``track`` in timeline order (start, then key)."""
        return sorted(self._index.segments.get(track, {}).values(), key=lambda s: (s.start, s.key))

    def missing(self, track: str) -> list[MissingSegment]:
        """Segments recorded as missing and never committed since, in timeline order."""
        return sorted(self._index.missing.get(track, {}).values(), key=lambda s: (s.start, s.key))

    # ------------------------------------------------------------------ updates

    async def commit_init(
        self, track: str, *, offset: float = 0.0, place: TrackPlace | None = None
    ) -> None:
        """Journal the init segment renamed into :meth:`init_path`; ``offset``: seconds its
        media time is moved by (a later Period's timeline restarts at 0; the merge moves it too);
        ``place``: what a rerun needs to find the track again."""
        path = self.init_path(track)
        record = _init_record(track, self._require_file(path), offset, place)
        await self._append_async(record, path)
        self._index.apply(record)

    def offset(self, track: str) -> float:
        """Seconds added to ``track``'s media time to lie on the recording's clock."""
        return self._index.offsets.get(track, 0.0)

    def place(self, track: str) -> TrackPlace | None:
        """Where ``track`` was recorded from, as its init's record says (None: not said)."""
        return self._index.places.get(track)

    async def commit(
        self,
        track: str,
        key: int,
        *,
        start: float,
        duration: float | None,
        size: int,
        media_time: int | None,
        media_duration: int | None,
        wait: bool = True,
    ) -> None:
        """Journal a segment already renamed into :meth:`segment_path` (one fsynced line);
        without ``wait`` the line is made durable in the background (see :meth:`flush`)."""
        path = self.segment_path(track, key)
        actual = self._require_file(path)
        if actual != size:
            raise StorageError(f"cannot commit {path}: {actual} bytes on disk, expected {size}")
        stored = StoredSegment(track, key, start, duration, size, media_time, media_duration, path)
        line = _segment_line(stored)
        if wait:
            await self._journal_appender.append(line, path)
        else:
            self._journal_appender.append_soon(line, path)
        self._index.segments.setdefault(track, {})[key] = stored
        self._index.missing.get(track, {}).pop(key, None)

    async def record_missing(
        self, track: str, key: int, *, start: float, duration: float | None
    ) -> None:
        """Journal a segment the server no longer has (404/410): a gap in the timeline."""
        _check_track(track)
        if self.has(track, key):
            return
        await self._append_async(
            {"type": "missing", "track": track, "key": key, "start": start, "duration": duration}
        )
        self._index.missing.setdefault(track, {})[key] = MissingSegment(
            track=track, key=key, start=start, duration=duration
        )

    async def mark_output(self, *, partial: bool) -> None:
        """Journal whether the output merged from this store is partial: a rerun resuming the
        recording may then replace it."""
        await self._append_async({"type": "output", "partial": partial})
        self._index.partial_output = partial

    async def flush(self) -> None:
        """Every segment committed so far is in the journal on disk (StorageError if not)."""
        await self._journal_appender.flush()

    async def settle(self) -> None:
        """Wait for the journal writes under way, raising none of their failures."""
        await self._journal_appender.settle()

    def remove(self) -> None:
        """Delete the whole directory (after a successful merge)."""
        discard(self._root)
        self._index.segments.clear()
        self._index.missing.clear()
        self._index.inits.clear()
        self._track_dirs.clear()

    # ------------------------------------------------------------------ internals

    def _require_file(self, path: Path) -> int:
        size = _file_size(path)
        if size is None:
            raise StorageError(f"cannot commit {path}: the file is not there")
        return size

    def _append(self, record: Mapping[str, Any]) -> None:
        """Append a line now (opening the store: nothing else runs yet)."""
        _append_durably(self._journal, _line(record))

    async def _append_async(self, record: Mapping[str, Any], file: Path | None = None) -> None:
        await self._journal_appender.append(_line(record), file)


def _check_header(header: Mapping[str, Any], root: Path, fingerprint: Mapping[str, str]) -> None:
    if header.get("version") != JOURNAL_VERSION:
        raise StorageError(
            f"{root} was written by another version of instarec (journal version "
            f"{header.get('version')}); pass --overwrite or choose another output"
        )
    if header.get("fingerprint") != fingerprint:
        raise StorageError(
            f"{root} holds segments of a different recording (another manifest or "
            "other tracks); pass --overwrite or choose another output"
        )


def _init_record(track: str, size: int, offset: float, place: TrackPlace | None) -> dict[str, Any]:
    record: dict[str, Any] = {"type": "init", "track": track, "size": size}
    if offset:
        record["offset"] = offset
    if place is not None:
        record |= {"period_start": place.period_start, "shift": place.shift}
        record["representation"] = place.representation
    return record


def _place(record: Mapping[str, Any]) -> TrackPlace | None:
    if "period_start" not in record:
        return None  # a journal of an earlier version
    start, shift = float(record["period_start"]), float(record.get("shift", 0.0))
    return TrackPlace(start, shift, str(record.get("representation", "")))


def kept_representations(root: Path) -> dict[str, set[str]]:
    """The representation ids each kind of track was recorded from, over every Period, as the
    journal in ``root`` says ({} without one)."""
    kept: dict[str, set[str]] = {}
    try:
        with (root / JOURNAL_NAME).open("rb") as fh:
            for line in fh:
                record = _decode(line)
                if record and record.get("type") == "init" and "representation" in record:
                    kind = str(record["track"]).split("-p", 1)[0]
                    kept.setdefault(kind, set()).add(str(record["representation"]))
    except OSError:
        return {}
    return kept


def kept_fingerprint(root: Path) -> dict[str, str] | None:
    """The fingerprint of the recording whose journal is in ``root``; None without one."""
    try:
        with (root / JOURNAL_NAME).open("rb") as fh:
            header = _decode(fh.readline())
    except OSError:
        return None
    if not header or header.get("type") != "header":
        return None
    fingerprint = header.get("fingerprint")
    if not isinstance(fingerprint, dict):
        return None
    return {str(k): str(v) for k, v in fingerprint.items()}


def holds_partial_output(root: Path) -> bool:
    """Whether the journal in ``root`` says the output beside it is a partial merge (see
    ``SegmentStore.mark_output``): read only, the store is not opened."""
    try:
        data = (root / JOURNAL_NAME).read_bytes()
    except OSError:
        return False
    partial = False
    for raw in data.split(b"\n"):
        record = _decode(raw) if b'"output"' in raw else None
        if record is not None and record.get("type") == "output":
            partial = bool(record.get("partial"))
    return partial


def discard(root: Path) -> None:
    """Delete a recording's directory that is not to be resumed (``--overwrite``)."""
    try:
        shutil.rmtree(root)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise storage_error(exc, "delete", root) from exc


def _line(record: Mapping[str, Any]) -> bytes:
    return json.dumps(record, separators=(",", ":"), allow_nan=False).encode() + b"\n"


def _sync_then_append(files: set[Path], journal: Path, lines: list[bytes]) -> None:
    for file in files:
        _fsync_file(file)
    for directory in {file.parent for file in files}:
        _fsync_dir(directory)
    _append_durably(journal, b"".join(lines))


def _fsync_file(path: Path) -> None:
    _fsync(path, opening="write", syncing="write")


def _append_durably(journal: Path, lines: bytes) -> None:
    try:
        # Whole lines in one write, then fsync: a kill -9 leaves at worst a torn last line.
        with journal.open("ab") as fh:
            fh.write(lines)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        raise storage_error(exc, "write", journal) from exc


def _decode(raw: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _check_track(track: str) -> str:
    # Track names become directory names: no separators, no "..".
    if not _TRACK_RE.fullmatch(track):
        raise ValueError(f"invalid track name {track!r}")
    return track


def _file_size(path: Path) -> int | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise storage_error(exc, "read", path) from exc
    return st.st_size


def _fsync_dir(path: Path) -> None:
    if os.name != "posix":
        return  # directories cannot be opened for fsync on Windows
    _fsync(path, opening="open", syncing="sync")


def _fsync(path: Path, *, opening: str, syncing: str) -> None:
    """fsync ``path`` (a file or a directory); the verbs name the failing step in the error."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise storage_error(exc, opening, path) from exc
    try:
        os.fsync(fd)
    except OSError as exc:
        raise storage_error(exc, syncing, path) from exc
    finally:
        os.close(fd)


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _read_journal(journal: Path) -> list[dict[str, Any]]:
    """The journal's records; a torn last line (a kill -9 mid-write) is cut off the file."""
    data = journal.read_bytes()
    lines = data.split(b"\n")
    tail = lines.pop()  # b"" when the file ends with a newline
    good_end = len(data) - len(tail)
    records: list[dict[str, Any]] = []
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        record = _decode(raw)
        if record is None:
            log.warning("journal %s: skipping unreadable line %d", journal, number)
            continue
        records.append(record)
    if tail.strip():
        record = _decode(tail)
        if record is None:
            # Torn by a kill -9 in the middle of a write: cut it off so the next line we
            # append starts on a line of its own.
            log.info("journal %s: ignoring a truncated last line", journal)
            with journal.open("r+b") as fh:
                fh.truncate(good_end)
                fh.flush()
                os.fsync(fh.fileno())
        else:
            records.append(record)
            with journal.open("ab") as fh:
                fh.write(b"\n")
                fh.flush()
                os.fsync(fh.fileno())
    return records


def _data_files(root: Path) -> list[Path]:
    """Files other than the journal and interrupted downloads."""
    return [
        p
        for p in root.rglob("*")
        if p.is_file() and p.name != JOURNAL_NAME and p.suffix != PART_SUFFIX
    ]


def _delete_part_files(root: Path) -> None:
    for part in root.rglob("*" + PART_SUFFIX):
        log.debug("deleting interrupted download %s", part)
        part.unlink(missing_ok=True)


class _Index:
    """What the store holds, by track and key, as its journal says (and the disk confirms)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.segments: dict[str, dict[int, StoredSegment]] = {}
        self.missing: dict[str, dict[int, MissingSegment]] = {}
        self.inits: dict[str, int] = {}
        self.partial_output = False
        self.offsets: dict[str, float] = {}
        self.places: dict[str, TrackPlace] = {}
        # The boot the lines being read were written under (None: files fsynced before their
        # line), and each file's, where one is known.
        self.boot: str | None = None
        self._written_under: dict[tuple[str, int | None], str] = {}

    def apply(self, record: Mapping[str, Any]) -> None:
        kind = record["type"]
        if kind == "output":
            self.partial_output = bool(record["partial"])
            return
        if kind == "boot":
            self.boot = str(record["id"])
            return
        track = _check_track(str(record["track"]))
        if kind in ("init", "segment"):
            file = (track, None if kind == "init" else int(record["key"]))
            if self.boot is None:
                self._written_under.pop(file, None)
            else:
                self._written_under[file] = self.boot
        if kind == "init":
            self.inits[track] = int(record["size"])
            self.offsets[track] = float(record.get("offset", 0.0))
            place = _place(record)
            if place is not None:
                self.places[track] = place
        elif kind == "segment":
            key = int(record["key"])
            self.segments.setdefault(track, {})[key] = StoredSegment(
                track=track,
                key=key,
                start=float(record["start"]),
                duration=_opt_float(record.get("duration")),
                size=int(record["size"]),
                media_time=_opt_int(record.get("media_time")),
                media_duration=_opt_int(record.get("media_duration")),
                path=self.root / track / _segment_name(key),
            )
            self.missing.get(track, {}).pop(key, None)
        elif kind == "missing":
            key = int(record["key"])
            if key not in self.segments.get(track, {}):
                self.missing.setdefault(track, {})[key] = MissingSegment(
                    track=track,
                    key=key,
                    start=float(record["start"]),
                    duration=_opt_float(record.get("duration")),
                )
        else:
            raise ValueError(f"unknown journal entry type {kind!r}")

    def drop_damaged(self) -> None:
        for track, size in list(self.inits.items()):
            if _file_size(self.root / track / INIT_NAME) != size:
                log.warning(
                    "init segment of %s is missing or damaged: it will be fetched again", track
                )
                del self.inits[track]
        dropped = 0
        for segments in self.segments.values():
            for key, seg in list(segments.items()):
                if _file_size(seg.path) != seg.size:
                    del segments[key]
                    dropped += 1
        if dropped:
            log.warning(
                "%d journaled segment(s) missing or damaged on disk: fetching them again", dropped
            )

    def verify_after_reboot(self, boot: str | None) -> None:
        """Drop the files journalled under another boot whose content is not whole: their
        bytes were not fsynced, and a power cut may have left a file of the right size
        without its data. None (the boot unknown): every file must be checked."""
        dropped = 0
        for (track, key), written in self._written_under.items():
            if written == boot:
                continue
            if key is None:
                if track in self.inits and not _whole_init(self.root / track / INIT_NAME):
                    log.warning("init segment of %s was damaged by a reboot: fetching it", track)
                    del self.inits[track]
                continue
            stored = self.segments.get(track, {}).get(key)
            if stored is not None and not _whole_segment(stored.path):
                del self.segments[track][key]
                dropped += 1
        if dropped:
            log.warning("%d segment(s) damaged by a reboot: fetching them again", dropped)


def _note_boot(journal: Path, index: _Index, boot: str | None) -> None:
    """Journal the boot the lines after it are written under, when it is another one than
    the journal's last (see ``_Index.verify_after_reboot``)."""
    if boot is not None and boot != index.boot:
        _append_durably(journal, _line({"type": "boot", "id": boot}))
        index.boot = boot


def current_boot() -> str | None:
    """This boot of the machine (Linux), None where it cannot be told."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip() or None
    except OSError:
        return None


def _whole_init(path: Path) -> bool:
    try:
        parse_init(path.read_bytes())
    except (OSError, Mp4Error):
        return False
    return True


def _whole_segment(path: Path) -> bool:
    """Whether ``path`` holds complete boxes (a WebVTT file: text with no NUL byte)."""
    try:
        data = path.read_bytes()
    except OSError:
        return False
    try:
        parse_fragment(data, default_sample_duration=1)  # the boxes, not the timing
    except Mp4Error:
        return b"\x00" not in data  # (any box header holds NUL bytes)
    return True


SEGMENT_SUFFIX = ".m4s"


def _segment_name(key: int) -> str:
    return f"{key:020d}{SEGMENT_SUFFIX}"


def _segment_line(stored: StoredSegment) -> bytes:
    record = {field.name: getattr(stored, field.name) for field in fields(stored)}
    del record["path"]  # where it lies follows from track and key
    return _line({"type": "segment", **record})


def _adopt_unjournalled(root: Path, index: _Index, journal: Path) -> None:
    """Journal the segments a kill -9 left renamed into place but not yet journalled.

    A segment's line is written in the background after its rename (a batch's files are
    fsynced first): killed meanwhile, the file is whole on disk and the journal does not name
    it. Such a file is taken when its boxes are complete and carry a tfdt (which places it, as
    a download's commit does); anything else is left to be fetched again.
    """
    lines: list[bytes] = []
    files: set[Path] = set()
    for track in list(index.inits):
        known = index.segments.setdefault(track, {})
        for path in sorted((root / track).glob("*" + SEGMENT_SUFFIX)):
            offset = index.offsets.get(track, 0.0)
            stored = _unjournalled(track, path, known, root / track / INIT_NAME, offset)
            if stored is None:
                continue
            known[stored.key] = stored
            index.missing.get(track, {}).pop(stored.key, None)
            lines.append(_segment_line(stored))
            files.add(path)
    if lines:
        log.info("%d segment(s) on disk were not in the journal yet: kept", len(lines))
        _sync_then_append(files, journal, lines)


def _unjournalled(
    track: str, path: Path, known: Mapping[int, StoredSegment], init_path: Path, offset: float
) -> StoredSegment | None:
    """``path`` as a stored segment when it is whole and not in ``known``, else None; placed
    as a download places it: its tfdt, moved by its track's ``offset`` (a later Period's)."""
    try:
        key = int(path.stem)
    except ValueError:
        return None
    if key in known:
        return None
    try:
        init = parse_init(init_path.read_bytes())
        data = path.read_bytes()
        info = parse_fragment(data, default_sample_duration=init.default_sample_duration)
    except (OSError, Mp4Error):
        return None
    if info.base_media_decode_time is None:
        return None
    scale = init.timescale
    start, duration = info.base_media_decode_time / scale + offset, info.duration / scale
    return StoredSegment(
        track, key, start, duration, len(data), info.base_media_decode_time, info.duration, path
    )
