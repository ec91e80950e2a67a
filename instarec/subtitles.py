"""A recorded text track made into a file ffmpeg reads as subtitles (see ``captions.py``)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from instarec.captions import Cue, text_cues, webvtt_document
from instarec.errors import MergeError, Mp4Error, storage_error
from instarec.mp4 import parse_init, read_samples

log = logging.getLogger(__name__)

__all__ = ["read_cues", "write_text_input"]


def read_cues(init: Path, segments: Sequence[Path], shift: float) -> list[Cue]:
    """The cues of a recorded text track (its init and segments in order), ``shift`` seconds
    added to their media times."""
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
    return text_cues(header, samples, info.timescale, shift)


def write_text_input(init: Path, segments: Sequence[Path], shift: float, path: Path) -> None:
    """Write the track's cues as a WebVTT file at ``path`` (blocking: run it in a thread)."""
    cues = read_cues(init, segments, shift)
    if not cues:
        log.warning("the text track holds no cue: its subtitle stream is empty")
    try:
        path.write_text(webvtt_document(cues), encoding="utf-8")
    except OSError as exc:
        raise storage_error(exc, "write", path) from exc
