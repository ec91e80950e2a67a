"""What the live mux (``livemux.py``) needs to know of a running recording: for each track,
what may still come before the next segment (``order.Settling``).

The recording's producers are the ones that can fill a hole: past recovery while it runs, a
live hole's chain, a download queued or in flight (a known key neither on disk nor recorded
missing). Once none of them can, a hole is final and the stream goes on past it.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Hashable, Mapping
from pathlib import Path
from urllib.parse import unquote, urlsplit

from instarec.downloads import DownloadStats
from instarec.options import DEFAULT_EXTENSION
from instarec.order import Settling
from instarec.recovery import PastRecovery
from instarec.store import SegmentStore
from instarec.timeline import Timeline


class RecordingState:
    """The settling of each track, read from the recording's parts as they stand."""

    def __init__(
        self,
        store: SegmentStore,
        tracks: Mapping[str, Timeline],
        past: Callable[[], PastRecovery | None],
        with_past: bool,
        stats: Callable[[], DownloadStats],
    ) -> None:
        self._store = store
        self._stats = stats
        self._tracks = tracks
        self._past = past
        self._with_past = with_past
        self.filling = 0  # live holes being chained now

    def searching(self) -> bool:
        past = self._past()
        # Before past recovery starts (the first manifest's numbers are being calibrated)
        # it is as good as running.
        recovering = self._with_past and (past is None or past.active)
        return recovering or self.filling > 0

    def version(self, track: str) -> Hashable:
        # Every commit counts in the stats once the store holds it (a miss is counted before,
        # so the store's own records are counted); a key found (or a wrong guess forgotten)
        # changes the timeline's length; past recovery may find the start with nothing new
        # on disk (the oldest segments downloaded first).
        lost = len(self._store.missing(track))
        keys = len(self._tracks[track].keys)
        return (self._stats().downloaded, lost, keys, self.searching(), self._first(track))

    def settling(self, track: str, after: int | None, over: bool) -> Settling:
        timeline = self._tracks[track]
        keys = timeline.keys
        start = 0 if after is None else bisect.bisect_right(keys, after)
        store = self._store
        missing = [m.key for m in store.missing(track) if after is None or m.key > after]
        lost = set(missing)
        pending = [k for k in keys[start:] if not store.has(track, k) and k not in lost]
        return Settling(self.searching(), pending, sorted(missing), self._first(track), over)

    def _first(self, track: str) -> int | None:
        past = self._past()
        return past.archive.first.get(track) if past is not None else None


# Manifest names that say nothing of the stream: the directory above them does.
_GENERIC_NAMES = frozenset({"manifest", "index", "live", "master", "stream", "playlist", "dash"})


def stream_name(mpd_url: str) -> str:
    """A file name for a stream watched on stdout: the manifest's name in its URL (an
    Instagram broadcast's id), after its directory's when the name is a generic one
    (``…/1234/manifest.mpd``: ``1234-manifest``), else ``stream``."""
    path = Path(unquote(urlsplit(mpd_url).path))
    name = _cleaned(path.stem)
    if name.lower() in _GENERIC_NAMES and _cleaned(path.parent.name):
        name = f"{_cleaned(path.parent.name)}-{name}"
    return name or "stream"


def _cleaned(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")


def rerun_output(mpd_url: str) -> Path:
    """The OUTPUT whose segments directory a stream watched on stdout keeps: a rerun with it
    merges (or resumes) the same recording."""
    return Path(stream_name(mpd_url) + DEFAULT_EXTENSION)
