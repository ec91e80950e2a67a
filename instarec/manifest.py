"""Pure MPEG-DASH manifest model (ISO/IEC 23009-1).

Parses an MPD into frozen dataclasses and expands each Representation into its init segment and
media segments. No I/O and no clock: the caller passes the manifest bytes, the URL they came from
(after redirects) and, for dynamic manifests, the instant ``now`` to evaluate availability at.

Time conventions used throughout (the recorder, archive and store rely on them):

* ``MediaSegment.start`` is the presentation time in seconds since the start of the
  presentation (``Period@start`` included): ``Period@start + (time - presentationTimeOffset) /
  timescale``. For a dynamic MPD, the wall-clock time of that instant is
  ``availabilityStartTime + start``.
* ``MediaSegment.time`` is the raw media time in timescale ticks, i.e. the ``$Time$`` value
  (``S@t`` for timelines; ``presentationTimeOffset + k * @duration`` for ``$Number$`` +
  ``@duration``; the running sum of durations for a SegmentList). ``None`` for SegmentBase.
* ``MediaSegment.number`` is the ``$Number$`` value (``startNumber + index``) for templates and
  SegmentLists, ``None`` for SegmentBase.
"""

from __future__ import annotations

import enum
import functools
import logging
import math
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from urllib.parse import urljoin

from lxml import etree

from instarec.errors import ManifestError

__all__ = [
    "MAX_MANIFEST_BYTES",
    "AdaptationSet",
    "Addressing",
    "ByteRange",
    "InitSegment",
    "Manifest",
    "MediaSegment",
    "Period",
    "Representation",
    "SegmentBase",
    "SegmentList",
    "SegmentTemplate",
    "TimelineEntry",
    "UTCTiming",
    "compile_template",
    "expand_segments",
    "manifest_to_json",
    "parse_datetime",
    "parse_duration",
    "parse_manifest",
]

log = logging.getLogger(__name__)

MAX_MANIFEST_BYTES = 16 * 1024 * 1024
_BOM = b"\xef\xbb\xbf"
# Float tolerance when dividing durations: 10.0 / 2.0 must give 5 segments, not 6.
_EPS = 1e-9


# --------------------------------------------------------------------------- value types


@dataclass(frozen=True, slots=True)
class ByteRange:
    """HTTP byte range, first and last byte inclusive; ``last`` None means open-ended."""

    first: int
    last: int | None

    def header(self) -> str:
        return f"bytes={self}"

    def __str__(self) -> str:
        return f"{self.first}-" if self.last is None else f"{self.first}-{self.last}"

    @classmethod
    def parse(cls, text: str) -> ByteRange:
        """Parse ``"first-last"`` or ``"first-"`` (the MPD's @range / @mediaRange syntax)."""
        m = re.fullmatch(r"\s*(\d+)\s*-\s*(\d*)\s*", text)
        if m is None:
            raise ManifestError(f"invalid byte range in the manifest: {text!r}")
        first = int(m.group(1))
        last = int(m.group(2)) if m.group(2) else None
        if last is not None and last < first:
            raise ManifestError(f"invalid byte range in the manifest: {text!r}")
        return cls(first, last)


@dataclass(frozen=True, slots=True)
class InitSegment:
    url: str
    byte_range: ByteRange | None


@dataclass(frozen=True, slots=True)
class MediaSegment:
    url: str
    byte_range: ByteRange | None
    start: float
    duration: float | None
    number: int | None
    time: int | None


class Addressing(enum.Enum):
    TIME_TIMELINE = "time_timeline"
    NUMBER_TIMELINE = "number_timeline"
    NUMBER_DURATION = "number_duration"
    SEGMENT_LIST = "segment_list"
    SEGMENT_BASE = "segment_base"


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    """One ``<S>``: ``t`` resolved (defaults to the previous end), ``r`` as written."""

    t: int
    d: int
    r: int


@dataclass(frozen=True, slots=True)
class SegmentTemplate:
    media: str | None
    initialization: str | None
    timescale: int
    start_number: int
    end_number: int | None
    duration: int | float | None  # float only for the rare non-integer @duration seen in the wild
    presentation_time_offset: int
    availability_time_offset: float
    timeline: tuple[TimelineEntry, ...] | None
    # Initialization given as a child element instead of @initialization (MultipleSegmentBase).
    initialization_range: ByteRange | None = None


@dataclass(frozen=True, slots=True)
class SegmentList:
    """A resolved ``SegmentList``: absolute URLs and ranges, inherited attributes applied."""

    timescale: int
    start_number: int
    duration: int | float | None
    presentation_time_offset: int
    timeline: tuple[TimelineEntry, ...] | None
    initialization: InitSegment | None
    segments: tuple[tuple[str, ByteRange | None], ...]


@dataclass(frozen=True, slots=True)
class SegmentBase:
    """A resolved ``SegmentBase`` (or its absence): the representation is one file."""

    timescale: int
    presentation_time_offset: int
    index_range: ByteRange | None
    initialization: InitSegment | None


@dataclass(frozen=True, slots=True)
class UTCTiming:
    scheme: str
    value: str


