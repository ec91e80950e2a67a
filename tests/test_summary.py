"""The summary table and the --summary-file JSON, on hand-made summaries and a real recording."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from instarec.cli import main
from instarec.files import PartSummary
from instarec.finish import (
    GapRange,
    RecordingSummary,
    TrackSummary,
    _lost_segments,
    _missing_count,
    _timeline_gaps,
)
from instarec.store import MissingSegment, StoredSegment
from instarec.summary import (
    SCHEMA,
    MissingRange,
    format_summary,
    format_timestamp,
    missing_ranges,
    summary_to_json,
    write_summary_file,
)
from instarec.testing.clock import ManualClock
from instarec.testing.media import TestMedia
from instarec.testing.origin import Origin, OriginConfig
from tests.recording import inspect


def summary(tmp_path: Path, **changes: object) -> RecordingSummary:
    values: dict[str, object] = {
        "output": tmp_path / "rec.mkv",
        "segments_dir": tmp_path / "rec.mkv.segments",
        "size": 7_276_694,
        "duration": 91.008,
        "tracks": (
            TrackSummary("video", "v720", "avc1.64001f", 44, 2, 0.0, 91.0),
            TrackSummary("audio", "a128", "mp4a.40.2", 44, 2, 0.0, 91.0),
        ),
        "gaps": (
            GapRange("video", 24.0, 26.1),
            GapRange("audio", 24.0, 26.1),
            GapRange("video", 26.1, 28.0),
            GapRange("audio", 26.1, 28.0),
        ),
        "wall_time": 125.0,
        "end_reason": "the server says the broadcast ended",
        "archive_start": 0.0,
        "archive_complete": True,
        "interrupted": False,
    }
    values.update(changes)
    return RecordingSummary(**values)  # type: ignore[arg-type]


def test_timestamps():
    assert format_timestamp(0) == "0:00.0"
    assert format_timestamp(26.14) == "0:26.1"
    assert format_timestamp(3723.55) == "1:02:03.6"


def test_missing_ranges_join_runs_and_tracks():
    gaps = [
        GapRange("audio", 10.0, 12.0),
        GapRange("video", 10.0, 12.0),
        GapRange("video", 12.02, 14.0),  # touching: one hole
        GapRange("audio", 12.0, 14.0),
        GapRange("video", 30.0, 32.0),  # video only
        GapRange("audio", 50.0, None),  # length unknown
    ]
    assert missing_ranges(gaps) == [
        MissingRange(10.0, 14.0, ("video", "audio")),
        MissingRange(30.0, 32.0, ("video",)),
        MissingRange(50.0, None, ("audio",)),
    ]


def test_table_lists_every_fact(tmp_path):
    text = format_summary(summary(tmp_path))
    rows = dict(
        (line[:15].strip(), line[15:].strip()) for line in text.splitlines() if line[:15].strip()
    )
    assert rows["Output"] == str(tmp_path / "rec.mkv")
    assert rows["Duration"] == "1:31 (91.0 s)"
    assert rows["Size"] == "7.28 MB (7276694 bytes)"
    assert rows["Track video"] == "v720 avc1.64001f: 44 segments, 0:00.0–1:31.0"
    assert rows["Track audio"] == "a128 mp4a.40.2: 44 segments, 0:00.0–1:31.0"
    assert rows["Segments"] == "88 recorded, 4 missing"
    assert rows["Missing"] == "0:24.0–0:28.0 (video, audio)"
    assert rows["Past recovery"] == "from 0:00.0: reaches the start of the broadcast"
    assert rows["Ended"] == "the server says the broadcast ended"
    assert rows["Wall time"] == "2:05"
    assert "Segments kept in" not in text  # the directory does not exist


def test_table_when_nothing_merged_and_archive_incomplete(tmp_path):
    (tmp_path / "rec.mkv.segments").mkdir()
    text = format_summary(
        summary(tmp_path, output=None, archive_start=120.0, archive_complete=False, gaps=())
    )
    assert "Output            nothing merged" in text
    assert f"Segments kept in  {tmp_path / 'rec.mkv.segments'}" in text
    assert "Missing           none" in text
    assert "from 2:00.0: the server no longer has anything earlier" in text
    text = format_summary(summary(tmp_path, archive_start=None))
    assert "not searched" in text


def split_summary(tmp_path: Path) -> RecordingSummary:
    parts = (
        PartSummary(tmp_path / "rec.001.mkv", 0.0, 40.0, 3_200_000),
        PartSummary(tmp_path / "rec.002.mkv", 40.0, 39.9876, 3_100_000),
        PartSummary(tmp_path / "rec.003.mkv", 79.9876, 11.0204, 976_694),
    )
    return summary(tmp_path, output=parts[0].path, parts=parts, gaps=())


def test_table_lists_the_parts(tmp_path):
    text = format_summary(split_summary(tmp_path))
    first, last = tmp_path / "rec.001.mkv", tmp_path / "rec.003.mkv"
    assert f"Output         {first} … {last} (3 parts)\n" in text
    assert f"Part 1         {first}: 0:00.0–0:40.0 (40.0 s), 3.20 MB\n" in text
    assert f"Part 2         {tmp_path / 'rec.002.mkv'}: 0:40.0–1:20.0 (40.0 s), 3.10 MB\n" in text
    assert f"Part 3         {last}: 1:20.0–1:31.0 (11.0 s), 976.7 kB\n" in text
    assert "Size           7.28 MB (7276694 bytes)\n" in text  # all parts together
    assert "Part" not in format_summary(summary(tmp_path))


def test_json_lists_the_parts(tmp_path):
    doc = summary_to_json(split_summary(tmp_path))
    assert doc["output"] == str(tmp_path / "rec.001.mkv")
    assert doc["parts"] == [
        {
            "path": str(tmp_path / "rec.001.mkv"),
            "start_seconds": 0.0,
            "duration_seconds": 40.0,
            "size_bytes": 3_200_000,
        },
        {
            "path": str(tmp_path / "rec.002.mkv"),
            "start_seconds": 40.0,
            "duration_seconds": 39.988,
            "size_bytes": 3_100_000,
        },
        {
            "path": str(tmp_path / "rec.003.mkv"),
            "start_seconds": 79.988,
            "duration_seconds": 11.02,
            "size_bytes": 976_694,
        },
    ]
    assert summary_to_json(summary(tmp_path))["parts"] == []


def test_json_document(tmp_path):
    doc = summary_to_json(summary(tmp_path), manifest_url="https://x.test/m.mpd", exit_code=0)
    assert doc["schema"] == SCHEMA == "instarec.summary/1"
    assert doc["output"] == str(tmp_path / "rec.mkv")
    assert doc["size_bytes"] == 7_276_694
    assert doc["duration_seconds"] == 91.008
    assert doc["segments_recorded"] == 88
    assert doc["segments_missing"] == 4
    assert doc["missing_ranges"] == [
        {"start_seconds": 24.0, "end_seconds": 28.0, "tracks": ["video", "audio"]}
    ]
    assert doc["archive"] == {
        "searched": True,
        "start_seconds": 0.0,
        "reaches_broadcast_start": True,
    }
    assert doc["tracks"][0] == {
        "kind": "video",
        "representation_id": "v720",
        "codecs": "avc1.64001f",
        "segments": 44,
        "missing": 2,
        "start_seconds": 0.0,
        "end_seconds": 91.0,
    }
    assert doc["finished_at"].endswith("Z")
    path = tmp_path / "s.json"
    write_summary_file(path, doc)
    assert json.loads(path.read_text()) == doc
    assert [p.name for p in tmp_path.iterdir()] == ["s.json"]  # no temporary left behind


async def test_summary_of_a_real_recording_with_a_hole(capsys, tmp_path, test_media: TestMedia):
    """The table and the JSON agree with the origin and with the file PyAV reads."""
    config = OriginConfig(
        shape="static", broadcast_duration=30, already_broadcast=30, gaps=frozenset({5, 6})
    )
    output = tmp_path / "rec.mp4"
    summary_file = tmp_path / "summary.json"
    async with Origin(config, ManualClock(), media=test_media) as origin:
        argv = [
            "--download-retry-delay", "0", "--summary-file", str(summary_file),
            origin.manifest_url, str(output),
        ]  # fmt: skip
        code = await asyncio.to_thread(main, argv)
        hole = (origin.segment_start(5), origin.segment_end(6))
        count = origin.segment_count
        broadcast = origin.duration
    out = capsys.readouterr().out
    assert code == 0
    doc = json.loads(summary_file.read_text())
    assert doc["output"] == str(output)
    assert doc["size_bytes"] == output.stat().st_size
    assert doc["segments_recorded"] == 2 * (count - 2)
    assert doc["segments_missing"] == 4
    assert doc["exit_code"] == 0
    assert doc["manifest_url"] == origin.manifest_url
    [missing] = doc["missing_ranges"]
    assert missing["start_seconds"] == pytest.approx(hole[0], abs=0.05)
    assert missing["end_seconds"] == pytest.approx(hole[1], abs=0.05)
    assert sorted(missing["tracks"]) == ["audio", "video"]
    report = inspect(output)
    assert doc["duration_seconds"] == pytest.approx(report.video_duration, abs=0.1)
    assert doc["duration_seconds"] == pytest.approx(broadcast, abs=0.1)
    assert f"Missing        {format_timestamp(hole[0])}–" in out
    assert "Size           " in out and str(doc["size_bytes"]) in out


def _stored(track: str, key: int, start: float, duration: float) -> StoredSegment:
    return StoredSegment(track, key, start, duration, 1, None, None, Path("unused"))


def test_jumps_shorter_than_half_a_segment_are_no_hole() -> None:
    # nginx-rtmp's fragments end a frame short of the next one's start: no segment is lost.
    stored = [_stored("video", k, k * 2.0 + 0.021, 1.967) for k in range(6)]
    assert _timeline_gaps("video", stored, []) == []


def test_missing_counts_lost_segments_not_wrong_guesses() -> None:
    stored = [_stored("video", k * 2000, k * 2.0, 2.0) for k in (0, 1, 2, 5, 6)]
    missing = [
        MissingSegment("video", 1999, 1.999, 2.0),  # a wrong name of the segment at 2000
        MissingSegment("video", 6000, 6.0, 2.0),  # one of the two lost in the hole
        MissingSegment("video", 20000, 20.0, 2.0),  # lost after the last recorded one
    ]
    lost = _lost_segments(stored, missing)
    assert [m.key for m in lost] == [6000, 20000]
    gaps = _timeline_gaps("video", stored, [m.key for m in lost])
    assert gaps == [GapRange("video", 6.0, 10.0), GapRange("video", 14.0, None)]
    # The hole holds two segments of the usual length, though only one was recorded missing.
    assert _missing_count(stored, lost, gaps) == 3


def test_a_wrong_guess_beyond_the_last_segment_opens_no_hole() -> None:
    stored = [_stored("audio", k * 2000, k * 2.0, 2.0) for k in range(3)]
    missing = [MissingSegment("audio", 4001, 4.001, 2.0)]
    lost = _lost_segments(stored, missing)
    assert lost == []
    assert _timeline_gaps("audio", stored, [m.key for m in lost]) == []
    assert _missing_count(stored, lost, []) == 0
