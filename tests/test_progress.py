"""The progress renderer: status text, rates, ETA, the terminal line and the log lines."""

from __future__ import annotations

import asyncio
import io
import logging

import pytest

from instarec.progress import (
    ProgressSnapshot,
    RateMeter,
    Rates,
    StatusAwareHandler,
    StatusLine,
    archive_eta,
    format_bytes,
    format_duration,
    make_reporter,
    status_text,
)


def snap(**changes: object) -> ProgressSnapshot:
    values: dict[str, object] = {
        "elapsed": 10.0,
        "archive_active": False,
        "archive_seconds": 0.0,
        "live_seconds": 0.0,
        "segments_done": 0,
        "segments_missing": 0,
        "segments_queued": 0,
        "archive_queued": 0,
        "bytes_done": 0,
        "behind_live": None,
    }
    values.update(changes)
    return ProgressSnapshot(**values)  # type: ignore[arg-type]


def test_format_duration_and_bytes():
    assert format_duration(7.4) == "0:07"
    assert format_duration(723) == "12:03"
    assert format_duration(3723.6) == "1:02:04"
    assert format_bytes(950) == "950 B"
    assert format_bytes(12_345_678) == "12.3 MB"
    assert format_bytes(1_200_000_000) == "1.20 GB"


def test_status_while_the_archive_is_recovered_shows_both_parts_and_an_eta():
    snapshot = snap(
        archive_active=True,
        archive_seconds=83.0,
        live_seconds=12.0,
        segments_done=48,
        segments_missing=2,
        segments_queued=30,
        archive_queued=25,
        bytes_done=12_300_000,
        behind_live=4.04,
    )
    text = status_text(snapshot, Rates(2_100_000, 5.0))
    assert text == (
        "archive 1:23 + live 0:12 | 48 segments, 2 missing, 30 queued"
        " | 12.3 MB at 2.10 MB/s | 4.0 s behind live | archive ETA 0:05"
    )


def test_status_after_the_archive_adds_the_parts_up():
    text = status_text(
        snap(archive_seconds=60.0, live_seconds=30.0, segments_done=90, bytes_done=5000),
        Rates(None, None),
    )
    assert text.startswith("recorded 1:30 (archive 1:00 + live 0:30) | 90 segments | 5.00 kB")
    assert "ETA" not in text and "behind" not in text


def test_status_live_only_and_archive_search_without_known_segments():
    assert status_text(snap(live_seconds=5), Rates(None, None)).startswith("recorded 0:05 |")
    searching = status_text(snap(archive_active=True, archive_queued=0), Rates(1.0, 1.0))
    assert searching.endswith("searching the archive")


def test_archive_eta():
    active = snap(archive_active=True, archive_queued=40)
    assert archive_eta(active, 8.0) == 5.0
    assert archive_eta(active, 0.0) is None
    assert archive_eta(active, None) is None
    assert archive_eta(snap(archive_queued=40), 8.0) is None  # archive over


def test_rate_meter_uses_the_recent_window():
    meter = RateMeter(window=5.0)
    assert meter.add(snap(elapsed=0.0)) == Rates(None, None)
    meter.add(snap(elapsed=1.0, bytes_done=1000, segments_done=1))
    rates = meter.add(snap(elapsed=2.0, bytes_done=2000, segments_done=2))
    assert rates == Rates(1000.0, 1.0)
    # A burst long ago no longer counts: only the last ~5 s.
    meter.add(snap(elapsed=10.0, bytes_done=2000, segments_done=2))
    rates = meter.add(snap(elapsed=16.0, bytes_done=2600, segments_done=2))
    assert rates.bytes_per_second == pytest.approx(100.0)


def test_status_line_truncates_to_the_terminal_and_clears_for_logs():
    stream = io.StringIO()
    status = StatusLine(stream, width=lambda: 20)
    status.show("x" * 50)
    assert stream.getvalue() == "\r\x1b[K" + "x" * 18 + "…"
    handler = StatusAwareHandler(stream, status)
    handler.setFormatter(logging.Formatter("%(message)s"))
    stream.seek(0)
    stream.truncate()
    handler.emit(logging.LogRecord("t", logging.INFO, __file__, 1, "hello", None, None))
    # Erase the line, print the record on its own line, draw the status again below it.
    assert stream.getvalue() == "\r\x1b[Khello\n" + "x" * 18 + "…"


async def test_terminal_reporter_redraws_then_leaves_a_clean_line():
    stream = io.StringIO()
    status = StatusLine(stream, width=lambda: 200)
    reporter = make_reporter(status=status, quiet=False, refresh=0.01)
    assert reporter is not None
    done = iter(range(1000))

    def current() -> ProgressSnapshot:
        return snap(live_seconds=float(next(done)))

    task = asyncio.create_task(reporter(current))
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    text = stream.getvalue()
    assert text.count("\r\x1b[Krecorded") >= 3  # refreshed several times
    assert text.endswith("\r\x1b[K")  # erased at the end: the summary starts on a clean line


async def test_log_reporter_writes_plain_lines(caplog):
    reporter = make_reporter(status=None, quiet=False, log_every=0.02)
    assert reporter is not None
    caplog.set_level(logging.INFO, logger="instarec.progress")
    task = asyncio.create_task(reporter(lambda: snap(live_seconds=3.0, segments_done=2)))
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    lines = [r.getMessage() for r in caplog.records if r.name == "instarec.progress"]
    assert len(lines) >= 2
    assert lines[0].startswith("progress: recorded 0:03 | 2 segments")
    assert all("\x1b" not in line and "\r" not in line for line in lines)


def test_quiet_has_no_reporter():
    assert make_reporter(status=StatusLine(io.StringIO()), quiet=True) is None
    assert make_reporter(status=None, quiet=True) is None
