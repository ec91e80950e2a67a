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


# The --audio-quality value that records every audio AdaptationSet.
ALL_AUDIO = "all"
# Text carried in MP4 that instarec turns into subtitle streams (captions.py).
TEXT_CODECS = ("wvtt", "stpp")
PLAIN_WEBVTT = "text/vtt"  # segments that are WebVTT files, not MP4


def text_format(rep: Representation) -> str | None:
    """How a text representation carries its cues: ``"wvtt"`` or ``"stpp"`` in MP4 segments,
    ``"vtt"`` as plain WebVTT segments; None for what instarec cannot record."""
    mime = (rep.mime_type or "").lower()
    if mime == PLAIN_WEBVTT:
        return "vtt"
    codec = (rep.codecs or "").split(".", 1)[0].lower()
    if codec in TEXT_CODECS and mime in ("", "application/mp4"):
        return codec
    return None


def plain_text(rep: Representation) -> bool:
    """Whether ``rep``'s segments are WebVTT files: no init, no boxes, no tfdt."""
    return track_kind(rep) == "text" and text_format(rep) == "vtt"


@dataclass(frozen=True, slots=True)
class SelectedTracks:
    """The representations to record: one video, the first audio, and, when every audio
    track or the subtitles are asked for, the further audio tracks and the text tracks."""

    video: Representation | None
    audio: Representation | None
    more_audio: tuple[Representation, ...] = ()
    text: tuple[Representation, ...] = ()

    def slots(self) -> list[tuple[str, Representation]]:
        """Each representation by its track's name in the recording: "video", "audio", then
        "audio2", "audio3"..., "text", "text2"... (the store's directories, the journal's
        fingerprint)."""
        named: list[tuple[str, Representation | None]] = [
            ("video", self.video),
            ("audio", self.audio),
            *((f"audio{n}", rep) for n, rep in enumerate(self.more_audio, 2)),
            *((f"text{n if n > 1 else ''}", rep) for n, rep in enumerate(self.text, 1)),
        ]
        return [(name, rep) for name, rep in named if rep is not None]

    @property
    def several(self) -> bool:
        """More than one video and one audio track: languages are tagged in the output."""
        return bool(self.more_audio or self.text)


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
    kind: str, candidates: Sequence[Representation], wanted: Sequence[str], *, quiet: bool = False
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
    if wanted and not quiet:
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
    text = _text_tracks(period) if options.subtitles else ()
    if ALL_AUDIO in options.audio_quality:
        wanted = [w for w in options.audio_quality if w != ALL_AUDIO]
        known = {rep.id for rep in _of_kind(period, "audio")}
        if unknown := [w for w in wanted if w not in known]:
            # Each AdaptationSet is still recorded, in its best representation.
            log.warning("audio representation %s not found", ", ".join(map(repr, unknown)))
        every = [_choose("audio", rank(group), wanted, quiet=True) for group in _audio_sets(period)]
        audio = [rep for rep in every if rep is not None]
        selected = _check_tracks(video, audio[0] if audio else None)
        return SelectedTracks(video, selected.audio, tuple(audio[1:]), text)
    audio_rep = _choose("audio", _of_kind(period, "audio"), options.audio_quality)
    selected = _check_tracks(video, audio_rep)
    more = tuple(
        rep
        for rep in _of_kind(period, "audio")
        if rep.id in options.more_audio and rep is not audio_rep
    )
    return SelectedTracks(video, audio_rep, more, text) if text or more else selected


def _audio_sets(period: Period) -> list[list[Representation]]:
    """The audio representations of each AdaptationSet (a language, a role), in document
    order."""
    groups: dict[int, list[Representation]] = {}
    for rep in period.representations:
        if track_kind(rep) == "audio":
            groups.setdefault(rep.adaptation_set_index, []).append(rep)
    return list(groups.values())


def _text_tracks(period: Period) -> tuple[Representation, ...]:
    """The best representation of each text AdaptationSet instarec can turn into subtitles."""
    groups: dict[int, list[Representation]] = {}
    for rep in period.representations:
        if track_kind(rep) != "text":
            continue
        if text_format(rep) is None:
            log.warning(
                "text representation %s (%s, %s) is left out: only WebVTT or TTML carried in "
                "MP4 segments (wvtt, stpp) and WebVTT segments (text/vtt) can be recorded",
                rep.id,
                rep.mime_type or "no mime type",
                rep.codecs or "no codecs",
            )
            continue
        if rep.drm:
            raise UnsupportedStreamError(
                f"this stream is DRM-protected (representation {rep.id} has ContentProtection);"
                " instarec cannot record encrypted streams"
            )
        groups.setdefault(rep.adaptation_set_index, []).append(rep)
    if not groups:
        log.warning("--subtitles was given but the stream has no text track instarec can record")
    return tuple(rank(group)[0] for group in groups.values())


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
    headers = ("#", "ID", "SAMPLING RATE", "LANG", "ROLE", "BANDWIDTH", "CODECS", "DRM")
    rows = [
        (
            str(n),
            rep.id,
            f"{rep.audio_sampling_rate} Hz" if rep.audio_sampling_rate else "-",
            rep.lang or "-",
            rep.role or "-",
            format_bandwidth(rep.bandwidth),
            rep.codecs or "-",
            _drm(rep),
        )
        for n, rep in enumerate(reps, 1)
    ]
    return _render(headers, rows)


