"""The broadcast timeline of the simulated origin and the MPD rendering for each shape.

Pure code: no clock and no I/O. :class:`Broadcast` turns a looped test media into the
timeline of a live broadcast (which segment exists at which virtual time, under which URL key)
and :func:`render_manifest` writes the MPD that a CDN would serve at virtual time ``now``.

Broadcast model: virtual time 0 is the start of the broadcast. Segment ``i`` becomes available
once the virtual time reaches its end, ``start_seconds(i) + duration_seconds(i)`` (relative to
segment 0's start). The broadcast ends with the end of its last segment. The real (wall) time
of virtual time ``v`` is :data:`EPOCH` + ``v``: that is ``availabilityStartTime`` and what the
``/time`` endpoint (UTCTiming, urn:mpeg:dash:utc:http-iso:2014) answers.

Instagram ``$Time$`` rule
-------------------------
Video and audio share one ``$Time$`` value per segment, in milliseconds (``timescale="1000"``
in the MPD for both tracks). For segment ``i`` with video ``tfdt`` ``t_i`` in the video track's
media timescale ``ts``::

    time_ms(i) = floor(t_i * 1000 / ts)                 (integer arithmetic: t_i * 1000 // ts)

and since the media timeline is continuous, ``t_{i+1} = t_i + sum of segment i's sample
durations``, so a client holding segment ``i``'s video bytes derives the next URL time as
``(tfdt + duration) * 1000 // ts`` (tfdt and summed durations from the first ``moof``...
every ``moof`` of the segment, as ``instarec.mp4.parse_fragment`` reports them). The MPD lists
``<S t="time_ms(i)" d="time_ms(i+1) - time_ms(i)"/>`` with an explicit ``t`` on every entry,
and ``publishFrameTime`` / ``firstAvTimeMs`` are ``time_ms(0)``, the time of the broadcast's
first segment (as Facebook's live manifests do).
"""

from __future__ import annotations

import bisect
import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from hashlib import sha256
from typing import Protocol

from lxml import etree

from instarec.testing.periods import PeriodPlan

__all__ = [
    "EPOCH",
    "SHAPES",
    "Broadcast",
    "LoopedMediaLike",
    "TrackDescription",
    "format_duration",
    "iso_time",
    "render_manifest",
]

SHAPES = ("instagram", "time", "number_timeline", "number_duration", "static")
DASH_NS = "urn:mpeg:dash:schema:mpd:2011"
UTC_HTTP_ISO = "urn:mpeg:dash:utc:http-iso:2014"
LIVE_PROFILE = "urn:mpeg:dash:profile:isoff-live:2011"
# Wall time of virtual second 0. Fixed so that manifests do not depend on the host clock: a
# client that wants the live edge of a $Number$+@duration stream must use the UTCTiming element.
EPOCH = datetime(2024, 1, 1, tzinfo=UTC)


class LoopedMediaLike(Protocol):
    """The part of ``instarec.testing.media.LoopedMedia`` the origin uses."""

    count: int

    def segment_info(self, kind: str, i: int) -> object: ...  # .t, .d, .size
    def segment_bytes(self, kind: str, i: int) -> bytes: ...
    def start_seconds(self, i: int) -> float: ...
    def duration_seconds(self, i: int) -> float: ...
    def video_frames(self, i: int) -> int: ...


@dataclass(frozen=True, slots=True)
class TrackDescription:
    """What the MPD says about one track (from ``TrackMedia`` and ``MediaSpec``)."""

    kind: str  # the track's name: "video", "audio", or a further one ("audio-fr", "text-en")
    rep_id: str
    timescale: int
    codecs: str
    bandwidth: int
    width: int | None = None
    height: int | None = None
    fps: int | None = None
    audio_rate: int | None = None
    lang: str | None = None
    plain_text: bool = False  # WebVTT files as segments: text/vtt, no initialization
    role: str | None = None  # Role@value (urn:mpeg:dash:role:2011) of its AdaptationSet

    @property
    def content_type(self) -> str:
        """ "video", "audio" or "text"."""
        return self.kind.split("-", 1)[0]

    @property
    def mime_type(self) -> str:
        # Text carried in MP4 (wvtt, stpp) is application/mp4 (RFC 4337, DASH-IF IOP).
        if self.plain_text:
            return "text/vtt"
        return "application/mp4" if self.content_type == "text" else f"{self.content_type}/mp4"

    @property
    def extension(self) -> str:
        # Facebook's naming: .m4v / .m4a
        return {"video": "m4v", "audio": "m4a"}.get(self.content_type, "mp4")


