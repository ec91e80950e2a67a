"""The command line: arguments to an :class:`Invocation`, then dispatch, then an exit code.

``main()`` is the only place that decides the process exit status, and it never
raises: every :class:`InstarecError` becomes one line on stderr and its exit code,
argparse mistakes exit 2 with one line, Ctrl+C exits 130, and anything unexpected
exits 1 with one line (the traceback only with ``-v``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import sys
import tempfile
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, TextIO
from urllib.parse import urlsplit

from instarec import __version__
from instarec.clock import SYSTEM_CLOCK
from instarec.errors import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    SERVER_UNREACHABLE,
    DiskFullError,
    InstarecError,
    ManifestError,
    ManifestUnavailableError,
    NetworkError,
    StorageError,
    UrlExpiredError,
    UsageError,
)
from instarec.merge import check_output_free
from instarec.options import (
    DEFAULT_EXTENSION,
    DEFAULTS,
    OUTPUT_EXTENSIONS,
    SEGMENTS_DIR_SUFFIX,
    Invocation,
    Mode,
    Options,
)
from instarec.progress import StatusAwareHandler, StatusLine
from instarec.store import holds_partial_output
from instarec.units import parse_duration, parse_size

if TYPE_CHECKING:
    from instarec.finish import RecordingSummary
    from instarec.manifest import Manifest

log = logging.getLogger(__name__)

EXIT_UNEXPECTED = 1
EXIT_NOTHING_RECORDED = 1

_USAGE = (
    "%(prog)s [options] MPD_URL OUTPUT\n"
    "       %(prog)s -F|-J [options] MPD_URL\n"
    "       %(prog)s --demo OUTPUT"
)

_DESCRIPTION = """\
Record an MPEG-DASH livestream from its very beginning: every past segment the
server still has, then the live edge until the broadcast ends, merged into
OUTPUT with ffmpeg (stream copy, no re-encoding). Rerun the same command to
resume an interrupted recording."""

_EPILOG = """\
exit codes:
  0    done
  1    unexpected error, or nothing could be recorded
  2    invalid command line or options
  3    the manifest is not a usable MPD
  4    network error, the manifest answered 401/403/404/410, the signed URLs
       expired mid-recording, or the server answered nothing for the live end
       timeout (what was recorded is merged; rerun to resume)
  5    unsupported stream (DRM, no video and no audio, media not fragmented MP4)
  6    ffmpeg failed to merge the segments
  7    ffmpeg not found
  8    storage error (output not writable, disk full)
  130  interrupted (Ctrl+C)
