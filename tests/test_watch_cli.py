"""The command line of watching while recording: OUTPUT ``-`` and ``--live-merge``."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

from instarec.cli import parse_args
from instarec.watch import rerun_output, stream_name
from tests.test_cli import URL, assert_one_error_line, run


def test_stdout_output_keeps_its_segments_named_after_the_stream(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    options = parse_args([URL, "-"]).options
    assert options.to_stdout
    assert not options.live_merge
    # A rerun with this file OUTPUT merges (or resumes) the same recording.
    assert options.output_path == Path("live-manifest.mkv")
    assert options.segments_dir == Path("live-manifest.mkv.segments")


@pytest.mark.parametrize(
    ("url", "name"),
    [
        (
            "https://scontent.cdninstagram.com/v/t72/1559611517457871_0.mpd?oh=a&oe=b",
            "1559611517457871_0",
        ),
        ("https://cdn.example.test/live/", "live"),
        ("https://cdn.example.test/live/1234/manifest.mpd?t=1", "1234-manifest"),
        ("https://cdn.example.test/manifest.mpd", "manifest"),
        ("https://cdn.example.test/", "stream"),
        ("https://cdn.example.test/a%20b/../we%27ird name!.mpd", "we_ird_name"),
    ],
)
def test_stream_names(url: str, name: str) -> None:
    assert stream_name(url) == name
    assert rerun_output(url) == Path(name + ".mkv")


def test_live_merge_reaches_options(tmp_path: Path) -> None:
    options = parse_args([URL, str(tmp_path / "a.mp4"), "--live-merge"]).options
    assert options.live_merge
    assert not options.to_stdout
    assert options.output_path == tmp_path / "a.mp4"


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        ([URL, "-", "--split", "30m"], "--split and --split-size need a file"),
        ([URL, "-", "--split-size", "2GB"], "--split and --split-size need a file"),
        ([URL, "-", "--live-merge"], "--live-merge needs a file"),
        ([URL, "{out}", "--live-merge", "--split", "30m"], "cannot be cut into parts"),
        (["--demo", "-"], "give it an OUTPUT file"),
    ],
)
def test_invalid_watch_command_lines_exit_2_with_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, argv: list[str], fragment: str
) -> None:
    argv = [a.format(out=tmp_path / "out.mkv") for a in argv]
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert out == ""
    assert_one_error_line(err, fragment)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_as_stdout_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stdout", terminal)
    code, _, err = run(capsys, URL, "-")
    assert code == 2
    assert terminal.getvalue() == ""
    assert_one_error_line(err, "pipe it into a player")
    assert not any(tmp_path.iterdir())  # nothing recorded
