"""Text tracks in MP4 (ISO/IEC 14496-30) for the origin, built here byte by byte.

No encoder makes live text fragments, so the origin's text tracks are written by hand.
WebVTT (``wvtt``): an init segment whose sample entry is ``wvtt`` (with its ``vttC`` header),
and one fragment per segment whose samples cover the segment without a hole: ``vtte`` (no cue)
before and after one ``vttc`` cue (``iden``, ``sttg``, ``payl``). TTML (``stpp``): one sample
per segment, a TTML document whose times count from the track's media time 0 (so such a track
is right only within one loop of the source: a looped segment keeps its document's times).

Cue ``j`` of a source segment says ``cue_text(lang, j)`` from ``CUE_START`` to ``CUE_END``
seconds after the segment starts, so a test knows every cue's text and time.
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Sequence

from instarec.testing import fmp4

TEXT_CODECS = "wvtt"
TTML_CODECS = "stpp"
TTML_NAMESPACE = "http://www.w3.org/ns/ttml"
CUE_START = 0.25  # seconds after its segment's start
CUE_END = 1.25


def cue_text(lang: str, index: int) -> str:
    """The text of the cue of source segment ``index`` in the track of ``lang``."""
    return f"[{lang}] caption {index}"


def _u32(value: int) -> bytes:
    return struct.pack(">I", value)


def text_init(track_id: int, timescale: int, lang: str, *, ttml: bool = False) -> bytes:
    """An init segment (ftyp + moov) for one ``wvtt`` track (``ttml``: ``stpp``)."""
    matrix = b"".join(_u32(v) for v in (0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000))
    mvhd = fmp4.full_box(
        b"mvhd",
        0,
        0,
        _u32(0) * 2 + _u32(1000) + _u32(0),  # times, timescale, duration
        _u32(0x10000) + struct.pack(">H", 0x100) + bytes(10) + matrix + bytes(24),
        _u32(track_id + 1),
    )
    tkhd = fmp4.full_box(
        b"tkhd",
        0,
        3,  # enabled, in movie
        _u32(0) * 2 + _u32(track_id) + _u32(0) + _u32(0),
        bytes(8) + struct.pack(">hhhH", 0, 0, 0, 0) + matrix + _u32(0) * 2,
    )
    packed = 0
    for char in (lang + "und")[:3]:
        packed = (packed << 5) | ((ord(char) - 0x60) & 0x1F)
    mdhd = fmp4.full_box(
        b"mdhd", 0, 0, _u32(0) * 2 + _u32(timescale) + _u32(0), struct.pack(">HH", packed, 0)
    )
    handler = b"subt" if ttml else b"text"
    hdlr = fmp4.full_box(b"hdlr", 0, 0, _u32(0), handler, bytes(12), b"Text\x00")
    reserved = bytes(6) + struct.pack(">H", 1)  # reserved, data_reference_index
    if ttml:
        # namespace, schema_location, auxiliary_mime_types: null-terminated strings
        entry = fmp4.box(b"stpp", reserved, TTML_NAMESPACE.encode() + b"\x00\x00\x00")
    else:
        entry = fmp4.box(b"wvtt", reserved, fmp4.box(b"vttC", b"WEBVTT"))
    stsd = fmp4.full_box(b"stsd", 0, 0, _u32(1), entry)
    empty_tables = b"".join(
        fmp4.full_box(name, 0, 0, _u32(0)) for name in (b"stts", b"stsc", b"stco")
    )
    stsz = fmp4.full_box(b"stsz", 0, 0, _u32(0), _u32(0))
    dref = fmp4.full_box(b"dref", 0, 0, _u32(1), fmp4.full_box(b"url ", 0, 1))
    minf = fmp4.box(
        b"minf",
        fmp4.full_box(b"sthd", 0, 0),
        fmp4.box(b"dinf", dref),
        fmp4.box(b"stbl", stsd, empty_tables, stsz),
    )
    trak = fmp4.box(b"trak", tkhd, fmp4.box(b"mdia", mdhd, hdlr, minf))
    trex = fmp4.full_box(b"trex", 0, 0, _u32(track_id), _u32(1), _u32(0), _u32(0), _u32(0))
    moov = fmp4.box(b"moov", mvhd, trak, fmp4.box(b"mvex", trex))
    ftyp = fmp4.box(b"ftyp", b"iso6", _u32(0), b"iso6", b"dash")
    return ftyp + moov


def _cue(text: str, index: int) -> bytes:
    return fmp4.box(
        b"vttc",
        fmp4.box(b"iden", f"c{index}".encode()),
        fmp4.box(b"sttg", b"line:90% align:center"),
        fmp4.box(b"payl", text.encode()),
    )


def text_segments(track_id: int, timescale: int, lang: str, edges: Sequence[int]) -> list[bytes]:
    """One fragment per span between ``edges`` (ticks), each with its cue."""
    parts = []
    first, last = round(CUE_START * timescale), round(CUE_END * timescale)
    for index, (start, end) in enumerate(itertools.pairwise(edges)):
        if end - start <= last:
            raise ValueError("a text segment is too short for its cue")
        samples = [
            (first, fmp4.box(b"vtte")),
            (last - first, _cue(cue_text(lang, index), index)),
            (end - start - last, fmp4.box(b"vtte")),
        ]
        payload = b"".join(data for _, data in samples)
        parts.append(
            fmp4.build_fragment(
                track_id=track_id,
                sequence_number=index + 1,
                base_media_decode_time=start,
                durations=[d for d, _ in samples],
                sizes=[len(data) for _, data in samples],
                flags=[fmp4.SYNC_SAMPLE_FLAGS] * len(samples),
                payload=payload,
                with_styp=True,
            )
        )
    return parts


def plain_segment(lang: str, index: int, start: int, duration: int, timescale: int) -> bytes:
    """A WebVTT file for the segment at ``start`` ticks: its cue at its time in seconds of the
    Period (a segment of a ``text/vtt`` representation); ``index``: its source segment."""
    begin, end = start / timescale + CUE_START, start / timescale + CUE_END
    if duration / timescale <= CUE_END:
        raise ValueError("a text segment is too short for its cue")
    return (
        f"WEBVTT\n\nNOTE segment {index}\n\nc{index}\n"
        f"{_clock(begin)} --> {_clock(end)} line:90%\n{cue_text(lang, index)}\n"
    ).encode()


def _clock(seconds: float) -> str:
    millis = round(seconds * 1000)
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    return f"{hours:02d}:{minutes:02d}:{rest // 1000:02d}.{rest % 1000:03d}"


def ttml_document(lang: str, index: int, start: float) -> bytes:
    """The TTML document of the segment starting at ``start`` seconds of media time."""
    begin, end = _clock(start + CUE_START), _clock(start + CUE_END)
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<tt xmlns="{TTML_NAMESPACE}" xml:lang="{lang}">'
        f'<body><div><p begin="{begin}" end="{end}">{cue_text(lang, index)}</p></div></body></tt>'
    ).encode()


def ttml_segments(track_id: int, timescale: int, lang: str, edges: Sequence[int]) -> list[bytes]:
    """One fragment per span between ``edges`` (ticks), one TTML document each."""
    parts = []
    for index, (start, end) in enumerate(itertools.pairwise(edges)):
        document = ttml_document(lang, index, start / timescale)
        parts.append(
            fmp4.build_fragment(
                track_id=track_id,
                sequence_number=index + 1,
                base_media_decode_time=start,
                durations=[end - start],
                sizes=[len(document)],
                flags=[fmp4.SYNC_SAMPLE_FLAGS],
                payload=document,
                with_styp=True,
            )
        )
    return parts
