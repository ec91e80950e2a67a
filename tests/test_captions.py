"""Text tracks to cues (wvtt and stpp samples), the WebVTT written for ffmpeg, language codes,
and the sample reader they stand on."""

from __future__ import annotations

import pytest

from instarec import mp4
from instarec.captions import (
    Cue,
    is_webvtt,
    iso639_2,
    joined,
    text_cues,
    ttml_cues,
    webvtt_cues,
    webvtt_document,
    wvtt_cues,
)
from instarec.mp4 import Sample
from instarec.testing import fmp4
from instarec.testing.text import text_init, text_segments


def vttc(text: str, settings: str = "", identifier: str = "") -> bytes:
    parts = []
    if identifier:
        parts.append(fmp4.box(b"iden", identifier.encode()))
    if settings:
        parts.append(fmp4.box(b"sttg", settings.encode()))
    parts.append(fmp4.box(b"payl", text.encode()))
    return fmp4.box(b"vttc", *parts)


VTTE = fmp4.box(b"vtte")


# --- mp4.read_samples ------------------------------------------------------------------------


def test_read_samples_gives_each_sample_its_time_and_bytes():
    payload = b"aaabbbbbcc"
    data = fmp4.build_fragment(
        track_id=1,
        sequence_number=1,
        base_media_decode_time=9000,
        durations=[100, 200, 300],
        sizes=[3, 5, 2],
        payload=payload,
        with_styp=True,
    )
    samples = mp4.read_samples(data)
    assert samples == [
        Sample(9000, 100, b"aaa"),
        Sample(9100, 200, b"bbbbb"),
        Sample(9300, 300, b"cc"),
    ]


def test_read_samples_goes_on_through_every_moof():
    first = fmp4.build_fragment(
        track_id=1,
        sequence_number=1,
        base_media_decode_time=0,
        durations=[10],
        sizes=[1],
        payload=b"x",
    )
    second = fmp4.build_fragment(
        track_id=1,
        sequence_number=2,
        base_media_decode_time=10,
        durations=[5, 5],
        sizes=[1, 1],
        payload=b"yz",
    )
    assert [(s.time, s.data) for s in mp4.read_samples(first + second)] == [
        (0, b"x"),
        (10, b"y"),
        (15, b"z"),
    ]


def test_read_samples_rejects_a_sample_past_the_end():
    data = fmp4.build_fragment(
        track_id=1,
        sequence_number=1,
        base_media_decode_time=0,
        durations=[10],
        sizes=[4],
        payload=b"abcd",
    )
    with pytest.raises(mp4.Mp4Error):
        mp4.read_samples(data[:-2])


# --- wvtt -------------------------------------------------------------------------------------


def test_a_cue_repeated_over_samples_is_one_cue_and_vtte_is_silence():
    samples = [
        Sample(0, 500, VTTE),
        Sample(500, 1000, vttc("hello", "align:start", "c1")),
        Sample(1500, 500, vttc("hello", "align:start", "c1") + vttc("world")),
        Sample(2000, 1000, VTTE),
        Sample(3000, 1000, vttc("hello", "align:start", "c1")),
    ]
    cues = wvtt_cues(samples, 1000, shift=10.0)
    assert cues == [
        Cue(10.5, 12.0, "hello", "align:start", "c1"),
        Cue(11.5, 12.0, "world"),
        Cue(13.0, 14.0, "hello", "align:start", "c1"),  # after a pause: a cue of its own
    ]


def test_a_damaged_sample_loses_its_cue_only():
    samples = [Sample(0, 1000, b"\x00\x00\x00\xffvttc"), Sample(1000, 1000, vttc("kept"))]
    assert wvtt_cues(samples, 1000) == [Cue(1.0, 2.0, "kept")]


def test_cues_before_the_output_start_are_dropped():
    samples = [Sample(0, 1000, vttc("early")), Sample(1000, 1000, vttc("late"))]
    assert [c.text for c in wvtt_cues(samples, 1000, shift=-1.5)] == ["late"]


def test_the_test_tracks_segments_read_back_to_their_cues():
    init = text_init(1, 30000, "en")
    assert mp4.parse_init(init).handler == "text"
    segments = text_segments(1, 30000, "en", [0, 60000, 117000])
    samples = [s for data in segments for s in mp4.read_samples(data)]
    assert mp4.parse_init(init).entry_type == "wvtt"
    cues = text_cues("wvtt", samples, 30000, 0.0)
    assert [(c.start, c.end, c.text) for c in cues] == [
        (0.25, 1.25, "[en] caption 0"),
        (2.25, 3.25, "[en] caption 1"),
    ]


def test_webvtt_document_orders_cues_and_keeps_multiline_text_in_one_cue():
    text = webvtt_document(
        [Cue(3661.5, 3662.0, "b"), Cue(0.0, 1.25, "one\n\ntwo", "line:0", "id1")]
    )
    assert text == (
        "WEBVTT\n\n"
        "id1\n00:00:00.000 --> 00:00:01.250 line:0\none\n\u00a0\ntwo\n\n"
        "01:01:01.500 --> 01:01:02.000\nb\n\n"
    )


