"""instarec.mp4 on real ffmpeg bytes (checked with PyAV) and on hand-built boxes."""

from __future__ import annotations

import io
import itertools
import struct
from fractions import Fraction

import av
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from instarec import mp4
from instarec.mp4 import FragmentScanner, Mp4Error, moof_end, parse_fragment, parse_init
from instarec.testing import fmp4
from instarec.testing.fmp4 import box, full_box
from instarec.testing.media import TestMedia

U32 = struct.Struct(">I")
U64 = struct.Struct(">Q")


# --------------------------------------------------------------------------- tiny builders


def make_init(
    *, track_id: int = 3, timescale: int = 90000, handler: bytes = b"vide", trex: int | None = 3000
) -> bytes:
    tkhd = full_box(b"tkhd", 0, 7, U32.pack(0), U32.pack(0), U32.pack(track_id), bytes(68))
    mdhd = full_box(b"mdhd", 0, 0, U32.pack(0), U32.pack(0), U32.pack(timescale), bytes(8))
    hdlr = full_box(b"hdlr", 0, 0, U32.pack(0), handler, bytes(12), b"h\x00")
    trak = box(b"trak", tkhd, box(b"mdia", mdhd, hdlr))
    moov_parts = [full_box(b"mvhd", 0, 0, bytes(96)), trak]
    if trex is not None:
        # a trex for another track first: the parser must pick the one matching the trak
        other = full_box(b"trex", 0, 0, struct.pack(">IIIII", track_id + 1, 1, 7, 0, 0))
        mine = full_box(b"trex", 0, 0, struct.pack(">IIIII", track_id, 1, trex, 0, 0))
        moov_parts.append(box(b"mvex", other, mine))
    return box(b"ftyp", b"iso6", U32.pack(0), b"iso6") + box(b"moov", *moov_parts)


def make_traf(
    *,
    track_id: int = 3,
    tfdt: int | None = 0,
    tfdt_version: int = 1,
    durations: list[int] | None = None,
    count: int | None = None,
    tfhd_default: int | None = None,
) -> bytes:
    """A traf; per-sample durations when ``durations`` is given, else ``count`` samples."""
    flags = 0x020000
    extra = b""
    if tfhd_default is not None:
        flags |= 0x08
        extra = U32.pack(tfhd_default)
    parts = [full_box(b"tfhd", 0, flags, U32.pack(track_id), extra)]
    if tfdt is not None:
        value = U64.pack(tfdt) if tfdt_version == 1 else U32.pack(tfdt)
        parts.append(full_box(b"tfdt", tfdt_version, 0, value))
    if durations is not None:
        entries = b"".join(U32.pack(d) + U32.pack(10) for d in durations)
        parts.append(full_box(b"trun", 0, 0x301, U32.pack(len(durations)), U32.pack(0), entries))
    else:
        assert count is not None
        parts.append(full_box(b"trun", 0, 0x001, U32.pack(count), U32.pack(0)))
    return box(b"traf", *parts)


def make_moof(*trafs: bytes, seq: int = 1) -> bytes:
    return box(b"moof", full_box(b"mfhd", 0, 0, U32.pack(seq)), *trafs)


def large_box(box_type: bytes, payload: bytes) -> bytes:
    """A box written with the 64-bit size form (size field 1)."""
    return U32.pack(1) + box_type + U64.pack(16 + len(payload)) + payload


PREFIX = (
    box(b"styp", b"msdh", U32.pack(0), b"msdh")
    + full_box(b"sidx", 1, 0, bytes(40))
    + full_box(b"prft", 1, 0, bytes(16))
    + full_box(b"emsg", 0, 0, b"urn:x\x00\x00", bytes(16))
)


# --------------------------------------------------------------------------- real media


def _pyav_packets(data: bytes) -> list[av.Packet]:
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams[0]
        return [p for p in container.demux(stream) if p.size]


