"""Past recovery and $Time$ chains against a fake server (``recovery.SegmentAccess``).

The segments exist or not by a set of keys; what recovery asks for, queues and calls missing is
checked against it. End-to-end recordings of the same logic are in ``test_record_past.py``.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest

from instarec.archive import Presence, SearchLimits
from instarec.errors import NetworkError
from instarec.kept import KeptGround, kept_stretches
from instarec.live import Snapshot, listed_segments
from instarec.manifest import parse_manifest
from instarec.mp4 import FragmentInfo, InitInfo
from instarec.recovery import PastRecovery, TimeChains, shares_times
from instarec.segments import SegmentRef, TrackKind
from instarec.store import StoredSegment
from instarec.timeline import Timeline

SEGMENT = 2000  # ticks (timescale 1000): 2 s segments of 50 frames
FRAMES = 50
LIMITS = SearchLimits(max_in_flight=8, unknown_retries=3, unknown_delay=0.001)

_MPD = """<?xml version="1.0"?>
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="dynamic" minimumUpdatePeriod="PT2S"
     availabilityStartTime="2024-01-01T00:00:00Z" profiles="urn:mpeg:dash:profile:isoff-live:2011">
  <Period id="0" start="PT0S">
    <AdaptationSet mimeType="video/mp4" contentType="video">
      <Representation id="v" bandwidth="1000000" codecs="avc1.64001f" width="640" height="360">
        <SegmentTemplate timescale="1000" {addressing} initialization="v/init.mp4">
          <SegmentTimeline><S t="{first_time}" d="{d}" r="{repeat}"/></SegmentTimeline>
        </SegmentTemplate>
      </Representation>
    </AdaptationSet>
  </Period>
