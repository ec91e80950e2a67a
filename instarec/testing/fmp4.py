"""Small fragmented-MP4 writers and rewriters used by the test media (testing only).

The product only ever reads MP4 (``instarec.mp4``); building and patching boxes is something
only the simulated origin needs: splitting ffmpeg's fragmented output into init + segments,
regrouping samples into segments of our choosing, and rewriting ``tfdt`` / ``mfhd`` so a short
source can be looped into an arbitrarily long, time-continuous timeline.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from instarec.mp4 import Mp4Error

logger = logging.getLogger(__name__)

_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_HEADER = struct.Struct(">I4s")

_TFHD_BASE_DATA_OFFSET = 0x000001
_TFHD_SAMPLE_DESCRIPTION_INDEX = 0x000002
_TFHD_DEFAULT_SAMPLE_DURATION = 0x000008
_TFHD_DEFAULT_SAMPLE_SIZE = 0x000010
_TFHD_DEFAULT_SAMPLE_FLAGS = 0x000020
_TFHD_DEFAULT_BASE_IS_MOOF = 0x020000

TRUN_DATA_OFFSET = 0x000001
TRUN_FIRST_SAMPLE_FLAGS = 0x000004
TRUN_SAMPLE_DURATION = 0x000100
TRUN_SAMPLE_SIZE = 0x000200
TRUN_SAMPLE_FLAGS = 0x000400
TRUN_SAMPLE_CTO = 0x000800

# sample_flags: sample_depends_on=2 (does not depend on others) for sync samples; non-sync
# samples set sample_is_non_sync_sample and depends_on=1.
SYNC_SAMPLE_FLAGS = 0x02000000
NON_SYNC_SAMPLE_FLAGS = 0x01010000


@dataclass(frozen=True, slots=True)
class BoxSpan:
    type: bytes
    start: int
    payload: int
    end: int


def iter_boxes(
    data: bytes | bytearray | memoryview, start: int = 0, end: int | None = None
) -> Iterator[BoxSpan]:
    """Boxes laid out in data[start:end] (64-bit sizes and size 0 handled)."""
    end = len(data) if end is None else end
    pos = start
    while pos < end:
        if end - pos < 8:
            raise Mp4Error(f"truncated box header at offset {pos}")
        size, box_type = _HEADER.unpack_from(data, pos)
        payload = pos + 8
        if size == 1:
            size = _U64.unpack_from(data, pos + 8)[0]
            payload = pos + 16
        elif size == 0:
            size = end - pos
        if size < payload - pos or pos + size > end:
            raise Mp4Error(f"box {box_type!r} at offset {pos} has a bad size {size}")
        yield BoxSpan(box_type, pos, payload, pos + size)
        pos += size


def find_path(data: bytes | bytearray | memoryview, path: Sequence[bytes]) -> BoxSpan | None:
    """First box reached through ``path`` (e.g. moov/trak/mdia/minf/stbl/stsd)."""
    start, end = 0, len(data)
    found: BoxSpan | None = None
    for i, box_type in enumerate(path):
        found = None
        # sample entries (avc1, mp4a) start after stsd's 8-byte header + count
        for box in iter_boxes(data, start, end):
            if box.type == box_type:
                found = box
                break
        if found is None:
            return None
        start, end = found.payload, found.end
        if box_type == b"stsd":
            start += 8
        elif box_type in (b"avc1", b"avc3") and i + 1 < len(path):
            start += 78  # VisualSampleEntry fields before its child boxes
        elif box_type == b"mp4a" and i + 1 < len(path):
            start += 28  # AudioSampleEntry fields before its child boxes
    return found


def box(box_type: bytes, *payload: bytes) -> bytes:
    body = b"".join(payload)
    return _HEADER.pack(8 + len(body), box_type) + body


def full_box(box_type: bytes, version: int, flags: int, *payload: bytes) -> bytes:
    return box(box_type, _U32.pack((version << 24) | flags), *payload)


def styp() -> bytes:
    """A DASH segment-type box, as packagers put in front of each media segment."""
    return box(b"styp", b"msdh", _U32.pack(0), b"msdh", b"msix")


def split_fragmented(data: bytes) -> tuple[bytes, list[tuple[int, int]]]:
    """Split a fragmented MP4 file into its init (ftyp+moov) and (start, end) of each moof+mdat."""
    init_end: int | None = None
    segments: list[tuple[int, int]] = []
    moof_start: int | None = None
    for b in iter_boxes(data):
        if b.type == b"moov":
            init_end = b.end
        elif b.type == b"moof":
            moof_start = b.start
        elif b.type == b"mdat" and moof_start is not None:
            segments.append((moof_start, b.end))
            moof_start = None
    if init_end is None:
        raise Mp4Error("no moov in fragmented file")
    return data[:init_end], segments


@dataclass(frozen=True, slots=True)
class Sample:
    duration: int
    size: int
    flags: int
    composition_offset: int
    offset: int  # absolute offset of the sample's bytes in the buffer it was read from


def read_samples(data: bytes, default_sample_duration: int | None = None) -> list[Sample]:
    """Every sample of every trun in a fragmented MP4 buffer (file or media segment)."""
    samples: list[Sample] = []
    for moof in iter_boxes(data):
        if moof.type != b"moof":
            continue
        for traf in iter_boxes(data, moof.payload, moof.end):
            if traf.type != b"traf":
                continue
            children = {c.type: c for c in iter_boxes(data, traf.payload, traf.end)}
            tfhd = children[b"tfhd"]
            base, defaults = _tfhd_defaults(data, tfhd, moof.start, default_sample_duration)
            data_pos = base
            for trun in iter_boxes(data, traf.payload, traf.end):
                if trun.type == b"trun":
                    data_pos = _read_trun(data, trun, base, data_pos, defaults, samples)
    return samples


def _tfhd_defaults(
    data: bytes, tfhd: BoxSpan, moof_start: int, default_duration: int | None
) -> tuple[int, tuple[int, int, int]]:
    """A traf's data base and its default sample duration (else the init's), size and flags."""
    flags = _U32.unpack_from(data, tfhd.payload)[0] & 0xFFFFFF
    pos = tfhd.payload + 8
    base = moof_start
    if flags & _TFHD_BASE_DATA_OFFSET:
        base = _U64.unpack_from(data, pos)[0]
        pos += 8
    if flags & _TFHD_SAMPLE_DESCRIPTION_INDEX:
        pos += 4
    values = [default_duration or 0, 0, 0]
    bits = (_TFHD_DEFAULT_SAMPLE_DURATION, _TFHD_DEFAULT_SAMPLE_SIZE, _TFHD_DEFAULT_SAMPLE_FLAGS)
    for n, bit in enumerate(bits):
        if flags & bit:
            values[n] = _U32.unpack_from(data, pos)[0]
            pos += 4
    return base, (values[0], values[1], values[2])


def _read_trun(
    data: bytes,
    trun: BoxSpan,
    base: int,
    data_pos: int,
    defaults: tuple[int, int, int],
    samples: list[Sample],
) -> int:
    """Append a trun's samples; where the next trun's data starts unless it says."""
    word = _U32.unpack_from(data, trun.payload)[0]
    version, tflags = word >> 24, word & 0xFFFFFF
    count = _U32.unpack_from(data, trun.payload + 4)[0]
    pos = trun.payload + 8
    if tflags & TRUN_DATA_OFFSET:
        data_pos = base + struct.unpack_from(">i", data, pos)[0]
        pos += 4
    first_flags: int | None = None
    if tflags & TRUN_FIRST_SAMPLE_FLAGS:
        first_flags = _U32.unpack_from(data, pos)[0]
        pos += 4
    for i in range(count):
        duration, size, sflags = defaults
        cto = 0
        if i == 0 and first_flags is not None:
            sflags = first_flags
        if tflags & TRUN_SAMPLE_DURATION:
            duration = _U32.unpack_from(data, pos)[0]
            pos += 4
        if tflags & TRUN_SAMPLE_SIZE:
            size = _U32.unpack_from(data, pos)[0]
            pos += 4
        if tflags & TRUN_SAMPLE_FLAGS:
            sflags = _U32.unpack_from(data, pos)[0]
            pos += 4
        if tflags & TRUN_SAMPLE_CTO:
            fmt = ">i" if version == 1 else ">I"
            cto = struct.unpack_from(fmt, data, pos)[0]
            pos += 4
        samples.append(Sample(duration, size, sflags, cto, data_pos))
        data_pos += size
    return data_pos


def build_fragment(
    *,
    track_id: int,
    sequence_number: int,
    base_media_decode_time: int,
    durations: Sequence[int],
    sizes: Sequence[int],
    flags: Sequence[int] | None = None,
    payload: bytes | None = None,
    tfdt_version: int = 1,
    with_styp: bool = False,
) -> bytes:
    """One moof+mdat: tfhd default-base-is-moof, tfdt, a trun with per-sample durations and sizes.

    ``payload`` is the concatenated sample bytes (zeros when None, for parser tests).
    """
    if len(durations) != len(sizes) or (flags is not None and len(flags) != len(sizes)):
        raise ValueError("durations, sizes and flags must have the same length")
    trun_flags = TRUN_DATA_OFFSET | TRUN_SAMPLE_DURATION | TRUN_SAMPLE_SIZE
    if flags is not None:
        trun_flags |= TRUN_SAMPLE_FLAGS
    entries = bytearray()
    for i, (duration, size) in enumerate(zip(durations, sizes, strict=True)):
        entries += _U32.pack(duration) + _U32.pack(size)
        if flags is not None:
            entries += _U32.pack(flags[i])
    tfhd = full_box(b"tfhd", 0, _TFHD_DEFAULT_BASE_IS_MOOF, _U32.pack(track_id))
    if tfdt_version == 1:
        tfdt = full_box(b"tfdt", 1, 0, _U64.pack(base_media_decode_time))
    else:
        tfdt = full_box(b"tfdt", 0, 0, _U32.pack(base_media_decode_time))
    mfhd = full_box(b"mfhd", 0, 0, _U32.pack(sequence_number))

    def make_moof(data_offset: int) -> bytes:
        trun = full_box(
            b"trun",
            0,
            trun_flags,
            _U32.pack(len(sizes)),
            struct.pack(">i", data_offset),
            bytes(entries),
        )
        return box(b"moof", mfhd, box(b"traf", tfhd, tfdt, trun))

    moof_size = len(make_moof(0))
    moof = make_moof(moof_size + 8)  # samples start right after the mdat header
    if payload is None:
        payload = bytes(sum(sizes))
    elif len(payload) != sum(sizes):
        raise ValueError("payload length does not match the sample sizes")
    return (styp() if with_styp else b"") + moof + box(b"mdat", payload)


def rewrite_fragment(
    data: bytes, *, base_media_decode_time: int | None = None, sequence_number: int | None = None
) -> bytes:
    """Copy of a media segment with a new tfdt and/or mfhd sequence number.

    The first traf's tfdt becomes ``base_media_decode_time`` and later moofs are shifted by
    the same amount, so a multi-moof segment stays internally continuous. A version-0 tfdt
    whose new value does not fit 32 bits is rewritten as version 1, growing the boxes and
    fixing the moof-relative trun data offsets.
    """
    out = bytearray(data)
    delta: int | None = None
    grow = False  # a v0 tfdt whose new value needs 64 bits
    for moof in iter_boxes(out):
        if moof.type != b"moof":
            continue
        for child in iter_boxes(out, moof.payload, moof.end):
            if child.type == b"mfhd" and sequence_number is not None:
                _U32.pack_into(out, child.payload + 4, sequence_number)
            if child.type != b"traf" or base_media_decode_time is None:
                continue
            for tfdt in iter_boxes(out, child.payload, child.end):
                if tfdt.type != b"tfdt":
                    continue
                version = out[tfdt.payload]
                old = (
                    _U64.unpack_from(out, tfdt.payload + 4)[0]
                    if version == 1
                    else _U32.unpack_from(out, tfdt.payload + 4)[0]
                )
                if delta is None:
                    delta = base_media_decode_time - old
                new = old + delta
                if new < 0:
                    raise ValueError("rewritten tfdt would be negative")
                if version == 1:
                    _U64.pack_into(out, tfdt.payload + 4, new)
                elif new <= 0xFFFFFFFF:
                    _U32.pack_into(out, tfdt.payload + 4, new)
                else:
                    grow = True
    if grow:
        # rare path (a v0 source looped past 2**32 ticks): rebuild from the original bytes with
        # 64-bit tfdt boxes, then apply the sequence number to the rebuilt copy
        widened = _widen_tfdt(data, delta or 0)
        return rewrite_fragment(widened, sequence_number=sequence_number)
    return bytes(out)


def zero_last_sample_duration(data: bytes, default_sample_duration: int | None = None) -> bytes:
    """Copy of a media segment whose last sample of each track lasts 0 ticks, tfdt untouched.

    This is what nginx-rtmp writes: it closes a fragment before the next frame exists, so the
    last sample's duration (the gap to the next sample) is unknown and written as 0, and
    tfdt + sum of durations ends one sample short of the next segment. Only the segment's last
    sample per track is affected: inside a segment the next sample exists, so a multi-moof
    segment keeps the durations of its earlier runs.

    Where that last run carries per-sample durations the change is a 4-byte write in place and
    every box keeps its size. A run relying on a default duration (tfhd or trex; ffmpeg's video
    fragments do) has no field to zero: such runs are first given explicit durations
    (``explicit_sample_durations``), which grows the moof by 4 bytes a sample.
    """
    if _runs_without_durations(data):
        data = explicit_sample_durations(data, default_sample_duration)
    out = bytearray(data)
    last: dict[int, int] = {}  # track_id -> offset of its last sample's duration field
    for moof in iter_boxes(out):
        if moof.type != b"moof":
            continue
        for traf in iter_boxes(out, moof.payload, moof.end):
            if traf.type != b"traf":
                continue
            track_id: int | None = None
            for sub in iter_boxes(out, traf.payload, traf.end):
                if sub.type == b"tfhd":
                    track_id = _U32.unpack_from(out, sub.payload + 4)[0]
                elif sub.type == b"trun" and track_id is not None:
                    flags = _U32.unpack_from(out, sub.payload)[0] & 0xFFFFFF
                    count = _U32.unpack_from(out, sub.payload + 4)[0]
                    if count:
                        first_entry, per_sample = _trun_layout(sub.payload, flags)
                        last[track_id] = first_entry + (count - 1) * per_sample
    for pos in last.values():
        _U32.pack_into(out, pos, 0)  # duration is the first field of a sample entry
    return bytes(out)


def explicit_sample_durations(data: bytes, default_sample_duration: int | None = None) -> bytes:
    """Copy of a media segment where every trun carries per-sample durations.

    Runs without them take the tfhd default duration, else ``default_sample_duration`` (the
    init segment's trex default). The grown moofs get their sizes and moof-relative data
    offsets fixed; the mdat bytes are unchanged.
    """
    parts: list[bytes] = []
    for top in iter_boxes(data):
        if top.type != b"moof" or not _runs_without_durations(data, top):
            parts.append(data[top.start : top.end])
            continue
        children: list[bytes] = []
        growth = 0
        for child in iter_boxes(data, top.payload, top.end):
            if child.type != b"traf":
                children.append(data[child.start : child.end])
                continue
            default = _tfhd_default_duration(data, child)
            if default is None:
                default = default_sample_duration
            traf_parts: list[bytes] = []
            for sub in iter_boxes(data, child.payload, child.end):
                if sub.type != b"trun":
                    traf_parts.append(data[sub.start : sub.end])
                    continue
                flags = _U32.unpack_from(data, sub.payload)[0] & 0xFFFFFF
                if flags & TRUN_SAMPLE_DURATION:
                    traf_parts.append(data[sub.start : sub.end])
                    continue
                if default is None:
                    raise Mp4Error("trun has no durations and no default duration is known")
                trun = _with_durations(data, sub, flags, default)
                growth += len(trun) - (sub.end - sub.start)
                traf_parts.append(trun)
            children.append(box(b"traf", *traf_parts))
        moof = bytearray(box(b"moof", *children))
        _shift_trun_offsets(moof, growth)
        parts.append(bytes(moof))
    return b"".join(parts)


def _trun_layout(payload: int, flags: int) -> tuple[int, int]:
    """(offset of the first sample entry, bytes per sample entry) of a trun."""
    first = payload + 8
    first += 4 if flags & TRUN_DATA_OFFSET else 0
    first += 4 if flags & TRUN_FIRST_SAMPLE_FLAGS else 0
    fields = (TRUN_SAMPLE_DURATION, TRUN_SAMPLE_SIZE, TRUN_SAMPLE_FLAGS, TRUN_SAMPLE_CTO)
    return first, 4 * sum(1 for bit in fields if flags & bit)


def _runs_without_durations(data: bytes, moof: BoxSpan | None = None) -> bool:
    """Whether a trun (in ``moof``, or anywhere in ``data``) relies on a default duration."""
    moofs = [moof] if moof is not None else [b for b in iter_boxes(data) if b.type == b"moof"]
    for m in moofs:
        for traf in iter_boxes(data, m.payload, m.end):
            if traf.type != b"traf":
                continue
            for sub in iter_boxes(data, traf.payload, traf.end):
                if sub.type == b"trun" and not _U32.unpack_from(data, sub.payload)[0] & (
                    TRUN_SAMPLE_DURATION
                ):
                    return True
    return False


def _tfhd_default_duration(data: bytes, traf: BoxSpan) -> int | None:
    for sub in iter_boxes(data, traf.payload, traf.end):
        if sub.type != b"tfhd":
            continue
        flags = _U32.unpack_from(data, sub.payload)[0] & 0xFFFFFF
        if flags & _TFHD_BASE_DATA_OFFSET:
            # An absolute data offset would point into the moved mdat: not worth supporting
            # for test media, which never uses one.
            raise Mp4Error("tfhd base_data_offset is not supported when growing a moof")
        if not flags & _TFHD_DEFAULT_SAMPLE_DURATION:
            return None
        pos = sub.payload + 8 + (4 if flags & _TFHD_SAMPLE_DESCRIPTION_INDEX else 0)
        default: int = _U32.unpack_from(data, pos)[0]
        return default
    raise Mp4Error("traf has no tfhd")


def _with_durations(data: bytes, trun: BoxSpan, flags: int, duration: int) -> bytes:
    """The trun rewritten with ``duration`` written into every sample entry."""
    version = data[trun.payload]
    count = _U32.unpack_from(data, trun.payload + 4)[0]
    first, per_sample = _trun_layout(trun.payload, flags)
    entries = bytearray()
    for i in range(count):
        start = first + i * per_sample
        # duration comes first in a sample entry, before size, flags and composition offset
        entries += _U32.pack(duration) + data[start : start + per_sample]
    header = data[trun.payload + 4 : first]  # sample count, data offset, first sample flags
    return full_box(b"trun", version, flags | TRUN_SAMPLE_DURATION, header, bytes(entries))


def _widen_tfdt(data: bytes, delta: int) -> bytes:
    """Rebuild each moof with version-1 tfdt boxes holding old + delta."""
    parts: list[bytes] = []
    for top in iter_boxes(data):
        if top.type != b"moof":
            parts.append(data[top.start : top.end])
            continue
        children: list[bytes] = []
        growth = 0
        for child in iter_boxes(data, top.payload, top.end):
            if child.type != b"traf":
                children.append(data[child.start : child.end])
                continue
            traf_parts: list[bytes] = []
            for sub in iter_boxes(data, child.payload, child.end):
                if sub.type == b"tfdt":
                    version = data[sub.payload]
                    old = (
                        _U64.unpack_from(data, sub.payload + 4)[0]
                        if version == 1
                        else _U32.unpack_from(data, sub.payload + 4)[0]
                    )
                    traf_parts.append(full_box(b"tfdt", 1, 0, _U64.pack(old + delta)))
                    growth += 0 if version == 1 else 4
                else:
                    traf_parts.append(data[sub.start : sub.end])
            children.append(box(b"traf", *traf_parts))
        moof = bytearray(box(b"moof", *children))
        _shift_trun_offsets(moof, growth)
        parts.append(bytes(moof))
    return b"".join(parts)


def _shift_trun_offsets(moof: bytearray, growth: int) -> None:
    """Add ``growth`` to moof-relative trun data offsets after the moof grew."""
    (moof_box,) = list(iter_boxes(moof))
    for traf in iter_boxes(moof, moof_box.payload, moof_box.end):
        if traf.type != b"traf":
            continue
        relative = True
        for sub in iter_boxes(moof, traf.payload, traf.end):
            if sub.type == b"tfhd":
                flags = _U32.unpack_from(moof, sub.payload)[0] & 0xFFFFFF
                relative = not flags & _TFHD_BASE_DATA_OFFSET
            elif sub.type == b"trun" and relative:
                flags = _U32.unpack_from(moof, sub.payload)[0] & 0xFFFFFF
                if flags & TRUN_DATA_OFFSET:
                    pos = sub.payload + 8
                    value = struct.unpack_from(">i", moof, pos)[0]
                    struct.pack_into(">i", moof, pos, value + growth)


def avc_codecs(init: bytes) -> str:
    """RFC 6381 codecs string (avc1.PPCCLL) from the avcC of an init segment."""
    for entry in (b"avc1", b"avc3"):
        avcc = find_path(
            init, (b"moov", b"trak", b"mdia", b"minf", b"stbl", b"stsd", entry, b"avcC")
        )
        if avcc is not None:
            profile, compat, level = init[avcc.payload + 1 : avcc.payload + 4]
            return f"{entry.decode()}.{profile:02x}{compat:02x}{level:02x}"
    raise Mp4Error("no avcC in init segment")
