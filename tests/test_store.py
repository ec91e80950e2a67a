"""SegmentStore: layout, journal, resume after Ctrl+C or kill -9."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest

from instarec.errors import DiskFullError, StorageError
from instarec.mp4 import parse_fragment, parse_init
from instarec.store import (
    JOURNAL_NAME,
    MissingSegment,
    SegmentStore,
    TrackPlace,
    current_boot,
    discard,
    holds_partial_output,
    kept_fingerprint,
    kept_representations,
)
from instarec.testing.media import TestMedia

FP = {"mpd": "https://cdn.example/live/manifest.mpd", "video": "v1080", "audio": "a128"}


async def write_segment(store: SegmentStore, track: str, key: int, data: bytes) -> Path:
    """What the downloader does: the body through the store's writer."""
    async with store.writer(track, key) as sink:
        sink.write(data)
    return sink.path


async def store_with_init(root: Path, track: str, init: bytes) -> SegmentStore:
    """A new store at ``root`` with ``track``'s init segment committed."""
    store = SegmentStore.open(root, FP)
    store.init_path(track).write_bytes(init)
    await store.commit_init(track)
    return store


async def add(store: SegmentStore, track: str, key: int, start: float, data: bytes) -> None:
    await write_segment(store, track, key, data)
    await store.commit(
        track,
        key,
        start=start,
        duration=2.0,
        size=len(data),
        media_time=key,
        media_duration=180_000,
    )


def journal_lines(root: Path) -> list[dict[str, object]]:
    """The journal's records but the boot ones (each store written on a new boot has one)."""
    records = [json.loads(line) for line in (root / JOURNAL_NAME).read_text().splitlines()]
    return [record for record in records if record.get("type") != "boot"]


def test_layout_and_header(tmp_path: Path) -> None:
    root = tmp_path / "out.mp4.segments"
    store = SegmentStore.open(root, FP)
    assert store.segment_path("video", 1234) == root / "video" / "00000000000000001234.m4s"
    assert store.init_path("audio") == root / "audio" / "init.mp4"
    assert (root / "video").is_dir()
    header = journal_lines(root)[0]
    assert header["type"] == "header"
    assert header["fingerprint"] == FP
    assert store.resumed is False


async def test_commit_then_resume(tmp_path: Path) -> None:
    root = tmp_path / "rec.segments"
    store = SegmentStore.open(root, FP)
    store.init_path("video").write_bytes(b"INIT")
    await store.commit_init("video")
    await add(store, "video", 4000, 4.0, b"b" * 20)
    await add(store, "video", 2000, 2.0, b"a" * 10)
    await add(store, "audio", 2000, 2.0, b"c" * 5)
    assert store.has("video", 2000)
    assert not store.has("audio", 4000)

    again = SegmentStore.open(root, dict(FP))
    assert again.resumed is True
    assert again.has_init("video")
    assert not again.has_init("audio")
    video = again.segments("video")
    assert [(s.key, s.start, s.size) for s in video] == [(2000, 2.0, 10), (4000, 4.0, 20)]
    assert video[0].path.read_bytes() == b"a" * 10
    assert video[0].media_duration == 180_000
    assert [s.key for s in again.segments("audio")] == [2000]
    # commit appended exactly one line each
    assert len(journal_lines(root)) == 1 + 1 + 3


async def test_segments_ordered_by_start_then_key(tmp_path: Path) -> None:
    store = SegmentStore.open(tmp_path / "s", FP)
    await add(store, "video", 30, 6.0, b"x")
    await add(store, "video", 20, 4.0, b"x")
    await add(store, "video", 11, 4.0, b"x")
    await add(store, "video", 10, 2.0, b"x")
    assert [s.key for s in store.segments("video")] == [10, 11, 20, 30]
    assert store.segments("audio") == []


async def test_negative_key_is_a_valid_file_name(tmp_path: Path) -> None:
    # ffmpeg's dash muxer can name the first audio segment by a negative time.
    store = SegmentStore.open(tmp_path / "s", FP)
    await add(store, "audio", -1024, 0.0, b"aac")
    await add(store, "audio", 0, 0.02, b"aac")
    assert [s.key for s in SegmentStore.open(tmp_path / "s", FP).segments("audio")] == [-1024, 0]


