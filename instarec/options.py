"""Every setting of a recording, with its default, in one frozen object (``Options``), and
what one run of the command does besides (``Invocation``: mode, logging, ``--now``).

``cli.py`` builds an :class:`Invocation` holding the :class:`Options` from the
command line (and validates it); everything downstream (recorder, past recovery,
live poller, merge, demo) reads the options and never mutates them: a changed
setting is a new object via ``dataclasses.replace``. ``DEFAULTS`` is the one place
a default is written: the parser and the value objects built from options read it.

Network settings are kept as plain values here; :meth:`Options.http_config`
turns them into the HTTP module's own value objects.  Importing ``instarec.http``
lazily keeps this module free of the network stack (and of an import cycle).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal

from instarec.parts import SplitLimits

if TYPE_CHECKING:
    from instarec.http import HttpConfig

# Output containers ffmpeg writes with ``-c copy`` from fragmented MP4 (H.264/H.265/AAC)
# input.  WebM is left out on purpose: it only accepts VP8/VP9/AV1 + Vorbis/Opus, which a
# stream-copy of an H.264/AAC broadcast cannot satisfy.
OUTPUT_EXTENSIONS: tuple[str, ...] = (".mkv", ".mp4", ".m4v", ".m4a", ".mov", ".ts")
DEFAULT_EXTENSION = ".mkv"

SEGMENTS_DIR_SUFFIX = ".segments"


@dataclass(frozen=True, slots=True)
class Options:
    """The settings of one recording (or of one -F / -J inspection, or of the demo).

    ``mpd_url`` is the URL the manifest is fetched from, or, when the manifest was
    given as a local file (``manifest_file`` set), the URL its relative references
    resolve against: ``--base-url`` if given, else the file's ``file://`` URI.  For
    ``--demo`` it is empty: the demo fills it in with its simulated origin's URL.
    """

    mpd_url: str
    output_path: Path | None = None
    manifest_file: Path | None = None

    # stream selection
    video_quality: tuple[str, ...] = ()  # representation ids, preference order
    audio_quality: tuple[str, ...] = ()  # "all" among them: every audio AdaptationSet
    # Further audio representations to record beside the first (the picker's extra ticks).
    more_audio: tuple[str, ...] = ()
    subtitles: bool = False  # record the text tracks (WebVTT / TTML in MP4) as subtitles

    # live following
    # Seconds between manifest refreshes; None (no --poll-interval): the manifest's
    # minimumUpdatePeriod, else live.FALLBACK_POLL_INTERVAL.
    poll_interval: float | None = None
    # Seconds without a new live segment (and without an explicit end signal) before the
    # broadcast is taken as over.  The original tool's default: Instagram pauses of a
    # minute or two (bad uplink, phone call) must not end a recording.
    live_end_timeout: float = 180.0
    # --stop-after: seconds on the recording's clock after which the live edge is no longer
    # followed (past recovery still finishes); None: until the broadcast ends.
    stop_after: float | None = None

    # archive search
    no_past: bool = False
    max_search_requests: int = 50  # concurrent probes while searching past segments
    end_stream_miss_threshold: int = 30000  # consecutive misses before the past search gives up
    search_chunk_size: int = 500  # probes per batch
    past_segment_delay: float = 0.0  # minimum seconds between the starts of past downloads

    # network
    download_retries: int = 5
    download_retry_delay: float = 1.0  # first backoff delay; doubles each retry (with jitter)
    check_url_retries: int = 3  # retries of a probe (HEAD) on transient errors
    proxy: str | None = None
    base_url: str | None = None  # as given by --base-url (already folded into mpd_url)
    headers: tuple[tuple[str, str], ...] = ()
    user_agent: str | None = None
    cookies: Path | None = None  # Netscape cookies.txt
    concurrency: int = 8  # parallel segment downloads
    # Run (through the shell) when the signed URLs expire mid-recording: its first line of
    # output is a fresh MPD URL. None: an expired URL ends the recording (resumable).
    refresh_url_command: str | None = None
    refresh_url_retries: int = 3  # retries of a failing command, after pauses doubling from:
    refresh_retry_delay: float = 2.0
    refresh_timeout: float = 60.0  # seconds the command may run

    # output
    keep_segments: bool = False
    overwrite: bool = False
    ffmpeg_path: str = "ffmpeg"
    ffprobe_path: str = "ffprobe"
    summary_file: Path | None = None
    # OUTPUT "-": an MPEG-TS stream of the recording on stdout as it is recorded; output_path is
    # then the file a rerun merges the kept segments into (its segments directory is used).
    to_stdout: bool = False
    # --live-merge: output_path grows during the recording (ffmpeg fed as segments arrive).
    live_merge: bool = False
    # --split / --split-size: at most this many seconds of media / bytes of segment files per
    # part (NAME.001.EXT, ...); both None: one file at output_path.
    split_duration: float | None = None
    split_size: int | None = None

    @property
    def segments_dir(self) -> Path | None:
        """Where downloaded segments and the resume journal live: ``OUTPUT.segments``.

        The full output name is kept (``a.mkv.segments``) so recordings of the same
        stream into ``a.mkv`` and ``a.mp4`` do not share a directory.
        """
        if self.output_path is None:
            return None
        return self.output_path.with_name(self.output_path.name + SEGMENTS_DIR_SUFFIX)

    @property
    def split(self) -> SplitLimits:
        """How the output is cut into parts (``split.splits`` is False: it is not)."""
        return SplitLimits(self.split_duration, self.split_size)

    def http_config(self) -> HttpConfig:
        """The HTTP client's configuration for these options."""
        from instarec.http import HttpConfig, RetryPolicy

        retry = RetryPolicy(retries=self.download_retries, base_delay=self.download_retry_delay)
        # Leave room for every download worker, every archive probe and the manifest
        # poller at once, so the connection pool never becomes the hidden bottleneck.
        max_connections = max(100, self.concurrency + self.max_search_requests + 4)
        return HttpConfig(
            headers=self.headers,
            user_agent=self.user_agent,
            proxy=self.proxy,
            cookies_file=self.cookies,
            retry=retry,
            concurrency=self.concurrency,
            probe_retries=self.check_url_retries,
            max_connections=max_connections,
        )


Mode = Literal["record", "list", "json", "demo"]


@dataclass(frozen=True, slots=True)
class Invocation:
    """One run of the command: what it does and how it logs; the recording's settings apart."""

    options: Options
    mode: Mode = "record"  # "list": -F, "json": -J, "demo": --demo
    interactive: bool = False  # -i: ask for the qualities before recording
    now: datetime | None = None  # evaluation instant for -F/-J (tz-aware UTC); None = clock
    verbose: bool = False
    quiet: bool = False
    log_file: Path | None = None


# The defaults, read by the parser and by the value objects built from Options (RetryPolicy,
# HttpConfig, SearchLimits), so each is written once, above.
DEFAULTS: Final = Options(mpd_url="")