@dataclass(frozen=True, slots=True)
class Representation:
    id: str
    period_index: int
    adaptation_set_index: int
    content_type: str | None
    mime_type: str | None
    codecs: str | None
    bandwidth: int | None
    width: int | None
    height: int | None
    frame_rate: str | None
    audio_sampling_rate: int | None
    lang: str | None
    drm: bool
    base_url: str
    addressing: Addressing
    template: SegmentTemplate | None
    segment_list: SegmentList | None = None
    segment_base: SegmentBase | None = None
    role: str | None = None  # Role@value of its AdaptationSet: "main", "commentary", "caption"...

    def _template_values(self, number: int | None, time: int | None) -> dict[str, str | int]:
        values: dict[str, str | int] = {"RepresentationID": self.id}
        if self.bandwidth is not None:
            values["Bandwidth"] = self.bandwidth
        if number is not None:
            values["Number"] = number
        if time is not None:
            values["Time"] = time
        return values

    def media_url(self, *, number: int | None = None, time: int | None = None) -> str:
        """Absolute URL of the media template for that ``$Number$`` / ``$Time$``."""
        if self.template is None or self.template.media is None:
            raise ManifestError(f"representation {self.id!r} has no media template")
        expand = compile_template(self.template.media)
        return urljoin(self.base_url, expand(self._template_values(number, time)))

    def init_segment(self) -> InitSegment | None:
        """The initialization segment, or None.

        A SEGMENT_BASE representation is downloaded as one whole file, which holds its own
        initialization, so it has none here (its ranges stay in ``segment_base``).
        """
        if self.template is not None:
            if self.template.initialization is None:
                return None
            # $Number$/$Time$ are not allowed in @initialization (5.3.9.4.4): left as written.
            expand = compile_template(self.template.initialization)
            url = urljoin(self.base_url, expand(self._template_values(None, None)))
            return InitSegment(url, self.template.initialization_range)
        if self.segment_list is not None:
            return self.segment_list.initialization
        return None


@dataclass(frozen=True, slots=True)
class AdaptationSet:
    index: int
    id: str | None
    content_type: str | None
    mime_type: str | None
    lang: str | None
    representations: tuple[Representation, ...]
    role: str | None = None  # the first Role@value ("main", "commentary", "description"...)


@dataclass(frozen=True, slots=True)
class Period:
    index: int
    id: str | None
    start: float
    # Effective duration: @duration, else up to the next Period@start, else up to
    # MPD@mediaPresentationDuration; None when open-ended (live).
    duration: float | None
    representations: tuple[Representation, ...]
    adaptation_sets: tuple[AdaptationSet, ...] = ()

    @property
    def end(self) -> float | None:
        return None if self.duration is None else self.start + self.duration


@dataclass(frozen=True, slots=True)
class Manifest:
    url: str
    type: str
    periods: tuple[Period, ...]
    availability_start_time: datetime | None
    publish_time: datetime | None
    minimum_update_period: float | None
    time_shift_buffer_depth: float | None
    suggested_presentation_delay: float | None
    media_presentation_duration: float | None
    min_buffer_time: float | None
    location: str | None
    utc_timing: tuple[UTCTiming, ...]
    attributes: Mapping[str, str]
    base_url: str = ""
    availability_end_time: datetime | None = None

    @property
    def is_dynamic(self) -> bool:
        return self.type == "dynamic"

    def representations(self) -> Iterator[Representation]:
        for period in self.periods:
            yield from period.representations


# --------------------------------------------------------------------------- scalar parsing

_DURATION_RE = re.compile(
    r"(?P<sign>-)?P(?:(?P<Y>\d+(?:\.\d*)?)Y)?(?:(?P<M>\d+(?:\.\d*)?)M)?(?:(?P<W>\d+(?:\.\d*)?)W)?"
    r"(?:(?P<D>\d+(?:\.\d*)?)D)?(?:T(?:(?P<h>\d+(?:\.\d*)?)H)?(?:(?P<m>\d+(?:\.\d*)?)M)?"
    r"(?:(?P<s>\d+(?:\.\d*)?)S)?)?"
)
# Years and months have no fixed length; DASH durations in practice never use them, and the
# common convention (365 d / 30 d) is what other players use.
_DURATION_UNITS = {"Y": 365 * 86400, "M": 30 * 86400, "W": 7 * 86400, "D": 86400}
_DURATION_UNITS |= {"h": 3600, "m": 60, "s": 1}


def parse_duration(text: str) -> float:
    """Parse an ``xs:duration`` (``PT1H2M3.5S``) into seconds."""
    value = text.strip()
    m = _DURATION_RE.fullmatch(value)
    if m is None or value in ("P", "PT", "-P") or value.endswith("T"):
        raise ManifestError(f"invalid duration in the manifest: {text!r}")
    total = sum(
        float(m.group(unit)) * factor
        for unit, factor in _DURATION_UNITS.items()
        if m.group(unit) is not None
    )
    return -total if m.group("sign") else total


_DATETIME_RE = re.compile(
    r"(?P<date>-?\d{4,}-\d{2}-\d{2})"
    r"(?:[Tt ](?P<h>\d{2}):(?P<m>\d{2})(?::(?P<s>\d{2})(?:\.(?P<f>\d+))?)?)?"
    r"\s*(?P<tz>[Zz]|[+-]\d{2}(?::?\d{2})?)?"
)