def iso_time(moment: datetime) -> str:
    """xs:dateTime in UTC with milliseconds, e.g. 2024-01-01T00:00:12.345Z."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def format_duration(seconds: float) -> str:
    """xs:duration in seconds, e.g. PT12.345S."""
    return f"PT{max(seconds, 0.0):.3f}S"


def sign(secret: bytes, scope: str, expiry: str) -> str:
    """The ``oh`` token of a signed URL: an HMAC of its scope and ``oe`` expiry."""
    return hmac.new(secret, f"{scope}:{expiry}".encode(), sha256).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class UrlSigner:
    """Instagram's signed URLs: an ``oh`` HMAC of the URL's scope and its ``oe`` expiry."""

    secret: bytes | None  # None: URLs are not signed
    expiry: str

    def query(self, scope: str) -> str:
        """The signed query string (``oh``/``oe``) for URLs of ``scope``; '' when unsigned."""
        if self.secret is None:
            return ""
        return f"?oh={sign(self.secret, scope, self.expiry)}&oe={self.expiry}"

    def check(self, scope: str, oh: str | None, oe: str | None) -> bool:
        if self.secret is None:
            return True
        if not oh or not oe:
            return False
        return hmac.compare_digest(oh, sign(self.secret, scope, oe)) and oe == self.expiry


def _check_arguments(
    shape: str,
    tracks: Sequence[TrackDescription],
    window: int,
    retention: int | None,
    timescale: int | None,
    period_starts: Sequence[float] = (),
) -> None:
    if period_starts and shape in ("instagram", "number_duration"):
        raise ValueError(f"the {shape} shape has a single Period")
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; expected one of {', '.join(SHAPES)}")
    if not tracks:
        raise ValueError("a broadcast needs at least one track")
    if window < 1:
        raise ValueError("window must be at least 1")
    if retention is not None and retention < 1:
        raise ValueError("retention must be None or at least 1")
    if timescale is not None and timescale < 1:
        raise ValueError("timescale must be None or a positive number of ticks per second")


def _number_keys(
    shape: str, periods: PeriodPlan, gaps: frozenset[int], gaps_listed: bool, start_number: int
) -> list[int | None] | None:
    """The $Number$ of each segment, for the shapes named by number (None for the others);
    they restart with each Period."""
    return periods.renumber(
        _broadcast_numbers(shape, periods.count, gaps, gaps_listed, start_number), start_number
    )


def _broadcast_numbers(
    shape: str, count: int, gaps: frozenset[int], gaps_listed: bool, start_number: int
) -> list[int | None] | None:
    if shape == "number_timeline" and not gaps_listed:
        # A hole left out of a $Number$ timeline consumes no number: the packager numbers the
        # segments it makes, so the one after the hole is the next number (and the hole has
        # no URL at all).
        numbers: list[int | None] = []
        number = start_number
        for i in range(count):
            numbers.append(None if i in gaps else number)
            number += i not in gaps
        return numbers
    if shape in ("number_timeline", "number_duration"):
        return list(range(start_number, start_number + count))
    return None


def _milliseconds(td: list[tuple[int, int]], timescale: int) -> tuple[list[int], int]:
    """Instagram's $Time$ of each segment, and where the last one ends (milliseconds)."""
    return [t * 1000 // timescale for t, _ in td], sum(td[-1]) * 1000 // timescale


def _raw_times(media: LoopedMediaLike, kind: str) -> list[tuple[int, int]]:
    infos = [media.segment_info(kind, i) for i in range(media.count)]
    return [(int(s.t), int(s.d)) for s in infos]  # type: ignore[attr-defined]  # LoopedMedia's


def _first_publication(b: Broadcast, gaps_listed: bool) -> float:
    """When the manifest first exists (virtual seconds).

    No packager writes its manifest before its first segment is complete (ffmpeg's dash
    muxer, Shaka Packager and nginx-rtmp all write it after closing one): a live manifest
    exists from the end of the first segment it can list.
    """
    listable = [i for i in range(b.count) if gaps_listed or i not in b.gaps]
    if not listable:
        raise ValueError("every segment is an omitted gap: the manifest would list nothing")
    return 0.0 if b.shape == "static" else b.ends[listable[0]]


def _period_index(
    periods: PeriodPlan, keys: dict[str, Sequence[int | None]], timescale: int | None
) -> dict[tuple[str, int], dict[int, int]]:
    """Segment index by (kind, Period) and URL key: keys restart with each Period, and a
    request names its Period by its directory."""
    index: dict[tuple[str, int], dict[int, int]] = {}
    for kind, track_keys in keys.items():
        for p in range(len(periods.firsts)):
            span = periods.indexes(p)
            local = _reverse(kind, track_keys[span.start : span.stop], timescale)
            index[kind, p] = {key: i + span.start for key, i in local.items()}
    return index


def _reverse(kind: str, keys: Sequence[int | None], timescale: int | None) -> dict[int, int]:
    """Segment index by URL key (what routes a request to its segment)."""
    index = {key: i for i, key in enumerate(keys) if key is not None}
    if len(index) != sum(key is not None for key in keys):
        raise ValueError(
            f"the MPD timescale {timescale} is too coarse: two {kind} segments share a time"
        )
    return index


class Broadcast:
    """The timeline of one broadcast over a looped media, and the URL key of every segment."""

    def __init__(
        self,
        media: LoopedMediaLike,
        tracks: Sequence[TrackDescription],
        *,
        shape: str,
        stream_id: str,
        window: int,
        retention: int | None,
        gaps: frozenset[int],
        start_number: int = 1,
        minimum_update_period: float = 2.0,
        secret: bytes | None = None,
        expiry: str = "0",
        gaps_listed: bool = True,
        timescale: int | None = None,
        publish_frame_time: bool = True,
        periods: tuple[Sequence[float], bool] = ((), False),
        later_tracks: Sequence[TrackDescription] = (),
    ) -> None:
        _check_arguments(shape, tracks, window, retention, timescale, periods[0])
        self.media, self.tracks = media, tuple(tracks)
        self.later_tracks = tuple(later_tracks) or self.tracks  # Periods after the first
        self.shape = shape
        self.stream_id = stream_id
        self.window = window
        self.retention = retention
        self.gaps = frozenset(gaps)
        self.start_number = start_number
        self.minimum_update_period = minimum_update_period
        self.signer = UrlSigner(secret, expiry)
        self.gaps_listed = gaps_listed
        self.publish_frame_time = publish_frame_time
        # The generic shapes' MPD timescale when not the media's (instagram speaks ms).
        self.timescale = None if shape == "instagram" else timescale
        self.count = media.count
        self.reference = next((t.kind for t in tracks if t.kind == "video"), "audio")
        self.starts = [media.start_seconds(i) - media.start_seconds(0) for i in range(self.count)]
        self.ends = [s + media.duration_seconds(i) for i, s in enumerate(self.starts)]
        self.duration = self.ends[-1]
        self.periods = PeriodPlan.at(self.starts, *periods)
        # Raw (t, d) per track, in each track's own media timescale (restarting per Period).
        self._td = {t.kind: self.periods.restart(_raw_times(media, t.kind)) for t in self.tracks}
        # URL keys per track and the reverse maps used to route requests.
        if shape == "instagram":
            ref_timescale = self.track(self.reference).timescale
            self._ms, self._ms_end = _milliseconds(self._td[self.reference], ref_timescale)
        numbers = _number_keys(shape, self.periods, self.gaps, gaps_listed, start_number)
        self._keys: dict[str, Sequence[int | None]] = {
            track.kind: self._ms
            if shape == "instagram"
            else numbers
            if numbers is not None
            else [t for t, _ in self.mpd_times(track.kind)]
            for track in self.tracks
        }
        self._index = _period_index(self.periods, self._keys, timescale)
        self.first_publication = _first_publication(self, gaps_listed)
        if shape == "number_duration" and len({d for _, d in self._td.get("video", [])}) > 1:
            raise ValueError("the number_duration shape needs constant segment durations")

    # -- timeline -----------------------------------------------------------------------------

    def track(self, kind: str) -> TrackDescription:
        for track in self.tracks:
            if track.kind == kind:
                return track
        raise KeyError(kind)

    def available_count(self, now: float) -> int:
        """How many segments are complete at virtual time ``now`` (static: all)."""
        if self.shape == "static":
            return self.count
        return bisect.bisect_right(self.ends, now + 1e-9)

    def ended(self, now: float) -> bool:
        return self.shape == "static" or now + 1e-9 >= self.duration

    def listed(self, now: float) -> Sequence[int]:
        """Segment indexes the manifest lists at ``now`` (ascending).

        Gaps listed: the last ``window`` available segments. Gaps omitted: the last ``window``
        available segments that are not gaps, so a hole longer than the window leaves the
        manifest as it was before the hole (a packager with no input makes no segment).
        """
        available = self.available_count(now)
        if self.shape == "static":
            indexes = range(self.count)
        else:
            indexes = range(max(0, available - self.window), available)
        if self.gaps_listed or not self.gaps:
            return indexes
        if self.shape == "static":
            return [i for i in indexes if i not in self.gaps]
        kept: list[int] = []
        i = available - 1
        while i >= 0 and len(kept) < self.window:
            if i not in self.gaps:
                kept.append(i)
            i -= 1
        return kept[::-1]

    def published(self, now: float) -> bool:
        """Whether the manifest exists at ``now`` (a live one only once it can list a segment)."""
        return self.shape == "static" or now + 1e-9 >= self.first_publication

    def retained(self, now: float) -> range:
        """Segment indexes still stored by the server at ``now`` (gaps included)."""
        available = self.available_count(now)
        if self.retention is None or self.shape == "static":
            return range(available)
        return range(max(0, available - self.retention), available)

    def fetchable(self, i: int, now: float) -> bool:
        return i not in self.gaps and i in self.retained(now)

    def key(self, kind: str, i: int) -> int:
        """The $Time$ / $Number$ value of segment ``i`` of track ``kind`` in URLs.

        KeyError for a gap left out of a ``number_timeline`` (it has no number).
        """
        key = self._keys[kind][i]
        if key is None:
            raise KeyError(f"segment {i} is an omitted gap of a $Number$ timeline: it has no URL")
        return key

    def index_of(self, kind: str, key: int, period: int = 0) -> int | None:
        return self._index[kind, period].get(key)

    def media_time(self, kind: str, i: int) -> tuple[int, int]:
        """(t, d) of segment ``i`` in the track's media timescale (its tfdt and duration)."""
        return self._td[kind][i]

    def mpd_timescale(self, kind: str) -> int:
        """The SegmentTemplate@timescale of track ``kind`` (generic shapes)."""
        return self.timescale or self.track(kind).timescale

    def to_mpd_ticks(self, kind: str, media_ticks: int) -> int:
        """Media ticks of track ``kind`` in the MPD timescale, rounded half up."""
        if self.timescale is None:
            return media_ticks
        media_timescale = self.track(kind).timescale
        return (2 * media_ticks * self.timescale + media_timescale) // (2 * media_timescale)

    def mpd_time(self, kind: str, i: int) -> tuple[int, int]:
        """(S@t, S@d) of segment ``i`` in the MPD timescale.

        Both ends are converted, so the d of one entry always reaches the t of the next.
        """
        t, d = self._td[kind][i]
        start = self.to_mpd_ticks(kind, t)
        return start, self.to_mpd_ticks(kind, t + d) - start

    def mpd_times(self, kind: str) -> list[tuple[int, int]]:
        return [self.mpd_time(kind, i) for i in range(self.count)]

    # -- URLs ---------------------------------------------------------------------------------

    @property
    def manifest_path(self) -> str:
        if self.shape == "instagram":
            return f"/live/{self.stream_id}/dash/{self.stream_id}.mpd"
        return f"/live/{self.stream_id}/manifest.mpd"

    def rep_id(self, kind: str, period: int = 0) -> str:
        return self.periods.rep_id(self.track(kind).rep_id, period)

    def _media_dir(self, kind: str, period: int) -> str:
        directory = self.periods.directory(period)
        return f"/live/{self.stream_id}/media/{directory}{self.rep_id(kind, period)}/"

    def init_path(self, kind: str, period: int = 0) -> str:
        track = self.track(kind)
        if self.shape == "instagram":
            sid = self.stream_id
            return f"/live/{sid}/{track.rep_id}/{sid}_0-init.{track.extension}"
        return self._media_dir(kind, period) + "init.mp4"

    def media_path(self, kind: str, i: int) -> str:
        track = self.track(kind)
        key = self.key(kind, i)
        if self.shape == "instagram":
            sid = self.stream_id
            return f"/live/{sid}/{track.rep_id}/{sid}_0-{key}.{track.extension}"
        return self._media_dir(kind, self.periods.of(i)) + self._media_name(key)

    def _media_name(self, key: int) -> str:
        if self.shape == "number_timeline":
            return f"n{key:05d}.m4s"
        if self.shape == "number_duration":
            return f"n{key}.m4s"
        return f"t{key}.m4s"

    def _media_template(self) -> str:
        if self.shape == "number_timeline":
            return "$RepresentationID$/n$Number%05d$.m4s"
        if self.shape == "number_duration":
            return "$RepresentationID$/n$Number$.m4s"
        return "$RepresentationID$/t$Time$.m4s"

    def route(self, path: str) -> tuple[str, str | None, int | None]:
        """Map a request path to (kind, track, segment index).

        kind is "manifest", "init", "media" or "other"; the index is None for a media name
        that names no segment of the broadcast (a wrong time or number), and an init's Period.
        """
        if path == self.manifest_path:
            return "manifest", None, None
        for period, track in ((p, t) for p in range(len(self.periods.firsts)) for t in self.tracks):
            if path == self.init_path(track.kind, period):
                return "init", track.kind, period  # an init's "index" is its Period
            prefix, suffix = self._media_affixes(track, period)
            if path.startswith(prefix) and path.endswith(suffix):
                digits = path[len(prefix) : len(path) - len(suffix)]
                if not digits.isdigit():
                    return "media", track.kind, None
                i = self.index_of(track.kind, int(digits), period)
                # Be strict about formatting (%05d, no stray zeros): a real CDN serves files by
                # name, so "n12.m4s" is not "n00012.m4s".
                if i is not None and self.media_path(track.kind, i) != path:
                    i = None
                return "media", track.kind, i
        return "other", None, None

    def _media_affixes(self, track: TrackDescription, period: int) -> tuple[str, str]:
        sid = self.stream_id
        if self.shape == "instagram":
            return f"/live/{sid}/{track.rep_id}/{sid}_0-", f".{track.extension}"
        base = self._media_dir(track.kind, period)
        if self.shape in ("number_timeline", "number_duration"):
            return base + "n", ".m4s"
        return base + "t", ".m4s"

    def scope_of(self, kind: str, track: str | None) -> str:
        return "manifest" if kind == "manifest" else self.track(track or self.reference).rep_id

    # -- helpers for tests ------------------------------------------------------------------

    def instagram_time_ms(self, i: int) -> int:
        """time_ms(i) of the instagram rule (see the module docstring); i == count → end."""
        if self.shape != "instagram":
            raise ValueError("only the instagram shape has millisecond times")
        return self._ms_end if i == self.count else self._ms[i]


# -- rendering ----------------------------------------------------------------------------------


def _el(parent: etree._Element | None, tag: str, **attrs: object) -> etree._Element:
    values = {k.rstrip("_"): str(v) for k, v in attrs.items() if v is not None}
    name = f"{{{DASH_NS}}}{tag}"
    if parent is None:
        # lxml takes None as the default namespace's prefix; its stubs only allow str keys
        return etree.Element(name, values, nsmap={None: DASH_NS})  # type: ignore[dict-item]  # lxml-stubs reject the default (None) prefix lxml takes
    return etree.SubElement(parent, name, values)


def _timeline(
    parent: etree._Element,
    entries: Sequence[tuple[int, int]],
    *,
    explicit_t: bool,
) -> None:
    """Write <S> elements; with explicit_t=False, runs of equal d become one S with @r."""
    timeline = _el(parent, "SegmentTimeline")
    previous_end: int | None = None
    run: list[int] | None = None  # [t, d, r, t written]
    for t, d in entries:
        if explicit_t:
            _el(timeline, "S", t=t, d=d)
            continue
        if run is not None and t == previous_end and d == run[1]:
            run[2] += 1
        else:
            if run is not None:
                _flush_run(timeline, run)
            run = [t, d, 0, 1 if t != previous_end else 0]
        previous_end = t + d
    if run is not None:
        _flush_run(timeline, run)


def _flush_run(timeline: etree._Element, run: list[int]) -> None:
    t, d, r, needs_t = run
    _el(timeline, "S", t=t if needs_t else None, d=d, r=r or None)


def render_manifest(
    broadcast: Broadcast,
    now: float,
    *,
    time_url: str = "/time",
    signal_end: bool = True,
    segment_query: str = "",
) -> tuple[bytes, bool]:
    """The MPD at virtual time ``now`` and whether the broadcast-ended header applies.

    ``time_url``: the (absolute) URL of the clock endpoint for the UTCTiming element.
    ``signal_end=False`` imitates nginx-rtmp: after the end the manifest just stops changing.
    ``segment_query`` (no '?'): added to every segment address (an expiring token).
    """
    b = broadcast
    if not b.published(now):
        # An empty SegmentTimeline is not something servers publish, and players do not cope
        # with one (ffmpeg 5.1 then never reloads the manifest and asks for $Time$ 0 forever).
        raise ValueError(f"the manifest is not published before {b.first_publication:.3f} s")
    ended = b.ended(now) and (signal_end or b.shape == "static")
    available = b.available_count(now)
    listed = b.listed(now)
    wall_now = EPOCH + timedelta(seconds=now)
    static = b.shape == "static" or (ended and b.shape != "instagram")
    max_duration = max(
        (end - start for start, end in zip(b.starts, b.ends, strict=True)), default=2.0
    )
    time_shift_buffer = b.window * max_duration
    if listed and not b.gaps_listed:
        # A window stretched back over an omitted hole stays inside the advertised depth.
        time_shift_buffer = max(time_shift_buffer, now - b.starts[listed[0]])

    root = _el(None, "MPD", profiles=LIVE_PROFILE, minBufferTime=format_duration(2.0))
    if static:
        root.set("type", "static")
        root.set("mediaPresentationDuration", format_duration(b.duration))
    else:
        root.set("type", "dynamic")
        root.set("availabilityStartTime", iso_time(EPOCH))
        root.set("publishTime", iso_time(wall_now))
        root.set("minimumUpdatePeriod", format_duration(b.minimum_update_period))
        root.set("timeShiftBufferDepth", format_duration(time_shift_buffer))
        root.set("suggestedPresentationDelay", format_duration(2 * max_duration))
    if b.shape == "instagram":
        _instagram_attributes(root, b, now, available)

    # Every Period with a segment listed (as packagers keep the previous one while its
    # segments are in the window); a single-Period broadcast lists its Period even empty.
    groups = b.periods.groups(listed) if b.periods.several else [(0, list(listed))]
    for number, indexes in groups:
        _render_period(root, b, number, indexes, static, segment_query)

    if not static and b.shape != "instagram":
        _el(root, "UTCTiming", schemeIdUri=UTC_HTTP_ISO, value=time_url)
    body = etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)
    return body, ended and b.shape == "instagram"


