"""Property tests (hypothesis) for template and timeline expansion and the live window."""

from __future__ import annotations

import itertools
import math
from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from instarec.manifest import compile_template, expand_segments, parse_manifest

URL = "https://cdn.test/a/b/manifest.mpd"

literal = st.text(
    alphabet=st.characters(whitelist_categories=("Ll", "Lu", "Nd"), whitelist_characters="-_./?=&"),
    max_size=6,
)
identifier = st.sampled_from(["Number", "Time", "Bandwidth", "SubNumber"])


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(literal, identifier, st.one_of(st.none(), st.integers(1, 12)), st.booleans()),
        max_size=5,
    ),
    literal,
    st.integers(0, 10**12),
)
def test_template_expansion_matches_a_reference(
    parts: list[tuple[str, str, int | None, bool]], tail: str, value: int
) -> None:
    template = ""
    expected = ""
    for text, name, width, dollar in parts:
        tag = "" if width is None else f"%0{width}d"
        template += text + f"${name}{tag}$" + ("$$" if dollar else "")
        digits = str(value)
        if width is not None and len(digits) < width:
            digits = "0" * (width - len(digits)) + digits
        expected += text + digits + ("$" if dollar else "")
    template += tail
    expected += tail
    values = {"Number": value, "Time": value, "Bandwidth": value, "SubNumber": value}
    assert compile_template(template)(values) == expected


def timeline_manifest(entries: list[tuple[int, int, int]], *, last_open: bool) -> bytes:
    s_elements = ""
    for i, (t, d, r) in enumerate(entries):
        rr = -1 if last_open and i == len(entries) - 1 else r
        s_elements += f'<S t="{t}" d="{d}" r="{rr}"/>'
    return (
        '<MPD type="static"><Period duration="PT1000S"><AdaptationSet>'
        '<Representation id="v"><SegmentTemplate media="$Time$.m4s" timescale="10">'
        f"<SegmentTimeline>{s_elements}</SegmentTimeline></SegmentTemplate>"
        "</Representation></AdaptationSet></Period></MPD>"
    ).encode()


# (gap before the S, d, r): the timeline stays below the 1000 s Period (10000 ticks).
s_entries = st.lists(
    st.tuples(st.integers(0, 50), st.integers(1, 40), st.integers(0, 5)), min_size=1, max_size=8
)


@settings(max_examples=150, deadline=None)
@given(s_entries, st.booleans())
def test_timeline_expansion_covers_every_repeat(
    raw: list[tuple[int, int, int]], last_open: bool
) -> None:
    entries: list[tuple[int, int, int]] = []
    t = 0
    for gap, d, r in raw:
        t += gap
        entries.append((t, d, r))
        t += d * (r + 1)
    manifest = parse_manifest(timeline_manifest(entries, last_open=last_open), URL)
    rep = next(manifest.representations())
    segs = expand_segments(manifest, rep, None)

    expected_times: list[int] = []
    for i, (t0, d, r) in enumerate(entries):
        # r=-1 on the last S: repeat until the Period end (10000 ticks).
        count = math.ceil((10000 - t0) / d) if last_open and i == len(entries) - 1 else r + 1
        expected_times += [t0 + k * d for k in range(count)]
    assert [s.time for s in segs] == expected_times
    assert [s.url for s in segs] == [f"https://cdn.test/a/b/{x}.m4s" for x in expected_times]
    assert [s.number for s in segs] == list(range(1, len(segs) + 1))
    assert all(s.start == s.time / 10 for s in segs if s.time is not None)
    assert all(a.start < b.start for a, b in itertools.pairwise(segs))


@settings(max_examples=200, deadline=None)
@given(
    elapsed_ms=st.integers(0, 2 * 10**6),
    d=st.integers(2_000, 20_000),
    start_number=st.integers(0, 10**6),
    period_start=st.integers(0, 10_000),
)
def test_dynamic_number_live_edge(
    elapsed_ms: int, d: int, start_number: int, period_start: int
) -> None:
    manifest = parse_manifest(
        (
            '<MPD type="dynamic" availabilityStartTime="2020-01-01T00:00:00Z">'
            f'<Period start="PT{period_start}S"><AdaptationSet><Representation id="v">'
            f'<SegmentTemplate media="$Number$" timescale="1000" duration="{d}" '
            f'startNumber="{start_number}"/></Representation></AdaptationSet></Period></MPD>'
        ).encode(),
        URL,
    )
    now = datetime(2020, 1, 1, tzinfo=UTC) + timedelta(
        seconds=period_start, milliseconds=elapsed_ms
    )
    segs = expand_segments(manifest, next(manifest.representations()), now)
    # Every segment from startNumber whose end has passed, and no other (integers: exact).
    count = elapsed_ms // d
    assert len(segs) == count
    if segs:
        assert segs[0].number == start_number
        assert segs[-1].number == start_number + count - 1
        last = segs[-1]
        assert last.start + (last.duration or 0) <= period_start + elapsed_ms / 1000 + 1e-6
