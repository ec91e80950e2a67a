"""Choosing every audio track and the text tracks; the picker's several ticks; the names a
recording gives them, and the fingerprint a rerun resumes by."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import pytest

from instarec import identity
from instarec.errors import UnsupportedStreamError
from instarec.manifest import parse_manifest
from instarec.options import Options
from instarec.periods import period_start_ms, slot_of
from instarec.segments import slot_kind
from instarec.selection import (
    SelectedTracks,
    format_table,
    pick_interactively,
    plain_text,
    select_tracks,
    text_format,
)
from tests.test_selection import audio, manifest_of, video


def text(rep_id: str, index: int, codecs: str = "wvtt", **kw: object):
    fields: dict[str, object] = dict(
        content_type="text",
        mime_type="application/mp4",
        codecs=codecs,
        width=None,
        height=None,
        frame_rate=None,
        adaptation_set_index=index,
    )
    fields.update(kw)
    return video(rep_id, 1000, **fields)


MULTI = manifest_of(
    video("v1", 3_000_000),
    audio("en-hi", 128_000, adaptation_set_index=1, lang="en"),
    audio("en-lo", 64_000, adaptation_set_index=1, lang="en"),
    audio("fr-hi", 192_000, adaptation_set_index=2, lang="fr"),
    audio("fr-lo", 64_000, adaptation_set_index=2, lang="fr"),
    audio("de", 96_000, adaptation_set_index=3, lang="de"),
    text("subs-en", 4, lang="en"),
    text("subs-fr", 5, codecs="stpp", lang="fr"),
    text("ttml-file", 6, mime_type="application/ttml+xml", codecs=None),
    text("vtt-file", 7, mime_type="text/vtt", codecs=None),
)


def options(**kw: object) -> Options:
    return Options(mpd_url="https://cdn.example.test/live/manifest.mpd", **kw)  # type: ignore[arg-type]


def test_default_is_one_video_and_the_best_audio_of_all():
    chosen = select_tracks(MULTI, options())
    assert chosen == SelectedTracks(MULTI.periods[0].representations[0], chosen.audio)
    assert chosen.audio is not None and chosen.audio.id == "fr-hi"
    assert not chosen.several
    assert [name for name, _ in chosen.slots()] == ["video", "audio"]


def test_all_takes_the_best_of_each_adaptation_set_in_document_order():
    chosen = select_tracks(MULTI, options(audio_quality=("all",)))
    assert [(name, rep.id) for name, rep in chosen.slots()] == [
        ("video", "v1"),
        ("audio", "en-hi"),
        ("audio2", "fr-hi"),
        ("audio3", "de"),
    ]
    assert chosen.several


def test_ids_beside_all_choose_within_their_own_set(caplog: pytest.LogCaptureFixture):
    with caplog.at_level(logging.WARNING):
        chosen = select_tracks(MULTI, options(audio_quality=("all", "fr-lo")))
    assert [rep.id for _, rep in chosen.slots()] == ["v1", "en-hi", "fr-lo", "de"]
    assert not caplog.records  # the sets the id is not in take their best silently


def test_subtitles_take_each_text_set_and_warn_of_what_cannot_be_read(
    caplog: pytest.LogCaptureFixture,
):
    with caplog.at_level(logging.WARNING):
        chosen = select_tracks(MULTI, options(subtitles=True))
    assert [(name, rep.id) for name, rep in chosen.slots()] == [
        ("video", "v1"),
        ("audio", "fr-hi"),
        ("text", "subs-en"),
        ("text2", "subs-fr"),
        ("text3", "vtt-file"),
    ]
    assert "ttml-file" in caplog.text and "left out" in caplog.text


def test_an_unknown_id_beside_all_is_said_and_every_set_recorded(
    caplog: pytest.LogCaptureFixture,
):
    with caplog.at_level(logging.WARNING):
        chosen = select_tracks(MULTI, options(audio_quality=("all", "es-hi")))
    assert [rep.id for _, rep in chosen.slots()] == ["v1", "en-hi", "fr-hi", "de"]
    assert "'es-hi' not found" in caplog.text


def test_encrypted_text_is_refused():
    manifest = manifest_of(video("v1", 1), text("subs", 4, drm=True))
    with pytest.raises(UnsupportedStreamError, match="DRM"):
        select_tracks(manifest, options(subtitles=True))


def test_more_audio_adds_the_pickers_further_ticks():
    chosen = select_tracks(MULTI, options(audio_quality=("de",), more_audio=("en-lo", "de")))
    assert [rep.id for _, rep in chosen.slots()] == ["v1", "de", "en-lo"]


def test_table_shows_languages_and_the_text_tracks():
    table = format_table(MULTI)
    audio_part = table.split("Audio:")[1].split("Text")[0]
    assert "LANG" in audio_part and " fr " in audio_part and " de " in audio_part
    text_part = table.split("Text (recorded with --subtitles):")[1]
    assert "subs-en" in text_part and "stpp" in text_part and "ttml-file" in text_part


@pytest.mark.parametrize(
    ("answers", "expected"),
    [
        ("2,5\n", ["en-hi", "fr-lo"]),
        ("all\n", ["en-hi", "fr-hi", "de"]),
        ("\n", ["fr-hi"]),
        ("9\nde, en-lo\n", ["de", "en-lo"]),
    ],
)
def test_picker_ticks_several_audio_tracks(answers: str, expected: list[str]):
    out = io.StringIO()
    chosen = pick_interactively(MULTI, io.StringIO(answers), out)
    assert chosen.video is not None and chosen.video.id == "v1"
    assert [rep.id for rep in (chosen.audio, *chosen.more_audio) if rep] == expected
    assert "several as 1,3" in out.getvalue()


def test_picker_asks_one_audio_when_there_is_one_adaptation_set():
    manifest = manifest_of(video("v1", 1), audio("a1", 2), audio("a2", 1))
    out = io.StringIO()
    chosen = pick_interactively(manifest, io.StringIO("2\n"), out)
    assert chosen.audio is not None and chosen.audio.id == "a2" and not chosen.more_audio
    assert "several" not in out.getvalue()


# --- names and fingerprints -------------------------------------------------------------------


def test_store_names_carry_the_track_and_its_period():
    assert slot_of("audio2-p60000") == "audio2"
    assert slot_of("text") == "text"
    assert slot_of("video") == "video"
    assert slot_of("subtitles") is None
    assert period_start_ms("text2-p1500") == 1500
    assert slot_kind("audio3") == "audio" and slot_kind("text") == "text"


def test_fingerprint_of_one_video_and_audio_is_unchanged():
    assert identity.fingerprint("https://h/a.mpd?x=1", "v", "a") == {
        "manifest": "https://h/a.mpd",
        "video": "v",
        "audio": "a",
    }


def test_a_rerun_resumes_only_with_the_same_further_tracks(tmp_path: Path):
    more = {"audio2": "fr-hi", "lang:audio2": "fr", "text": "subs-en"}
    kept = identity.fingerprint("https://h/a.mpd", "v", "a", more)
    assert identity.track_names(kept) == ["video", "audio", "audio2", "text"]
    assert identity.mismatch(kept, dict(kept), tmp_path) is None
    fewer = identity.fingerprint("https://h/a.mpd", "v", "a")
    problem = identity.mismatch(kept, fewer, tmp_path)
    assert problem is not None and "audio2 fr-hi" in problem


@pytest.mark.parametrize(
    ("mime", "codecs", "expected"),
    [
        ("application/mp4", "wvtt", "wvtt"),
        ("application/mp4", "stpp.ttml.im1t", "stpp"),
        (None, "wvtt", "wvtt"),
        ("text/vtt", None, "vtt"),
        ("text/vtt", "wvtt", "vtt"),
        ("application/ttml+xml", None, None),
        ("application/mp4", "tx3g", None),
    ],
)
def test_text_format(mime: str | None, codecs: str | None, expected: str | None):
    rep = text("t", 4, codecs=codecs, mime_type=mime)
    assert text_format(rep) == expected
    assert plain_text(rep) == (expected == "vtt")


def test_table_shows_roles():
    manifest = manifest_of(
        video("v1", 1),
        audio("main", 2, adaptation_set_index=1, lang="en", role="main"),
        audio("comm", 1, adaptation_set_index=2, lang="en", role="commentary"),
    )
    audio_part = format_table(manifest).split("Audio:")[1]
    assert "ROLE" in audio_part and "commentary" in audio_part and " main " in audio_part


def test_role_is_read_from_the_adaptation_set():
    mpd = b"""<?xml version="1.0"?>
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static" mediaPresentationDuration="PT4S">
  <Period id="p0">
    <AdaptationSet contentType="audio" mimeType="audio/mp4" lang="de">
      <Role schemeIdUri="urn:mpeg:dash:role:2011" value="commentary"/>
      <SegmentTemplate media="$RepresentationID$/$Number$.m4s" duration="2" startNumber="1"/>
      <Representation id="a-de" codecs="mp4a.40.2" bandwidth="64000"/>
    </AdaptationSet>
    <AdaptationSet contentType="audio" mimeType="audio/mp4" lang="en">
      <SegmentTemplate media="$RepresentationID$/$Number$.m4s" duration="2" startNumber="1"/>
      <Representation id="a-en" codecs="mp4a.40.2" bandwidth="64000"/>
    </AdaptationSet>
  </Period>
</MPD>"""
    manifest = parse_manifest(mpd, "https://cdn.example.test/live/manifest.mpd")
    roles = {rep.id: rep.role for rep in manifest.representations()}
    assert roles == {"a-de": "commentary", "a-en": None}
    assert manifest.periods[0].adaptation_sets[0].role == "commentary"
