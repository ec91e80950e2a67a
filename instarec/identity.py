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


def fingerprint(mpd_url: str, video: str, audio: str) -> dict[str, str]:
    """What a journal's header keeps of a recording (the manifest URL without its query)."""
    parts = urlsplit(mpd_url)
    return {
        "manifest": f"{parts.scheme}://{parts.netloc}{parts.path}",
        "video": video,
        "audio": audio,
    }


def mismatch(
    kept: Mapping[str, str],
    wanted: Mapping[str, str],
    where: Path,
    later: Mapping[str, Collection[str]] | None = None,
) -> str | None:
    """Why the recording kept in ``where`` is not the one ``wanted`` (a one-line message for
    the user), or None when a rerun resumes it. ``later``: the representation ids of each kind
    the recording followed into later Periods, which a rerun begun in one of them asks for."""

    def recorded(kind: str) -> set[str]:
        return {kept.get(kind, ""), *(later or {}).get(kind, ())}

    same_path = urlsplit(kept.get("manifest", "")).path == urlsplit(wanted["manifest"]).path
    shared = [kind for kind in _TRACKS if wanted.get(kind) and wanted[kind] in recorded(kind)]
    if not same_path and not shared:
        return (
            f"{where} holds an unfinished recording of another broadcast "
            f"({kept.get('manifest', 'unknown manifest')}): pass --overwrite to discard it, "
            "or choose another OUTPUT"
        )
    if any(wanted.get(kind, "") not in recorded(kind) for kind in _TRACKS):
        return (
            f"{where} holds a recording of this broadcast in other qualities ({_tracks(kept)}, "
            f"not {_tracks(wanted)}): ask for the same with --video-quality/--audio-quality to "
            "resume it, or pass --overwrite to discard it"
        )
    return None


def _tracks(fingerprint: Mapping[str, str]) -> str:
    return ", ".join(f"{kind} {fingerprint.get(kind) or 'none'}" for kind in _TRACKS)
