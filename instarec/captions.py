"""Text tracks turned into cues a muxer takes: WebVTT in MP4 (``wvtt``, ISO/IEC 14496-30).

ffmpeg 5.1 does not read ``wvtt`` samples from MP4 (it sees a data stream of raw ``vttc``
boxes), so the recorded samples are read here (``mp4.read_samples``: tfdt and trun give their
times) and written out as a WebVTT file that ffmpeg muxes as a subtitle stream.

Pure: bytes in, text out.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from lxml import etree

from instarec.errors import Mp4Error
from instarec.mp4 import Sample, boxes

__all__ = [
    "Cue",
    "is_webvtt",
    "iso639_2",
    "joined",
    "text_cues",
    "ttml_cues",
    "webvtt_cues",
    "webvtt_document",
    "wvtt_cues",
]


@dataclass(frozen=True, slots=True)
class Cue:
    start: float  # seconds on the recording's clock
    end: float
    text: str
    settings: str = ""  # WebVTT cue settings ("line:0 align:start"), from sttg
    identifier: str = ""  # from iden


def _vttc(payload: bytes) -> tuple[str, str, str]:
    """(text, settings, identifier) of a vttc box's payload."""
    text = settings = identifier = ""
    for box_type, body in boxes(payload):
        value = body.decode("utf-8", errors="replace")
        if box_type == b"payl":
            text = value
        elif box_type == b"sttg":
            settings = value
        elif box_type == b"iden":
            identifier = value
    return text, settings, identifier


def wvtt_cues(samples: Iterable[Sample], timescale: int, shift: float = 0.0) -> list[Cue]:
    """The cues of ``wvtt`` samples, their times moved by ``shift`` seconds.

    A sample holds the cues active over its whole span (``vttc``), or nothing (``vtte``); a
    cue lasting across several samples is repeated in each, and becomes one cue again here.
    """
    cues: list[Cue] = []
    open_cues: dict[tuple[str, str, str], int] = {}  # a cue still running -> index in cues
    for sample in samples:
        start = sample.time / timescale + shift
        end = (sample.time + sample.duration) / timescale + shift
        try:
            parts = boxes(sample.data)
        except Mp4Error:
            continue  # one damaged sample loses its cue, not the track
        running: dict[tuple[str, str, str], int] = {}
        for box_type, payload in parts:
            if box_type != b"vttc":
                continue  # vtte: no cue here; vtta: a comment
            key = _vttc(payload)
            if key[0]:
                running[key] = _merge_into(cues, open_cues, Cue(start, end, *key))
        open_cues = running
    return [cue for cue in cues if cue.end > 0]


def text_cues(
    sample_entry: str, samples: Sequence[Sample], timescale: int, shift: float
) -> list[Cue]:
    """The cues of a text track whose stsd names ``sample_entry``: TTML (``stpp``) or WebVTT."""
    if sample_entry == "stpp":
        return ttml_cues(samples, timescale, shift)
    return wvtt_cues(samples, timescale, shift)


def _merge_into(cues: list[Cue], running: dict[tuple[str, str, str], int], cue: Cue) -> int:
    """Append ``cue``, or lengthen the same cue that ended where it starts; its index."""
    key = (cue.text, cue.settings, cue.identifier)
    index = running.get(key)
    if index is not None and abs(cues[index].end - cue.start) < 0.002:
        cues[index] = replace(cues[index], end=max(cues[index].end, cue.end))
        return index
    cues.append(cue)
    return len(cues) - 1


_TTML_PARAMETER = "{http://www.w3.org/ns/ttml#parameter}"
_CLOCK = re.compile(r"(\d+):(\d{2}):(\d{2})(?:\.(\d+)|:(\d+(?:\.\d+)?))?")
_OFFSET = re.compile(r"(\d+(?:\.\d+)?)(h|ms|m|s|f|t)")


def _ttml_time(text: str, frame_rate: float, tick_rate: float) -> float | None:
    """Seconds of a TTML time expression (clock time or offset time); None if unreadable."""
    text = text.strip()
    clock = _CLOCK.fullmatch(text)
    if clock is not None:
        hours, minutes, seconds, fraction, frames = clock.groups()
        value = float(int(hours) * 3600 + int(minutes) * 60 + int(seconds))
        if fraction:
            value += float("0." + fraction)
        if frames:
            value += float(frames) / frame_rate
        return value
    offset = _OFFSET.fullmatch(text)
    if offset is None:
        return None
    number, unit = float(offset.group(1)), offset.group(2)
    scale = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "f": 1 / frame_rate}
    return number / tick_rate if unit == "t" else number * scale[unit]