"""

# RFC 9110 token: what a header name may contain.
_HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


class _ArgumentParser(argparse.ArgumentParser):
    """An ArgumentParser that raises instead of printing usage and exiting.

    ``main`` turns the error into the one-line message every other failure gets.
    """

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Shows ``(default: X)`` only where a default means something."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32)

    def _get_help_string(self, action: argparse.Action) -> str | None:
        help_text = action.help or ""
        default = action.default
        if (
            "default:" not in help_text
            and "%(default)" not in help_text
            and action.option_strings
            and default not in (None, False, argparse.SUPPRESS, (), [])
        ):
            help_text += " (default: %(default)s)"
        return help_text


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, got {value}")
    return value


def _positive_int(text: str) -> int:
    value = _non_negative_int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value >= 0 or value == float("inf"):  # also rejects nan
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = _non_negative_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {text}")
    return value


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    name = name.strip()
    if not sep or not _HEADER_NAME.match(name):
        raise argparse.ArgumentTypeError(f"expected 'Name: value', got {text!r}")
    if "\r" in value or "\n" in value:
        raise argparse.ArgumentTypeError(f"header value must be one line: {text!r}")
    return name, value.strip()


def _instant(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an ISO 8601 date and time such as 2024-05-01T12:00:00Z, got {text!r}"
        ) from None
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} has no time zone: add Z (UTC) or an offset such as +02:00"
        )
    return value.astimezone(UTC)


def build_parser() -> argparse.ArgumentParser:
    parser = _ArgumentParser(
        prog="instarec",
        usage=_USAGE,
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=_HelpFormatter,
    )
    parser.add_argument(
        "mpd_url",
        nargs="?",
        metavar="MPD_URL",
        help="the stream's .mpd manifest URL (or a local .mpd file, see --base-url)",
    )
    parser.add_argument(
        "output",
        nargs="?",
        metavar="OUTPUT",
        help=f"the file to write; its extension picks the container: "
        f"{' '.join(OUTPUT_EXTENSIONS)} (none: {DEFAULT_EXTENSION} is added); - streams "
        f"MPEG-TS to stdout while recording (instarec URL - | mpv -)",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--demo",
        action="store_true",
        help="record the built-in simulated livestream into OUTPUT (takes no MPD_URL): "
        "checks that an installation works",
    )

    net = parser.add_argument_group("network")
    net.add_argument("--proxy", metavar="URL", help="http://, https:// or socks5:// proxy")
    net.add_argument(
        "-H",
        "--header",
        dest="headers",
        action="append",
        type=_header,
        default=[],
        metavar="'NAME: VALUE'",
        help="extra HTTP header sent with every request (repeatable)",
    )
    net.add_argument("--user-agent", metavar="UA", help="User-Agent header")
    net.add_argument("--cookies", metavar="FILE", type=Path, help="Netscape cookies.txt file")
    net.add_argument(
        "--base-url",
        metavar="URL",
        help="when MPD_URL is a local file: the URL it was downloaded from, against which "
        "its relative segment addresses resolve (default for -F/-J: the file itself)",
    )
    net.add_argument(
        "--concurrency",
        type=_positive_int,
        default=DEFAULTS.concurrency,
        metavar="N",
        help="parallel segment downloads",
    )
    net.add_argument(
        "--download-retries",
        type=_non_negative_int,
        default=DEFAULTS.download_retries,
        metavar="N",
        help="retries of a failed segment download",
    )
    net.add_argument(
        "--download-retry-delay",
        type=_non_negative_float,
        default=DEFAULTS.download_retry_delay,
        metavar="SECONDS",
        help="first delay between download retries; doubles at each retry",
    )
    net.add_argument(
        "--check-url-retries",
        type=_non_negative_int,
        default=DEFAULTS.check_url_retries,
        metavar="N",
        help="retries of a failed URL check (HEAD request) on transient errors",
    )
    net.add_argument(
        "--refresh-url-command",
        metavar="CMD",
        help="when the signed URLs expire mid-recording (HTTP 401/403/410), run CMD through the "
        "shell and go on with the fresh MPD URL it prints on its first line (default: the "
        "recording stops, merged and resumable)",
    )
    net.add_argument(
        "--refresh-url-retries",
        type=_non_negative_int,
        default=DEFAULTS.refresh_url_retries,
        metavar="N",
        help="retries of a failing --refresh-url-command (pauses of 2 s, doubling)",
    )

    sel = parser.add_argument_group("stream selection")
    sel.add_argument(
        "-i",
        "--interactive",
        action="store_true",
        help="choose the video quality and one or several audio tracks from a list "
        "(overrides --*-quality)",
    )
    sel.add_argument(
        "--video-quality",
        nargs="+",
        default=[],
        metavar="ID",
        help="video representation ids in order of preference (default: highest bandwidth)",
    )
    sel.add_argument(
        "--audio-quality",
        nargs="+",
        default=[],
        metavar="ID",
        help="audio representation ids in order of preference (default: highest bandwidth); "
        "`all`: every audio track (each language or role, its best representation unless "
        "one of the ids names another), tagged with its language",
    )
    sel.add_argument(
        "--subtitles",
        action="store_true",
        help="also record the text tracks (WebVTT or TTML in MP4 segments) as subtitle streams "
        "tagged with their language (.mkv: WebVTT, .mp4: timed text)",
    )
    inspect_group = sel.add_mutually_exclusive_group()
    inspect_group.add_argument(
        "-F",
        "--list-formats",
        action="store_true",
        help="list the stream's representations, best first, and exit",
    )
    inspect_group.add_argument(
        "-J",
        "--dump-json",
        action="store_true",
        help="print the parsed manifest and its segments as JSON and exit",
    )
    sel.add_argument(
        "--now",
        type=_instant,
        metavar="ISO8601",
        help="with -F/-J: the instant at which a live manifest is evaluated, "
        "e.g. 2024-05-01T12:00:00Z (default: the current time)",
    )

    live = parser.add_argument_group("live following")
    live.add_argument(
        "--poll-interval",
        type=_positive_float,
        default=None,
        metavar="SECONDS",
        help="seconds between manifest refreshes (default: the manifest's "
        "minimumUpdatePeriod if it has one, else 2.0)",
    )
    live.add_argument(
        "--live-end-timeout",
        type=_positive_float,
        default=DEFAULTS.live_end_timeout,
        metavar="SECONDS",
        help="seconds without a new live segment before the broadcast is taken as ended",
    )
    live.add_argument(
        "--stop-after",
        type=_duration,
        metavar="DURATION",
        help="stop following the live edge after DURATION of wall time since the start (90, "
        "90s, 2m, 1h30m, 1:30 for minutes:seconds, 01:30:00), then merge and exit 0; the past "
        "is still recovered in full",
    )

    search = parser.add_argument_group("archive search")
    search.add_argument(
        "--no-past",
        action="store_true",
        help="do not recover past segments: start at the live edge",
    )
    search.add_argument(
        "--max-search-requests",
        type=_positive_int,
        default=DEFAULTS.max_search_requests,
        metavar="N",
        help="concurrent requests while searching for past segments",
    )
    search.add_argument(
        "--search-chunk-size",
        type=_positive_int,
        default=DEFAULTS.search_chunk_size,
        metavar="N",
        help="segment addresses checked per batch while searching",
    )
    search.add_argument(
        "--end-stream-miss-threshold",
        type=_positive_int,
        default=DEFAULTS.end_stream_miss_threshold,
        metavar="MS",
        help="milliseconds of media (whatever the timescale) the past search looks across "
        "without a hit before it stops",
    )
    search.add_argument(
        "--past-segment-delay",
        type=_non_negative_float,
        default=DEFAULTS.past_segment_delay,
        metavar="SECONDS",
        help="minimum time between the starts of two past segment downloads on one download "
        "slot (the original's default was 0.1; the pace adapts to the server's 429/503 anyway)",
    )

    out = parser.add_argument_group("output")
    out.add_argument(
        "--overwrite",
        action="store_true",
        help="replace OUTPUT (with --split/--split-size: its parts) if it exists, and discard "
        "segments kept from a different recording",
    )
    out.add_argument(
        "--split",
        dest="split_duration",
        type=_duration,
        metavar="DURATION",
        help="write OUTPUT (NAME.EXT) as parts NAME.001.EXT, NAME.002.EXT, ..., each of at most "
        "DURATION of media (as --stop-after), cut where a video segment starts; each part "
        "plays on its own, its timestamps starting at 0",
    )
    out.add_argument(
        "--split-size",
        type=_size,
        metavar="SIZE",
        help="write parts as --split does, each of at most SIZE of segment data (the file comes "
        "out about that size): kB, MB, GB (or k, M, G) count in powers of 1000, KiB, MiB, GiB "
        "in powers of 1024, e.g. 2GB, 700M, 500MiB; with --split too, a part ends at "
        "whichever limit comes first",
    )
    out.add_argument(
        "--live-merge",
        action="store_true",
        help="write OUTPUT while recording: it grows as segments arrive (fragmented MP4 or "
        "Matroska) and plays at any moment from the broadcast's first frame; finished "
        "(duration, index) at the end",
    )
    out.add_argument(
        "--keep-segments",
        action="store_true",
        help="keep the OUTPUT.segments directory after a successful merge",
    )
    out.add_argument(
        "--ffmpeg-path", default=DEFAULTS.ffmpeg_path, metavar="PATH", help="ffmpeg executable"
    )
    out.add_argument(
        "--ffprobe-path",
        default=DEFAULTS.ffprobe_path,
        metavar="PATH",
        help="accepted for compatibility with instarec 1.8 and unused: segment timing is read "
        "from the media's own boxes, never with ffprobe",
    )
    out.add_argument(
        "--summary-file",
        type=Path,
        metavar="PATH",
        help="also write the final summary to PATH as JSON",
    )

    logging_group = parser.add_argument_group("logging")
    verbosity = logging_group.add_mutually_exclusive_group()
    verbosity.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="debug logs, with the task each comes from; tracebacks on errors",
    )
    verbosity.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    logging_group.add_argument(
        "--log-file",
        type=Path,
        metavar="PATH",
        help="write full debug logs to PATH (whatever -q/-v say)",
    )
    return parser


# --- validation --------------------------------------------------------------------------


def _is_http_url(text: str) -> bool:
    parts = urlsplit(text)
    return parts.scheme.lower() in ("http", "https") and bool(parts.netloc)


def _check_parent_dir(path: Path, what: str) -> None:
    parent = path.parent
    if parent.exists() and not parent.is_dir():
        raise StorageError(
            f"cannot write {what} {str(path)!r}: {str(parent)!r} is a file, not a directory"
        )
    if not parent.is_dir():
        raise UsageError(f"{what} {str(path)!r}: directory {str(parent)!r} does not exist")


def _check_writable_dir(directory: Path) -> None:
    """Create and delete a file there: unlike os.access, right for root and read-only mounts too."""
    try:
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".instarec-write-test-"):
            pass
    except OSError as exc:
        raise StorageError(
            f"cannot write to directory {str(directory)!r} ({exc.strerror or exc}): "
            "choose an OUTPUT in a directory you can write to"
        ) from exc


def _output_path(text: str, overwrite: bool, split: bool) -> Path:
    path = Path(os.path.expanduser(text))
    if path.name in ("", ".", ".."):
        raise UsageError(f"OUTPUT {text!r} is not a file name")
    if path.is_dir():
        raise UsageError(f"OUTPUT {str(path)!r} is a directory")
    if not path.suffix:
        # As the original tool does: no extension means Matroska, which takes any codec.
        path = path.with_name(path.name + DEFAULT_EXTENSION)
    if path.suffix.lower() not in OUTPUT_EXTENSIONS:
        raise UsageError(
            f"OUTPUT extension {path.suffix!r} is not supported: "
            f"use one of {', '.join(OUTPUT_EXTENSIONS)}"
        )
    _check_parent_dir(path, "OUTPUT")
    if path.is_dir():
        raise UsageError(f"OUTPUT {str(path)!r} is a directory")
    # An output merged before its broadcast was all recorded is for a rerun to replace.
    segments = path.with_name(path.name + SEGMENTS_DIR_SUFFIX)
    check_output_free(path, overwrite or holds_partial_output(segments), split=split)
    _check_writable_dir(path.parent)
    return path


def invocation_from_args(ns: argparse.Namespace) -> Invocation:
    """Validate the parsed arguments and build the :class:`Invocation` (``UsageError`` if bad)."""
    inspecting = ns.list_formats or ns.dump_json
    mpd_arg, out_arg = _positionals(ns, inspecting)
    base_url: str | None = ns.base_url
    if base_url is not None and not _is_http_url(base_url):
        raise UsageError(f"--base-url must be an http(s) URL, got {base_url!r}")
    mpd_url, manifest_file = "", None
    if mpd_arg is not None:
        mpd_url, manifest_file = _manifest_source(mpd_arg, base_url, inspecting)
    to_stdout = out_arg == "-" and not inspecting
    output_path = None if inspecting else _output(ns, out_arg, mpd_url, to_stdout)
    _check_side_inputs(ns)
    options = Options(
        mpd_url=mpd_url,
        output_path=output_path,
        manifest_file=manifest_file,
        video_quality=tuple(ns.video_quality),
        audio_quality=tuple(ns.audio_quality),
        subtitles=ns.subtitles,
        poll_interval=ns.poll_interval,
        live_end_timeout=ns.live_end_timeout,
        stop_after=ns.stop_after,
        no_past=ns.no_past,
        max_search_requests=ns.max_search_requests,
        end_stream_miss_threshold=ns.end_stream_miss_threshold,
        search_chunk_size=ns.search_chunk_size,
        past_segment_delay=ns.past_segment_delay,
        download_retries=ns.download_retries,
        download_retry_delay=ns.download_retry_delay,
        check_url_retries=ns.check_url_retries,
        proxy=ns.proxy,
        base_url=base_url,
        headers=tuple(ns.headers),
        user_agent=ns.user_agent,
        cookies=ns.cookies,
        concurrency=ns.concurrency,
        refresh_url_command=ns.refresh_url_command,
        refresh_url_retries=ns.refresh_url_retries,
        keep_segments=ns.keep_segments,
        overwrite=ns.overwrite,
        ffmpeg_path=ns.ffmpeg_path,
        ffprobe_path=ns.ffprobe_path,
        summary_file=ns.summary_file,
        split_duration=ns.split_duration,
        split_size=ns.split_size,
        to_stdout=to_stdout,
        live_merge=ns.live_merge and not to_stdout,
    )
    mode: Mode = "list" if ns.list_formats else "json" if ns.dump_json else "record"
    return Invocation(
        options,
        mode="demo" if ns.demo else mode,
        interactive=ns.interactive,
        now=ns.now,
        verbose=ns.verbose,
        quiet=ns.quiet,
        log_file=ns.log_file,
    )


def _output(
    ns: argparse.Namespace, out_arg: str | None, mpd_url: str, to_stdout: bool
) -> Path | None:
    """OUTPUT checked; for ``-``, the file a rerun merges the segments kept into."""
    split = ns.split_duration is not None or ns.split_size is not None
    if to_stdout:
        _check_stdout_output(ns, split)
        return _stdout_store_output(mpd_url)
    if out_arg is None:
        return None
    if ns.live_merge and split:
        raise UsageError("--live-merge writes one OUTPUT file: it cannot be cut into parts")
    return _output_path(out_arg, ns.overwrite, split)


def _check_stdout_output(ns: argparse.Namespace, split: bool) -> None:
    if ns.demo:
        raise UsageError("--demo writes a file: give it an OUTPUT file, not -")
    if split:
        raise UsageError("OUTPUT - streams to stdout: --split and --split-size need a file")
    if ns.live_merge:
        raise UsageError("OUTPUT - already streams while recording: --live-merge needs a file")


def _stdout_store_output(mpd_url: str) -> Path:
    """The OUTPUT a rerun merges a stream watched on stdout into: its segments directory
    (under the current directory, named after the stream) is the one kept."""
    from instarec.watch import rerun_output

    output = rerun_output(mpd_url)
    _check_writable_dir(Path.cwd())
    return output


def _positionals(ns: argparse.Namespace, inspecting: bool) -> tuple[str | None, str | None]:
    """MPD_URL and OUTPUT as this mode reads them (``--demo`` takes OUTPUT alone)."""
    mpd_arg: str | None = ns.mpd_url
    out_arg: str | None = ns.output
    if ns.now is not None and not inspecting:
        raise UsageError("--now only applies to -F/-J")
    if ns.demo:
        if inspecting:
            raise UsageError("--demo cannot be combined with -F/-J")
        if mpd_arg is not None and out_arg is not None:
            raise UsageError("--demo takes only OUTPUT, not MPD_URL")
        out_arg = mpd_arg if out_arg is None else out_arg
        if out_arg is None:
            raise UsageError("--demo needs OUTPUT, e.g. instarec --demo demo.mkv")
        return None, out_arg
    if mpd_arg is None:
        raise UsageError("MPD_URL is missing (see 'instarec --help')")
    if out_arg is None and not inspecting:
        raise UsageError("OUTPUT is missing (or pass -F/-J to only inspect the stream)")
    return mpd_arg, out_arg


def _manifest_source(
    mpd_arg: str, base_url: str | None, inspecting: bool
) -> tuple[str, Path | None]:
    """The URL the manifest comes from (or resolves against), and its local file if any."""
    if _is_http_url(mpd_arg):
        if base_url is not None:
            raise UsageError("--base-url only applies when MPD_URL is a local file")
        return mpd_arg, None
    if urlsplit(mpd_arg).scheme.lower() in ("http", "https"):
        raise UsageError(f"MPD_URL {mpd_arg!r} has no host name")
    path = Path(os.path.expanduser(mpd_arg))
    if not path.is_file():
        raise UsageError(f"MPD_URL {mpd_arg!r} is neither an http(s) URL nor an existing file")
    if base_url is not None:
        return base_url, path
    if inspecting:
        return path.resolve().as_uri(), path
    # Segments are fetched over HTTP; file:// addresses would not download.
    raise UsageError(
        "recording from a local manifest file needs --base-url URL "
        "(the address the manifest was downloaded from)"
    )


def _check_side_inputs(ns: argparse.Namespace) -> None:
    """--cookies, --log-file, --summary-file and --proxy, before any work starts."""
    if ns.cookies is not None and not ns.cookies.is_file():
        raise UsageError(f"cookies file {str(ns.cookies)!r} does not exist")
    for path, what in ((ns.log_file, "--log-file"), (ns.summary_file, "--summary-file")):
        if path is not None:
            _check_parent_dir(path, what)
            if path.is_dir():
                raise UsageError(f"{what} {str(path)!r} is a directory")
    if ns.proxy is not None:
        from instarec.http import HTTP_PROXY_SCHEMES, SOCKS_PROXY_SCHEMES

        parts = urlsplit(ns.proxy)
        schemes = HTTP_PROXY_SCHEMES | SOCKS_PROXY_SCHEMES
        if parts.scheme.lower() not in schemes or not parts.netloc:
            raise UsageError(
                f"--proxy must be a URL such as http://host:port or socks5://host:port, "
                f"got {ns.proxy!r}"
            )


def parse_args(argv: Sequence[str] | None = None) -> Invocation:
    return invocation_from_args(build_parser().parse_args(argv))


# --- logging -----------------------------------------------------------------------------

_DETAILED_FORMAT = "%(asctime)s %(levelname)-7s [%(task_name)s] %(name)s: %(message)s"


class _TaskNameFilter(logging.Filter):
    """Adds ``task_name``: the asyncio task a record comes from (Python 3.11 has none)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            task = asyncio.current_task()
        except RuntimeError:  # no running event loop
            task = None
        record.task_name = task.get_name() if task is not None else "main"
        return True