</MPD>"""


class FakeServer:
    """A server that has the segments whose keys are in ``present``."""

    def __init__(self, timeline: Timeline, present: Iterable[int]) -> None:
        self.timeline = timeline
        self.present = set(present)
        self.offered: list[int] = []
        self.missing: list[int] = []
        # key -> how many more times a fetch of it gives no answer at all
        self.silent: dict[int, int] = {}

    def _key(self, url: str) -> int:
        match = re.search(r"/(\d+)\.m4s$", url)
        assert match is not None, url
        return int(match.group(1))

    def _info(self, key: int) -> FragmentInfo:
        return FragmentInfo(1, key, SEGMENT, FRAMES, 1)

    def offer(self, ref: SegmentRef) -> bool:
        floor = self.timeline.floor
        if (floor is not None and ref.key < floor) or not self.timeline.add(ref.key):
            return False
        self.offered.append(ref.key)
        return True

    async def inspect(self, ref: SegmentRef, *, whole: bool = False) -> FragmentInfo | None:
        self.timeline.add(ref.key)
        if self.silent.get(ref.key, 0) > 0:
            self.silent[ref.key] -= 1
            self.timeline.discard(ref.key)
            raise NetworkError(f"no answer for {ref.key}")
        if ref.key not in self.present:
            self.timeline.discard(ref.key)
            return None
        return self._info(ref.key)

    async def probe(self, url: str) -> Presence:
        return Presence.PRESENT if self._key(url) in self.present else Presence.ABSENT

    async def full_info(self, track: TrackKind, key: int) -> FragmentInfo | None:
        return self._info(key) if key in self.present else None

    async def record_missing(self, ref: SegmentRef) -> None:
        self.missing.append(ref.key)

    def fetched(self) -> set[int]:
        """Every key recovery made known (queued, or fetched as a chain step)."""
        return set(self.timeline.key_set)


def _timeline(addressing: str, first_listed: int, listed: int) -> tuple[Timeline, Snapshot]:
    first_time = first_listed * SEGMENT if "Time" in addressing else 0
    xml = _MPD.format(
        addressing=addressing,
        first_time=first_time,
        d=SEGMENT,
        repeat=listed - 1,
    )
    manifest = parse_manifest(xml.encode(), "http://origin.test/live/manifest.mpd")
    rep = manifest.periods[0].adaptation_sets[0].representations[0]
    timeline = Timeline("video", rep)
    timeline.init = InitInfo(1, 1000, "vide", None)
    snapshot = Snapshot(manifest, datetime(2024, 1, 1, 1, tzinfo=UTC), None)
    return timeline, snapshot


def _recovery(
    timeline: Timeline,
    snapshot: Snapshot,
    server: FakeServer,
    kept: Mapping[TrackKind, Sequence[StoredSegment]] | None = None,
) -> PastRecovery:
    timelines = {timeline.kind: timeline}
    ((_, segments),) = listed_segments(snapshot, [timeline.rep])
    chains = TimeChains(server, timelines, LIMITS, shares_times(timelines, {}))
    recovery = PastRecovery(
        server,
        chains,
        {timeline.kind: (timeline, segments)},
        snapshot.manifest,
        LIMITS,
        max_chains=4,
        kept=KeptGround(chains, kept or {}, LIMITS),
    )
    return recovery


async def test_time_past_is_walked_from_zero_around_a_hole() -> None:
    timeline, snapshot = _timeline('media="v/$Time$.m4s"', first_listed=60, listed=5)
    hole = {20 * SEGMENT, 21 * SEGMENT}
    past = {i * SEGMENT for i in range(60)} - hole
    server = FakeServer(timeline, past | {i * SEGMENT for i in range(60, 65)})
    recovery = _recovery(timeline, snapshot, server)
    await recovery.run()
    assert server.fetched() >= past
    assert not server.fetched() & hole
    assert server.missing == []  # a hole the server never had is no failed download
    assert recovery.archive.first == {"video": 0}
    assert recovery.archive.complete


async def test_a_step_without_answer_is_asked_again_not_taken_for_a_hole() -> None:
    timeline, snapshot = _timeline('media="v/$Time$.m4s"', first_listed=30, listed=5)
    present = {i * SEGMENT for i in range(35)}
    server = FakeServer(timeline, present)
    server.silent = {10 * SEGMENT: LIMITS.unknown_retries}  # answers at the last try
    recovery = _recovery(timeline, snapshot, server)
    await recovery.run()
    assert server.fetched() >= {i * SEGMENT for i in range(30)}
    assert server.missing == []


async def test_a_step_that_never_answers_is_missing_and_the_chain_walks_on() -> None:
    timeline, snapshot = _timeline('media="v/$Time$.m4s"', first_listed=30, listed=5)
    present = {i * SEGMENT for i in range(35)}
    server = FakeServer(timeline, present)
    server.silent = {10 * SEGMENT: 1000}
    recovery = _recovery(timeline, snapshot, server)
    await recovery.run()
    assert server.missing == [10 * SEGMENT]
    assert server.fetched() >= {i * SEGMENT for i in range(30) if i != 10}


class SlowListedServer(FakeServer):
    """A server whose answer for ``slow`` comes ``delay`` seconds late (a retry's backoff)."""

    def __init__(self, timeline: Timeline, present: Iterable[int], slow: int, delay: float) -> None:
        super().__init__(timeline, present)
        self.slow = slow
        self.delay = delay
        self.asked: dict[int, float] = {}  # key -> when it was first fetched

    async def inspect(self, ref: SegmentRef, *, whole: bool = False) -> FragmentInfo | None:
        self.asked.setdefault(ref.key, asyncio.get_running_loop().time())
        if ref.key == self.slow:
            await asyncio.sleep(self.delay)
        return await super().inspect(ref, whole=whole)


async def test_a_listed_segment_in_a_backoff_does_not_hold_up_the_past() -> None:
    # The frame length is read from the listed segments before the search: the first one's
    # answer sitting in a retry's backoff must not keep the search for the past waiting while
    # the others have answered (chaos seed 193: 9 s of a sped-up retention).
    timeline, snapshot = _timeline('media="v/$Time$.m4s"', first_listed=30, listed=5)
    present = {i * SEGMENT for i in range(35)}
    server = SlowListedServer(timeline, present, slow=30 * SEGMENT, delay=1.0)
    recovery = _recovery(timeline, snapshot, server)
    began = asyncio.get_running_loop().time()
    await recovery.run()
    assert server.fetched() >= {i * SEGMENT for i in range(30)}
    assert server.asked[0] - began < 0.5  # the start hint, asked once a frame was known


class CountingServer(FakeServer):
    def __init__(self, timeline: Timeline, present: Iterable[int]) -> None:
        super().__init__(timeline, present)
        self.probes = 0

    async def probe(self, url: str) -> Presence:
        self.probes += 1
        return await super().probe(url)


async def test_a_live_hole_missing_at_its_first_step_is_searched_on_the_frame_grid() -> None:
    # The window skipped from 35 to 38, and 35-36 are lost: the hole chain misses at its very
    # first step, before it read a frame of its own. The frame length the track's downloads
    # taught must put the search on the grid, not on every tick up to the window (seed 93).
    timeline, _ = _timeline('media="v/$Time$.m4s"', first_listed=30, listed=5)
    for i in [*range(30, 35), *range(38, 43)]:
        timeline.add(i * SEGMENT)
    timeline.learn_frame(FragmentInfo(1, 34 * SEGMENT, SEGMENT, FRAMES, 1))
    present = {i * SEGMENT for i in range(43)} - {35 * SEGMENT, 36 * SEGMENT}
    server = CountingServer(timeline, present)
    chains = TimeChains(server, {timeline.kind: timeline}, LIMITS, False)
    await chains.fill_hole(timeline, 35 * SEGMENT)
    assert 37 * SEGMENT in server.fetched()
    assert server.probes < 300  # every tick from 72000 to 74000 and back: about 4000


@pytest.mark.parametrize("first_number", [0, 1])
async def test_number_past_is_queued_from_the_first_number(first_number: int) -> None:
    timeline, snapshot = _timeline(
        'media="v/$Number$.m4s" startNumber="56"', first_listed=56, listed=5
    )
    server = FakeServer(timeline, range(first_number, 61))
    recovery = _recovery(timeline, snapshot, server)
    await recovery.run()
    assert sorted(server.offered) == list(range(first_number, 56))
    assert recovery.archive.first == {"video": first_number}
    assert recovery.archive.complete


async def test_number_past_under_retention_is_not_complete() -> None:
    timeline, snapshot = _timeline(
        'media="v/$Number$.m4s" startNumber="200"', first_listed=200, listed=5
    )
    server = FakeServer(timeline, range(150, 205))
    recovery = _recovery(timeline, snapshot, server)
    await recovery.run()
    assert sorted(server.offered) == list(range(150, 200))
    assert recovery.archive.first == {"video": 150}
    assert not recovery.archive.complete


# -- a resume -------------------------------------------------------------------------------


def _stored(keys: Iterable[int]) -> list[StoredSegment]:
    """Segments an earlier run kept, as its journal gives them (2 s each, in order)."""
    return [
        StoredSegment("video", i * SEGMENT, i * 2.0, 2.0, 1, i * SEGMENT, SEGMENT, Path(f"{i}"))
        for i in keys
    ]


def test_kept_segments_split_into_unbroken_stretches() -> None:
    kept = _stored([3, 4, 5, 9, 12, 13])
    assert kept_stretches(kept) == [
        (3 * SEGMENT, 5 * SEGMENT),
        (9 * SEGMENT, 9 * SEGMENT),
        (12 * SEGMENT, 13 * SEGMENT),
    ]
    assert kept_stretches([]) == []


class ExpiringServer(FakeServer):
    """A server deleting its oldest segment every ``pace`` requests (retention on a clock
    that runs with the recorder's requests), in front of segments an earlier run kept."""

    def __init__(
        self, timeline: Timeline, present: Iterable[int], kept: Iterable[int], pace: int
    ) -> None:
        super().__init__(timeline, present)
        self.kept = set(kept)  # on disk
        self.pace = pace
        self.requests = 0
        self.served: set[int] = set()

    def _request(self) -> None:
        self.requests += 1
        if self.requests % self.pace == 0 and self.present:
            self.present.discard(min(self.present))

    async def inspect(self, ref: SegmentRef, *, whole: bool = False) -> FragmentInfo | None:
        if ref.key in self.kept:  # read from disk, not asked for
            self.timeline.add(ref.key)
            return self._info(ref.key)
        self._request()
        info = await super().inspect(ref, whole=whole)
        if info is not None:
            self.served.add(ref.key)
        return info

    async def probe(self, url: str) -> Presence:
        self._request()
        return await super().probe(url)


async def test_a_resume_fetches_the_gaps_between_kept_stretches_before_they_expire() -> None:
    # The earlier run kept three stretches below the new window; the server has deleted the
    # oldest and goes on deleting one segment every 20 requests. The gaps above the oldest
    # kept stretch it still has are walked at once from the stretches' ends, not after a
    # walk back from the window has crossed them: that walk loses 45-49 here (seed 106 lost
    # segments so), and the oldest of what lies below the kept stretch at 40 with them.
    timeline, snapshot = _timeline('media="v/$Time$.m4s"', first_listed=80, listed=5)
    kept = [*range(10, 15), *range(40, 45), *range(60, 65)]
    present = (i * SEGMENT for i in range(30, 85))
    server = ExpiringServer(timeline, present, (i * SEGMENT for i in kept), pace=20)
    recovery = _recovery(timeline, snapshot, server, kept={"video": _stored(kept)})
    await recovery.run()
    gaps = {i * SEGMENT for i in [38, 39, *range(45, 60), *range(65, 80)]}
    assert gaps <= server.served
    assert recovery.archive.first == {"video": 10 * SEGMENT}  # the oldest kept


_SHARED_MPD = """<?xml version="1.0"?>
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="dynamic" minimumUpdatePeriod="PT2S"
     availabilityStartTime="2024-01-01T00:00:00Z" profiles="urn:mpeg:dash:profile:isoff-live:2011">
  <Period id="0" start="PT0S">
    <AdaptationSet mimeType="video/mp4" contentType="video">
      <Representation id="v" bandwidth="1000000" codecs="avc1.64001f" width="640" height="360">
        <SegmentTemplate timescale="1000" media="v/$Time$.m4s" initialization="v/init.mp4">
          <SegmentTimeline><S t="40000" d="2000" r="4"/></SegmentTimeline>
        </SegmentTemplate>
      </Representation>
    </AdaptationSet>
    <AdaptationSet mimeType="audio/mp4" contentType="audio">
      <Representation id="a" bandwidth="64000" codecs="mp4a.40.2">
        <SegmentTemplate timescale="1000" media="a/$Time$.m4s" initialization="a/init.mp4">
          <SegmentTimeline><S t="40000" d="2000" r="4"/></SegmentTimeline>
        </SegmentTemplate>
      </Representation>
    </AdaptationSet>
  </Period>
</MPD>"""


class SharedTimesServer(FakeServer):
    """Video and audio under the same times (Instagram's); the video segments in ``silent``
    never answer, the audio ones all do."""

    def __init__(self, video: Timeline, audio: Timeline, present: Iterable[int]) -> None:
        super().__init__(video, present)
        self.audio = audio
        self.audio_offered: list[int] = []

    def offer(self, ref: SegmentRef) -> bool:
        if ref.track != "audio":
            return super().offer(ref)
        if not self.audio.add(ref.key):
            return False
        self.audio_offered.append(ref.key)
        return True


async def test_a_video_segment_that_never_answers_does_not_cost_its_audio() -> None:
    # Instagram: the audio's segments are offered as the video's chain steps through them.
    # A video segment that fails until it expires used to take its audio twin along, never
    # asked for while the server had it (chaos seed 204).
    manifest = parse_manifest(_SHARED_MPD.encode(), "http://origin.test/live/manifest.mpd")
    video_rep, audio_rep = (s.representations[0] for s in manifest.periods[0].adaptation_sets)
    video, audio = Timeline("video", video_rep), Timeline("audio", audio_rep)
    video.init = InitInfo(1, 1000, "vide", None)
    audio.init = InitInfo(2, 1000, "soun", None)
    server = SharedTimesServer(video, audio, {i * SEGMENT for i in range(25)})
    server.silent = {10 * SEGMENT: 1000}
    chains = TimeChains(server, {"video": video, "audio": audio}, LIMITS, shared_times=True)
    for key in range(20 * SEGMENT, 25 * SEGMENT, SEGMENT):  # the window: known ground
        video.add(key)
    await chains.chain_from(video, 0, origin="archive")
    assert server.missing == [10 * SEGMENT]
    assert sorted(server.audio_offered) == [i * SEGMENT for i in range(20)]