def parse_datetime(text: str) -> datetime:
    """Parse an ``xs:dateTime`` into a tz-aware UTC datetime (no offset means UTC)."""
    m = _DATETIME_RE.fullmatch(text.strip())
    if m is None:
        raise ManifestError(f"invalid date-time in the manifest: {text!r}")
    try:
        year, month, day = (int(x) for x in m.group("date").split("-"))
        fraction = (m.group("f") or "0")[:6].ljust(6, "0")
        result = datetime(
            year,
            month,
            day,
            int(m.group("h") or 0),
            int(m.group("m") or 0),
            int(m.group("s") or 0),
            int(fraction),
            tzinfo=UTC,
        )
    except ValueError as exc:
        raise ManifestError(f"invalid date-time in the manifest: {text!r}") from exc
    tz = m.group("tz")
    if tz and tz not in "Zz":
        sign = -1 if tz[0] == "-" else 1
        digits = tz[1:].replace(":", "")
        offset = timedelta(hours=int(digits[:2]), minutes=int(digits[2:4] or 0))
        # 20:48:15-07:00 is 03:48:15Z the next day: subtract the offset.
        result -= sign * offset
    return result


def _numeric(text: str, what: str) -> int | float:
    """An integer, or a finite float where a packager wrote one; ManifestError otherwise."""
    try:
        return int(text.strip())
    except ValueError:
        try:
            value = float(text)
        except ValueError as exc:
            raise ManifestError(f"invalid {what} in the manifest: {text!r}") from exc
        if not math.isfinite(value):
            raise ManifestError(f"invalid {what} in the manifest: {text!r}") from None
        return value


def _parse_int(text: str, what: str) -> int:
    value = _numeric(text, what)
    if isinstance(value, float):
        if not value.is_integer():
            raise ManifestError(f"invalid {what} in the manifest: {text!r}")
        return int(value)
    return value


def _parse_number(text: str, what: str) -> int | float:
    """An integer attribute that some packagers write as a float (``2000000.0``)."""
    value = _numeric(text, what)
    if isinstance(value, float):
        if value <= 0:
            raise ManifestError(f"invalid {what} in the manifest: {text!r}")
        return int(value) if value.is_integer() else value
    return value


def _parse_float(text: str, what: str) -> float:
    value = text.strip()
    if value == "INF":  # xs:double spelling of infinity (low-latency availabilityTimeOffset)
        return math.inf
    try:
        return float(value)
    except ValueError as exc:
        raise ManifestError(f"invalid {what} in the manifest: {text!r}") from exc


# --------------------------------------------------------------------------- templates

_IDENTIFIER_RE = re.compile(
    r"\$\$|\$(RepresentationID|Number|Time|Bandwidth|SubNumber)(?:%0?(\d*)([diuxX]))?\$"
)

TemplateFunction = Callable[[Mapping[str, "str | int"]], str]


@functools.lru_cache(maxsize=1024)
def compile_template(template: str) -> TemplateFunction:
    """Compile a SegmentTemplate pattern once into a function of the identifier values.

    ``$$`` is a literal ``$``; ``$Name%0Nd$`` pads the value to N digits. An identifier whose
    value is not given is left as written (as a malformed ``$Number$`` in @initialization).
    """
    parts: list[str | tuple[str, str, str]] = []
    pos = 0
    for m in _IDENTIFIER_RE.finditer(template):
        if m.start() > pos:
            parts.append(template[pos : m.start()])
        if m.group(0) == "$$":
            parts.append("$")
        else:
            name = m.group(1)
            width = m.group(2) or ""
            conv = m.group(3) or "d"
            spec = f"0{width}{conv}" if width else conv
            if conv in "iu":
                spec = spec[:-1] + "d"
            parts.append((name, spec, m.group(0)))
        pos = m.end()
    if pos < len(template):
        parts.append(template[pos:])

    frozen = tuple(parts)

    def expand(values: Mapping[str, str | int]) -> str:
        out: list[str] = []
        for part in frozen:
            if isinstance(part, str):
                out.append(part)
                continue
            name, spec, literal = part
            value = values.get(name)
            if value is None:
                out.append(literal)
            elif isinstance(value, int):
                out.append(format(value, spec))
            else:
                out.append(value)  # RepresentationID: a string, format tags do not apply
        return "".join(out)

    return expand


# --------------------------------------------------------------------------- XML helpers


def _local(tag: object) -> str:
    if not isinstance(tag, str):
        return ""  # comments and processing instructions
    return tag.rsplit("}", 1)[-1]


def _children(el: etree._Element | None, name: str) -> list[etree._Element]:
    if el is None:
        return []
    return [c for c in el if _local(c.tag) == name]


def _child(el: etree._Element | None, name: str) -> etree._Element | None:
    for c in _children(el, name):
        return c
    return None


def _attr(el: etree._Element | None, name: str) -> str | None:
    """Attribute by local name (MPD attributes are unqualified; namespaced ones are vendor)."""
    if el is None:
        return None
    value = el.get(name)
    return value


