"""Pure ISO-BMFF (fragmented MP4) reading: just enough to follow a DASH timeline.

Only the boxes that carry timing are read: the init segment's track id, media timescale,
handler and ``trex`` defaults, and each media segment's ``tfdt`` plus the sum of its sample
durations (``trun`` per-sample durations, else ``tfhd`` defaults, else ``trex`` defaults
passed in by the caller). Segment end = tfdt + duration, which is how the ``$Time$`` archive
chain finds the next segment without a manifest.

Everything works on ``memoryview``s over the caller's buffer with ``struct.unpack_from``:
``mdat`` payloads are skipped by their header and never copied.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from instarec.errors import Mp4Error

log = logging.getLogger(__name__)

__all__ = [
    "FragmentInfo",
    "FragmentScanner",
    "InitInfo",
    "Mp4Error",
    "moof_end",
    "parse_fragment",
    "parse_init",
]

_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_HEADER = struct.Struct(">I4s")

# tfhd flags (ISO/IEC 14496-12 8.8.7)
_TFHD_BASE_DATA_OFFSET = 0x000001
_TFHD_SAMPLE_DESCRIPTION_INDEX = 0x000002
_TFHD_DEFAULT_SAMPLE_DURATION = 0x000008
_TFHD_DEFAULT_SAMPLE_SIZE = 0x000010
_TFHD_DEFAULT_SAMPLE_FLAGS = 0x000020

# trun flags (8.8.8)
_TRUN_DATA_OFFSET = 0x000001
_TRUN_FIRST_SAMPLE_FLAGS = 0x000004
_TRUN_SAMPLE_DURATION = 0x000100
_TRUN_SAMPLE_SIZE = 0x000200
_TRUN_SAMPLE_FLAGS = 0x000400
_TRUN_SAMPLE_CTO = 0x000800


@dataclass(frozen=True, slots=True)
class InitInfo:
    track_id: int
    timescale: int
    handler: str  # "vide", "soun", ... (the hdlr handler_type as written)
    default_sample_duration: int | None  # from mvex/trex, None when the init has no trex
    # The first stsd entry, whole (avc1 with its avcC, mp4a with its esds, ...): what a decoder
    # is configured with. Two inits with other entries cannot share one track of a file.
    sample_entry: bytes = b""

    @property
    def entry_type(self) -> str:
        """The first sample entry's type ("avc1", "mp4a", "wvtt", "stpp"...); "" for none."""
        return self.sample_entry[4:8].decode("latin-1") if len(self.sample_entry) >= 8 else ""


@dataclass(frozen=True, slots=True)
class FragmentInfo:
    track_id: int
    # tfdt of the first traf; None when the segment carries no tfdt (legal, but then the
    # timeline cannot be chained from the bytes alone).
    base_media_decode_time: int | None
    duration: int  # sum of sample durations over every moof/mdat pair, media timescale
    sample_count: int
    moof_count: int

    @property
    def end(self) -> int | None:
        """tfdt + duration: the next segment's tfdt on a gapless timeline."""
        if self.base_media_decode_time is None:
            return None
        return self.base_media_decode_time + self.duration


@dataclass(frozen=True, slots=True)
class _Box:
    type: bytes
    start: int  # offset of the box header
    payload: int  # offset of the payload (after size, type and any largesize)
    end: int  # offset one past the box


def _iter_boxes(buf: memoryview, start: int, end: int, *, partial: bool = False) -> Iterator[_Box]:
    """Yield the boxes laid out in buf[start:end].

    With partial=True, stop quietly at a header or box that runs past ``end`` (a download
    prefix) instead of raising.
    """
    pos = start
    while pos < end:
        if end - pos < 8:
            if partial:
                return
            raise Mp4Error(f"truncated box header at offset {pos}")
        size, box_type = _HEADER.unpack_from(buf, pos)
        payload = pos + 8
        if size == 1:
            if end - pos < 16:
                if partial:
                    return
                raise Mp4Error(f"truncated 64-bit box header at offset {pos}")
            size = _U64.unpack_from(buf, pos + 8)[0]
            payload = pos + 16
        elif size == 0:
            if partial:
                # "extends to the end of the file": a prefix cannot tell where that is
                return
            size = end - pos
        if size < payload - pos:
            raise Mp4Error(f"box {box_type!r} at offset {pos} has impossible size {size}")
        box_end = pos + size
        if box_end > end:
            if partial:
                yield _Box(box_type, pos, payload, box_end)
                return
            raise Mp4Error(
                f"box {box_type!r} at offset {pos} (size {size}) runs past the end ({end})"
            )
        yield _Box(box_type, pos, payload, box_end)
        pos = box_end


