"""What the user sees while recording: a status line on a terminal, log lines otherwise."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ProgressSnapshot:
    """A consistent view of a recording, taken by the recorder a few times a second."""

    elapsed: float  # wall seconds since the recording started
    archive_active: bool  # past recovery still running
    archive_seconds: float  # media seconds recorded from the past (archive refs)
    live_seconds: float  # media seconds recorded at the live edge
    segments_done: int
    segments_missing: int
    segments_queued: int  # waiting or in flight
    archive_queued: int  # archive segments not yet downloaded
    bytes_done: int
    behind_live: float | None  # seconds between the newest listed segment's end and now
