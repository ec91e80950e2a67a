from __future__ import annotations

import dataclasses
import io
import logging

import pytest

from instarec.errors import CancelledByUser, UnsupportedStreamError
from instarec.manifest import Addressing, Manifest, Period, Representation
from instarec.options import Options
from instarec.selection import (
    SelectedTracks,
    find_representation,
    format_bandwidth,
    format_frame_rate,
    format_table,
    pick_interactively,
    select_tracks,
    track_kind,
)


def video(
    rep_id: str, bandwidth: int | None, width: int = 1280, height: int = 720, **kw
) -> Representation:
    fields = dict(
        id=rep_id,
        period_index=0,
        adaptation_set_index=0,
        content_type="video",
        mime_type="video/mp4",
        codecs="avc1.64001f",
        bandwidth=bandwidth,
        width=width,
        height=height,
        frame_rate="30",
        audio_sampling_rate=None,
        lang=None,
        drm=False,
        base_url="https://cdn.example.test/live/",
        addressing=Addressing.TIME_TIMELINE,
        template=None,
    )
    fields.update(kw)
    return Representation(**fields)


def audio(rep_id: str, bandwidth: int | None, rate: int = 48000, **kw) -> Representation:
    fields = dict(
        content_type="audio",
        mime_type="audio/mp4",
        codecs="mp4a.40.2",
        width=None,
        height=None,
        frame_rate=None,
        audio_sampling_rate=rate,
        adaptation_set_index=1,
    )
    fields.update(kw)
    return video(rep_id, bandwidth, **fields)


def manifest_of(*reps: Representation) -> Manifest:
    periods = [Period(index=0, id="p0", start=0.0, duration=None, representations=reps)]
    return Manifest(
        url="https://cdn.example.test/live/manifest.mpd",
        type="dynamic",
        periods=tuple(periods),
        availability_start_time=None,
        publish_time=None,
        minimum_update_period=None,
        time_shift_buffer_depth=None,
        suggested_presentation_delay=None,
        media_presentation_duration=None,
        min_buffer_time=None,
        location=None,
        utc_timing=(),
        attributes={},
    )


LADDER = manifest_of(
    video("v360", 500_000, 640, 360),
    video("v1080", 3_000_000, 1920, 1080),
    video("v720", 1_500_000),
    audio("a64", 64_000),
    audio("a128", 128_000),
)


def opts(**kw) -> Options:
    return Options(mpd_url="https://cdn.example.test/live/manifest.mpd", **kw)


def ids(tracks: SelectedTracks) -> tuple[str | None, str | None]:
    return (
        tracks.video.id if tracks.video else None,
        tracks.audio.id if tracks.audio else None,
    )


# --- select_tracks --------------------------------------------------------------------


def test_default_is_highest_bandwidth_regardless_of_document_order():
    assert ids(select_tracks(LADDER, opts())) == ("v1080", "a128")


def test_preference_list_first_present_id_wins():
    chosen = select_tracks(
        LADDER, opts(video_quality=("v4k", "v720", "v360"), audio_quality=("a64",))
    )
    assert ids(chosen) == ("v720", "a64")


def test_unknown_id_warns_and_falls_back_to_best(caplog):
    with caplog.at_level(logging.WARNING, logger="instarec.selection"):
        chosen = select_tracks(LADDER, opts(video_quality=("nope",)))
    assert ids(chosen) == ("v1080", "a128")
    assert "nope" in caplog.text
    assert "v1080" in caplog.text


def test_audio_id_in_video_preferences_does_not_select_audio_as_video():
    chosen = select_tracks(LADDER, opts(video_quality=("a64",)))
    assert ids(chosen) == ("v1080", "a128")


def test_equal_bandwidth_prefers_bigger_picture():
    m = manifest_of(video("small", 1_000_000, 640, 360), video("big", 1_000_000, 1280, 720))
    assert ids(select_tracks(m, opts())) == ("big", None)


def test_missing_bandwidth_sorts_last():
    m = manifest_of(video("unknown", None), video("known", 10))
    assert ids(select_tracks(m, opts())) == ("known", None)


def test_audio_only_and_video_only():
    assert ids(select_tracks(manifest_of(audio("a", 1)), opts())) == (None, "a")
    assert ids(select_tracks(manifest_of(video("v", 1)), opts())) == ("v", None)


def test_no_video_and_no_audio_is_unsupported():
    text = video("subs", 1, content_type="text", mime_type="application/mp4", codecs="stpp")
    with pytest.raises(UnsupportedStreamError, match="no video and no audio"):
        select_tracks(manifest_of(text), opts())
    with pytest.raises(UnsupportedStreamError):
        select_tracks(manifest_of(), opts())


def test_drm_on_selected_track_is_unsupported():
    m = manifest_of(video("v", 1, drm=True), audio("a", 1))
    with pytest.raises(UnsupportedStreamError, match="DRM"):
        select_tracks(m, opts())


def test_tracks_are_chosen_in_the_first_period(caplog):
    first = manifest_of(video("v1", 10))
    second_period = Period(
        index=1, id="p1", start=50.0, duration=None, representations=(video("v2", 99),)
    )
    m = dataclasses.replace(first, periods=(first.periods[0], second_period))
    with caplog.at_level(logging.INFO, logger="instarec.selection"):
        assert ids(select_tracks(m, opts())) == ("v1", None)
    assert "2 periods" in caplog.text