async def test_truncated_last_line_is_ignored_and_cut(tmp_path: Path) -> None:
    root = tmp_path / "s"
    store = SegmentStore.open(root, FP)
    await add(store, "video", 1, 2.0, b"one")
    await add(store, "video", 2, 4.0, b"two")
    journal = root / JOURNAL_NAME
    data = journal.read_bytes()
    # kill -9 in the middle of writing the last line
    journal.write_bytes(data[: len(data) - 15])

    resumed = SegmentStore.open(root, FP)
    assert [s.key for s in resumed.segments("video")] == [1]
    # the next commit starts on a line of its own
    await add(resumed, "video", 3, 6.0, b"three")
    assert [line.get("key") for line in journal_lines(root)] == [None, 1, 3]
    assert [s.key for s in SegmentStore.open(root, FP).segments("video")] == [1, 3]


async def test_complete_last_line_without_newline_is_kept(tmp_path: Path) -> None:
    root = tmp_path / "s"
    store = SegmentStore.open(root, FP)
    await add(store, "video", 1, 2.0, b"one")
    journal = root / JOURNAL_NAME
    journal.write_bytes(journal.read_bytes().rstrip(b"\n"))
    resumed = SegmentStore.open(root, FP)
    assert resumed.has("video", 1)
    await add(resumed, "video", 2, 4.0, b"two")
    assert [s.key for s in SegmentStore.open(root, FP).segments("video")] == [1, 2]


def test_kill_9_simulation_torn_journal_and_part_files(tmp_path: Path) -> None:
    """A journal written by hand as a killed process would leave it."""
    root = tmp_path / "s"
    (root / "video").mkdir(parents=True)
    (root / "video" / f"{100:020d}.m4s").write_bytes(b"A" * 7)
    (root / "video" / f"{200:020d}.m4s").write_bytes(b"B" * 9)
    # renamed, but killed before its journal line was complete
    (root / "video" / f"{300:020d}.m4s").write_bytes(b"C" * 4)
    # killed mid-download
    (root / "video" / f"{400:020d}.m4s.part").write_bytes(b"D")
    lines = [
        json.dumps({"type": "header", "version": 1, "fingerprint": FP}),
        json.dumps({"type": "segment", "track": "video", "key": 100, "start": 0.0,
                    "duration": 2.0, "size": 7, "media_time": 0, "media_duration": 2}),
        json.dumps({"type": "segment", "track": "video", "key": 200, "start": 2.0,
                    "duration": 2.0, "size": 9, "media_time": 2, "media_duration": 2}),
        '{"type":"segment","track":"video","key":300,"sta',
    ]  # fmt: skip
    (root / JOURNAL_NAME).write_text("\n".join(lines))

    store = SegmentStore.open(root, FP)
    assert [s.key for s in store.segments("video")] == [100, 200]
    assert not store.has("video", 300)
    assert not (root / "video" / f"{400:020d}.m4s.part").exists()


async def test_entries_with_missing_or_wrong_size_file_are_dropped(tmp_path: Path) -> None:
    root = tmp_path / "s"
    store = SegmentStore.open(root, FP)
    store.init_path("video").write_bytes(b"INIT")
    await store.commit_init("video")
    await add(store, "video", 1, 2.0, b"one")
    await add(store, "video", 2, 4.0, b"two")
    await add(store, "video", 3, 6.0, b"three")
    store.segment_path("video", 1).unlink()
    store.segment_path("video", 3).write_bytes(b"thr")  # damaged
    store.init_path("video").unlink()

    resumed = SegmentStore.open(root, FP)
    assert [s.key for s in resumed.segments("video")] == [2]
    assert not resumed.has("video", 1)
    assert not resumed.has_init("video")


async def test_fingerprint_mismatch_is_storage_error(tmp_path: Path) -> None:
    root = tmp_path / "s"
    await add(SegmentStore.open(root, FP), "video", 1, 0.0, b"x")
    other = {**FP, "video": "v720"}
    with pytest.raises(StorageError, match="--overwrite"):
        SegmentStore.open(root, other)
    # nothing was touched
    assert SegmentStore.open(root, FP).has("video", 1)