def _children(buf: memoryview, box: _Box) -> Iterator[_Box]:
    return _iter_boxes(buf, box.payload, box.end)


def _find(buf: memoryview, box: _Box, box_type: bytes) -> _Box | None:
    for child in _children(buf, box):
        if child.type == box_type:
            return child
    return None


def _require(buf: memoryview, box: _Box, box_type: bytes) -> _Box:
    child = _find(buf, box, box_type)
    if child is None:
        raise Mp4Error(f"{box.type.decode('latin-1')} has no {box_type.decode('latin-1')}")
    return child


def _u32_after_times(buf: memoryview, box: _Box) -> int:
    """The 32-bit field after creation and modification times (32- or 64-bit by version)."""
    version, _ = _full_box(buf, box)
    offset = box.payload + (4 + 16 if version == 1 else 4 + 8)
    _need(box, offset - box.payload + 4)
    value: int = _U32.unpack_from(buf, offset)[0]
    return value


def _need(box: _Box, length: int) -> None:
    if box.end - box.payload < length:
        raise Mp4Error(f"box {box.type!r} is too short ({box.end - box.payload} < {length} bytes)")


def _full_box(buf: memoryview, box: _Box) -> tuple[int, int]:
    """(version, flags) of a FullBox."""
    _need(box, 4)
    word = _U32.unpack_from(buf, box.payload)[0]
    return word >> 24, word & 0xFFFFFF


def _as_view(data: bytes | bytearray | memoryview) -> memoryview:
    view = memoryview(data)
    if view.ndim != 1 or view.itemsize != 1:
        view = view.cast("B")
    return view


def parse_init(data: bytes | bytearray | memoryview) -> InitInfo:
    """Read track id, media timescale, handler and trex default duration of the first track."""
    buf = _as_view(data)
    moov = next((b for b in _iter_boxes(buf, 0, len(buf)) if b.type == b"moov"), None)
    if moov is None:
        raise Mp4Error("no moov box: not an MP4 init segment")
    trak = _require(buf, moov, b"trak")
    track_id = _u32_after_times(buf, _require(buf, trak, b"tkhd"))  # tkhd track_ID
    mdia = _require(buf, trak, b"mdia")
    timescale = _u32_after_times(buf, _require(buf, mdia, b"mdhd"))  # mdhd timescale
    if timescale == 0:
        raise Mp4Error("mdhd timescale is 0")
    hdlr = _require(buf, mdia, b"hdlr")
    _need(hdlr, 12)
    handler = bytes(buf[hdlr.payload + 8 : hdlr.payload + 12]).decode("latin-1")

    default_duration: int | None = None
    mvex = _find(buf, moov, b"mvex")
    if mvex is not None:
        for trex in _children(buf, mvex):
            if trex.type != b"trex":
                continue
            _need(trex, 24)
            trex_track, _, duration = struct.unpack_from(">III", buf, trex.payload + 4)
            if trex_track == track_id:
                default_duration = duration
                break
    return InitInfo(track_id, timescale, handler, default_duration, _sample_entry(buf, mdia))


def _sample_entry(buf: memoryview, mdia: _Box) -> bytes:
    """The first sample entry of the track's stsd, b"" when the init has none."""
    minf = _find(buf, mdia, b"minf")
    stbl = _find(buf, minf, b"stbl") if minf is not None else None
    stsd = _find(buf, stbl, b"stsd") if stbl is not None else None
    if stsd is None:
        return b""
    # stsd: version/flags and an entry count, then the entries as boxes.
    entries = _iter_boxes(buf, stsd.payload + 8, stsd.end, partial=True)
    first = next(entries, None)
    return bytes(buf[first.start : first.end]) if first is not None else b""


@dataclass(frozen=True, slots=True)
class _TrafInfo:
    track_id: int
    tfdt: int | None
    duration: int
    sample_count: int