def _text(el: etree._Element) -> str:
    return (el.text or "").strip()


def _resolve_base(parent: str, el: etree._Element | None) -> str:
    base = _child(el, "BaseURL")
    if base is None:
        return parent
    text = _text(base)
    return urljoin(parent, text) if text else parent


def _load_xml(data: bytes) -> etree._Element:
    if len(data) > MAX_MANIFEST_BYTES:
        raise ManifestError(
            f"the manifest is too large ({len(data)} bytes, limit {MAX_MANIFEST_BYTES})"
        )
    if data.startswith(_BOM):
        data = data[len(_BOM) :]
    head = data.lstrip()
    if not head:
        raise ManifestError("the server sent an empty body, not a DASH manifest")
    lowered = head[:512].lower()
    if lowered.startswith((b"<!doctype html", b"<html")) or (
        b"<html" in lowered and b"<mpd" not in lowered
    ):
        raise ManifestError("the server sent an HTML page, not a DASH manifest")
    parser = etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
    )
    try:
        root = etree.fromstring(head, parser)
    except etree.XMLSyntaxError as exc:
        raise ManifestError(f"the manifest is not well-formed XML: {exc}") from exc
    if root is None:
        raise ManifestError("the server sent an empty body, not a DASH manifest")
    name = _local(root.tag)
    if name.lower() == "html":
        raise ManifestError("the server sent an HTML page, not a DASH manifest")
    if name != "MPD":
        raise ManifestError(f"the document is not a DASH manifest (root element <{name}>)")
    return root


def _attribute_name(root: etree._Element, key: str) -> str:
    if not key.startswith("{"):
        return key
    ns, local = key[1:].split("}", 1)
    for prefix, uri in root.nsmap.items():
        if uri == ns and prefix:
            return f"{prefix}:{local}"
    return key


# --------------------------------------------------------------------------- segment info merge

_SEGMENT_INFO = ("SegmentTemplate", "SegmentList", "SegmentBase")


def _merged_attr(chain: list[etree._Element], name: str) -> str | None:
    """The lowest level's attribute wins; levels without it inherit from above."""
    for el in reversed(chain):
        value = el.get(name)
        if value is not None:
            return value
    return None


def _merged_child(chain: list[etree._Element], name: str) -> etree._Element | None:
    for el in reversed(chain):
        child = _child(el, name)
        if child is not None:
            return child
    return None


def _parse_timeline(el: etree._Element | None) -> tuple[TimelineEntry, ...] | None:
    if el is None:
        return None
    entries: list[TimelineEntry] = []
    next_t = 0
    for s in _children(el, "S"):
        d_text = s.get("d")
        if d_text is None:
            raise ManifestError("a SegmentTimeline <S> has no @d")
        d = _parse_int(d_text, "S@d")
        if d <= 0:
            raise ManifestError(f"a SegmentTimeline <S> has a non-positive @d ({d})")
        t_text = s.get("t")
        t = _parse_int(t_text, "S@t") if t_text is not None else next_t
        r = _parse_int(s.get("r") or "0", "S@r")
        entries.append(TimelineEntry(t, d, r))
        # After r=-1 the next S must carry @t; if it does not, count the S once.
        next_t = t + d * (max(r, 0) + 1)
    return tuple(entries)


def _range(text: str | None) -> ByteRange | None:
    return None if text is None else ByteRange.parse(text)


def _content_type(
    content_type: str | None, mime_type: str | None, codecs: str | None
) -> str | None:
    if content_type in ("video", "audio", "text"):
        return content_type
    if content_type:
        return None  # image, application: not something we record
    if not mime_type:
        return None
    main = mime_type.split("/", 1)[0].lower()
    if main in ("video", "audio", "text"):
        return main
    lowered = mime_type.lower()
    if "ttml" in lowered or "vtt" in lowered:
        return "text"
    if lowered == "application/mp4" and codecs and codecs.split(".")[0] in ("stpp", "wvtt"):
        return "text"
    return None


# --------------------------------------------------------------------------- parse


def parse_manifest(data: bytes, url: str) -> Manifest:
    """Parse MPD bytes fetched from ``url`` (the final URL after redirects)."""
    root = _load_xml(data)
    try:
        return _parse_root(root, url)
    except (ValueError, OverflowError) as exc:
        raise ManifestError(f"the manifest could not be read: {exc}") from exc


def _opt_duration(el: etree._Element, name: str) -> float | None:
    value = el.get(name)
    return None if value is None else parse_duration(value)


def _opt_datetime(el: etree._Element, name: str) -> datetime | None:
    value = el.get(name)
    return None if value is None else parse_datetime(value)