async def test_a_partial_output_is_journalled_and_read_without_opening(tmp_path: Path) -> None:
    root = tmp_path / "s"
    assert kept_fingerprint(root) is None and not holds_partial_output(root)
    store = SegmentStore.open(root, FP)
    await add(store, "video", 1, 0.0, b"x")
    await store.mark_output(partial=True)
    assert kept_fingerprint(root) == FP
    assert holds_partial_output(root)
    reopened = SegmentStore.open(root, FP)
    assert reopened.partial_output and reopened.has("video", 1)
    await reopened.mark_output(partial=False)
    assert not holds_partial_output(root)
    assert not SegmentStore.open(root, FP).partial_output
    discard(root)
    assert not root.exists()


def test_foreign_directory_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "s"
    root.mkdir()
    (root / "holiday.jpg").write_bytes(b"jpeg")
    with pytest.raises(StorageError, match="--overwrite"):
        SegmentStore.open(root, FP)


async def test_torn_header_starts_afresh(tmp_path: Path) -> None:
    root = tmp_path / "s"
    root.mkdir()
    (root / JOURNAL_NAME).write_text('{"type":"header","vers')
    store = SegmentStore.open(root, FP)
    assert store.resumed is False
    await add(store, "video", 1, 0.0, b"x")
    assert SegmentStore.open(root, FP).has("video", 1)


async def test_record_missing_then_commit(tmp_path: Path) -> None:
    root = tmp_path / "s"
    store = SegmentStore.open(root, FP)
    await store.record_missing("video", 5, start=10.0, duration=2.0)
    await store.record_missing("video", 3, start=6.0, duration=None)
    assert store.missing("video") == [
        MissingSegment("video", 3, 6.0, None),
        MissingSegment("video", 5, 10.0, 2.0),
    ]
    await add(store, "video", 5, 10.0, b"late")
    assert [m.key for m in store.missing("video")] == [3]

    resumed = SegmentStore.open(root, FP)
    assert [m.key for m in resumed.missing("video")] == [3]
    assert resumed.has("video", 5)
    # a segment already kept is never recorded as missing
    await resumed.record_missing("video", 5, start=10.0, duration=2.0)
    assert [m.key for m in SegmentStore.open(root, FP).missing("video")] == [3]


async def test_commit_requires_the_file(tmp_path: Path) -> None:
    store = SegmentStore.open(tmp_path / "s", FP)
    with pytest.raises(StorageError, match="not there"):
        await store.commit("video", 9, start=0.0, duration=None, size=3, media_time=None,
                     media_duration=None)  # fmt: skip
    await write_segment(store, "video", 9, b"abcd")
    with pytest.raises(StorageError, match="expected 3"):
        await store.commit("video", 9, start=0.0, duration=None, size=3, media_time=None,
                     media_duration=None)  # fmt: skip
    assert len(journal_lines(tmp_path / "s")) == 1


def test_invalid_track_name(tmp_path: Path) -> None:
    store = SegmentStore.open(tmp_path / "s", FP)
    with pytest.raises(ValueError):
        store.segment_path("../escape", 1)


async def test_remove_deletes_the_directory(tmp_path: Path) -> None:
    root = tmp_path / "s"
    store = SegmentStore.open(root, FP)
    await add(store, "video", 1, 0.0, b"x")
    store.remove()
    assert not root.exists()
    assert store.segments("video") == []


@pytest.mark.skipif(
    sys.platform == "win32" or (hasattr(os, "geteuid") and os.geteuid() == 0),
    reason="permissions are not enforced for root",
)
def test_non_writable_location_is_storage_error(tmp_path: Path) -> None:
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o500)
    try:
        with pytest.raises(StorageError):
            SegmentStore.open(parent / "s", FP)
    finally:
        parent.chmod(0o700)


def test_location_under_a_file_is_storage_error(tmp_path: Path) -> None:
    # Works as root too: a path below a regular file can never be created.
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StorageError):
        SegmentStore.open(blocker / "s", FP)
    with pytest.raises(StorageError):
        SegmentStore.open(blocker, FP)


async def test_a_failed_write_leaves_nothing_behind(tmp_path: Path) -> None:
    store = SegmentStore.open(tmp_path / "s", FP)
    with pytest.raises(RuntimeError):
        async with store.writer("video", 7) as sink:
            sink.write(b"half a body")
            raise RuntimeError("the download broke off")
    assert sorted(p.name for p in (tmp_path / "s" / "video").iterdir()) == []
    async with store.writer("video", 7) as sink:
        sink.write(b"a first try")
        sink.restart()
        sink.write(b"whole")
    assert store.segment_path("video", 7).read_bytes() == b"whole"
    assert sink.size == 5