@pytest.mark.parametrize("kind", ["video", "audio"])
def test_real_init_matches_pyav(test_media: TestMedia, kind: str) -> None:
    track = test_media.track(kind)
    info = parse_init(track.init)
    with av.open(io.BytesIO(track.init + track.segment_data(0))) as container:
        stream = container.streams[0]
        assert stream.time_base == Fraction(1, info.timescale)
        assert stream.type == kind
    assert info.handler == {"video": "vide", "audio": "soun"}[kind]
    assert info.track_id >= 1
    # The sample entry is the codec's: avc1 carrying its avcC, mp4a carrying its esds.
    entry = info.sample_entry
    assert struct.unpack(">I", entry[:4])[0] == len(entry)
    assert entry[4:8] == {"video": b"avc1", "audio": b"mp4a"}[kind]
    assert {"video": b"avcC", "audio": b"esds"}[kind] in entry


def test_a_sample_entry_tells_codec_configurations_apart() -> None:
    entry = box(b"mp4a", bytes(28))
    avc = box(b"avc1", bytes(78), box(b"avcC", b"\x01\x42\xc0\x1e"))
    other = box(b"avc1", bytes(78), box(b"avcC", b"\x01\x64\x00\x1f"))

    def with_entry(sample_entry: bytes) -> bytes:
        stsd = full_box(b"stsd", 0, 0, U32.pack(1), sample_entry)
        minf = box(b"minf", box(b"stbl", stsd))
        tkhd = full_box(b"tkhd", 0, 7, U32.pack(0), U32.pack(0), U32.pack(1), bytes(68))
        mdhd = full_box(b"mdhd", 0, 0, U32.pack(0), U32.pack(0), U32.pack(90000), bytes(8))
        hdlr = full_box(b"hdlr", 0, 0, U32.pack(0), b"vide", bytes(12), b"h\x00")
        return box(b"moov", box(b"trak", tkhd, box(b"mdia", mdhd, hdlr, minf)))

    assert parse_init(with_entry(avc)).sample_entry == avc
    assert parse_init(with_entry(avc)).sample_entry != parse_init(with_entry(other)).sample_entry
    assert parse_init(with_entry(entry)).sample_entry == entry
    assert parse_init(make_init()).sample_entry == b""  # no stsd at all


@pytest.mark.parametrize("kind", ["video", "audio"])
def test_real_fragments_match_pyav(test_media: TestMedia, kind: str) -> None:
    track = test_media.track(kind)
    default = parse_init(track.init).default_sample_duration
    for i in (0, 1, test_media.source_count - 1):
        segment = track.segment_data(i)
        info = parse_fragment(segment, default_sample_duration=default)
        packets = _pyav_packets(track.init + segment)
        assert info.sample_count == len(packets)
        assert info.base_media_decode_time == packets[0].dts
        assert info.duration == sum(p.duration for p in packets)
        assert info.moof_count == 1
        # the moof ends before the mdat, and a prefix one byte short is not enough
        end = moof_end(segment[:4096])
        assert end is not None and segment[end + 4 : end + 8] == b"mdat"
        assert moof_end(segment[: end - 1]) is None


# --------------------------------------------------------------------------- hand-built


def test_parse_init_fields() -> None:
    info = parse_init(make_init(track_id=5, timescale=48000, handler=b"soun", trex=1024))
    assert info == mp4.InitInfo(5, 48000, "soun", 1024)
    assert parse_init(make_init(trex=None)).default_sample_duration is None


def test_parse_init_version1_boxes() -> None:
    tkhd = full_box(b"tkhd", 1, 7, bytes(16), U32.pack(9), bytes(80))
    mdhd = full_box(b"mdhd", 1, 0, bytes(16), U32.pack(1000), bytes(12))
    hdlr = full_box(b"hdlr", 0, 0, U32.pack(0), b"soun", bytes(13))
    data = large_box(b"moov", box(b"trak", tkhd, box(b"mdia", mdhd, hdlr)))
    assert parse_init(data) == mp4.InitInfo(9, 1000, "soun", None)