def _parse_root(root: etree._Element, url: str) -> Manifest:
    mpd_type = (root.get("type") or "static").strip()
    if mpd_type not in ("static", "dynamic"):
        raise ManifestError(f"unknown MPD@type {mpd_type!r}")
    base = _resolve_base(url, root)
    location_el = _child(root, "Location")
    location = urljoin(url, _text(location_el)) if location_el is not None else None
    mpd_duration = _opt_duration(root, "mediaPresentationDuration")

    periods = _parse_periods(_children(root, "Period"), mpd_duration, base)
    utc = tuple(
        UTCTiming((t.get("schemeIdUri") or "").strip(), (t.get("value") or "").strip())
        for t in _children(root, "UTCTiming")
    )
    attributes = MappingProxyType(
        {_attribute_name(root, str(k)): str(v) for k, v in root.attrib.items()}
    )
    return Manifest(
        url=url,
        type=mpd_type,
        periods=tuple(periods),
        availability_start_time=_opt_datetime(root, "availabilityStartTime"),
        publish_time=_opt_datetime(root, "publishTime"),
        minimum_update_period=_opt_duration(root, "minimumUpdatePeriod"),
        time_shift_buffer_depth=_opt_duration(root, "timeShiftBufferDepth"),
        suggested_presentation_delay=_opt_duration(root, "suggestedPresentationDelay"),
        media_presentation_duration=mpd_duration,
        min_buffer_time=_opt_duration(root, "minBufferTime"),
        location=location,
        utc_timing=utc,
        attributes=attributes,
        base_url=base,
        availability_end_time=_opt_datetime(root, "availabilityEndTime"),
    )


def _parse_periods(
    period_els: list[etree._Element], mpd_duration: float | None, base: str
) -> list[Period]:
    # Period@start defaults to the previous Period's start + duration (5.3.2.1); the first
    # one of a static MPD starts at 0 and so does, in practice, a dynamic one without it.
    starts: list[float] = []
    for i, p in enumerate(period_els):
        start_text = p.get("start")
        if start_text is not None:
            starts.append(parse_duration(start_text))
        elif i == 0:
            starts.append(0.0)
        else:
            prev_duration = _opt_duration(period_els[i - 1], "duration")
            starts.append(starts[-1] + (prev_duration or 0.0))
    periods: list[Period] = []
    for i, p in enumerate(period_els):
        duration = _opt_duration(p, "duration")
        if duration is None and i + 1 < len(period_els) and starts[i + 1] > starts[i]:
            duration = starts[i + 1] - starts[i]
        if duration is None and mpd_duration is not None:
            duration = mpd_duration - starts[i]
            if duration <= 0:
                # A Period cannot end before it starts: the packager evidently wrote the
                # Period's own length as the presentation duration (both reference players
                # read it that way).
                duration = mpd_duration
        periods.append(_parse_period(p, i, starts[i], duration, base))
    return periods


def _parse_period(
    p: etree._Element, index: int, start: float, duration: float | None, parent_base: str
) -> Period:
    base = _resolve_base(parent_base, p)
    adaptation_sets: list[AdaptationSet] = []
    reps: list[Representation] = []
    for a_index, a in enumerate(_children(p, "AdaptationSet")):
        a_base = _resolve_base(base, a)
        a_drm = _child(a, "ContentProtection") is not None
        a_reps: list[Representation] = []
        for r in _children(a, "Representation"):
            rep = _parse_representation(p, a, r, index, a_index, a_base, a_drm)
            a_reps.append(rep)
        adaptation_sets.append(
            AdaptationSet(
                index=a_index,
                id=a.get("id"),
                content_type=_content_type(
                    a.get("contentType"), a.get("mimeType"), a.get("codecs")
                ),
                mime_type=a.get("mimeType"),
                lang=a.get("lang"),
                representations=tuple(a_reps),
                role=_role(a),
            )
        )
        reps.extend(a_reps)
    return Period(
        index=index,
        id=p.get("id"),
        start=start,
        duration=duration,
        representations=tuple(reps),
        adaptation_sets=tuple(adaptation_sets),
    )


def _role(el: etree._Element) -> str | None:
    """The first Role's value (the DASH role scheme, urn:mpeg:dash:role:2011, or another)."""
    role = _child(el, "Role")
    value = role.get("value") if role is not None else None
    return value.strip() if value else None


def _parse_representation(
    p: etree._Element,
    a: etree._Element,
    r: etree._Element,
    period_index: int,
    a_index: int,
    a_base: str,
    a_drm: bool,
) -> Representation:
    rep_id = r.get("id")
    if rep_id is None:
        raise ManifestError(
            f"a Representation in Period {period_index} AdaptationSet {a_index} has no @id"
        )
    base = _resolve_base(a_base, r)

    def common(name: str) -> str | None:
        # Common attributes: Representation overrides AdaptationSet (5.3.7).
        value = r.get(name)
        return value if value is not None else a.get(name)

    def common_int(name: str) -> int | None:
        value = common(name)
        return None if value is None else _parse_int(value, f"@{name}")

    mime_type = common("mimeType")
    codecs = common("codecs")
    bandwidth_text = r.get("bandwidth")
    bandwidth = None if bandwidth_text is None else _parse_int(bandwidth_text, "@bandwidth")
    rate = common("audioSamplingRate")
    # audioSamplingRate may be "min max"; keep the first value.
    audio_sampling_rate = None if rate is None else _parse_int(rate.split()[0], "@audioSampling")

    addressing, template, segment_list, segment_base = _segment_info(p, a, r, rep_id, base)
    return Representation(
        id=rep_id,
        period_index=period_index,
        adaptation_set_index=a_index,
        content_type=_content_type(a.get("contentType"), mime_type, codecs),
        mime_type=mime_type,
        codecs=codecs,
        bandwidth=bandwidth,
        width=common_int("width"),
        height=common_int("height"),
        frame_rate=common("frameRate"),
        audio_sampling_rate=audio_sampling_rate,
        lang=common("lang"),
        drm=a_drm or _child(r, "ContentProtection") is not None,
        base_url=base,
        addressing=addressing,
        template=template,
        segment_list=segment_list,
        segment_base=segment_base,
        role=_role(r) or _role(a),
    )


