"""``instarec --demo OUTPUT``: the README's first command, run as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from instarec.demo import DEFAULT_BROADCAST
from tests.recording import inspect

REPO = Path(__file__).resolve().parents[1]


def test_demo_records_the_whole_simulated_broadcast(tmp_path, media_cache_dir):
    output = tmp_path / "demo.mp4"
    summary_file = tmp_path / "demo.json"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "instarec",
            "--demo",
            str(output),
            "--summary-file",
            str(summary_file),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=REPO,
        env={"INSTAREC_MEDIA_CACHE": str(media_cache_dir), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    # It says where the file is.
    assert f"The demo recording is {output}" in result.stdout
    report = inspect(output)
    # The whole broadcast, including the part broadcast before the recorder arrived.
    assert report.video_duration == pytest.approx(DEFAULT_BROADCAST.broadcast_duration, abs=2.1)
    assert report.video_gaps == ()
    assert abs(report.audio_duration - report.video_duration) < 0.1
    doc = json.loads(summary_file.read_text())
    assert doc["archive"]["reaches_broadcast_start"] is True
    assert doc["archive"]["start_seconds"] == 0.0
    assert doc["missing_ranges"] == []
    assert doc["output"] == str(output)
    assert not Path(str(output) + ".segments").exists()