def _configure_logging(
    run: Invocation, stderr: TextIO, status: StatusLine | None = None
) -> list[logging.Handler]:
    """Install our handlers on the root logger; returns them so ``main`` can remove them.

    The console shows INFO (``-q``: WARNING; ``-v``: DEBUG with the task and logger each
    record comes from); ``--log-file`` always gets everything at DEBUG.
    """
    handlers: list[logging.Handler] = []
    console: logging.StreamHandler[TextIO] = (
        StatusAwareHandler(stderr, status) if status is not None else logging.StreamHandler(stderr)
    )
    if run.verbose:
        console.setLevel(logging.DEBUG)
        console.setFormatter(logging.Formatter(_DETAILED_FORMAT))
    else:
        console.setLevel(logging.WARNING if run.quiet else logging.INFO)
        console.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    handlers.append(console)
    if run.log_file is not None:
        try:
            file_handler = logging.FileHandler(run.log_file, encoding="utf-8")
        except OSError as exc:
            raise StorageError(
                f"cannot open log file {str(run.log_file)!r}: {exc.strerror or exc}"
            ) from exc
        file_handler.setLevel(logging.DEBUG)
        file_handler.setFormatter(logging.Formatter(_DETAILED_FORMAT))
        handlers.append(file_handler)
    root = logging.getLogger()
    task_filter = _TaskNameFilter()
    for handler in handlers:
        handler.addFilter(task_filter)
        root.addHandler(handler)
    verbose_anywhere = run.verbose or run.log_file is not None
    root.setLevel(logging.DEBUG if verbose_anywhere else console.level)
    if not run.verbose:
        # Third-party chatter (aiohttp access warnings, asyncio debug) stays out of the console.
        for name in ("asyncio", "aiohttp"):
            logging.getLogger(name).setLevel(logging.WARNING)
    return handlers