def _ttml_text(p: etree._Element) -> str:
    parts: list[str] = [p.text or ""]
    for child in p.iterdescendants():
        if etree.QName(child).localname == "br":
            parts.append("\n")
        else:
            parts.append(child.text or "")
        parts.append(child.tail or "")
    return "\n".join(" ".join(line.split()) for line in "".join(parts).split("\n")).strip()


def _timed(element: etree._Element, attribute: str, rates: tuple[float, float]) -> float | None:
    """An element's begin/end, inherited from its ancestors (a div or body may carry it)."""
    node: etree._Element | None = element
    while node is not None:
        value = node.get(attribute)
        if value is not None:
            return _ttml_time(value, *rates)
        node = node.getparent()
    return None


def ttml_cues(samples: Iterable[Sample], timescale: int, shift: float = 0.0) -> list[Cue]:
    """The cues of ``stpp`` samples (one TTML document each, ISO/IEC 14496-30).

    The documents' times count from the track's media time 0, as the DASH-IF guidelines say;
    a cue is cut to its sample's span (the next sample repeats it) and joined again here.
    """
    cues: list[Cue] = []
    running: dict[tuple[str, str, str], int] = {}
    parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)
    for sample in samples:
        low = sample.time / timescale
        high = (sample.time + sample.duration) / timescale
        try:
            root = etree.fromstring(sample.data, parser)
        except etree.XMLSyntaxError:
            continue  # one unreadable document loses its cues, not the track
        rates = (
            float(root.get(_TTML_PARAMETER + "frameRate") or 30),
            float(root.get(_TTML_PARAMETER + "tickRate") or 1),
        )
        now: dict[tuple[str, str, str], int] = {}
        for p in root.iter("{*}p"):
            begin, end = _timed(p, "begin", rates), _timed(p, "end", rates)
            text = _ttml_text(p)
            if begin is None or end is None or not text:
                continue
            begin, end = max(begin, low), min(end, high)
            if end <= begin:
                continue
            cue = Cue(begin + shift, end + shift, text)
            now[(cue.text, "", "")] = _merge_into(cues, running, cue)
        running = now
    return [cue for cue in cues if cue.end > 0]


# --- plain WebVTT segments -------------------------------------------------------------------

_VTT_TIME = re.compile(r"(?:(\d+):)?(\d{2}):(\d{2})[.,](\d{3})")
_TIMESTAMP_MAP = re.compile(r"X-TIMESTAMP-MAP=(.*)")


def is_webvtt(data: bytes) -> bool:
    """Whether ``data`` is a WebVTT file (a segment of a ``text/vtt`` representation)."""
    return data.removeprefix(b"\xef\xbb\xbf").lstrip(b" \t").startswith(b"WEBVTT")


def _vtt_seconds(text: str) -> float | None:
    match = _VTT_TIME.fullmatch(text.strip())
    if match is None:
        return None
    hours, minutes, seconds, millis = match.groups()
    return int(hours or 0) * 3600 + int(minutes) * 60 + int(seconds) + int(millis) / 1000


def _timestamp_map(header: str) -> float:
    """Seconds an HLS-style ``X-TIMESTAMP-MAP`` header moves the cues by (0 without one)."""
    match = _TIMESTAMP_MAP.search(header)
    if match is None:
        return 0.0
    fields = dict(part.split(":", 1) for part in match.group(1).split(",") if ":" in part)
    try:
        mpegts = int(fields.get("MPEGTS", "0")) / 90000
    except ValueError:
        return 0.0
    local = _vtt_seconds(fields.get("LOCAL", "00:00.000")) or 0.0
    return mpegts - local


def webvtt_cues(document: str, shift: float = 0.0) -> list[Cue]:
    """The cues of one WebVTT file, ``shift`` seconds later (NOTE, STYLE, REGION skipped)."""
    blocks = document.replace("\r\n", "\n").replace("\r", "\n").split("\n\n")
    if not blocks or not blocks[0].lstrip("\ufeff").startswith("WEBVTT"):
        return []
    shift += _timestamp_map(blocks[0])
    cues: list[Cue] = []
    for block in blocks[1:]:
        lines = [line for line in block.split("\n") if line.strip()]
        timing = next((n for n, line in enumerate(lines) if "-->" in line), None)
        if timing is None or timing > 1:
            continue  # NOTE, STYLE, REGION, or no cue
        start_text, rest = lines[timing].split("-->", 1)
        end_text, _, settings = rest.strip().partition(" ")
        start, end = _vtt_seconds(start_text), _vtt_seconds(end_text)
        text = "\n".join(lines[timing + 1 :])
        if start is None or end is None or end <= start or not text:
            continue
        identifier = lines[0] if timing == 1 else ""
        cues.append(Cue(start + shift, end + shift, text, settings.strip(), identifier))
    return cues