def test_prefix_boxes_and_several_moofs() -> None:
    data = (
        PREFIX
        + make_moof(make_traf(tfdt=1000, durations=[10, 20, 30]))
        + box(b"mdat", bytes(30))
        + make_moof(make_traf(tfdt=1060, durations=[5]), seq=2)
        + box(b"mdat", bytes(10))
    )
    info = parse_fragment(data)
    assert info == mp4.FragmentInfo(3, 1000, 65, 4, 2)
    assert info.end == 1065
    assert moof_end(data) == data.index(b"mdat") - 4


def test_tfdt_version0() -> None:
    data = make_moof(make_traf(tfdt=77, tfdt_version=0, durations=[1, 2])) + box(b"mdat", b"")
    assert parse_fragment(data).base_media_decode_time == 77


def test_tfhd_default_duration_beats_trex() -> None:
    data = make_moof(make_traf(count=4, tfhd_default=512)) + box(b"mdat", b"")
    info = parse_fragment(data, default_sample_duration=999)
    assert (info.duration, info.sample_count) == (2048, 4)


def test_trex_default_duration_used_when_nothing_else() -> None:
    data = make_moof(make_traf(count=3)) + box(b"mdat", b"")
    init = parse_init(make_init(trex=1001))
    assert parse_fragment(data, default_sample_duration=init.default_sample_duration).duration == (
        3003
    )
    with pytest.raises(Mp4Error):
        parse_fragment(data)


def test_other_tracks_trafs_are_ignored() -> None:
    data = make_moof(
        make_traf(track_id=1, tfdt=50, durations=[10, 10]),
        make_traf(track_id=2, tfdt=90, durations=[1000]),
    )
    info = parse_fragment(data + box(b"mdat", b""))
    assert (info.track_id, info.base_media_decode_time, info.duration) == (1, 50, 20)


def test_missing_tfdt_is_none() -> None:
    info = parse_fragment(make_moof(make_traf(tfdt=None, durations=[4])))
    assert info.base_media_decode_time is None and info.end is None


def test_large_and_open_ended_boxes() -> None:
    payload = b"\xab" * 100
    data = (
        large_box(b"moof", make_moof(make_traf(tfdt=5, durations=[7, 8]))[8:])
        + large_box(b"mdat", payload)
        + make_moof(make_traf(tfdt=20, durations=[9]))
        + U32.pack(0)
        + b"mdat"
        + payload  # size 0: extends to the end
    )
    info = parse_fragment(data)
    assert (info.duration, info.sample_count, info.moof_count) == (24, 3, 2)
    first_moof_len = len(large_box(b"moof", make_moof(make_traf(tfdt=5, durations=[7, 8]))[8:]))
    assert moof_end(data) == first_moof_len
    assert moof_end(data[:20]) is None


def test_moof_end_every_prefix() -> None:
    segment = PREFIX + make_moof(make_traf(durations=[3] * 9)) + box(b"mdat", bytes(90))
    end = len(PREFIX) + len(make_moof(make_traf(durations=[3] * 9)))
    for cut in range(len(segment) + 1):
        assert moof_end(segment[:cut]) == (end if cut >= end else None)


def test_moof_end_rejects_mdat_first() -> None:
    with pytest.raises(Mp4Error):
        moof_end(box(b"mdat", bytes(4)) + make_moof(make_traf(durations=[1])))


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00\x00\x00",
        box(b"styp", b"msdh"),  # no moof
        U32.pack(4) + b"moof",  # size smaller than its header
        make_moof(make_traf(durations=[1, 2]))[:-3],  # truncated
        box(b"moof", full_box(b"mfhd", 0, 0, U32.pack(1))),  # no traf
        make_moof(
            box(
                b"traf",
                full_box(b"tfhd", 0, 0, U32.pack(1)),
                full_box(b"trun", 0, 0x100, U32.pack(5)),
            )
        ),
    ],
)
def test_malformed_fragments_raise(data: bytes) -> None:
    with pytest.raises(Mp4Error):
        parse_fragment(data)


