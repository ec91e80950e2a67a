"""Which recording a ``.segments`` directory holds, so that a rerun resumes only its own.

A recording is its broadcast and the representations recorded. The broadcast is told by its
manifest's path: a fresh signed URL of the same manifest differs in its query (a new token) and
perhaps in its host (another edge of the CDN), not in its path. A path that changed while the
representations stayed (a token carried in the path) is the same broadcast too; a different path
and no representation in common is another broadcast. Pure: the caller reads the journal.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from pathlib import Path
from urllib.parse import urlsplit

_TRACKS = ("video", "audio")
LANG_PREFIX = "lang:"  # a further track's language: "lang:audio2" -> "fr"
ROLE_PREFIX = "role:"  # and its role: "role:audio2" -> "commentary"


def fingerprint(
    mpd_url: str, video: str, audio: str, more: Mapping[str, str] | None = None
) -> dict[str, str]:
    """What a journal's header keeps of a recording (the manifest URL without its query).

    ``more``: the further tracks of a recording of several languages or subtitles, by their
    names ("audio2", "text") and their languages ("lang:audio2"); a recording of one video and
    one audio track keeps the header it always had.
    """
    parts = urlsplit(mpd_url)
    return {
        "manifest": f"{parts.scheme}://{parts.netloc}{parts.path}",
        "video": video,
        "audio": audio,
        **(more or {}),
    }


def track_names(fingerprint: Mapping[str, str]) -> list[str]:
    """The tracks a fingerprint names, "video" and "audio" first."""
    return [*_TRACKS, *(k for k in fingerprint if k not in _TRACKS and _is_track(k))]


def _is_track(key: str) -> bool:
    return key != "manifest" and not key.startswith((LANG_PREFIX, ROLE_PREFIX))


def mismatch(
    kept: Mapping[str, str],
    wanted: Mapping[str, str],
    where: Path,
    later: Mapping[str, Collection[str]] | None = None,
) -> str | None:
    """Why the recording kept in ``where`` is not the one ``wanted`` (a one-line message for
    the user), or None when a rerun resumes it. ``later``: the representation ids of each track
    the recording followed into later Periods, which a rerun begun in one of them asks for."""

    def recorded(name: str) -> set[str]:
        return {kept.get(name, ""), *(later or {}).get(name, ())}

    same_path = urlsplit(kept.get("manifest", "")).path == urlsplit(wanted["manifest"]).path
    names = list(dict.fromkeys([*track_names(kept), *track_names(wanted)]))
    shared = [name for name in names if wanted.get(name) and wanted[name] in recorded(name)]
    if not same_path and not shared:
        return (
            f"{where} holds an unfinished recording of another broadcast "
            f"({kept.get('manifest', 'unknown manifest')}): pass --overwrite to discard it, "
            "or choose another OUTPUT"
        )
    if any(wanted.get(name, "") not in recorded(name) for name in names):
        return (
            f"{where} holds a recording of this broadcast in other qualities ({_tracks(kept)}, "
            f"not {_tracks(wanted)}): ask for the same with --video-quality/--audio-quality to "
            "resume it, or pass --overwrite to discard it"
        )
    return None


def _tracks(fingerprint: Mapping[str, str]) -> str:
    return ", ".join(
        f"{kind} {fingerprint.get(kind) or 'none'}" for kind in track_names(fingerprint)
    )
