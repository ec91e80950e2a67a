"""``instarec --demo OUTPUT``: record the built-in simulated livestream, end to end.

The demo proves an installation works without a real broadcast: it starts the project's
simulated origin (``instarec.testing.origin``) in this process, an Instagram-shaped broadcast
that began a while before the recorder arrives and runs on a fast virtual clock, then records
it with the normal code path (``instarec.recorder.record``): past recovery of what was
already broadcast, live following to the end signal, the ffmpeg merge, the summary.

The origin's media is made by ffmpeg once (found on PATH, or the binary of the ``ffmpeg``
extra, imageio-ffmpeg) and cached in the user cache directory.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from instarec.errors import InstarecError, UsageError
from instarec.finish import RecordingSummary
from instarec.live import FALLBACK_POLL_INTERVAL
from instarec.options import Options
from instarec.progress import Reporter
from instarec.recorder import record

if TYPE_CHECKING:
    from instarec.testing.media import TestMedia

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DemoBroadcast:
    """The simulated broadcast the demo records."""

    broadcast_duration: float = 90.0  # virtual seconds the whole broadcast lasts
    already_broadcast: float = 60.0  # virtual seconds broadcast before the recorder starts
    speed: float = 15.0  # virtual seconds per real second
    window: int = 5  # segments listed in each manifest, as Instagram does


DEFAULT_BROADCAST = DemoBroadcast()


def demo_options(options: Options, manifest_url: str, broadcast: DemoBroadcast) -> Options:
    """The user's options pointed at the simulated origin, with timings scaled to its speed.

    A real broadcast is polled every 2 s and given minutes of silence before it is taken as
    over; at ``speed``× the same rules would make the demo wait for nothing.
    """
    poll = options.poll_interval or FALLBACK_POLL_INTERVAL / broadcast.speed
    return replace(
        options,
        mpd_url=manifest_url,
        poll_interval=poll,
        live_end_timeout=min(options.live_end_timeout, 10.0),
        past_segment_delay=0.0,
        download_retry_delay=min(options.download_retry_delay, 0.1),
    )


def _demo_media() -> TestMedia:
    """The simulated stream's media (made by ffmpeg on the first run, then read from a cache)."""
    from instarec.testing.media import MediaSpec, generate_media

    try:
        return generate_media(MediaSpec())
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        # The generator checks the frames ffmpeg made against its plan; an ffmpeg build that
        # places them differently fails that check. Say so in one line, with a way out.
        raise InstarecError(
            f"the demo could not make its simulated stream with this ffmpeg ({exc}): install "
            "your system's ffmpeg (e.g. apt-get install ffmpeg) or point INSTAREC_FFMPEG at one"
        ) from exc


async def run_demo(
    options: Options,
    *,
    reporter: Reporter | None = None,
    install_signal_handlers: bool = True,
    broadcast: DemoBroadcast = DEFAULT_BROADCAST,
) -> RecordingSummary:
    """Serve the simulated broadcast on 127.0.0.1 and record it into ``options.output_path``."""
    if options.output_path is None:
        raise UsageError("--demo needs OUTPUT, e.g. instarec --demo demo.mp4")
    # Imported here: the testing package (and its media generator) is only needed by the demo.
    from instarec.testing.clock import SpeedClock
    from instarec.testing.origin import Origin, OriginConfig

    config = OriginConfig(
        shape="instagram",
        broadcast_duration=broadcast.broadcast_duration,
        already_broadcast=broadcast.already_broadcast,
        window=broadcast.window,
        speed=broadcast.speed,
    )
    log.info(
        "demo: a simulated %g s Instagram-style broadcast, %g s already broadcast, at %g× speed",
        broadcast.broadcast_duration,
        broadcast.already_broadcast,
        broadcast.speed,
    )
    media = await asyncio.to_thread(_demo_media)
    # The clock is anchored when the origin starts serving, so making the media first (one
    # ffmpeg run, then cached) does not eat into the broadcast.
    clock = SpeedClock(broadcast.speed)
    async with Origin(config, clock, media=media) as origin:
        return await record(
            demo_options(options, origin.manifest_url, broadcast),
            reporter=reporter,
            install_signal_handlers=install_signal_handlers,
        )