def _parse_traf(buf: memoryview, traf: _Box, default_sample_duration: int | None) -> _TrafInfo:
    tfhd = _find(buf, traf, b"tfhd")
    if tfhd is None:
        raise Mp4Error("traf has no tfhd")
    _, flags = _full_box(buf, tfhd)
    _need(tfhd, 8)
    track_id = _U32.unpack_from(buf, tfhd.payload + 4)[0]
    pos = tfhd.payload + 8
    if flags & _TFHD_BASE_DATA_OFFSET:
        pos += 8
    if flags & _TFHD_SAMPLE_DESCRIPTION_INDEX:
        pos += 4
    default_duration = default_sample_duration
    if flags & _TFHD_DEFAULT_SAMPLE_DURATION:
        _need(tfhd, pos - tfhd.payload + 4)
        default_duration = _U32.unpack_from(buf, pos)[0]

    tfdt_value: int | None = None
    duration = 0
    sample_count = 0
    for child in _children(buf, traf):
        if child.type == b"tfdt":
            version, _ = _full_box(buf, child)
            if version == 1:
                _need(child, 12)
                tfdt_value = _U64.unpack_from(buf, child.payload + 4)[0]
            else:
                _need(child, 8)
                tfdt_value = _U32.unpack_from(buf, child.payload + 4)[0]
        elif child.type == b"trun":
            run_duration, run_count = _parse_trun(buf, child, default_duration)
            duration += run_duration
            sample_count += run_count
    return _TrafInfo(track_id, tfdt_value, duration, sample_count)


def _parse_trun(buf: memoryview, trun: _Box, default_duration: int | None) -> tuple[int, int]:
    """(sum of sample durations, sample count) of one trun."""
    _, flags = _full_box(buf, trun)
    _need(trun, 8)
    count = _U32.unpack_from(buf, trun.payload + 4)[0]
    pos = trun.payload + 8
    if flags & _TRUN_DATA_OFFSET:
        pos += 4
    if flags & _TRUN_FIRST_SAMPLE_FLAGS:
        pos += 4
    per_sample = 4 * sum(
        1
        for bit in (_TRUN_SAMPLE_DURATION, _TRUN_SAMPLE_SIZE, _TRUN_SAMPLE_FLAGS, _TRUN_SAMPLE_CTO)
        if flags & bit
    )
    if pos + per_sample * count > trun.end:
        raise Mp4Error(f"trun announces {count} samples but is too short for them")
    if not flags & _TRUN_SAMPLE_DURATION:
        if count == 0:
            return 0, 0
        if default_duration is None:
            raise Mp4Error(
                "trun has no sample durations and no default duration (tfhd/trex) is known"
            )
        return default_duration * count, count
    # One unpack over the whole table (every field is 32 bits, the duration first): a segment
    # holds hundreds of samples, and a call per sample was the most of a 3-hour recovery's CPU.
    fields = per_sample // 4
    table = struct.unpack_from(f">{count * fields}I", buf, pos)
    durations = table[::fields]
    total = sum(durations)
    if count > 1 and durations[-1] == 0:
        # A live packager writing a fragment before the next frame exists (nginx-rtmp) gives
        # its last sample duration 0; it lasts until the next fragment's tfdt, one ordinary
        # sample (their mean) later. Counted as zero, every next time would be a frame early.
        total += round(total / (count - 1))
    return total, count


def parse_fragment(
    data: bytes | bytearray | memoryview, *, default_sample_duration: int | None = None
) -> FragmentInfo:
    """Timing of a media segment: optional styp/sidx/prft/emsg, then moof+mdat pairs.

    ``default_sample_duration`` is the init segment's trex default, used when neither trun nor
    tfhd carries durations. Only trafs of the first traf's track are counted.
    """
    buf = _as_view(data)
    track_id: int | None = None
    tfdt: int | None = None
    duration = 0
    sample_count = 0
    moof_count = 0
    for box in _iter_boxes(buf, 0, len(buf)):
        if box.type != b"moof":
            continue  # styp, sidx, prft, emsg, free, mdat: no timing we need
        moof_count += 1
        for traf in _children(buf, box):
            if traf.type != b"traf":
                continue
            info = _parse_traf(buf, traf, default_sample_duration)
            if track_id is None:
                track_id = info.track_id
                tfdt = info.tfdt
            elif info.track_id != track_id:
                continue
            duration += info.duration
            sample_count += info.sample_count
    if moof_count == 0:
        raise Mp4Error("no moof box: not a fragmented MP4 media segment")
    if track_id is None:
        raise Mp4Error("moof has no traf")
    return FragmentInfo(track_id, tfdt, duration, sample_count, moof_count)


