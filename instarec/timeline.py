"""One selected track's timeline as the recorder knows it: keys seen, floor, $Time$ rounding,
and the ``SegmentRef``s its keys name."""

from __future__ import annotations

import bisect
import functools
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction

from instarec.manifest import Addressing, Representation
from instarec.mp4 import FragmentInfo, InitInfo
from instarec.segments import RefOrigin, SegmentRef, TrackKind

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Timeline:
    """The keys of one track known so far (listed, found by the archive, or on disk)."""

    kind: TrackKind
    rep: Representation
    period_start: float = 0.0
    init: InitInfo | None = None
    keys: list[int] = field(default_factory=list)
    key_set: set[int] = field(default_factory=set)
    listed_end: int | None = None  # end (ticks) of the last listed $Time$ segment
    listed_max_number: int | None = None
    listed_until: float | None = None  # presentation seconds where the last listed segment ends
    typical: int | None = None  # median listed segment duration, in ticks
    # How this server turns a segment's media time (tfdt) into its $Time$ value: a rounding
    # (when the timescales differ) and an offset (ffmpeg names AAC segments by their time minus
    # the encoder priming, 1024 samples, while their tfdt counts from 0).
    rounding: str = "round"
    time_offset: int = 0
    # Set once a listed segment taught the mapping: a segment found by searching may be named
    # unlike the rest (nginx-rtmp names its first fragment 0 though its tfdt is the first
    # frame's time) and must not teach every later step a wrong name.
    mapping_from_listing: bool = False
    # Under SegmentTemplate@duration, the number of the segment at media time 0 (presentation
    # time offset): startNumber by the standard, but some packagers move startNumber with the
    # window and keep counting from 1, so the media's tfdt decides (None: not learned).
    number_base: int | None = None
    # Segments made of several moof+mdat pairs (ffmpeg's -streaming 1 writes one per frame): the
    # first moof does not give the next segment's time, the whole body does.
    multi_moof: bool = False
    # One frame's length in ticks, from the last segment downloaded (None: none yet): the grid
    # segment starts sit on, which a chain searching past a missing segment needs (a live hole
    # chain may miss at its very first step, before it has read any frame of its own).
    frame: float | None = None
    # Oldest key worth fetching: the first listed one until the archive search finds older
    # ones. A manifest turning static may list everything since the start; what lies below
    # the floor is past the server's retention (or unwanted with --no-past).
    floor: int | None = None
    # The store's name for this track ("" : its slot) and the seconds added to its media time
    # to place it on the first Period's media clock (periods.py).
    track: str = ""
    offset: float = 0.0
    # The selected track this timeline records ("": the kind): "audio2" is the second audio
    # track of a recording of several languages (selection.SelectedTracks.slots).
    slot: str = ""

    @property
    def name(self) -> str:
        return self.track or self.selected

    @property
    def selected(self) -> str:
        """The selected track this timeline belongs to, whatever its Period."""
        return self.slot or self.kind

    def roundings(self, exact: Fraction) -> tuple[int, ...]:
        """The $Time$ values media time ``exact`` may be published as, the learned one first."""
        if exact.denominator == 1:
            return (int(exact) + self.time_offset,)
        values = {"floor": math.floor(exact), "round": round(exact), "ceil": math.ceil(exact)}
        ordered = [values[self.rounding]] + [values[m] for m in ("floor", "round", "ceil")]
        return tuple(value + self.time_offset for value in dict.fromkeys(ordered))

    def learn_time_mapping(self, key: int, media_time: int, *, listed: bool) -> None:
        """Learn rounding and offset from a segment whose $Time$ and tfdt are both known.

        ``listed``: the key came from the manifest, which outranks a key found by searching.
        """
        if self.init is None or (self.mapping_from_listing and not listed):
            return
        self.mapping_from_listing = self.mapping_from_listing or listed
        exact = Fraction(media_time * self.timescale, self.init.timescale)
        candidates = (
            ("floor", math.floor(exact)),
            ("round", round(exact)),
            ("ceil", math.ceil(exact)),
        )
        mode, value = next(
            ((m, v) for m, v in candidates if v == key),
            ("round", round(exact)),
        )
        offset = key - value
        if (mode, offset) != (self.rounding, self.time_offset):
            log.debug("%s: $Time$ = %s(media time) %+d", self.kind, mode, offset)
            self.rounding, self.time_offset = mode, offset

    def learn_from(self, ref: SegmentRef, info: FragmentInfo) -> None:
        """Learn the $Time$ mapping and the frame length from a downloaded segment."""
        self.learn_frame(info)
        if (
            info.base_media_decode_time is not None
            and self.rep.addressing is Addressing.TIME_TIMELINE
        ):
            self.learn_time_mapping(
                ref.key, info.base_media_decode_time, listed=ref.origin == "live"
            )

    def add(self, key: int) -> bool:
        if key in self.key_set:
            return False
        self.key_set.add(key)
        bisect.insort(self.keys, key)
        return True

    def lower_floor(self, key: int) -> None:
        """Let refs down to ``key`` in: the past reaches at least that far."""
        self.floor = key if self.floor is None else min(self.floor, key)

    def discard(self, key: int) -> None:
        """Forget a key that turned out not to exist (a wrong guess of the chain)."""
        if key in self.key_set:
            self.key_set.remove(key)
            self.keys.pop(bisect.bisect_left(self.keys, key))

    def next_known(self, key: int) -> int | None:
        index = bisect.bisect_left(self.keys, key)
        return self.keys[index] if index < len(self.keys) else None

    @property
    def timescale(self) -> int:
        template = self.rep.template
        return template.timescale if template else 1

    def seconds(self, ticks: int) -> float:
        template = self.rep.template
        offset = template.presentation_time_offset if template else 0
        return self.period_start + (ticks - offset) / self.timescale

    def ticks(self, seconds: float) -> float:
        """The timeline time at presentation time ``seconds`` (the inverse of ``seconds``)."""
        template = self.rep.template
        offset = template.presentation_time_offset if template else 0
        return (seconds - self.period_start) * self.timescale + offset

    @property
    def typical_ticks(self) -> int:
        """A segment's usual length in ticks: the listed median, 2 s until a listing tells."""
        return self.typical or max(1, 2 * self.timescale)

    def frame_ticks(self, info: FragmentInfo) -> float | None:
        """One frame's length in the timeline's ticks, from a fragment's samples.

        A coarse media timescale (milliseconds) rounds each segment's duration: 55 frames at
        30 fps last 1833 ms, 33.327 ms a frame instead of 33.333. Extrapolated over an hour
        that is 0.6 s off the frame grid, so a rate that close to a standard one is taken
        for it.
        """
        if not info.sample_count or not info.duration or self.init is None:
            return None
        rate = standard_rate(self.init.timescale * info.sample_count / info.duration)
        return self.timescale / rate

    def learn_frame(self, info: FragmentInfo) -> None:
        """Remember one frame's length from a downloaded fragment (``frame``)."""
        frame = self.frame_ticks(info)
        if frame is not None and frame > 0:
            self.frame = frame

    def time_ref(self, time_value: int, origin: RefOrigin) -> SegmentRef:
        """The segment named ``$Time$`` = ``time_value`` (its length is learned from the media)."""
        return SegmentRef(
            self.name,
            time_value,
            self.rep.media_url(time=time_value),
            None,
            self.seconds(time_value),
            None,
            origin,
        )

    def number_ref(self, number: int, origin: RefOrigin) -> SegmentRef:
        """The segment named ``$Number$`` = ``number``, placed by @duration when there is one."""
        template = self.rep.template
        assert template is not None
        start = self.period_start
        duration: float | None = None
        if template.duration:
            duration = template.duration / template.timescale
            base = template.start_number if self.number_base is None else self.number_base
            start += (number - base) * duration
        return SegmentRef(
            self.name, number, self.rep.media_url(number=number), None, start, duration, origin
        )


def median_ticks(durations: Sequence[float | None], timescale: int) -> int:
    """The median of listed segment durations (seconds) in ticks; 2 s when none is known."""
    known = sorted(d for d in durations if d)
    if not known:
        return 2 * timescale
    return max(1, round(known[len(known) // 2] * timescale))


# Frame rates in use (video: the film, PAL and NTSC families and their doubles).
_STANDARD_RATES = tuple(
    sorted({24000 / 1001, 24.0, 25.0, 30000 / 1001, 30.0, 48.0, 50.0, 60000 / 1001, 60.0, 120.0})
)
# Closer than this (relative) to a standard rate is that rate: a segment's duration in
# milliseconds is off by up to 1 ms (two rounded times), 0.06 % of 50 frames at 30 fps; the
# nearest rate wins (NTSC and whole rates are 0.1 % apart).
_RATE_TOLERANCE = 0.0007


@functools.lru_cache(maxsize=256)  # asked per segment, of a few distinct lengths
def standard_rate(measured: float) -> float:
    """``measured`` frames per second, or the standard rate it is a rounding of."""
    nearest = min(_STANDARD_RATES, key=lambda rate: abs(measured - rate))
    return nearest if abs(measured - nearest) <= nearest * _RATE_TOLERANCE else measured