# --- commands ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Console:
    """Where a command writes: the summary to ``stdout``, progress and logs to ``stderr``."""

    stdin: TextIO
    stdout: TextIO
    stderr: TextIO
    status: StatusLine | None  # the terminal status line, None when stderr is no terminal
    quiet: bool  # -q: warnings and errors only, no summary table


async def _load_manifest(options: Options) -> Manifest:
    from instarec.manifest import MAX_MANIFEST_BYTES, parse_manifest

    if options.manifest_file is not None:
        try:
            data = options.manifest_file.read_bytes()
        except OSError as exc:
            raise UsageError(
                f"cannot read manifest file {str(options.manifest_file)!r}: {exc.strerror}"
            ) from exc
        return parse_manifest(data, options.mpd_url)

    from instarec.http import HttpClient

    async with HttpClient(options.http_config()) as http:
        response = await http.fetch_manifest(options.mpd_url, max_bytes=MAX_MANIFEST_BYTES)
    return parse_manifest(response.body, response.url)


def _inspect(run: Invocation, stdout: TextIO) -> int:
    manifest = asyncio.run(_load_manifest(run.options))
    if run.mode == "json":
        from instarec.manifest import manifest_to_json

        now = run.now if run.now is not None else SYSTEM_CLOCK.now()
        stdout.write(json.dumps(manifest_to_json(manifest, now), indent=2) + "\n")
    else:
        from instarec.selection import format_table

        stdout.write(format_table(manifest))
    return EXIT_OK