@pytest.mark.parametrize(
    "data",
    [b"", box(b"ftyp", b"iso6"), box(b"moov", box(b"trak", b"")), box(b"moov", bytes(3))],
)
def test_malformed_inits_raise(data: bytes) -> None:
    with pytest.raises(Mp4Error):
        parse_init(data)


fragments = st.lists(
    st.tuples(
        st.integers(0, 2**40),  # tfdt
        st.lists(st.integers(0, 2**32 - 1), min_size=0, max_size=40),  # sample durations
        st.booleans(),  # tfdt version 1
        st.booleans(),  # with styp
    ),
    min_size=1,
    max_size=4,
)


@settings(max_examples=150, deadline=None)
@given(fragments)
def test_built_fragments_parse_back(parts: list[tuple[int, list[int], bool, bool]]) -> None:
    data = b""
    for n, (tfdt, durations, v1, styp) in enumerate(parts):
        if not v1:
            tfdt %= 2**32
        data += fmp4.build_fragment(
            track_id=7,
            sequence_number=n + 1,
            base_media_decode_time=tfdt,
            durations=durations,
            sizes=[n % 5 for n in range(len(durations))],
            tfdt_version=1 if v1 else 0,
            with_styp=styp and n == 0,
        )
    info = parse_fragment(data)
    first_tfdt = parts[0][0] if parts[0][2] else parts[0][0] % 2**32
    assert info.track_id == 7
    assert info.base_media_decode_time == first_tfdt

    def lasting(durations: list[int]) -> int:
        # A trailing 0 (a fragment closed before its next frame) lasts one average sample.
        if len(durations) > 1 and durations[-1] == 0:
            return sum(durations) + round(sum(durations) / (len(durations) - 1))
        return sum(durations)

    assert info.duration == sum(lasting(p[1]) for p in parts)
    assert info.sample_count == sum(len(p[1]) for p in parts)
    assert info.moof_count == len(parts)
    end = moof_end(data)
    assert end is not None and data[end + 4 : end + 8] == b"mdat"