@pytest.mark.parametrize(
    ("content_type", "mime_type", "codecs", "width", "rate", "expected"),
    [
        ("video", None, None, None, None, "video"),
        (None, "audio/mp4", None, None, None, "audio"),
        (None, None, "hvc1.1.6.L93", None, None, "video"),
        (None, None, "mp4a.40.5", None, None, "audio"),
        (None, None, None, 640, None, "video"),
        (None, None, None, None, 44100, "audio"),
        (None, None, None, None, None, None),
    ],
)
def test_track_kind(content_type, mime_type, codecs, width, rate, expected):
    rep = video(
        "x",
        1,
        content_type=content_type,
        mime_type=mime_type,
        codecs=codecs,
        width=width,
        height=None,
        audio_sampling_rate=rate,
    )
    assert track_kind(rep) == expected


# --- table ------------------------------------------------------------------------------


def test_format_helpers():
    assert format_bandwidth(2_500_000) == "2.50 Mbit/s"
    assert format_bandwidth(128_000) == "128 kbit/s"
    assert format_bandwidth(None) == "-"
    assert format_frame_rate("30000/1001") == "29.97"
    assert format_frame_rate("25") == "25"
    assert format_frame_rate(None) == "-"


def test_format_table_lists_best_first_with_picker_numbers():
    table = format_table(LADDER)
    lines = table.splitlines()
    video_at = lines.index("Video:")
    audio_at = lines.index("Audio:")
    video_rows = [line.split() for line in lines[video_at + 2 : audio_at]]
    assert [(row[0], row[1], row[2]) for row in video_rows] == [
        ("1", "v1080", "1920x1080"),
        ("2", "v720", "1280x720"),
        ("3", "v360", "640x360"),
    ]
    audio_rows = [line.split() for line in lines[audio_at + 2 :]]
    assert [(row[0], row[1]) for row in audio_rows] == [("1", "a128"), ("2", "a64")]
    assert "48000 Hz" in table
    assert "3.00 Mbit/s" in table


def test_format_table_marks_drm_and_other_kinds():
    text = video("subs", 1, content_type="text", mime_type="application/mp4", codecs="stpp")
    image = video("thumbs", 1, 0, 0, content_type="image", mime_type="image/jpeg", codecs="jpeg")
    table = format_table(manifest_of(video("v", 1, drm=True), text, image))
    assert "DRM" in table.split("Video:")[1].splitlines()[2]
    # Text tracks are recorded with --subtitles; what no option records is "Other".
    assert "subs" in table.split("Text (recorded with --subtitles):")[1].split("Other")[0]
    assert "thumbs" in table.split("Other (not recorded):")[1]


# --- picker -----------------------------------------------------------------------------


def pick(manifest: Manifest, answers: str) -> tuple[SelectedTracks, str]:
    out = io.StringIO()
    chosen = pick_interactively(manifest, io.StringIO(answers), out)
    return chosen, out.getvalue()


def test_picker_enter_takes_best():
    chosen, shown = pick(LADDER, "\n\n")
    assert ids(chosen) == ("v1080", "a128")
    assert "1920x1080" in shown and "48000 Hz" in shown


def test_picker_numbers_follow_best_first_order():
    chosen, _ = pick(LADDER, "3\n2\n")
    assert ids(chosen) == ("v360", "a64")


def test_picker_accepts_an_id():
    chosen, _ = pick(LADDER, "v720\n\n")
    assert ids(chosen) == ("v720", "a128")


def test_picker_wrong_entry_asks_again():
    chosen, shown = pick(LADDER, "9\nabc\n0\n2\n\n")
    assert ids(chosen) == ("v720", "a128")
    assert shown.count("Choose video") == 4
    assert "'9' is not a choice" in shown


def test_picker_single_choice_is_taken_without_asking():
    m = manifest_of(video("only", 1), audio("a1", 1), audio("a2", 2))
    chosen, shown = pick(m, "2\n")
    assert ids(chosen) == ("only", "a1")
    assert "Choose video" not in shown
    assert "Choose audio" in shown


def test_picker_end_of_input_cancels():
    with pytest.raises(CancelledByUser, match="cancelled"):
        pick(LADDER, "")
    with pytest.raises(CancelledByUser, match="cancelled"):
        pick(LADDER, "\n")  # video answered, audio hits end of input


def test_picker_ctrl_c_cancels():
    class Interrupting(io.StringIO):
        def readline(self, *args):
            raise KeyboardInterrupt

    with pytest.raises(CancelledByUser, match="cancelled"):
        pick_interactively(LADDER, Interrupting(), io.StringIO())


def test_picker_refuses_drm_choice():
    m = manifest_of(video("clear", 2), video("locked", 1, drm=True))
    with pytest.raises(UnsupportedStreamError, match="DRM"):
        pick(m, "2\n")


def test_a_refreshed_manifest_continues_a_representation_by_id_else_by_rendition() -> None:
    wanted = video("v720", 1_500_000)
    same_id = video("v720", 1_500_000, base_url="https://edge2.example.test/")
    assert find_representation(manifest_of(video("v360", 500_000, 640, 360), same_id), wanted) == (
        same_id
    )
    # A fresh signed URL's manifest that names its representations anew: the same codec, size
    # and bandwidth is the same media, another size or bandwidth is not.
    renamed = video("hd-2", 1_500_000)
    ladder = manifest_of(video("hd-1", 1_500_000, 1920, 1080), renamed, audio("hd-3", 1_500_000))
    assert find_representation(ladder, wanted) == renamed
    assert find_representation(manifest_of(video("hd-1", 1_400_000)), wanted) is None
    assert find_representation(manifest_of(audio("a", 1_500_000)), wanted) is None