def _other_lines(reps: Sequence[Representation]) -> list[str]:
    headers = ("#", "ID", "KIND", "MIME TYPE", "LANG", "ROLE", "BANDWIDTH", "CODECS", "DRM")
    rows = [
        (
            str(n),
            rep.id,
            track_kind(rep) or "?",
            rep.mime_type or "-",
            rep.lang or "-",
            rep.role or "-",
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
    text = [rep for rep in other if track_kind(rep) == "text"]
    other = [rep for rep in other if track_kind(rep) != "text"]
    if text:
        lines += ["Text (recorded with --subtitles):", *_other_lines(rank(text))]
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
        answer = _read_answer(stdin, stdout)
        if not answer:
            return reps[0]
        if answer.isdigit() and 1 <= int(answer) <= len(reps):
            return reps[int(answer) - 1]
        # Also accept a representation id, as --video-quality does.
        for rep in reps:
            if rep.id == answer:
                return rep
        stdout.write(f"  {answer!r} is not a choice: type a number from 1 to {len(reps)}.\n")


def _ask_audio(
    reps: Sequence[Representation], stdin: TextIO, stdout: TextIO
) -> list[Representation]:
    """One or several audio representations: "1,3", "all" (each language's best), Enter."""
    if len(reps) < 2 or len({rep.adaptation_set_index for rep in reps}) < 2:
        chosen = _ask("audio", reps, stdin, stdout)
        return [chosen] if chosen is not None else []
    stdout.write("Audio representations:\n" + "\n".join(_audio_lines(reps)) + "\n")
    while True:
        stdout.write(
            f"Choose audio [1-{len(reps)}, several as 1,3, all = every language, "
            "Enter = 1 = best]: "
        )
        stdout.flush()
        answer = _read_answer(stdin, stdout)
        if not answer:
            return [reps[0]]
        if answer.lower() == ALL_AUDIO:
            groups: dict[int, Representation] = {}
            for rep in reps:  # best first: the first of each AdaptationSet is its best
                groups.setdefault(rep.adaptation_set_index, rep)
            return [groups[index] for index in sorted(groups)]  # as --audio-quality all
        picked = [_pick(item.strip(), reps) for item in answer.split(",") if item.strip()]
        if picked and all(rep is not None for rep in picked):
            return list(dict.fromkeys(rep for rep in picked if rep is not None))
        stdout.write(f"  {answer!r} is not a choice: type numbers from 1 to {len(reps)}.\n")


def _read_answer(stdin: TextIO, stdout: TextIO) -> str:
    try:
        line = stdin.readline()
    except KeyboardInterrupt:
        raise CancelledByUser("quality selection cancelled") from None
    if not line:  # end of input
        stdout.write("\n")
        raise CancelledByUser("quality selection cancelled (end of input)")
    return line.strip()


def _pick(answer: str, reps: Sequence[Representation]) -> Representation | None:
    if answer.isdigit() and 1 <= int(answer) <= len(reps):
        return reps[int(answer) - 1]
    return next((rep for rep in reps if rep.id == answer), None)


def pick_interactively(manifest: Manifest, stdin: TextIO, stdout: TextIO) -> SelectedTracks:
    """Ask for a video and one or several audio representations on ``stdout``, reading
    ``stdin``.

    Enter takes the best; a wrong entry asks again; a kind with one choice is taken
    without asking.  End of input or Ctrl+C cancels (``CancelledByUser``, exit 130).
    """
    period = recorded_period(manifest)
    video_reps = _of_kind(period, "video")
    audio_reps = _of_kind(period, "audio")
    if not video_reps and not audio_reps:
        _check_tracks(None, None)
    video = _ask("video", video_reps, stdin, stdout)
    audio = _ask_audio(audio_reps, stdin, stdout)
    selected = _check_tracks(video, audio[0] if audio else None)
    return SelectedTracks(selected.video, selected.audio, tuple(audio[1:]))
