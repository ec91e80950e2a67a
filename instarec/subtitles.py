"""A recorded text track made into a file ffmpeg reads as subtitles (see ``captions.py``)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from instarec.captions import Cue, is_webvtt, joined, text_cues, webvtt_cues, webvtt_document
from instarec.errors import MergeError, Mp4Error, storage_error
from instarec.mp4 import parse_init, read_samples

log = logging.getLogger(__name__)

__all__ = ["read_cues", "write_text_input"]


def read_cues(init: Path, segments: Sequence[Path], shift: float) -> list[Cue]:
    """The cues of a recorded text track (its init and segments in order), ``shift`` seconds
    added to their media times."""
    if not init.exists():
        return _plain_cues(segments, shift)  # WebVTT segments have no init
    try:
        header = init.read_bytes()
        info = parse_init(header)
    except OSError as exc:
        raise MergeError(f"cannot read the recorded text track's init {init}: {exc}") from exc
    except Mp4Error as exc:
        raise MergeError(f"the recorded text track's init {init} is not MP4: {exc}") from exc
    samples = []
    for path in segments:
        try:
            samples += read_samples(
                path.read_bytes(), default_sample_duration=info.default_sample_duration
            )
        except OSError as exc:
            raise MergeError(f"cannot read the recorded text segment {path}: {exc}") from exc
        except Mp4Error as exc:
            # One damaged segment loses its cues, not the track.
            log.warning("text segment %s skipped: %s", path.name, exc)
    return text_cues(info.entry_type, samples, info.timescale, shift)


def _plain_cues(segments: Sequence[Path], shift: float) -> list[Cue]:
    """The cues of WebVTT segments: their times count from the Period's start, as the media
    time of the other tracks does (``shift`` places both)."""
    cues: list[Cue] = []
    for path in segments:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise MergeError(f"cannot read the recorded text segment {path}: {exc}") from exc
        if not is_webvtt(data):
            log.warning("text segment %s skipped: not a WebVTT file", path.name)
            continue
        cues += webvtt_cues(data.decode("utf-8", errors="replace"), shift)
    return joined(cues)


def write_text_input(init: Path, segments: Sequence[Path], shift: float, path: Path) -> None:
    """Write the track's cues as a WebVTT file at ``path`` (blocking: run it in a thread)."""
    cues = read_cues(init, segments, shift)
    if not cues:
        log.warning("the text track holds no cue: its subtitle stream is empty")
    try:
        path.write_text(webvtt_document(cues), encoding="utf-8")
    except OSError as exc:
        raise storage_error(exc, "write", path) from exc