def _instagram_attributes(root: etree._Element, b: Broadcast, now: float, available: int) -> None:
    """What Facebook's live manifests add to the MPD element."""
    first_ms = b.instagram_time_ms(0)
    root.set("currentServerTimeMs", str(int((EPOCH.timestamp() + now) * 1000)))
    if b.publish_frame_time:
        root.set("firstAvTimeMs", str(first_ms))
        root.set("publishFrameTime", str(first_ms))
    root.set("lastVideoFrameTs", str(b.instagram_time_ms(available) if available else 0))
    root.set("loapStreamId", b.stream_id)
    root.set("loapStreamType", "1")


def _render_period(
    root: etree._Element,
    b: Broadcast,
    number: int,
    listed: Sequence[int],
    static: bool,
    segment_query: str,
) -> None:
    # A Period starts where its first segment does on the first Period's clock (media time
    # there is presentation time: no presentationTimeOffset).
    start = b.media.start_seconds(b.periods.firsts[number]) if number else 0.0
    # Microseconds: a millisecond rounding would move the Period off its segments' times.
    period = _el(root, "Period", id=f"p{number}", start=f"PT{start:.6f}S")
    if b.shape != "instagram":
        _el(period, "BaseURL").text = "media/" + b.periods.directory(number)
    for track in b.later_tracks if number else b.tracks:
        rep = _render_track(period, b, track)
        rep.set("id", b.rep_id(track.kind, number))
        _render_template(rep, b, track, listed, static, segment_query)


