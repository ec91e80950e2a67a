"""The end of a recording, for people (a short table) and for scripts (``--summary-file``).

The JSON document (``summary_to_json``) is versioned by its ``schema`` field; README.md,
section "Summary file", documents every field. A field is only ever added within one schema
version; a renamed or removed field gets a new version.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from instarec import __version__
from instarec.clock import SYSTEM_CLOCK, Clock
from instarec.errors import storage_error
from instarec.finish import GapRange, RecordingSummary, TrackSummary
from instarec.progress import format_bytes, format_duration

SCHEMA = "instarec.summary/1"

# Missing stretches closer than this are one range: a run of missing segments is reported
# as one hole, not one line per segment (segment starts and durations are rounded).
_JOIN_TOLERANCE = 0.05


@dataclass(frozen=True, slots=True)
class MissingRange:
    """A stretch of the timeline with no media, merged per track, in seconds."""

    start: float
    end: float | None  # None: the length is unknown
    tracks: tuple[str, ...]


def missing_ranges(gaps: Iterable[GapRange]) -> list[MissingRange]:
    """Per track, overlapping or touching gaps joined; ranges equal on every track, joined."""
    by_track: dict[str, list[tuple[float, float | None]]] = {}
    for gap in sorted(gaps, key=lambda g: (g.track, g.start)):
        ranges = by_track.setdefault(gap.track, [])
        if ranges:
            start, end = ranges[-1]
            if end is not None and gap.start <= end + _JOIN_TOLERANCE:
                new_end = None if gap.end is None else max(end, gap.end)
                ranges[-1] = (start, new_end)
                continue
        ranges.append((gap.start, gap.end))
    joined: dict[tuple[float, float | None], list[str]] = {}
    for track in sorted(by_track, key=_track_order):
        for start, end in by_track[track]:
            key = next(
                (k for k in joined if _close(k[0], start) and _close_or_none(k[1], end)),
                (start, end),
            )
            joined.setdefault(key, []).append(track)
    return sorted(
        (MissingRange(start, end, tuple(tracks)) for (start, end), tracks in joined.items()),
        key=lambda r: (r.start, r.tracks),
    )


def _track_order(track: str) -> tuple[int, str]:
    return ({"video": 0, "audio": 1}.get(track, 2), track)


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= _JOIN_TOLERANCE


def _close_or_none(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return _close(a, b)


def format_timestamp(seconds: float) -> str:
    """A position in the broadcast, to the tenth of a second: ``0:42.0``, ``1:02:03.5``."""
    tenths = max(0, round(seconds * 10))
    whole, tenth = divmod(tenths, 10)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}:{minutes:02d}:{secs:02d}.{tenth}"
    return f"{minutes}:{secs:02d}.{tenth}"


def _format_range(item: MissingRange) -> str:
    end = format_timestamp(item.end) if item.end is not None else "?"
    return f"{format_timestamp(item.start)}–{end} ({', '.join(item.tracks)})"


def _archive_text(summary: RecordingSummary) -> str:
    if summary.archive_start is None:
        return "not searched (--no-past, or the manifest lists the whole broadcast)"
    start = format_timestamp(summary.archive_start)
    if summary.archive_complete:
        return f"from {start}: reaches the start of the broadcast"
    return f"from {start}: the server no longer has anything earlier"


def _output_rows(summary: RecordingSummary) -> list[tuple[str, str]]:
    parts = summary.parts
    if summary.streamed:
        return [("Output", "stdout (MPEG-TS, streamed while recording)")]
    if not parts:
        return [("Output", str(summary.output) if summary.output is not None else "nothing merged")]
    rows = [("Output", f"{parts[0].path} … {parts[-1].path} ({len(parts)} parts)")]
    for number, part in enumerate(parts, start=1):
        span = f"{format_timestamp(part.start)}–{format_timestamp(part.start + part.duration)}"
        rows.append(
            (
                f"Part {number}",
                f"{part.path}: {span} ({part.duration:.1f} s), {format_bytes(part.size)}",
            )
        )
    return rows


def format_summary(summary: RecordingSummary) -> str:
    """The table printed at the end of a recording (ends with a newline)."""
    rows = _output_rows(summary)
    if summary.segments_dir.exists():
        rows.append(("Segments kept in", str(summary.segments_dir)))
    rows.append(("Duration", f"{format_duration(summary.duration)} ({summary.duration:.1f} s)"))
    rows.append(("Size", f"{format_bytes(summary.size)} ({summary.size} bytes)"))
    for track in summary.tracks:
        codecs = f" {track.codecs}" if track.codecs else ""
        codecs += f" [{track.lang}]" if track.lang else ""
        span = ""
        if track.start is not None and track.end is not None:
            span = f", {format_timestamp(track.start)}–{format_timestamp(track.end)}"
        rows.append(
            (
                f"Track {track.kind}",
                f"{track.representation_id}{codecs}: {track.segments} segments{span}",
            )
        )
    recorded = sum(t.segments for t in summary.tracks)
    missing = sum(t.missing for t in summary.tracks)
    rows.append(("Segments", f"{recorded} recorded, {missing} missing"))
    ranges = missing_ranges(summary.gaps)
    if ranges:
        for n, item in enumerate(ranges):
            rows.append(("Missing" if n == 0 else "", _format_range(item)))
    else:
        rows.append(("Missing", "none"))
    rows.append(("Past recovery", _archive_text(summary)))
    rows.append(("Ended", summary.end_reason))
    rows.append(("Wall time", format_duration(summary.wall_time)))
    width = max(len(label) for label, _ in rows)
    return "".join(f"{label.ljust(width)}  {value}\n" for label, value in rows)


def _track_json(track: TrackSummary) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "kind": track.kind,
        "representation_id": track.representation_id,
        "codecs": track.codecs,
        "segments": track.segments,
        "missing": track.missing,
        "start_seconds": _rounded(track.start),
        "end_seconds": _rounded(track.end),
    }
    if track.lang:
        doc["lang"] = track.lang  # recordings of several languages or subtitles
    return doc


def summary_to_json(
    summary: RecordingSummary,
    *,
    manifest_url: str | None = None,
    exit_code: int | None = None,
    clock: Clock = SYSTEM_CLOCK,
) -> dict[str, Any]:
    """The ``--summary-file`` document (schema ``instarec.summary/1``, see README.md)."""
    return {
        "schema": SCHEMA,
        "instarec_version": __version__,
        "finished_at": clock.now().isoformat(timespec="seconds").replace("+00:00", "Z"),
        "manifest_url": manifest_url,
        "output": str(summary.output) if summary.output is not None else None,
        "segments_dir": str(summary.segments_dir),
        "segments_kept": summary.segments_dir.exists(),
        "size_bytes": summary.size,
        "duration_seconds": round(summary.duration, 3),
        "wall_time_seconds": round(summary.wall_time, 3),
        "end_reason": summary.end_reason,
        "interrupted": summary.interrupted,
        "exit_code": exit_code,
        "segments_recorded": sum(t.segments for t in summary.tracks),
        "segments_missing": sum(t.missing for t in summary.tracks),
        "archive": {
            "searched": summary.archive_start is not None,
            "start_seconds": _rounded(summary.archive_start),
            "reaches_broadcast_start": summary.archive_complete,
        },
        "tracks": [_track_json(t) for t in summary.tracks],
        "missing_ranges": [
            {
                "start_seconds": _rounded(r.start),
                "end_seconds": _rounded(r.end),
                "tracks": list(r.tracks),
            }
            for r in missing_ranges(summary.gaps)
        ],
        "parts": [
            {
                "path": str(part.path),
                "start_seconds": _rounded(part.start),
                "duration_seconds": _rounded(part.duration),
                "size_bytes": part.size,
            }
            for part in summary.parts
        ],
    }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def write_summary_file(path: Path, document: dict[str, Any]) -> None:
    """Write the JSON atomically: a script polling the file never reads half of it."""
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        temporary.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        os.replace(temporary, path)
    except OSError as exc:
        raise storage_error(exc, "write the summary file", path) from exc