async def test_concurrent_commits_all_reach_the_journal(tmp_path: Path) -> None:
    root = tmp_path / "s"
    store = SegmentStore.open(root, FP)
    await asyncio.gather(*(add(store, "video", k, float(k), b"x" * k) for k in range(1, 41)))
    lines = journal_lines(root)
    assert sorted(int(str(line["key"])) for line in lines[1:]) == list(range(1, 41))
    assert [s.key for s in SegmentStore.open(root, FP).segments("video")] == list(range(1, 41))


async def test_a_background_commit_is_in_the_journal_after_flush(tmp_path: Path) -> None:
    root = tmp_path / "s"
    store = SegmentStore.open(root, FP)
    for key in (1, 2, 3):
        await write_segment(store, "video", key, b"x" * key)
        await store.commit(
            "video", key, start=2.0 * key, duration=2.0, size=key, media_time=None,
            media_duration=None, wait=False,
        )  # fmt: skip
    await store.flush()
    assert [s.key for s in SegmentStore.open(root, FP).segments("video")] == [1, 2, 3]


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
async def test_a_background_commit_that_fails_is_raised_by_the_next_call(tmp_path: Path) -> None:
    root = tmp_path / "s"
    store = SegmentStore.open(root, FP)
    journal = root / JOURNAL_NAME
    journal.unlink()
    journal.symlink_to("/dev/full")  # every append fails with ENOSPC
    await write_segment(store, "video", 1, b"one")
    await store.commit(
        "video", 1, start=0.0, duration=2.0, size=3, media_time=None, media_duration=None,
        wait=False,
    )  # fmt: skip
    with pytest.raises(DiskFullError):
        await store.flush()
    await write_segment(store, "video", 2, b"two")
    with pytest.raises(DiskFullError):
        await store.commit(
            "video", 2, start=2.0, duration=2.0, size=3, media_time=None, media_duration=None,
            wait=False,
        )  # fmt: skip


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
async def test_a_cancelled_commit_leaves_no_write_behind_once_settled(tmp_path: Path) -> None:
    # A journal write runs in a thread, which a cancelled caller cannot stop: a recording
    # cancelled like a crash must not go on writing its journal after it has returned, while a
    # rerun (or a test) reads it. A named pipe as journal holds the write until read.
    root = tmp_path / "s"
    store = SegmentStore.open(root, FP)
    journal = root / JOURNAL_NAME
    journal.unlink()
    os.mkfifo(journal)
    await write_segment(store, "video", 1, b"one")
    commit = asyncio.create_task(
        store.commit(
            "video", 1, start=0.0, duration=2.0, size=3, media_time=None, media_duration=None
        )
    )  # fmt: skip
    await asyncio.sleep(0.2)  # the thread is blocked opening the pipe
    commit.cancel()
    with pytest.raises(asyncio.CancelledError):
        await commit
    settle = asyncio.create_task(store.settle())
    await asyncio.sleep(0.2)
    assert not settle.done()  # the write is still under way
    read = asyncio.create_task(asyncio.to_thread(journal.read_bytes))
    await asyncio.wait_for(settle, 5)
    written = [json.loads(line) for line in (await read).splitlines()]
    assert [(line["type"], line["key"]) for line in written] == [("segment", 1)]


