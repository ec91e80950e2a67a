"""nginx with the RTMP module, fed FLV over RTMP by ``ffmpeg -re``, writing DASH to a directory.

nginx serves no HTTP here: the test server serves ``dash_path``. Two cases: the past kept on
disk (``dash_cleanup off``), and deleted as it leaves the window (``dash_cleanup on``), where a
correct recording starts at the oldest fragment still on disk when it joined.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable
from functools import partial
from pathlib import Path

from tests.packagers.harness import CaseSetup, PackagerCase, SourceClip, find_ffmpeg
from tests.packagers.output import SegmentNaming
from tests.packagers.programs import Command, free_port, wait_for_tcp

STREAM = "cam"

# With cleanup on, nginx's cache manager runs every 2 x dash_playlist_length (20 s) from its
# start and deletes fragments older than that: the first deletion is ~40 s in, so that case
# joins after it (and well before the next one, at ~60 s).
CLEANUP_JOIN_AFTER = 44.0

NAMING = SegmentNaming(
    pattern=re.compile(rf"{STREAM}-(?P<key>\d+)\.(?P<track>m4v|m4a)"),
    kinds={"m4v": "video", "m4a": "audio"},
    inits={"video": f"{STREAM}-init.m4v", "audio": f"{STREAM}-init.m4a"},
    # Fragments grow in STREAM-raw.* and get their name once closed.
    written_in_place=False,
)

_MODULE = "ngx_rtmp_module.so"


def find_nginx() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(p).exists()), None
    )


def find_rtmp_module(nginx: str) -> Path | None:
    """The module file, from nginx's own --modules-path first."""
    candidates = []
    try:
        configured = subprocess.run(
            [nginx, "-V"], capture_output=True, text=True, timeout=10, check=False
        ).stderr
    except (OSError, subprocess.TimeoutExpired):
        configured = ""
    match = re.search(r"--modules-path=(\S+)", configured)
    if match:
        candidates.append(Path(match[1]))
    candidates += [Path("/usr/lib/nginx/modules"), Path("/usr/lib64/nginx/modules")]
    return next((d / _MODULE for d in candidates if (d / _MODULE).exists()), None)


def _missing() -> str | None:
    if find_ffmpeg() is None:
        return "ffmpeg is not installed (apt-get install ffmpeg)"
    nginx = find_nginx()
    if nginx is None or find_rtmp_module(nginx) is None:
        return (
            "nginx with the RTMP module is not installed (apt-get install nginx libnginx-mod-rtmp)"
        )
    return None


def _config(module: Path, prefix: Path, served: Path, port: int, cleanup: bool) -> str:
    # dash_cleanup is done by nginx's cache manager process, which only a master process
    # starts: with master_process off, no fragment is ever deleted.
    # As root, workers would run as nobody, who cannot enter a private temporary directory.
    user = "user root;\n" if os.geteuid() == 0 else ""
    return f"""\
load_module {module};
{user}daemon off;
master_process on;
worker_processes 1;
pid {prefix / "nginx.pid"};
error_log {prefix / "error.log"} info;
events {{
    worker_connections 64;
}}
rtmp {{
    server {{
        listen 127.0.0.1:{port};
        application live {{
            live on;
            dash on;
            dash_path {served};
            dash_fragment 2s;
            dash_playlist_length 10s;
            dash_cleanup {"on" if cleanup else "off"};
        }}
    }}
}}
"""


def _setup(cleanup: bool) -> Callable[[Path, SourceClip], CaseSetup]:
    def setup(work: Path, clip: SourceClip) -> CaseSetup:
        nginx = find_nginx()
        ffmpeg = find_ffmpeg()
        assert nginx is not None and ffmpeg is not None
        module = find_rtmp_module(nginx)
        assert module is not None
        prefix = work / "nginx"
        prefix.mkdir(parents=True, exist_ok=True)
        served = work / "served"
        port = free_port()
        conf = prefix / "nginx.conf"
        conf.write_text(_config(module, prefix, served, port, cleanup))
        server = Command(
            "nginx",
            (nginx, "-c", str(conf), "-p", str(prefix), "-e", str(prefix / "error.log")),
            ready=partial(wait_for_tcp, port),
        )
        push = Command(
            "ffmpeg-rtmp",
            (
                ffmpeg,
                "-hide_banner",
                "-loglevel",
                "warning",
                "-re",
                "-i",
                str(clip.path),
                "-c",
                "copy",
                "-f",
                "flv",
                f"rtmp://127.0.0.1:{port}/live/{STREAM}",
            ),
        )
        return CaseSetup(
            served=served,
            manifest=f"/{STREAM}.mpd",
            naming=NAMING,
            producer=push,
            packager=server,
            join_after=CLEANUP_JOIN_AFTER if cleanup else None,
        )

    return setup


CASES = [
    PackagerCase(
        name=f"nginx-rtmp-{'cleanup' if cleanup else 'kept'}",
        software="nginx-rtmp",
        missing=_missing,
        setup=_setup(cleanup),
        past_kept=not cleanup,
        # Shared $Time$ names from 0: the chain can read each next time from the media.
        no_probe=not cleanup,
    )
    for cleanup in (False, True)
]
