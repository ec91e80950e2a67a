"""Which recording a .segments directory holds (pure: instarec.identity)."""

from __future__ import annotations

from pathlib import Path

from instarec.identity import fingerprint, mismatch

WHERE = Path("out.mkv.segments")


def test_a_fresh_signature_or_another_edge_of_the_cdn_is_the_same_recording() -> None:
    kept = fingerprint("https://edge1.example.test/live/42/42.mpd?oh=a&oe=1", "v", "a")
    assert kept["manifest"] == "https://edge1.example.test/live/42/42.mpd"  # no query kept
    for fresh in (
        "https://edge1.example.test/live/42/42.mpd?oh=b&oe=2",
        "https://edge7.example.test/live/42/42.mpd?oh=c&oe=3",
    ):
        assert mismatch(kept, fingerprint(fresh, "v", "a"), WHERE) is None


def test_a_path_that_changed_with_the_same_representations_is_the_same_broadcast() -> None:
    kept = fingerprint("https://cdn.example.test/tok=A/live/42.mpd", "v", "a")
    assert (
        mismatch(kept, fingerprint("https://cdn.example.test/tok=B/live/42.mpd", "v", "a"), WHERE)
        is None
    )


def test_another_broadcast_is_refused_with_what_to_do() -> None:
    kept = fingerprint("https://cdn.example.test/live/42/42.mpd", "live-hd-v", "live-hd-a")
    other = fingerprint("https://cdn.example.test/live/43/manifest.mpd?s=1", "v1", "a1")
    message = mismatch(kept, other, WHERE)
    assert message is not None
    assert "another broadcast" in message and "--overwrite" in message
    assert "https://cdn.example.test/live/42/42.mpd" in message


def test_other_qualities_of_the_same_broadcast_are_refused_too() -> None:
    kept = fingerprint("https://cdn.example.test/live/42.mpd", "v720", "a128")
    for video, audio in (("v1080", "a128"), ("v720", ""), ("v1080", "a64")):
        message = mismatch(
            kept, fingerprint("https://cdn.example.test/live/42.mpd", video, audio), WHERE
        )
        assert message is not None and "other qualities" in message, (video, audio)
        assert "video v720, audio a128" in message


def test_a_rerun_begun_in_a_later_period_asks_for_what_the_recording_followed_there() -> None:
    kept = fingerprint("https://cdn.example.test/live/42.mpd", "v1", "a1")
    later = {"video": {"v1-p1"}, "audio": {"a1-p1"}}
    resumed = fingerprint("https://cdn.example.test/live/42.mpd", "v1-p1", "a1-p1")
    assert mismatch(kept, resumed, WHERE, later) is None
    # Without the later Periods' ids it is another quality; an id never recorded stays one.
    assert mismatch(kept, resumed, WHERE) is not None
    other = fingerprint("https://cdn.example.test/live/42.mpd", "v2-p1", "a1-p1")
    message = mismatch(kept, other, WHERE, later)
    assert message is not None and "other qualities" in message