def _segment_info(
    p: etree._Element, a: etree._Element, r: etree._Element, rep_id: str, base: str
) -> tuple[Addressing, SegmentTemplate | None, SegmentList | None, SegmentBase | None]:
    """How a representation's segments are addressed, and the element that says so."""
    # The lowest level carrying any segment information decides the addressing kind; its
    # attributes inherit, one by one, from the same kind of element higher up.
    levels = (p, a, r)
    kind = None
    for level in reversed(levels):
        kind = next((name for name in _SEGMENT_INFO if _child(level, name) is not None), None)
        if kind is not None:
            break
    chain = (
        [el for el in (_child(level, kind) for level in levels) if el is not None] if kind else []
    )
    if kind == "SegmentList":
        return Addressing.SEGMENT_LIST, None, _build_list(chain, base), None
    if kind != "SegmentTemplate":
        return Addressing.SEGMENT_BASE, None, None, _build_base(chain, base)
    template = _build_template(chain)
    if template.timeline is not None:
        has_time = "$Time" in (template.media or "")
        addressing = Addressing.TIME_TIMELINE if has_time else Addressing.NUMBER_TIMELINE
        return addressing, template, None, None
    if template.duration is None and template.media is not None:
        log.warning(
            "SegmentTemplate of representation %r has neither @duration nor a timeline", rep_id
        )
    return Addressing.NUMBER_DURATION, template, None, None


def _common_base(chain: list[etree._Element]) -> tuple[int, int, int | float | None, int]:
    timescale_text = _merged_attr(chain, "timescale")
    timescale = 1 if timescale_text is None else _parse_int(timescale_text, "@timescale")
    if timescale <= 0:
        raise ManifestError(f"invalid @timescale in the manifest: {timescale}")
    pto_text = _merged_attr(chain, "presentationTimeOffset")
    pto = 0 if pto_text is None else _parse_int(pto_text, "@presentationTimeOffset")
    duration_text = _merged_attr(chain, "duration")
    duration = None if duration_text is None else _parse_number(duration_text, "@duration")
    start_text = _merged_attr(chain, "startNumber")
    start_number = 1 if start_text is None else _parse_int(start_text, "@startNumber")
    return timescale, pto, duration, start_number


def _build_template(chain: list[etree._Element]) -> SegmentTemplate:
    timescale, pto, duration, start_number = _common_base(chain)
    end_text = _merged_attr(chain, "endNumber")
    ato_text = _merged_attr(chain, "availabilityTimeOffset")
    initialization = _merged_attr(chain, "initialization")
    init_range = None
    if initialization is None:
        init_el = _merged_child(chain, "Initialization")
        if init_el is not None and init_el.get("sourceURL") is not None:
            initialization = init_el.get("sourceURL")
            init_range = _range(init_el.get("range"))
    return SegmentTemplate(
        media=_merged_attr(chain, "media"),
        initialization=initialization,
        timescale=timescale,
        start_number=start_number,
        end_number=None if end_text is None else _parse_int(end_text, "@endNumber"),
        duration=duration,
        presentation_time_offset=pto,
        availability_time_offset=0.0
        if ato_text is None
        else _parse_float(ato_text, "@availabilityTimeOffset"),
        timeline=_parse_timeline(_merged_child(chain, "SegmentTimeline")),
        initialization_range=init_range,
    )


def _initialization(chain: list[etree._Element], base: str) -> InitSegment | None:
    init_el = _merged_child(chain, "Initialization")
    if init_el is None:
        return None
    source = init_el.get("sourceURL")
    # No @sourceURL: the initialization lives in the Representation's own BaseURL (5.3.9.2).
    url = urljoin(base, source) if source else base
    return InitSegment(url, _range(init_el.get("range")))


def _build_list(chain: list[etree._Element], base: str) -> SegmentList:
    timescale, pto, duration, start_number = _common_base(chain)
    # SegmentURLs are not merged across levels: the lowest list that has any is the list.
    urls: list[tuple[str, ByteRange | None]] = []
    for el in reversed(chain):
        seg_urls = _children(el, "SegmentURL")
        if seg_urls:
            for s in seg_urls:
                media = s.get("media")
                url = urljoin(base, media) if media else base
                urls.append((url, _range(s.get("mediaRange"))))
            break
    return SegmentList(
        timescale=timescale,
        start_number=start_number,
        duration=duration,
        presentation_time_offset=pto,
        timeline=_parse_timeline(_merged_child(chain, "SegmentTimeline")),
        initialization=_initialization(chain, base),
        segments=tuple(urls),
    )