def _resolve_interactive(options: Options, stdin: TextIO, stdout: TextIO) -> Options:
    """Run the picker, then hand its choice to the recorder as quality preferences."""
    from instarec.selection import pick_interactively

    manifest = asyncio.run(_load_manifest(options))
    chosen = pick_interactively(manifest, stdin, stdout)
    return replace(
        options,
        video_quality=(chosen.video.id,) if chosen.video is not None else (),
        audio_quality=(chosen.audio.id,) if chosen.audio is not None else (),
        more_audio=tuple(rep.id for rep in chosen.more_audio),
    )


def _locate_ffmpeg(options: Options) -> Options:
    """Fail before any download (or question) when the merge could not run at the end; the
    recorder gets the path found."""
    from instarec.merge import find_ffmpeg

    ffmpeg = find_ffmpeg(options.ffmpeg_path)
    log.debug("ffmpeg: %s", ffmpeg)
    return replace(options, ffmpeg_path=ffmpeg)


def _finish(summary: RecordingSummary, options: Options, console: _Console) -> int:
    """Print the summary table, write ``--summary-file``, decide the exit code."""
    from instarec.summary import format_summary, summary_to_json, write_summary_file

    if summary.interrupted:
        code = EXIT_INTERRUPTED
    elif summary.unfinished is not None:
        code = UrlExpiredError.exit_code
    elif summary.output is None and not (options.to_stdout and summary.duration > 0):
        code = EXIT_NOTHING_RECORDED
    else:
        code = EXIT_OK
    if not console.quiet:
        console.stdout.write(format_summary(summary))
        console.stdout.flush()
    if options.summary_file is not None:
        document = summary_to_json(summary, manifest_url=options.mpd_url or None, exit_code=code)
        write_summary_file(options.summary_file, document)
        log.info("summary written to %s", options.summary_file)
    if summary.unfinished is not None and code == UrlExpiredError.exit_code:
        raise UrlExpiredError(_unfinished(summary, options))
    if code == EXIT_NOTHING_RECORDED:
        raise InstarecError(
            "no segment could be recorded: nothing was written "
            "(run with -v, or see --log-file, to find out why)"
        )
    return code