def joined(cues: Iterable[Cue]) -> list[Cue]:
    """``cues`` in time order, a cue repeated by the next segment (the same, or continuing
    where it ended) made one again."""
    out: list[Cue] = []
    seen: set[Cue] = set()
    running: dict[tuple[str, str, str], int] = {}
    for cue in sorted(cues, key=lambda c: (c.start, c.end)):
        if cue in seen:
            continue
        seen.add(cue)
        key = (cue.text, cue.settings, cue.identifier)
        running[key] = _merge_into(out, running, cue)
    return [cue for cue in out if cue.end > 0]


def _timestamp(seconds: float) -> str:
    millis = max(0, round(seconds * 1000))
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}.{millis:03d}"


def webvtt_document(cues: Sequence[Cue]) -> str:
    """A WebVTT file holding ``cues`` in time order."""
    lines = ["WEBVTT", ""]
    for cue in sorted(cues, key=lambda c: (c.start, c.end)):
        if cue.identifier:
            lines.append(cue.identifier.replace("\n", " ").replace("-->", "- ->"))
        timing = f"{_timestamp(max(0.0, cue.start))} --> {_timestamp(cue.end)}"
        lines.append(f"{timing} {cue.settings}".rstrip())
        # A blank line would end the cue early: keep the text's lines together.
        lines.extend(line if line.strip() else "\u00a0" for line in cue.text.splitlines())
        lines.append("")
    return "\n".join(lines) + "\n"


# ISO 639-1 (what DASH @lang mostly carries, RFC 5646) to ISO 639-2: the bibliographic code
# where it differs from the terminological one (Matroska wants the former, MP4 the latter).
_ISO639: dict[str, tuple[str, str]] = {
    code: (t, b or t)
    for code, t, b in (
        ("ar", "ara", ""),
        ("bg", "bul", ""),
        ("bn", "ben", ""),
        ("ca", "cat", ""),
        ("cs", "ces", "cze"),
        ("cy", "cym", "wel"),
        ("da", "dan", ""),
        ("de", "deu", "ger"),
        ("el", "ell", "gre"),
        ("en", "eng", ""),
        ("es", "spa", ""),
        ("et", "est", ""),
        ("eu", "eus", "baq"),
        ("fa", "fas", "per"),
        ("fi", "fin", ""),
        ("fr", "fra", "fre"),
        ("ga", "gle", ""),
        ("gl", "glg", ""),
        ("he", "heb", ""),
        ("hi", "hin", ""),
        ("hr", "hrv", ""),
        ("hu", "hun", ""),
        ("hy", "hye", "arm"),
        ("id", "ind", ""),
        ("is", "isl", "ice"),
        ("it", "ita", ""),
        ("ja", "jpn", ""),
        ("ka", "kat", "geo"),
        ("ko", "kor", ""),
        ("lt", "lit", ""),
        ("lv", "lav", ""),
        ("mk", "mkd", "mac"),
        ("ms", "msa", "may"),
        ("nb", "nob", ""),
        ("nl", "nld", "dut"),
        ("nn", "nno", ""),
        ("no", "nor", ""),
        ("pl", "pol", ""),
        ("pt", "por", ""),
        ("ro", "ron", "rum"),
        ("ru", "rus", ""),
        ("sk", "slk", "slo"),
        ("sl", "slv", ""),
        ("sq", "sqi", "alb"),
        ("sr", "srp", ""),
        ("sv", "swe", ""),
        ("ta", "tam", ""),
        ("th", "tha", ""),
        ("tr", "tur", ""),
        ("uk", "ukr", ""),
        ("ur", "urd", ""),
        ("vi", "vie", ""),
        ("zh", "zho", "chi"),
    )
}


def iso639_2(lang: str | None, *, bibliographic: bool) -> str | None:
    """The three-letter code a container's language field takes for a DASH ``@lang`` (an RFC
    5646 tag such as ``fr``, ``pt-BR`` or ``deu``); None when it names no known language."""
    if not lang:
        return None
    primary = lang.split("-", 1)[0].split("_", 1)[0].lower()
    if len(primary) == 3 and primary.isalpha():
        return primary
    codes = _ISO639.get(primary)
    if codes is None:
        return None
    return codes[1] if bibliographic else codes[0]