def _build_base(chain: list[etree._Element], base: str) -> SegmentBase:
    timescale, pto, _duration, _start = _common_base(chain)
    return SegmentBase(
        timescale=timescale,
        presentation_time_offset=pto,
        index_range=_range(_merged_attr(chain, "indexRange")),
        initialization=_initialization(chain, base),
    )


# --------------------------------------------------------------------------- expansion


def _elapsed(manifest: Manifest, period: Period, now: datetime) -> float | None:
    """Seconds between the Period's wall-clock start and ``now`` (dynamic only)."""
    if manifest.availability_start_time is None:
        return None
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    return (now - manifest.availability_start_time).total_seconds() - period.start


def _timeline_segments(
    entries: tuple[TimelineEntry, ...],
    *,
    timescale: int,
    pto: int,
    start_number: int,
    period: Period,
    live_edge_ticks: float | None,
) -> Iterator[tuple[int, int, int]]:
    """Yield (number, t, d) for every segment of a timeline, repeats expanded."""
    period_end_ticks = None if period.duration is None else pto + period.duration * timescale
    number = start_number
    for i, s in enumerate(entries):
        if s.r >= 0:
            count = s.r + 1
        else:
            # r < 0: repeat until the next S@t, else the Period end, else the live edge.
            if i + 1 < len(entries):
                end = float(entries[i + 1].t)
                count = math.ceil((end - s.t) / s.d - _EPS)
            elif period_end_ticks is not None:
                count = math.ceil((period_end_ticks - s.t) / s.d - _EPS)
            elif live_edge_ticks is not None:
                # Only segments complete at the live edge exist yet.
                count = math.floor((live_edge_ticks - s.t) / s.d + _EPS)
            else:
                count = 1
            count = max(count, 0)
        t = s.t
        for _ in range(count):
            yield number, t, s.d
            number += 1
            t += s.d


def expand_segments(
    manifest: Manifest,
    rep: Representation,
    now: datetime | None,
    *,
    time_shift_buffer: bool | None = None,
) -> list[MediaSegment]:
    """Every media segment of ``rep`` published and available at ``now``.

    Static manifests: every segment. Dynamic manifests: for timelines and SegmentLists, every
    listed segment (all are published; a recorder wants the whole list); for ``$Number$`` +
    ``@duration``, the numbers the wall clock makes available, from the start of the
    ``timeShiftBufferDepth`` window (or ``startNumber`` when there is none) to the live edge.

    ``time_shift_buffer``: None (default) applies ``timeShiftBufferDepth`` to ``$Number$`` +
    ``@duration`` only; True applies it to every mode; False never (``$Number$`` + ``@duration``
    then starts at ``startNumber``, which is what an archive search wants to know).
    """
    period = manifest.periods[rep.period_index]
    dynamic = manifest.is_dynamic and now is not None
    elapsed = _elapsed(manifest, period, now) if dynamic and now is not None else None

    if rep.addressing is Addressing.SEGMENT_BASE:
        return [MediaSegment(rep.base_url, None, period.start, period.duration, None, None)]

    if rep.addressing is Addressing.SEGMENT_LIST:
        segments = _expand_list(rep, period)
    elif rep.addressing is Addressing.NUMBER_DURATION:
        apply_tsbd = time_shift_buffer is not False
        return _expand_number_duration(manifest, rep, period, elapsed, apply_tsbd)
    else:
        segments = _expand_timeline(rep, period, elapsed)

    if time_shift_buffer and elapsed is not None and manifest.time_shift_buffer_depth is not None:
        window_start = period.start + elapsed - manifest.time_shift_buffer_depth
        segments = [
            s for s in segments if s.duration is None or s.start + s.duration >= window_start
        ]
    return segments


def _expand_timeline(
    rep: Representation, period: Period, elapsed: float | None
) -> list[MediaSegment]:
    tpl = rep.template
    assert tpl is not None and tpl.timeline is not None
    if tpl.media is None:
        return []
    expand = compile_template(tpl.media)
    values = rep._template_values(None, None)
    live_edge = None
    if elapsed is not None:
        live_edge = tpl.presentation_time_offset + elapsed * tpl.timescale
    out: list[MediaSegment] = []
    for number, t, d in _timeline_segments(
        tpl.timeline,
        timescale=tpl.timescale,
        pto=tpl.presentation_time_offset,
        start_number=tpl.start_number,
        period=period,
        live_edge_ticks=live_edge,
    ):
        if tpl.end_number is not None and number > tpl.end_number:
            break
        values["Number"] = number
        values["Time"] = t
        out.append(
            MediaSegment(
                url=urljoin(rep.base_url, expand(values)),
                byte_range=None,
                start=period.start + (t - tpl.presentation_time_offset) / tpl.timescale,
                duration=d / tpl.timescale,
                number=number,
                time=t,
            )
        )
    return out