@settings(max_examples=150, deadline=None)
@given(fragments, st.lists(st.integers(1, 200), min_size=1, max_size=30), st.booleans())
def test_a_scanner_fed_in_pieces_reads_what_the_whole_body_says(
    parts: list[tuple[int, list[int], bool, bool]], cuts: list[int], restarted: bool
) -> None:
    data = b"".join(
        fmp4.build_fragment(
            track_id=3,
            sequence_number=n + 1,
            base_media_decode_time=tfdt if v1 else tfdt % 2**32,
            durations=durations,
            sizes=[(n * 7) % 300 for n in range(len(durations))],
            tfdt_version=1 if v1 else 0,
            with_styp=styp and n == 0,
        )
        for n, (tfdt, durations, v1, styp) in enumerate(parts)
    )
    scanner = FragmentScanner()
    if restarted:
        scanner.feed(data[: len(data) // 2])
        scanner.restart()
    pos = 0
    for cut in itertools.cycle(cuts):
        if pos >= len(data):
            break
        scanner.feed(data[pos : pos + cut])
        pos += cut
    assert scanner.fragment() == parse_fragment(data)


def test_a_scanner_keeps_no_mdat_payload_and_knows_a_cut_body() -> None:
    data = fmp4.build_fragment(
        track_id=1,
        sequence_number=1,
        base_media_decode_time=0,
        durations=[10] * 4,
        sizes=[250_000] * 4,
    )
    scanner = FragmentScanner()
    scanner.feed(data[:-1])
    with pytest.raises(Mp4Error, match="inside a box"):
        scanner.fragment()
    scanner.feed(data[-1:])
    assert scanner.fragment().sample_count == 4
    assert scanner.retained < 2000  # the moof, not the megabyte of samples


def test_a_trailing_zero_sample_duration_lasts_one_ordinary_sample() -> None:
    # nginx-rtmp closes a fragment before the next frame exists: its last duration is 0.
    data = fmp4.build_fragment(
        track_id=1,
        sequence_number=1,
        base_media_decode_time=21,
        durations=[33, 34, 33, 0],
        sizes=[10, 10, 10, 10],
    )
    info = parse_fragment(data)
    assert (info.duration, info.sample_count, info.end) == (133, 4, 154)


def test_a_lone_zero_duration_sample_stays_zero() -> None:
    data = fmp4.build_fragment(
        track_id=1, sequence_number=1, base_media_decode_time=0, durations=[0], sizes=[10]
    )
    assert parse_fragment(data).duration == 0


# --------------------------------------------------------------------------- nginx-rtmp's habit


def test_zeroing_the_last_sample_duration_is_an_in_place_write() -> None:
    data = fmp4.build_fragment(
        track_id=1,
        sequence_number=1,
        base_media_decode_time=2021,
        durations=[33, 34, 33],
        sizes=[10, 11, 12],
        payload=bytes(range(33)),
        with_styp=True,
    )
    out = fmp4.zero_last_sample_duration(data)
    assert len(out) == len(data)
    # Exactly the last sample's 4 duration bytes differ.
    differing = [i for i, (a, b) in enumerate(zip(data, out, strict=True)) if a != b]
    assert differing and differing[-1] - differing[0] < 4
    assert [s.duration for s in fmp4.read_samples(out)] == [33, 34, 0]
    assert [s.size for s in fmp4.read_samples(out)] == [10, 11, 12]
    assert parse_fragment(out).base_media_decode_time == 2021


def test_zeroing_touches_only_the_last_sample_of_a_multi_moof_segment() -> None:
    first = fmp4.build_fragment(
        track_id=1, sequence_number=1, base_media_decode_time=0, durations=[5, 5], sizes=[1, 1]
    )
    second = fmp4.build_fragment(
        track_id=1, sequence_number=2, base_media_decode_time=10, durations=[5, 6], sizes=[1, 1]
    )
    out = fmp4.zero_last_sample_duration(first + second)
    assert [s.duration for s in fmp4.read_samples(out)] == [5, 5, 5, 0]


@pytest.mark.parametrize("kind", ["video", "audio"])
def test_zeroing_real_segments_keeps_every_sample_and_the_tfdt(
    test_media: TestMedia, kind: str
) -> None:
    # ffmpeg's video runs rely on the tfhd default duration: they are given explicit durations
    # first (the moof grows); the AAC runs already carry them (in place).
    track = test_media.track(kind)
    default = parse_init(track.init).default_sample_duration
    segment = track.segment_data(1)
    out = fmp4.zero_last_sample_duration(segment, default)
    before, after = fmp4.read_samples(segment, default), fmp4.read_samples(out, default)
    assert [s.duration for s in after] == [s.duration for s in before[:-1]] + [0]
    assert [(s.size, s.flags, s.composition_offset) for s in after] == [
        (s.size, s.flags, s.composition_offset) for s in before
    ]
    for old, new in zip(before, after, strict=True):
        assert (
            out[new.offset : new.offset + new.size] == segment[old.offset : old.offset + old.size]
        )
    if kind == "audio":
        assert len(out) == len(segment)
    original = parse_fragment(segment, default_sample_duration=default)
    rewritten = parse_fragment(out, default_sample_duration=default)
    assert rewritten.base_media_decode_time == original.base_media_decode_time
    assert rewritten.sample_count == original.sample_count
    # A demuxer still reads the same samples from the rewritten boxes.
    packets = _pyav_packets(track.init + out)
    assert len(packets) == original.sample_count
    assert packets[0].dts == original.base_media_decode_time
    assert [bytes(p) for p in packets] == [bytes(p) for p in _pyav_packets(track.init + segment)]


def test_explicit_durations_need_a_default_when_the_run_has_none() -> None:
    moof = make_moof(make_traf(count=2))
    data = moof + box(b"mdat", bytes(20))
    with pytest.raises(Mp4Error):
        fmp4.explicit_sample_durations(data)
    out = fmp4.explicit_sample_durations(data, default_sample_duration=3000)
    assert [s.duration for s in fmp4.read_samples(out)] == [3000, 3000]