def _unfinished(summary: RecordingSummary, options: Options) -> str:
    """Why the recording stopped before the broadcast's end, and how to go on."""
    merged = "nothing was merged"
    if summary.parts:
        merged = (
            f"what was recorded is merged into {len(summary.parts)} parts from {summary.output}"
        )
    elif summary.output is not None:
        merged = f"what was recorded is merged into {summary.output}"
    kept = f"{summary.unfinished}: {merged} and the segments are kept in {summary.segments_dir}"
    if summary.unfinished and summary.unfinished.startswith(SERVER_UNREACHABLE):
        return f"{kept}; rerun the same command once the server answers again to resume"
    renew = (
        ""
        if options.refresh_url_command
        else ", or pass --refresh-url-command to renew the URL as it expires"
    )
    return f"{kept}; rerun with a fresh MPD URL and the same OUTPUT to resume the recording{renew}"


def _recording_failed(exc: InstarecError, options: Options) -> InstarecError:
    """Add what to do next to an error that stopped a recording with segments on disk."""
    segments = options.segments_dir
    if segments is None or not segments.is_dir() or not any(segments.iterdir()):
        return exc
    if isinstance(exc, DiskFullError):
        message = (
            f"disk full: recording stopped; the segments recorded so far are kept in "
            f"{segments}. Free some space, then run the same command again: it resumes "
            "and merges them"
        )
        return StorageError(message)
    if isinstance(exc, ManifestUnavailableError) and exc.status in (401, 403):
        message = (
            f"{exc}; the segments recorded so far are kept in {segments}: rerun with the "
            "fresh URL and the same OUTPUT to resume"
        )
        return ManifestUnavailableError(message, exc.status)
    return exc