def _expand_list(rep: Representation, period: Period) -> list[MediaSegment]:
    sl = rep.segment_list
    assert sl is not None
    timings: list[tuple[int, int | float | None]] = []
    if sl.timeline is not None:
        timings = [
            (t, d)
            for _n, t, d in _timeline_segments(
                sl.timeline,
                timescale=sl.timescale,
                pto=sl.presentation_time_offset,
                start_number=sl.start_number,
                period=period,
                live_edge_ticks=None,
            )
        ]
    out: list[MediaSegment] = []
    t_running: int | float = sl.presentation_time_offset
    for i, (url, byte_range) in enumerate(sl.segments):
        t: int | float
        duration: int | float | None
        if i < len(timings):
            t, duration = timings[i]
        else:
            t = t_running
            duration = sl.duration
        out.append(
            MediaSegment(
                url=url,
                byte_range=byte_range,
                start=period.start + (t - sl.presentation_time_offset) / sl.timescale,
                duration=None if duration is None else duration / sl.timescale,
                number=sl.start_number + i,
                time=int(t),
            )
        )
        t_running = t + (duration or 0)
    return out


def _expand_number_duration(
    manifest: Manifest,
    rep: Representation,
    period: Period,
    elapsed: float | None,
    apply_tsbd: bool,
) -> list[MediaSegment]:
    tpl = rep.template
    assert tpl is not None
    if tpl.media is None or tpl.duration is None:
        return []
    seg = tpl.duration / tpl.timescale  # seconds
    first = 0  # 0-based index from startNumber
    # The Period end bounds the count: ceil(D / d), the last segment possibly short (5.3.9.5.3).
    limit: int | None = None
    if period.duration is not None:
        limit = max(0, math.ceil(period.duration / seg - _EPS))
    if elapsed is not None:
        # Segment k is available once its end is reached: AST + Period@start + (k+1)·d <=
        # now + availabilityTimeOffset. PTO does not move availability. An offset beyond one
        # segment (e.g. INF) cannot make a segment available before it begins, so it is capped
        # at d: then a segment is available from its start.
        ato = min(tpl.availability_time_offset, seg)
        available = max(0, math.floor((elapsed + ato) / seg + _EPS))
        limit = available if limit is None else min(limit, available)
        tsbd = manifest.time_shift_buffer_depth
        if apply_tsbd and tsbd is not None:
            # Still listed while its end lies within timeShiftBufferDepth of now.
            first = max(0, math.ceil((elapsed - tsbd) / seg - _EPS) - 1)
    if limit is None:
        log.warning("representation %r: $Number$ template with no Period end and no clock", rep.id)
        return []
    if tpl.end_number is not None:
        limit = min(limit, tpl.end_number - tpl.start_number + 1)
    expand = compile_template(tpl.media)
    values = rep._template_values(None, None)
    out: list[MediaSegment] = []
    for k in range(first, limit):
        number = tpl.start_number + k
        time = tpl.presentation_time_offset + k * tpl.duration
        values["Number"] = number
        values["Time"] = int(time)
        start = period.start + k * seg
        # The last segment may be cut by the Period end; its duration stays the nominal one,
        # which is what the media holds (the Period end only truncates presentation).
        duration = seg
        out.append(
            MediaSegment(
                url=urljoin(rep.base_url, expand(values)),
                byte_range=None,
                start=start,
                duration=duration,
                number=number,
                time=int(time),
            )
        )
    return out


# --------------------------------------------------------------------------- JSON


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def _range_json(value: ByteRange | None) -> str | None:
    return None if value is None else str(value)


def manifest_to_json(manifest: Manifest, now: datetime | None) -> dict[str, object]:
    """The ``--dump-json`` document: the corpus representation schema plus manifest fields."""
    reps: list[dict[str, object]] = []
    for rep in manifest.representations():
        init = rep.init_segment()
        segments = expand_segments(manifest, rep, now)
        reps.append(
            {
                "period": rep.period_index,
                "adaptation_set": rep.adaptation_set_index,
                "id": rep.id,
                "content_type": rep.content_type,
                "mime_type": rep.mime_type,
                "codecs": rep.codecs,
                "bandwidth": rep.bandwidth,
                "width": rep.width,
                "height": rep.height,
                "frame_rate": rep.frame_rate,
                "audio_sampling_rate": rep.audio_sampling_rate,
                "lang": rep.lang,
                "role": rep.role,
                "drm": rep.drm,
                "addressing": rep.addressing.value,
                "init": None
                if init is None
                else {"url": init.url, "range": _range_json(init.byte_range)},
                "segments": [
                    {
                        "url": s.url,
                        "range": _range_json(s.byte_range),
                        "duration": s.duration,
                        "start": s.start,
                        "number": s.number,
                        "time": s.time,
                    }
                    for s in segments
                ],
                "segment_count": len(segments),
            }
        )
    return {
        "type": manifest.type,
        "url": manifest.url,
        "location": manifest.location,
        "now": _iso(now),
        "availability_start_time": _iso(manifest.availability_start_time),
        "publish_time": _iso(manifest.publish_time),
        "minimum_update_period": manifest.minimum_update_period,
        "time_shift_buffer_depth": manifest.time_shift_buffer_depth,
        "media_presentation_duration": manifest.media_presentation_duration,
        "utc_timing": [{"scheme": u.scheme, "value": u.value} for u in manifest.utc_timing],
        "periods": [
            {"index": p.index, "id": p.id, "start": p.start, "duration": p.duration}
            for p in manifest.periods
        ],
        "attributes": dict(manifest.attributes),
        "representations": reps,
    }