def _render_track(period: etree._Element, b: Broadcast, track: TrackDescription) -> etree._Element:
    """A track's AdaptationSet and Representation (its SegmentTemplate comes apart)."""
    adaptation = _el(period, "AdaptationSet", segmentAlignment="true")
    if b.shape == "instagram":
        if track.kind == "video":
            adaptation.set("maxWidth", str(track.width))
            adaptation.set("maxHeight", str(track.height))
            adaptation.set("maxFrameRate", str(track.fps))
    else:
        adaptation.set("contentType", track.content_type)
        adaptation.set("mimeType", track.mime_type)
    if track.lang:
        adaptation.set("lang", track.lang)
    if track.role:
        _el(adaptation, "Role", schemeIdUri="urn:mpeg:dash:role:2011", value=track.role)
    return _el(
        adaptation,
        "Representation",
        id=track.rep_id,
        mimeType=track.mime_type if b.shape == "instagram" else None,
        codecs=track.codecs,
        bandwidth=track.bandwidth,
        width=track.width,
        height=track.height,
        frameRate=track.fps,
        audioSamplingRate=track.audio_rate,
        startWithSAP="1",
    )


def _render_template(
    rep: etree._Element,
    b: Broadcast,
    track: TrackDescription,
    listed: Sequence[int],
    static: bool,
    segment_query: str,
) -> None:
    kind = track.kind
    if b.shape == "instagram":
        query = b.signer.query(track.rep_id)
        if segment_query:
            query = f"{query}&{segment_query}" if query else f"?{segment_query}"
        sid = b.stream_id
        template = _el(
            rep,
            "SegmentTemplate",
            presentationTimeOffset=0,
            timescale=1000,
            initialization=None
            if track.plain_text
            else f"../{track.rep_id}/{sid}_0-init.{track.extension}{query}",
            media=f"../{track.rep_id}/{sid}_0-$Time$.{track.extension}{query}",
        )
        entries = [
            (b.instagram_time_ms(i), b.instagram_time_ms(i + 1) - b.instagram_time_ms(i))
            for i in listed
        ]
        _timeline(template, entries, explicit_t=True)
        return

    # No presentationTimeOffset even when the timeline starts far from 0: packagers that keep
    # their input's clock (Shaka Packager from MPEG-TS) do not write one either.
    query = f"?{segment_query}" if segment_query else ""
    template = _el(
        rep,
        "SegmentTemplate",
        timescale=b.mpd_timescale(kind),
        initialization=None if track.plain_text else f"$RepresentationID$/init.mp4{query}",
        media=b._media_template() + query,
    )
    if b.shape == "number_duration":
        template.set("startNumber", str(b.start_number))
        template.set("duration", str(_nominal_duration(b, kind)))
        return
    if b.shape == "number_timeline":
        template.set("startNumber", str(b.key(kind, listed[0])))
    entries = [b.mpd_time(kind, i) for i in listed]
    _timeline(template, entries, explicit_t=False)


def _nominal_duration(b: Broadcast, kind: str) -> int:
    """@duration for number_duration: the (constant) video duration in this track's MPD units."""
    if kind == "video":
        return b.mpd_time("video", 0)[1]
    # Audio segments cannot all be exactly equal (AAC frames are 1024 samples); state the
    # nominal duration of the video segment in audio units, as packagers do.
    seconds = b.ends[0] - b.starts[0]
    return round(seconds * b.mpd_timescale(kind))
