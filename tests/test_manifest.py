"""Unit tests of the pure DASH manifest model, on small hand-written MPDs."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from instarec.errors import ManifestError
from instarec.manifest import (
    Addressing,
    ByteRange,
    InitSegment,
    Manifest,
    Representation,
    compile_template,
    expand_segments,
    manifest_to_json,
    parse_datetime,
    parse_duration,
    parse_manifest,
)

URL = "https://cdn.test/live/path/manifest.mpd"
NS = 'xmlns="urn:mpeg:dash:schema:mpd:2011"'


def mpd(body: str, *, attrs: str = 'type="static"', ns: str = NS) -> bytes:
    return f'<?xml version="1.0"?>\n<MPD {ns} {attrs}>{body}</MPD>'.encode()


def only_rep(manifest: Manifest) -> Representation:
    reps = list(manifest.representations())
    assert len(reps) == 1
    return reps[0]


def urls(manifest: Manifest, now: datetime | None = None, **kwargs: bool) -> list[str]:
    return [s.url for s in expand_segments(manifest, only_rep(manifest), now, **kwargs)]


# --------------------------------------------------------------------------- scalars


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("PT2S", 2.0),
        ("PT0.5S", 0.5),
        ("PT1H2M3.25S", 3723.25),
        ("P1DT1S", 86401.0),
        ("PT1553515200S", 1553515200.0),
        ("PT0H0M6.00S", 6.0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "P", "PT", "2S", "PTxS", "P1DT"])
def test_parse_duration_rejects_garbage(text: str) -> None:
    with pytest.raises(ManifestError):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2019-03-26T20:48:15-07:00", datetime(2019, 3, 27, 3, 48, 15, tzinfo=UTC)),
        ("2020-11-26T00:56:27.795Z", datetime(2020, 11, 26, 0, 56, 27, 795000, tzinfo=UTC)),
        ("2020-01-01T00:00:00", datetime(2020, 1, 1, tzinfo=UTC)),
        ("2020-01-01T05:30:00+05:30", datetime(2020, 1, 1, tzinfo=UTC)),
        ("2021-03-18T20:32:55.123456789Z", datetime(2021, 3, 18, 20, 32, 55, 123456, tzinfo=UTC)),
    ],
)
def test_parse_datetime_honours_offsets(text: str, expected: datetime) -> None:
    value = parse_datetime(text)
    assert value == expected
    assert value.utcoffset() == timedelta(0)


def test_byte_range_header() -> None:
    assert ByteRange(0, 99).header() == "bytes=0-99"
    assert ByteRange(100, None).header() == "bytes=100-"
    assert ByteRange.parse(" 746-18481 ") == ByteRange(746, 18481)
    with pytest.raises(ManifestError):
        ByteRange.parse("9-1")


# --------------------------------------------------------------------------- safety / errors


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"   \n ", "empty"),
        (b"<!DOCTYPE html><html><body>Login</body></html>", "HTML"),
        (b"<html><head></head><body></body></html>", "HTML"),
        (b"<MPD><Period></MPD>", "not well-formed"),
        (b'<?xml version="1.0"?><feed/>', "not a DASH manifest"),
        (b"\x00\x01binary", "not well-formed"),
    ],
)
def test_bad_bodies_raise_one_line_manifest_error(data: bytes, message: str) -> None:
    with pytest.raises(ManifestError) as info:
        parse_manifest(data, URL)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_size_cap() -> None:
    body = b"<MPD>" + b" " * (16 * 1024 * 1024) + b"</MPD>"
    with pytest.raises(ManifestError, match="too large"):
        parse_manifest(body, URL)


def test_bom_is_stripped_and_namespace_is_optional() -> None:
    data = b"\xef\xbb\xbf" + mpd(
        '<Period duration="PT4S"><AdaptationSet mimeType="video/mp4">'
        '<Representation id="v" bandwidth="1">'
        '<SegmentTemplate media="$Number$.m4s" duration="2"/></Representation>'
        "</AdaptationSet></Period>",
        ns="",
    )
    assert urls(parse_manifest(data, URL)) == [
        "https://cdn.test/live/path/1.m4s",
        "https://cdn.test/live/path/2.m4s",
    ]


def test_entities_are_not_expanded() -> None:
    data = (
        b'<?xml version="1.0"?><!DOCTYPE MPD [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
        b'<MPD type="static"><BaseURL>&x;</BaseURL><Period duration="PT2S">'
        b'<AdaptationSet><Representation id="v"><SegmentTemplate media="a$Number$" duration="2"/>'
        b"</Representation></AdaptationSet></Period></MPD>"
    )
    manifest = parse_manifest(data, URL)
    assert "root:" not in manifest.base_url
    assert urls(manifest)[0].startswith("https://cdn.test/live/path/")


def test_invalid_attribute_is_a_manifest_error() -> None:
    data = mpd('<Period start="soon"/>')
    with pytest.raises(ManifestError, match="duration"):
        parse_manifest(data, URL)


# --------------------------------------------------------------------------- templates


def test_template_every_identifier_and_width() -> None:
    expand = compile_template(
        "$RepresentationID$/$Bandwidth%08d$/$Number%05d$-$Time$-$Time%012d$-$SubNumber$-$$.m4s"
    )
    values = {"RepresentationID": "v1", "Bandwidth": 300000, "Number": 42, "Time": 9000}
    values["SubNumber"] = 3
    assert expand(values) == "v1/00300000/00042-9000-000000009000-3-$.m4s"


def test_template_adjacent_identifiers_are_not_an_escape() -> None:
    expand = compile_template("$RepresentationID$$Number%03d$.mp4")
    assert expand({"RepresentationID": "a", "Number": 7}) == "a007.mp4"


def test_template_missing_value_left_literal() -> None:
    expand = compile_template("seg$Number$-$Unknown$.m4s")
    assert expand({}) == "seg$Number$-$Unknown$.m4s"


def test_template_is_compiled_once() -> None:
    assert compile_template("x$Number$") is compile_template("x$Number$")


def test_media_url_and_query_string_of_the_template_kept() -> None:
    data = mpd(
        '<Period duration="PT4S"><AdaptationSet><Representation id="v" bandwidth="5">'
        '<SegmentTemplate media="s/$Bandwidth$/$Number%03d$.m4s?tok=1&amp;x=$RepresentationID$" '
        'initialization="i/$RepresentationID$.mp4?tok=1" duration="2"/>'
        "</Representation></AdaptationSet></Period>"
    )
    rep = only_rep(parse_manifest(data, URL + "?sig=abc"))
    assert rep.media_url(number=7) == "https://cdn.test/live/path/s/5/007.m4s?tok=1&x=v"
    init = rep.init_segment()
    assert init == InitSegment("https://cdn.test/live/path/i/v.mp4?tok=1", None)


def test_manifest_query_is_not_invented_on_relative_urls() -> None:
    data = mpd(
        '<Period duration="PT2S"><AdaptationSet><Representation id="v">'
        '<SegmentTemplate media="$Number$.m4s" duration="2"/>'
        "</Representation></AdaptationSet></Period>"
    )
    assert urls(parse_manifest(data, URL + "?sig=abc")) == ["https://cdn.test/live/path/1.m4s"]


# --------------------------------------------------------------------------- BaseURL


def test_base_url_at_every_level_rfc3986() -> None:
    data = mpd(
        "<BaseURL>https://other.test/root/</BaseURL>"
        '<Period duration="PT2S"><BaseURL>period/</BaseURL>'
        "<AdaptationSet><BaseURL>../as/</BaseURL>"
        '<Representation id="a"><BaseURL>rep</BaseURL>'
        '<SegmentTemplate media="$Number$.m4s" duration="2"/></Representation>'
        '<Representation id="b"><BaseURL>/abs/</BaseURL>'
        '<SegmentTemplate media="$Number$.m4s" duration="2"/></Representation>'
        '<Representation id="c"><BaseURL>https://third.test/x/?q=1</BaseURL>'
        '<SegmentTemplate media="$Number$.m4s" duration="2"/></Representation>'
        "</AdaptationSet></Period>"
    )
    manifest = parse_manifest(data, URL)
    got = {r.id: expand_segments(manifest, r, None)[0].url for r in manifest.representations()}
    assert got == {
        "a": "https://other.test/root/as/1.m4s",  # "rep" has no slash: it is replaced
        "b": "https://other.test/abs/1.m4s",
        "c": "https://third.test/x/1.m4s",
    }


def test_location_resolved_and_not_used_as_base() -> None:
    data = mpd(
        '<Location>../next/m.mpd?t=2</Location><Period duration="PT2S"><AdaptationSet>'
        '<Representation id="v"><SegmentTemplate media="$Number$.m4s" duration="2"/>'
        "</Representation></AdaptationSet></Period>"
    )
    manifest = parse_manifest(data, URL)
    assert manifest.location == "https://cdn.test/live/next/m.mpd?t=2"
    assert urls(manifest) == ["https://cdn.test/live/path/1.m4s"]


# --------------------------------------------------------------------------- inheritance


def test_template_attributes_inherit_one_by_one_and_common_attributes() -> None:
    data = mpd(
        '<Period duration="PT10S">'
        '<SegmentTemplate media="$RepresentationID$-$Number$.m4s" timescale="10" />'
        '<AdaptationSet mimeType="audio/mp4" lang="en" codecs="mp4a.40.2" '
        'audioSamplingRate="48000">'
        '<SegmentTemplate duration="40" startNumber="5" />'
        '<Representation id="a" bandwidth="1" lang="fr">'
        '<SegmentTemplate endNumber="6" /><ContentProtection schemeIdUri="x"/>'
        "</Representation></AdaptationSet></Period>"
    )
    manifest = parse_manifest(data, URL)
    rep = only_rep(manifest)
    assert rep.lang == "fr" and rep.content_type == "audio" and rep.codecs == "mp4a.40.2"
    assert rep.audio_sampling_rate == 48000 and rep.drm
    assert rep.addressing is Addressing.NUMBER_DURATION
    assert rep.template is not None
    assert (rep.template.timescale, rep.template.duration, rep.template.start_number) == (
        10,
        40,
        5,
    )
    segs = expand_segments(manifest, rep, None)
    # ceil(10 s / 4 s) = 3 segments, but endNumber 6 stops at the second one.
    assert [(s.url, s.number, s.start) for s in segs] == [
        ("https://cdn.test/live/path/a-5.m4s", 5, 0.0),
        ("https://cdn.test/live/path/a-6.m4s", 6, 4.0),
    ]


def test_multi_period_start_defaults_and_static_count() -> None:
    data = mpd(
        '<Period duration="PT5S"><AdaptationSet><Representation id="v">'
        '<SegmentTemplate media="p0-$Number$" duration="2"/></Representation></AdaptationSet>'
        "</Period>"
        '<Period><AdaptationSet><Representation id="v">'
        '<SegmentTemplate media="p1-$Number$-$Time$" timescale="1000" duration="2000" '
        'presentationTimeOffset="500"/>'
        "</Representation></AdaptationSet></Period>",
        attrs='type="static" mediaPresentationDuration="PT9S"',
    )
    manifest = parse_manifest(data, URL)
    p0, p1 = manifest.periods
    assert (p0.start, p0.duration, p1.start, p1.duration) == (0.0, 5.0, 5.0, 4.0)
    s0 = expand_segments(manifest, p0.representations[0], None)
    assert [s.url.rsplit("/", 1)[1] for s in s0] == ["p0-1", "p0-2", "p0-3"]  # ceil(5/2)
    s1 = expand_segments(manifest, p1.representations[0], None)
    assert [s.url.rsplit("/", 1)[1] for s in s1] == ["p1-1-500", "p1-2-2500"]
    assert [s.start for s in s1] == [5.0, 7.0]


# --------------------------------------------------------------------------- timelines


def timeline_mpd(s_elements: str, *, period: str = "", attrs: str = 'type="static"') -> bytes:
    return mpd(
        f'<Period {period}><AdaptationSet><Representation id="v">'
        '<SegmentTemplate media="t$Time$-n$Number$" timescale="10" startNumber="3" '
        'presentationTimeOffset="100">'
        f"<SegmentTimeline>{s_elements}</SegmentTimeline></SegmentTemplate>"
        "</Representation></AdaptationSet></Period>",
        attrs=attrs,
    )


def test_timeline_repeats_and_gaps() -> None:
    manifest = parse_manifest(
        timeline_mpd('<S t="100" d="20" r="2"/><S t="200" d="15"/><S d="5" r="1"/>'), URL
    )
    segs = expand_segments(manifest, only_rep(manifest), None)
    assert [s.time for s in segs] == [100, 120, 140, 200, 215, 220]
    assert [s.number for s in segs] == [3, 4, 5, 6, 7, 8]
    assert [s.start for s in segs] == [0.0, 2.0, 4.0, 10.0, 11.5, 12.0]
    assert [s.duration for s in segs] == [2.0, 2.0, 2.0, 1.5, 0.5, 0.5]
    assert segs[3].url == "https://cdn.test/live/path/t200-n6"
    assert only_rep(manifest).addressing is Addressing.TIME_TIMELINE


def test_timeline_r_minus_one_until_next_t() -> None:
    manifest = parse_manifest(timeline_mpd('<S t="100" d="20" r="-1"/><S t="170" d="10"/>'), URL)
    segs = expand_segments(manifest, only_rep(manifest), None)
    # (170 - 100) / 20 = 3.5 -> 4 segments, the last one overlapping the next S.
    assert [s.time for s in segs] == [100, 120, 140, 160, 170]


def test_timeline_r_minus_one_until_period_end() -> None:
    # The README's example: a 654 s Period with d = 2 s gives 327 segments.
    manifest = parse_manifest(
        timeline_mpd('<S t="100" d="20" r="-1"/>', period='duration="PT654S"'), URL
    )
    segs = expand_segments(manifest, only_rep(manifest), None)
    assert len(segs) == 327
    assert segs[-1].time == 100 + 326 * 20


def test_timeline_r_minus_one_until_live_edge() -> None:
    attrs = 'type="dynamic" availabilityStartTime="2024-01-01T00:00:00Z"'
    manifest = parse_manifest(
        timeline_mpd('<S t="100" d="20" r="-1"/>', period='start="PT10S"', attrs=attrs), URL
    )
    now = datetime(2024, 1, 1, 0, 0, 17, tzinfo=UTC)  # 7 s into the Period: 3 whole segments
    segs = expand_segments(manifest, only_rep(manifest), now)
    assert [s.time for s in segs] == [100, 120, 140]


def test_dynamic_timeline_lists_everything_unless_asked() -> None:
    attrs = (
        'type="dynamic" availabilityStartTime="2024-01-01T00:00:00Z" timeShiftBufferDepth="PT5S"'
    )
    manifest = parse_manifest(timeline_mpd('<S t="100" d="20" r="9"/>', attrs=attrs), URL)
    now = datetime(2024, 1, 1, 0, 0, 20, tzinfo=UTC)
    assert len(urls(manifest, now)) == 10
    # With the time-shift window applied, only segments ending at or after now - 5 s = 15 s.
    windowed = expand_segments(manifest, only_rep(manifest), now, time_shift_buffer=True)
    assert [s.time for s in windowed] == [240, 260, 280]


# --------------------------------------------------------------------------- $Number$ live


def number_mpd(extra: str = "", template: str = "") -> bytes:
    attrs = f'type="dynamic" availabilityStartTime="2024-01-01T00:00:00+01:00" {extra}'
    return mpd(
        '<Period start="PT100S"><AdaptationSet><Representation id="v">'
        f'<SegmentTemplate media="$Number$" timescale="1000" duration="4000" startNumber="10" '
        f'presentationTimeOffset="999999" {template}/>'
        "</Representation></AdaptationSet></Period>",
        attrs=attrs,
    )


AST = datetime(2023, 12, 31, 23, 0, tzinfo=UTC)


def numbers(manifest: Manifest, now: datetime, **kwargs: bool) -> list[int | None]:
    return [s.number for s in expand_segments(manifest, only_rep(manifest), now, **kwargs)]


def test_dynamic_number_availability_edge() -> None:
    manifest = parse_manifest(number_mpd(), URL)
    # 100 s Period start + 3 segments of 4 s end exactly at 112 s: the third is available.
    assert numbers(manifest, AST + timedelta(seconds=112)) == [10, 11, 12]
    assert numbers(manifest, AST + timedelta(seconds=111.999)) == [10, 11]
    assert numbers(manifest, AST + timedelta(seconds=50)) == []


def test_dynamic_number_time_shift_buffer_and_offset() -> None:
    manifest = parse_manifest(number_mpd('timeShiftBufferDepth="PT10S"'), URL)
    now = AST + timedelta(seconds=140)  # 40 s into the Period: 10 segments, numbers 10..19
    # Window: segments ending at or after 30 s -> k >= 7 -> numbers 17..19.
    assert numbers(manifest, now) == [17, 18, 19]
    assert numbers(manifest, now, time_shift_buffer=False) == list(range(10, 20))
    early = parse_manifest(number_mpd(template='availabilityTimeOffset="1.5"'), URL)
    assert numbers(early, AST + timedelta(seconds=110.5)) == [10, 11, 12]


def test_dynamic_number_bounded_by_presentation_duration() -> None:
    manifest = parse_manifest(number_mpd('mediaPresentationDuration="PT110S"'), URL)
    # The Period lasts 10 s: ceil(10 / 4) = 3 segments, however late `now` is.
    assert numbers(manifest, AST + timedelta(hours=5)) == [10, 11, 12]


# --------------------------------------------------------------------------- lists and base


def test_segment_list_with_ranges_and_init_without_source_url() -> None:
    data = mpd(
        '<Period duration="PT20S"><AdaptationSet><Representation id="v">'
        "<BaseURL>file.mp4</BaseURL>"
        '<SegmentList timescale="1000" duration="10000"><Initialization range="0-99"/>'
        '<SegmentURL mediaRange="100-199"/><SegmentURL media="b.mp4" mediaRange="0-"/>'
        "</SegmentList></Representation></AdaptationSet></Period>"
    )
    manifest = parse_manifest(data, URL)
    rep = only_rep(manifest)
    assert rep.addressing is Addressing.SEGMENT_LIST
    assert rep.init_segment() == InitSegment(
        "https://cdn.test/live/path/file.mp4", ByteRange(0, 99)
    )
    segs = expand_segments(manifest, rep, None)
    assert [(s.url, s.byte_range, s.start, s.number) for s in segs] == [
        ("https://cdn.test/live/path/file.mp4", ByteRange(100, 199), 0.0, 1),
        ("https://cdn.test/live/path/b.mp4", ByteRange(0, None), 10.0, 2),
    ]


def test_segment_base_is_one_whole_file() -> None:
    data = mpd(
        '<Period duration="PT60S"><AdaptationSet><Representation id="v">'
        '<BaseURL>v.mp4</BaseURL><SegmentBase indexRange="860-1071">'
        '<Initialization range="0-859"/></SegmentBase>'
        "</Representation></AdaptationSet></Period>"
    )
    manifest = parse_manifest(data, URL)
    rep = only_rep(manifest)
    assert rep.addressing is Addressing.SEGMENT_BASE and rep.init_segment() is None
    assert rep.segment_base is not None and rep.segment_base.index_range == ByteRange(860, 1071)
    segs = expand_segments(manifest, rep, None)
    assert [(s.url, s.byte_range, s.duration) for s in segs] == [
        ("https://cdn.test/live/path/v.mp4", None, 60.0)
    ]


def test_manifest_to_json_schema_and_root_attributes() -> None:
    data = mpd(
        '<UTCTiming schemeIdUri="urn:mpeg:dash:utc:http-iso:2014" value="https://t/"/>'
        '<Period duration="PT2S"><AdaptationSet contentType="video" mimeType="video/mp4">'
        '<Representation id="v" bandwidth="7" width="640" height="360" frameRate="30000/1001">'
        '<SegmentTemplate media="$Number$" initialization="init" duration="2"/>'
        "</Representation></AdaptationSet></Period>",
        attrs='type="static" publishFrameTime="12" loapStreamType="1"',
    )
    manifest = parse_manifest(data, URL)
    assert manifest.attributes["publishFrameTime"] == "12"
    assert manifest.utc_timing[0].value == "https://t/"
    doc = manifest_to_json(manifest, None)
    assert doc["type"] == "static" and doc["attributes"]["loapStreamType"] == "1"
    (rep,) = doc["representations"]
    assert rep["init"] == {"url": "https://cdn.test/live/path/init", "range": None}
    assert rep["segments"][0]["url"] == "https://cdn.test/live/path/1"
    assert rep["segment_count"] == 1 and rep["frame_rate"] == "30000/1001"
    assert (rep["width"], rep["height"], rep["content_type"], rep["drm"]) == (
        640,
        360,
        "video",
        False,
    )
    assert not math.isnan(rep["segments"][0]["duration"])