# --- stpp (TTML) ------------------------------------------------------------------------------


def ttml(body: str, extra: str = "") -> bytes:
    return (
        '<tt xmlns="http://www.w3.org/ns/ttml" '
        'xmlns:ttp="http://www.w3.org/ns/ttml#parameter" ' + extra + ">"
        "<body><div>" + body + "</div></body></tt>"
    ).encode()


def test_ttml_cues_read_clock_and_offset_times_and_line_breaks():
    doc = ttml(
        '<p begin="00:00:01.500" end="00:00:02.000">first <span>line</span><br/>second</p>'
        '<p begin="50t" end="90t">ticks</p>',
        'ttp:tickRate="20"',
    )
    cues = ttml_cues([Sample(0, 4000, doc)], 1000)
    assert cues == [Cue(1.5, 2.0, "first line\nsecond"), Cue(2.5, 4.0, "ticks")]


def test_ttml_cue_is_cut_to_its_sample_and_joined_across_samples():
    doc = ttml('<p begin="1s" end="5s">long</p>')
    samples = [Sample(0, 3000, doc), Sample(3000, 3000, doc)]
    assert ttml_cues(samples, 1000, shift=1.0) == [Cue(2.0, 6.0, "long")]


def test_ttml_times_inherit_from_the_div_and_bad_documents_are_skipped():
    doc = (
        b'<tt xmlns="http://www.w3.org/ns/ttml"><body><div begin="00:00:01:15" end="2s">'
        b"<p>framed</p></div></body></tt>"
    )
    cues = ttml_cues([Sample(0, 1000, b"<tt"), Sample(1000, 2000, doc)], 1000)
    assert cues == [Cue(1.5, 2.0, "framed")]


def test_text_cues_tells_ttml_from_webvtt_by_the_sample_entry():
    init = text_init(1, 1000, "fr", ttml=True)
    assert mp4.parse_init(init).entry_type == "stpp"
    doc = ttml('<p begin="0s" end="1s">ttml</p>')
    assert [c.text for c in text_cues("stpp", [Sample(0, 1000, doc)], 1000, 0.0)] == ["ttml"]
    assert text_cues("wvtt", [Sample(0, 1000, vttc("vtt"))], 1000, 0.0) == [Cue(0, 1, "vtt")]


# --- languages --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lang", "bibliographic", "code"),
    [
        ("fr", True, "fre"),
        ("fr", False, "fra"),
        ("de-AT", True, "ger"),
        ("en", False, "eng"),
        ("pt_BR", False, "por"),
        ("deu", True, "deu"),
        ("xx", False, None),
        ("", True, None),
        (None, True, None),
    ],
)
def test_iso639_2(lang: str | None, bibliographic: bool, code: str | None) -> None:
    assert iso639_2(lang, bibliographic=bibliographic) == code


# --- WebVTT files as segments -----------------------------------------------------------------


def test_webvtt_cues_read_a_file_and_skip_notes_and_styles():
    document = (
        "\ufeffWEBVTT - live\r\n\r\nSTYLE\r\n::cue { color: red }\r\n\r\n"
        "NOTE a comment --> not a cue\r\n\r\n"
        "id7\r\n00:01.500 --> 00:02.000 align:start\r\nfirst\r\nline two\r\n\r\n"
        "01:00:00.000 --> 01:00:01,250\r\nlate\r\n\r\n"
        "00:03.000 --> 00:02.000\r\nbackwards\r\n"
    )
    assert webvtt_cues(document, shift=1.0) == [
        Cue(2.5, 3.0, "first\nline two", "align:start", "id7"),
        Cue(3601.0, 3602.25, "late"),
    ]


def test_webvtt_timestamp_map_moves_the_cues():
    document = (
        "WEBVTT\nX-TIMESTAMP-MAP=MPEGTS:900000,LOCAL:00:00:01.000\n\n00:02.000 --> 00:03.000\nx\n"
    )
    assert webvtt_cues(document) == [Cue(11.0, 12.0, "x")]


def test_not_webvtt_gives_no_cue():
    assert webvtt_cues("<tt/>") == []
    assert not is_webvtt(b"\x00\x00\x00\x18styp")
    assert is_webvtt(b"\xef\xbb\xbfWEBVTT\n")


def test_joined_drops_repeats_and_joins_continuations():
    cues = [
        Cue(4.0, 5.0, "b"),
        Cue(1.0, 2.0, "a"),
        Cue(1.0, 2.0, "a"),  # listed again by the next segment
        Cue(2.0, 3.0, "a"),  # continued in the next segment
        Cue(-2.0, -1.0, "before the start"),
    ]
    assert joined(cues) == [Cue(1.0, 3.0, "a"), Cue(4.0, 5.0, "b")]


def test_parse_init_names_the_sample_entry(test_media):
    assert test_media.video is not None and test_media.audio is not None
    assert mp4.parse_init(test_media.video.init).entry_type == "avc1"
    assert mp4.parse_init(test_media.audio.init).entry_type == "mp4a"
