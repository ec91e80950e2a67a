"""Choosing the video and audio representations to record.

Pure: no network, no clock.  The interactive picker reads and writes only the
text streams it is given, so it can be scripted and tested.

The choice is made in the first Period; the recording follows later Periods
(an encoder restart, an ad break) with the representations matching the choice
(``periods.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, TextIO

from instarec.errors import CancelledByUser, UnsupportedStreamError

if TYPE_CHECKING:
    from instarec.manifest import Manifest, Period, Representation
    from instarec.options import Options

log = logging.getLogger(__name__)

_VIDEO_CODECS = ("avc1", "avc3", "hvc1", "hev1", "vp08", "vp09", "vp8", "vp9", "av01", "dvh1")
_AUDIO_CODECS = ("mp4a", "opus", "ac-3", "ec-3", "ac-4", "flac", "vorbis", "dtsc")


@dataclass(frozen=True, slots=True)
class SelectedTracks:
    video: Representation | None
    audio: Representation | None


def track_kind(rep: Representation) -> str | None:
    """``"video"``, ``"audio"``, ``"text"`` or None when nothing says what it carries.

    ``content_type`` (from contentType, else mimeType) decides; without it the
    codec string, then the presence of a picture size or a sampling rate, do.
    """
    if rep.content_type in ("video", "audio", "text"):
        return rep.content_type
    if rep.mime_type:
        major = rep.mime_type.split("/", 1)[0].lower()
        if major in ("video", "audio", "text"):
            return major
    codecs = (rep.codecs or "").lower()
    if codecs.startswith(_VIDEO_CODECS):
        return "video"
    if codecs.startswith(_AUDIO_CODECS):
        return "audio"
    if rep.width or rep.height:
        return "video"
    if rep.audio_sampling_rate:
        return "audio"
    return None


def find_representation(manifest: Manifest, wanted: Representation) -> Representation | None:
    """The representation of a refreshed manifest that continues ``wanted``: the one of the
    same id (in the same period if there is one), else the same rendition under another id
    (a manifest fetched from a fresh signed URL may name its representations anew)."""
    fallback = None
    for rep in manifest.representations():
        if rep.id == wanted.id:
            if rep.period_index == wanted.period_index:
                return rep
            fallback = fallback or rep
    if fallback is not None:
        return fallback
    return next((rep for rep in manifest.representations() if same_rendition(rep, wanted)), None)


def same_rendition(rep: Representation, other: Representation) -> bool:
    """Whether two representations carry the same media: kind, codec, size and bandwidth."""
    return (
        track_kind(rep) == track_kind(other)
        and rep.codecs == other.codecs
        and (rep.width, rep.height) == (other.width, other.height)
        and rep.bandwidth == other.bandwidth
    )


def _quality_key(rep: Representation) -> tuple[int, int, int]:
    # Highest bandwidth first; on equal bandwidth, the bigger picture, then the
    # higher sampling rate.  Missing values sort last.
    return (
        rep.bandwidth or 0,
        (rep.width or 0) * (rep.height or 0),
        rep.audio_sampling_rate or 0,
    )


def rank(reps: Iterable[Representation]) -> list[Representation]:
    """Representations best first (stable for equal keys: document order is kept)."""
    return sorted(reps, key=_quality_key, reverse=True)


def recorded_period(manifest: Manifest) -> Period:
    if not manifest.periods:
        raise UnsupportedStreamError("the manifest has no Period: nothing to record")
    return manifest.periods[0]


def _of_kind(period: Period, kind: str) -> list[Representation]:
    return rank(rep for rep in period.representations if track_kind(rep) == kind)


def _choose(
    kind: str, candidates: Sequence[Representation], wanted: Sequence[str]
) -> Representation | None:
    if not candidates:
        if wanted:
            log.warning(
                "--%s-quality was given but the stream has no %s representation", kind, kind
            )
        return None
    for wanted_id in wanted:
        for rep in candidates:
            if rep.id == wanted_id:
                return rep
    best = candidates[0]
    if wanted:
        # As the original tool does: a stale or mistyped id must not lose the broadcast.
        log.warning(
            "%s representation %s not found (available: %s); recording the best one, %s",
            kind,
            ", ".join(repr(w) for w in wanted),
            ", ".join(rep.id for rep in candidates),
            best.id,
        )
    return best


def _check_tracks(video: Representation | None, audio: Representation | None) -> SelectedTracks:
    if video is None and audio is None:
        raise UnsupportedStreamError(
            "the manifest has no video and no audio representation: nothing to record"
        )
    for rep in (video, audio):
        if rep is not None and rep.drm:
            raise UnsupportedStreamError(
                f"this stream is DRM-protected (representation {rep.id} has ContentProtection);"
                " instarec cannot record encrypted streams"
            )
    return SelectedTracks(video=video, audio=audio)


def select_tracks(manifest: Manifest, options: Options) -> SelectedTracks:
    """The video and audio representations to record, by the user's preference lists.

    Each list is tried in order and the first id present wins; without a list, or
    when none of its ids exists, the best representation (highest bandwidth) is taken.
    """
    period = recorded_period(manifest)
    if len(manifest.periods) > 1:
        log.info(
            "the manifest has %d periods: the choice is made in the first, the next follow it",
            len(manifest.periods),
        )
    video = _choose("video", _of_kind(period, "video"), options.video_quality)
    audio = _choose("audio", _of_kind(period, "audio"), options.audio_quality)
    return _check_tracks(video, audio)


# --- tables ------------------------------------------------------------------------------


def format_bandwidth(bits_per_second: int | None) -> str:
    if not bits_per_second:
        return "-"
    if bits_per_second >= 1_000_000:
        return f"{bits_per_second / 1_000_000:.2f} Mbit/s"
    if bits_per_second >= 1_000:
        return f"{bits_per_second / 1_000:.0f} kbit/s"
    return f"{bits_per_second} bit/s"


def format_frame_rate(frame_rate: str | None) -> str:
    if not frame_rate:
        return "-"
    try:
        value = Fraction(frame_rate)
    except (ValueError, ZeroDivisionError):
        return frame_rate
    if value.denominator == 1:
        return str(value.numerator)
    return f"{float(value):.3f}".rstrip("0").rstrip(".")


def _resolution(rep: Representation) -> str:
    if rep.width and rep.height:
        return f"{rep.width}x{rep.height}"
    return "-"


def _render(headers: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "  ") -> list[str]:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    lines = []
    for row in (headers, *rows):
        cells = [cell.ljust(w) for cell, w in zip(row, widths, strict=True)]
        lines.append((indent + "  ".join(cells)).rstrip())
    return lines


def _drm(rep: Representation) -> str:
    return "DRM" if rep.drm else ""


def _video_lines(reps: Sequence[Representation]) -> list[str]:
    headers = ("#", "ID", "RESOLUTION", "FPS", "BANDWIDTH", "CODECS", "DRM")
    rows = [
        (
            str(n),
            rep.id,
            _resolution(rep),
            format_frame_rate(rep.frame_rate),
            format_bandwidth(rep.bandwidth),
            rep.codecs or "-",
            _drm(rep),
        )
        for n, rep in enumerate(reps, 1)
    ]
    return _render(headers, rows)


def _audio_lines(reps: Sequence[Representation]) -> list[str]:
    headers = ("#", "ID", "SAMPLING RATE", "LANG", "BANDWIDTH", "CODECS", "DRM")
    rows = [
        (
            str(n),
            rep.id,
            f"{rep.audio_sampling_rate} Hz" if rep.audio_sampling_rate else "-",
            rep.lang or "-",
            format_bandwidth(rep.bandwidth),
            rep.codecs or "-",
            _drm(rep),
        )
        for n, rep in enumerate(reps, 1)
    ]
    return _render(headers, rows)


def _other_lines(reps: Sequence[Representation]) -> list[str]:
    headers = ("#", "ID", "KIND", "MIME TYPE", "LANG", "BANDWIDTH", "CODECS", "DRM")
    rows = [
        (
            str(n),
            rep.id,
            track_kind(rep) or "?",
            rep.mime_type or "-",
            rep.lang or "-",
            format_bandwidth(rep.bandwidth),
            rep.codecs or "-",
            _drm(rep),
        )
        for n, rep in enumerate(reps, 1)
    ]
    return _render(headers, rows)


def _period_lines(period: Period) -> list[str]:
    lines: list[str] = []
    video = _of_kind(period, "video")
    audio = _of_kind(period, "audio")
    other = [rep for rep in period.representations if track_kind(rep) not in ("video", "audio")]
    if video:
        lines += ["Video:", *_video_lines(video)]
    if audio:
        lines += ["Audio:", *_audio_lines(audio)]
    if other:
        lines += ["Other (not recorded):", *_other_lines(rank(other))]
    if not lines:
        lines.append("(no representations)")
    return lines


def format_table(manifest: Manifest) -> str:
    """The representations of the manifest, video then audio, each best first.

    The numbers are those the interactive picker accepts.
    """
    lines = [f"Manifest: {manifest.url} ({manifest.type})"]
    if not manifest.periods:
        lines.append("(no periods)")
    for period in manifest.periods:
        if len(manifest.periods) > 1:
            note = " (choose here)" if period is manifest.periods[0] else " (follows the choice)"
            label = f" id={period.id}" if period.id else ""
            lines.append(f"Period {period.index + 1}{label}, start {period.start:g} s{note}:")
        lines += _period_lines(period)
    return "\n".join(lines) + "\n"


# --- interactive picker ------------------------------------------------------------------


def _ask(
    kind: str, reps: Sequence[Representation], stdin: TextIO, stdout: TextIO
) -> Representation | None:
    if not reps:
        return None
    if len(reps) == 1:
        stdout.write(f"{kind.capitalize()}: {reps[0].id} (the only choice)\n")
        return reps[0]
    stdout.write(f"{kind.capitalize()} representations:\n")
    lines = _video_lines(reps) if kind == "video" else _audio_lines(reps)
    stdout.write("\n".join(lines) + "\n")
    while True:
        stdout.write(f"Choose {kind} [1-{len(reps)}, Enter = 1 = best]: ")
        stdout.flush()
        try:
            line = stdin.readline()
        except KeyboardInterrupt:
            raise CancelledByUser("quality selection cancelled") from None
        if not line:  # end of input
            stdout.write("\n")
            raise CancelledByUser("quality selection cancelled (end of input)")
        answer = line.strip()
        if not answer:
            return reps[0]
        if answer.isdigit() and 1 <= int(answer) <= len(reps):
            return reps[int(answer) - 1]
        # Also accept a representation id, as --video-quality does.
        for rep in reps:
            if rep.id == answer:
                return rep
        stdout.write(f"  {answer!r} is not a choice: type a number from 1 to {len(reps)}.\n")


def pick_interactively(manifest: Manifest, stdin: TextIO, stdout: TextIO) -> SelectedTracks:
    """Ask for a video and an audio representation on ``stdout``, reading ``stdin``.

    Enter takes the best; a wrong entry asks again; a kind with one choice is taken
    without asking.  End of input or Ctrl+C cancels (``CancelledByUser``, exit 130).
    """
    period = recorded_period(manifest)
    video_reps = _of_kind(period, "video")
    audio_reps = _of_kind(period, "audio")
    if not video_reps and not audio_reps:
        _check_tracks(None, None)
    video = _ask("video", video_reps, stdin, stdout)
    audio = _ask("audio", audio_reps, stdin, stdout)
    return _check_tracks(video, audio)
