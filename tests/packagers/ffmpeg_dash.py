"""ffmpeg's own DASH muxer, packaging the clip as it plays (``-re``).

Four cases: segments named by ``$Number$`` or by ``$Time$``, and a clean end (the MPD turns
static) or a producer killed by SIGKILL mid-segment (the MPD stays dynamic and simply stops
changing, its last segment file cut short and never listed).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from tests.packagers.harness import CaseSetup, PackagerCase, SourceClip, find_ffmpeg
from tests.packagers.output import SegmentNaming
from tests.packagers.programs import Command

# Seconds after the start: an odd second is mid-segment with 2 s segments.
KILL_AFTER = 41.0

NAMING = SegmentNaming(
    pattern=re.compile(r"chunk-(?P<track>[01])-(?P<key>-?\d+)\.m4s"),
    kinds={"0": "video", "1": "audio"},
    inits={"video": "init-0.m4s", "audio": "init-1.m4s"},
    # A segment grows as NAME.tmp and is renamed when whole: a SIGKILL leaves the .tmp behind.
    written_in_place=False,
)

MEDIA_NAMES = {
    "number": "chunk-$RepresentationID$-$Number%05d$.m4s",
    "time": "chunk-$RepresentationID$-$Time$.m4s",
}


def _missing() -> str | None:
    return None if find_ffmpeg() else "ffmpeg is not installed (apt-get install ffmpeg)"


def _setup(naming: str, killed: bool) -> Callable[[Path, SourceClip], CaseSetup]:
    def setup(work: Path, clip: SourceClip) -> CaseSetup:
        served = work / "served"
        ffmpeg = find_ffmpeg()
        assert ffmpeg is not None
        argv = (
            ffmpeg,
            "-hide_banner",
            "-loglevel",
            "warning",
            "-re",
            "-i",
            str(clip.path),
            "-map",
            "0:v",
            "-map",
            "0:a",
            "-c",
            "copy",
            "-f",
            "dash",
            "-seg_duration",
            "2",
            # A 5-segment window, but the files stay on disk: the past is there to recover.
            "-window_size",
            "5",
            "-extra_window_size",
            "1000",
            "-remove_at_exit",
            "0",
            # Low-latency habit: segments are written (and served) while they grow.
            "-streaming",
            "1",
            "-adaptation_sets",
            "id=0,streams=v id=1,streams=a",
            "-init_seg_name",
            "init-$RepresentationID$.m4s",
            "-media_seg_name",
            MEDIA_NAMES[naming],
            str(served / "live.mpd"),
        )
        return CaseSetup(
            served=served,
            manifest="/live.mpd",
            naming=NAMING,
            producer=Command("ffmpeg-dash", argv),
            kill_producer_after=KILL_AFTER if killed else None,
        )

    return setup


CASES = [
    PackagerCase(
        name=f"ffmpeg-{naming}-{'killed' if killed else 'clean'}",
        software="ffmpeg dash muxer",
        missing=_missing,
        setup=_setup(naming, killed),
        past_kept=True,
        # $Time$ from 0: the chain reads every next time from the media itself.
        no_probe=naming == "time",
    )
    for naming in ("number", "time")
    for killed in (False, True)
]