def _record(options: Options, console: _Console) -> int:
    from instarec.progress import make_reporter
    from instarec.recorder import record

    if options.to_stdout:
        if _is_terminal(console.stdout):
            raise UsageError(
                "OUTPUT - writes the stream to stdout: pipe it into a player "
                "(instarec URL - | mpv -) or give an OUTPUT file"
            )
        console = replace(console, stdout=console.stderr)  # stdout carries the stream
    reporter = make_reporter(status=console.status, quiet=console.quiet)
    try:
        summary = asyncio.run(record(options, reporter=reporter))
    except InstarecError as exc:
        raised = _recording_failed(exc, options)
        if raised is exc:
            raise
        raise raised from exc
    # The recorder handles the first Ctrl+C itself (stops, merges what it has) and says so.
    return _finish(summary, options, console)


def _demo(options: Options, console: _Console) -> int:
    from instarec.demo import run_demo
    from instarec.progress import make_reporter

    reporter = make_reporter(status=console.status, quiet=console.quiet)
    summary = asyncio.run(run_demo(options, reporter=reporter))
    code = _finish(summary, options, console)
    if summary.output is not None:
        console.stdout.write(
            f"\nThe demo recording is {summary.output}: play it with any video player "
            f"(e.g. ffplay or mpv). Now try a real stream: instarec MPD_URL OUTPUT\n"
        )
    return code


def _run(run: Invocation, console: _Console) -> int:
    if run.mode in ("list", "json"):
        return _inspect(run, console.stdout)
    options = _locate_ffmpeg(run.options)
    if run.mode == "demo":
        return _demo(options, console)
    if run.interactive:
        options = _resolve_interactive(options, console.stdin, console.stdout)
    return _record(options, console)