def moof_end(prefix: bytes | bytearray | memoryview) -> int | None:
    """Offset where the first moof ends, if ``prefix`` holds all of it; else None.

    Raises Mp4Error if the prefix cannot be the start of a media segment (an mdat before any
    moof, or a corrupt box header).
    """
    buf = _as_view(prefix)
    for box in _iter_boxes(buf, 0, len(buf), partial=True):
        if box.type == b"moof":
            return box.end if box.end <= len(buf) else None
        if box.type == b"mdat":
            raise Mp4Error("mdat before any moof")
    return None


class FragmentScanner:
    """Keeps a media segment's boxes but its mdat payloads as the bytes stream by.

    What is kept (styp, sidx, moofs: a few kB of a segment of megabytes) is all
    ``parse_fragment`` reads, so a download's timing needs no second read of its file.
    """

    def __init__(self) -> None:
        self._kept = bytearray()
        self._header = bytearray()
        self._keep = 0  # bytes of the current box still to keep
        self._skip = 0  # bytes of the current mdat still to skip
        self._rest: str | None = None  # "keep"/"skip": a box of size 0 runs to the end

    def restart(self) -> None:
        """A retried body starts over: forget what the failed attempt fed."""
        self._kept.clear()
        self._header.clear()
        self._keep = self._skip = 0
        self._rest = None

    def feed(self, chunk: bytes | bytearray | memoryview) -> None:
        view = memoryview(chunk)
        while view:
            if self._rest is not None or self._keep or self._skip:
                view = self._consume(view)
                continue
            take = min(len(view), self._header_size() - len(self._header))
            self._header += view[:take]
            view = view[take:]
            if len(self._header) == self._header_size():
                self._start_box()

    def _consume(self, view: memoryview) -> memoryview:
        if self._rest == "skip":
            return view[len(view) :]
        if self._rest == "keep":
            self._kept += view
            return view[len(view) :]
        if self._skip:
            n = min(self._skip, len(view))
            self._skip -= n
            return view[n:]
        n = min(self._keep, len(view))
        self._kept += view[:n]
        self._keep -= n
        return view[n:]

    def _header_size(self) -> int:
        if len(self._header) >= 8 and _HEADER.unpack_from(self._header, 0)[0] == 1:
            return 16
        return 8

    def _start_box(self) -> None:
        size, box_type = _HEADER.unpack_from(self._header, 0)
        header = bytes(self._header)
        self._header.clear()
        if size == 1:
            size = _U64.unpack_from(header, 8)[0]
        mdat = box_type == b"mdat"
        if size == 0:
            self._rest = "skip" if mdat else "keep"
            if not mdat:
                self._kept += header
            return
        if size < len(header):
            raise Mp4Error(f"box {box_type!r} has impossible size {size}")
        if mdat:
            self._skip = size - len(header)
        else:
            self._kept += header
            self._keep = size - len(header)

    @property
    def retained(self) -> int:
        """Bytes held in memory."""
        return len(self._kept) + len(self._header)

    def fragment(self, *, default_sample_duration: int | None = None) -> FragmentInfo:
        """The timing of everything fed; Mp4Error when it is no whole media segment."""
        if self._header or self._keep or self._skip:
            raise Mp4Error("the segment ends inside a box")
        return parse_fragment(self._kept, default_sample_duration=default_sample_duration)


# --- samples (text tracks) --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sample:
    """One sample of a media segment: its decode time and duration (media timescale), bytes."""

    time: int
    duration: int
    data: bytes


_TFHD_DEFAULT_BASE_IS_MOOF = 0x020000


def _tfhd_defaults(
    buf: memoryview, tfhd: _Box, moof: _Box, duration: int | None
) -> tuple[int, int | None, int | None]:
    """(base data offset, default duration, default size) of a traf."""
    _, flags = _full_box(buf, tfhd)
    _need(tfhd, 8)
    pos = tfhd.payload + 8
    base = moof.start  # default-base-is-moof, and what every fMP4 packager writes
    if flags & _TFHD_BASE_DATA_OFFSET:
        _need(tfhd, pos - tfhd.payload + 8)
        base = _U64.unpack_from(buf, pos)[0]
        pos += 8
    if flags & _TFHD_SAMPLE_DESCRIPTION_INDEX:
        pos += 4
    size: int | None = None
    if flags & _TFHD_DEFAULT_SAMPLE_DURATION:
        _need(tfhd, pos - tfhd.payload + 4)
        duration = _U32.unpack_from(buf, pos)[0]
        pos += 4
    if flags & _TFHD_DEFAULT_SAMPLE_SIZE:
        _need(tfhd, pos - tfhd.payload + 4)
        size = _U32.unpack_from(buf, pos)[0]
    return base, duration, size