async def test_a_segment_renamed_but_not_yet_journalled_is_kept_on_resume(
    tmp_path: Path, test_media: TestMedia
) -> None:
    # A segment's journal line is written in the background after its rename: a kill -9 in
    # between left a whole segment on disk that the journal does not name (chaos seed 98, under
    # load: the resume found no manifest and merged without it). A torn one is not taken.
    track = test_media.track("video")
    root = tmp_path / "s"
    store = await store_with_init(root, "video", track.init)
    first, second, third = (track.segment_data(i) for i in range(3))
    await add(store, "video", 100, 0.0, first)
    await write_segment(store, "video", 200, second)  # renamed, never journalled
    await write_segment(store, "video", 300, third[: len(third) // 2])  # torn
    resumed = SegmentStore.open(root, FP)
    kept = {s.key: s for s in resumed.segments("video")}
    assert sorted(kept) == [100, 200]
    timescale = parse_init(track.init).timescale
    info = parse_fragment(
        second, default_sample_duration=parse_init(track.init).default_sample_duration
    )
    assert info.base_media_decode_time is not None
    assert kept[200].start == pytest.approx(info.base_media_decode_time / timescale)
    assert kept[200].duration == pytest.approx(info.duration / timescale)
    assert kept[200].size == len(second)
    # Journalled now: a second resume finds it in the journal itself.
    keys = [line.get("key") for line in journal_lines(root) if line.get("type") == "segment"]
    assert keys == [100, 200]


async def test_where_each_track_was_recorded_from_survives_a_reopen(tmp_path: Path) -> None:
    root = tmp_path / "s"
    store = SegmentStore.open(root, FP)
    first, later = TrackPlace(0.0, 0.0, "v1"), TrackPlace(20.6, 20.6, "v1-p1")
    for track, place in (("video", first), ("video-p20600", later)):
        store.init_path(track).write_bytes(b"INIT")
        await store.commit_init(track, offset=place.shift, place=place)
    await store.flush()
    store.init_path("audio").write_bytes(b"INIT")
    await store.commit_init("audio")  # as a journal of an earlier version: no place

    resumed = SegmentStore.open(root, FP)
    assert resumed.place("video") == first
    assert resumed.place("video-p20600") == later
    assert resumed.offset("video-p20600") == pytest.approx(20.6)
    assert resumed.place("audio") is None
    assert kept_representations(root) == {"video": {"v1", "v1-p1"}}


async def test_a_later_periods_segment_left_unjournalled_is_placed_on_the_recordings_clock(
    tmp_path: Path, test_media: TestMedia
) -> None:
    # Chaos seed 214: adopted at its media time, a later Period's first segment pulled the
    # whole Period to the start of the file on merge.
    track = test_media.track("video")
    root = tmp_path / "s"
    store = SegmentStore.open(root, FP)
    store.init_path("video-p297100").write_bytes(track.init)
    await store.commit_init("video-p297100", offset=297.1)
    segment = track.segment_data(1)
    await write_segment(store, "video-p297100", 7, segment)  # renamed, never journalled
    resumed = SegmentStore.open(root, FP)
    (kept,) = resumed.segments("video-p297100")
    init = parse_init(track.init)
    info = parse_fragment(segment, default_sample_duration=init.default_sample_duration)
    assert info.base_media_decode_time is not None
    assert kept.start == pytest.approx(297.1 + info.base_media_decode_time / init.timescale)


@pytest.mark.skipif(current_boot() is None, reason="the boot id is read on Linux only")
async def test_after_a_reboot_the_files_written_before_it_are_checked(
    tmp_path: Path, test_media: TestMedia
) -> None:
    # Segment files are not fsynced one by one: a kill -9 cannot lose their bytes, a power
    # cut can, leaving a journalled file of the right size without its data.
    track = test_media.track("video")
    root = tmp_path / "s"
    store = await store_with_init(root, "video", track.init)
    whole, lost = track.segment_data(0), track.segment_data(1)
    await add(store, "video", 100, 0.0, whole)
    await add(store, "video", 200, 2.0, lost)
    await add(store, "audio", 100, 0.0, b"WEBVTT\n\n00:00.000 --> 00:02.000\nhello\n")
    await store.flush()
    store.segment_path("video", 200).write_bytes(bytes(len(lost)))  # the size, not the data

    # The same boot: nothing could be lost, nothing is read back.
    reopened = SegmentStore.open(root, FP)
    assert sorted(s.key for s in reopened.segments("video")) == [100, 200]

    # Written under another boot: every file is checked, the one left empty is dropped.
    boot = current_boot()
    assert boot is not None
    journal = root / JOURNAL_NAME
    journal.write_text(journal.read_text().replace(boot, "an-earlier-boot"))
    resumed = SegmentStore.open(root, FP)
    assert sorted(s.key for s in resumed.segments("video")) == [100]
    assert [s.key for s in resumed.segments("audio")] == [100]  # text passes as text
    assert resumed.has_init("video")