def _hint(exc: InstarecError) -> str:
    """What to do next, where the message itself does not say."""
    if isinstance(exc, (ManifestUnavailableError, UrlExpiredError)):
        return ""  # its message already says (fresh URL, broadcast ended)
    if isinstance(exc, NetworkError):
        return ": check the URL and the network connection (and --proxy if one is needed)"
    if isinstance(exc, ManifestError):
        return ": is this the stream's .mpd URL? (README: 'Finding the MPD URL')"
    return ""


def _one_line(message: str) -> str:
    return " ".join(message.split()) or "(no details)"


def main(argv: Sequence[str] | None = None) -> int:
    """Run instarec; return the process exit code. Never raises."""
    try:
        return _main(argv)
    except KeyboardInterrupt:
        # A Ctrl+C pressed again while the recorder finishes (its handlers already gone, or
        # in the cleanup below) is the same request to stop: no traceback, the same code.
        sys.stderr.write("instarec: interrupted (segments on disk are kept: rerun to resume)\n")
        return EXIT_INTERRUPTED


def _main(argv: Sequence[str] | None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    stderr = sys.stderr
    verbose = any(a in ("-v", "--verbose") for a in args)
    handlers: list[logging.Handler] = []
    status: StatusLine | None = None
    # main() may run several times in one process (tests, embedding): put logging back as found.
    saved_levels = {name: logging.getLogger(name).level for name in ("", "asyncio", "aiohttp")}
    try:
        try:
            ns = build_parser().parse_args(args)
        except SystemExit as exc:  # --help and --version print, then exit 0
            return exc.code if isinstance(exc.code, int) else EXIT_OK
        run = invocation_from_args(ns)
        verbose = run.verbose
        if not run.quiet and _is_terminal(stderr):
            status = StatusLine(stderr)
        handlers = _configure_logging(run, stderr, status)
        output = run.options.output_path
        raw_output = ns.mpd_url if ns.demo and ns.output is None else ns.output
        to_file = output is not None and not run.options.to_stdout
        if to_file and raw_output and not Path(raw_output).suffix:
            log.info("OUTPUT has no extension: writing %s", output)
        return _run(run, _Console(sys.stdin, sys.stdout, stderr, status, run.quiet))
    except InstarecError as exc:
        # A usage error is the user's to fix, not a bug: no traceback even with -v.
        if verbose and not isinstance(exc, UsageError):
            traceback.print_exc(file=stderr)
        stderr.write(f"instarec: error: {_one_line(str(exc))}{_hint(exc)}\n")
        return exc.exit_code
    except (KeyboardInterrupt, asyncio.CancelledError):
        # KeyboardInterrupt: Ctrl+C before the recorder took over the signal; CancelledError:
        # the recorder's second Ctrl+C, which stops at once and keeps the segments.
        stderr.write("instarec: interrupted (segments on disk are kept: rerun to resume)\n")
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - the process boundary: one line, never a traceback
        if verbose:
            traceback.print_exc(file=stderr)
        hint = "" if verbose else " (run with -v for details)"
        stderr.write(
            f"instarec: error: unexpected {type(exc).__name__}: {_one_line(str(exc))}{hint}\n"
        )
        return EXIT_UNEXPECTED
    finally:
        if status is not None:
            status.forget()
        root = logging.getLogger()
        for handler in handlers:
            root.removeHandler(handler)
            handler.close()
        for name, level in saved_levels.items():
            logging.getLogger(name).setLevel(level)


def _is_terminal(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty is not None and isatty())


# --- the README's options table ------------------------------------------------------------


def options_markdown(parser: argparse.ArgumentParser | None = None) -> str:
    """Every option of the parser as Markdown tables, one per group (README.md holds a copy)."""
    parser = parser or build_parser()
    lines: list[str] = []
    for group in parser._action_groups:
        actions = [
            a
            for a in group._group_actions
            if a.option_strings and a.help is not argparse.SUPPRESS and a.dest != "help"
        ]
        if not actions:
            continue
        title = "general" if group.title == "options" else group.title
        lines += [f"**{title}**", "", "| option | default | meaning |", "| --- | --- | --- |"]
        for action in actions:
            names = ", ".join(f"`{name}`" for name in action.option_strings)
            if action.metavar is not None and action.nargs != 0:
                suffix = " ..." if action.nargs == "+" else ""
                names += f" `{action.metavar}{suffix}`"
            default = action.default
            if isinstance(default, bool) or default in (None, [], (), argparse.SUPPRESS):
                shown = ""
            else:
                shown = f"`{default}`"
            meaning = (action.help or "").replace("|", "\\|").replace("%%", "%")
            lines.append(f"| {names} | {shown} | {meaning} |")
        lines.append("")
    return "\n".join(lines)