def _trun_samples(
    buf: memoryview,
    trun: _Box,
    where: tuple[int, int],
    time: int,
    defaults: tuple[int | None, int | None],
) -> tuple[list[Sample], int, int]:
    """The samples of one trun, the time after them and the offset after their data.

    ``where``: the traf's base data offset, and where the previous trun's data ended (a trun
    without data offset continues there).
    """
    base, offset = where
    duration, size = defaults
    _, flags = _full_box(buf, trun)
    _need(trun, 8)
    count = _U32.unpack_from(buf, trun.payload + 4)[0]
    pos = trun.payload + 8
    if flags & _TRUN_DATA_OFFSET:
        offset = base + struct.unpack_from(">i", buf, pos)[0]
        pos += 4
    if flags & _TRUN_FIRST_SAMPLE_FLAGS:
        pos += 4
    present = [
        bit
        for bit in (_TRUN_SAMPLE_DURATION, _TRUN_SAMPLE_SIZE, _TRUN_SAMPLE_FLAGS, _TRUN_SAMPLE_CTO)
        if flags & bit
    ]
    if pos + 4 * len(present) * count > trun.end:
        raise Mp4Error(f"trun announces {count} samples but is too short for them")
    samples: list[Sample] = []
    for _ in range(count):
        fields = dict(zip(present, struct.unpack_from(f">{len(present)}I", buf, pos), strict=True))
        pos += 4 * len(present)
        length = fields.get(_TRUN_SAMPLE_DURATION, duration)
        bytes_ = fields.get(_TRUN_SAMPLE_SIZE, size)
        if length is None or bytes_ is None:
            raise Mp4Error("a sample has no duration or size (none in trun, tfhd or trex)")
        if offset + bytes_ > len(buf):
            raise Mp4Error("a sample runs past the end of the segment")
        samples.append(Sample(time, length, bytes(buf[offset : offset + bytes_])))
        offset += bytes_
        time += length
    return samples, time, offset


def read_samples(
    data: bytes | bytearray | memoryview, *, default_sample_duration: int | None = None
) -> list[Sample]:
    """Every sample of a media segment's first track, in decode order, placed by its tfdt.

    For text tracks (``wvtt``, ``stpp``), whose samples ffmpeg cannot always read: the caller
    decodes the bytes. A traf without tfdt continues where the previous one ended.
    """
    buf = _as_view(data)
    samples: list[Sample] = []
    track_id: int | None = None
    time = 0
    for moof in _iter_boxes(buf, 0, len(buf)):
        if moof.type != b"moof":
            continue
        for traf in _children(buf, moof):
            if traf.type != b"traf":
                continue
            tfhd = _require(buf, traf, b"tfhd")
            _need(tfhd, 8)
            traf_track = _U32.unpack_from(buf, tfhd.payload + 4)[0]
            if track_id is None:
                track_id = traf_track
            elif traf_track != track_id:
                continue
            base, duration, size = _tfhd_defaults(buf, tfhd, moof, default_sample_duration)
            tfdt = _parse_traf(buf, traf, duration).tfdt
            if tfdt is not None:
                time = tfdt
            end = base
            for trun in (c for c in _children(buf, traf) if c.type == b"trun"):
                run, time, end = _trun_samples(buf, trun, (base, end), time, (duration, size))
                samples.extend(run)
    return samples


def boxes(data: bytes | bytearray | memoryview) -> list[tuple[bytes, bytes]]:
    """The boxes laid out in ``data``: (type, payload) each, for payloads read by their callers
    (a ``wvtt`` sample is a sequence of ``vttc`` / ``vtte`` boxes)."""
    buf = _as_view(data)
    return [(b.type, bytes(buf[b.payload : b.end])) for b in _iter_boxes(buf, 0, len(buf))]
