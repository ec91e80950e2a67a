"""DURATION and SIZE as the command line writes them (``1h30m``, ``01:30:00``, ``2GB``,
``500MiB``), read into seconds and bytes, and a duration written back the same way (pure).

Sizes follow the units' own convention: ``kB``/``MB``/``GB``/``TB`` (and the bare ``k``/``M``/
``G``/``T``) are powers of 1000, as disks and file systems are sold; ``KiB``/``MiB``/``GiB``/
``TiB`` are powers of 1024. A colon duration reads as ffmpeg's ``-t`` does: ``1:30`` is one
minute thirty, ``1:30:00`` an hour and a half.
"""

from __future__ import annotations

import math
import re

__all__ = ["format_span", "parse_duration", "parse_size"]

_NUMBER = r"\d+(?:\.\d*)?|\.\d+"
_UNITS = re.compile(rf"(?:(?P<h>{_NUMBER})h)?(?:(?P<m>{_NUMBER})m)?(?:(?P<s>{_NUMBER})s?)?")
_CLOCK = re.compile(r"(?:(?P<h>\d+):)?(?P<m>\d+):(?P<s>\d+(?:\.\d*)?)")
_SIZE = re.compile(rf"(?P<n>{_NUMBER})\s*(?P<unit>[kmgt]i?)?b?")

_SIZE_FACTORS = {
    "": 1,
    "k": 1000,
    "m": 1000**2,
    "g": 1000**3,
    "t": 1000**4,
    "ki": 1024,
    "mi": 1024**2,
    "gi": 1024**3,
    "ti": 1024**4,
}

DURATION_FORMS = "e.g. 90, 90s, 2m, 1h30m, 1:30 (minutes:seconds) or 01:30:00"
SIZE_FORMS = "e.g. 2GB, 700M, 1.5G (powers of 1000) or 500MiB (powers of 1024)"


def parse_duration(text: str) -> float:
    """Seconds in ``text``; ValueError saying which forms are accepted when it is none."""
    cleaned = text.strip().lower()
    seconds = _clock_seconds(cleaned) if ":" in cleaned else _unit_seconds(cleaned)
    if seconds is None:
        raise ValueError(f"expected a duration ({DURATION_FORMS}), got {text!r}")
    if math.isinf(seconds):
        raise ValueError(f"duration out of range: {text!r}")
    if not seconds > 0:
        raise ValueError(f"a duration must be longer than 0, got {text!r}")
    return seconds


def _unit_seconds(text: str) -> float | None:
    match = _UNITS.fullmatch(text)
    if not text or match is None:
        return None
    # 1h30 could mean 1h30m as well as 1h0m30s: a number after a unit needs a unit of its own.
    if match.group("s") is not None and (match["h"] or match["m"]) and not text.endswith("s"):
        return None
    h, m, s = (float(match.group(name) or 0) for name in ("h", "m", "s"))
    return h * 3600 + m * 60 + s


def _clock_seconds(text: str) -> float | None:
    match = _CLOCK.fullmatch(text)
    if match is None:
        return None
    h, m, s = (float(match.group(name) or 0) for name in ("h", "m", "s"))
    # 1:75 or 1:75:00 is a typing mistake, not 2:15: say so rather than guess.
    if s >= 60 or (match.group("h") is not None and m >= 60):
        return None
    return h * 3600 + m * 60 + s


def parse_size(text: str) -> int:
    """Bytes in ``text`` (rounded down); ValueError saying which forms are accepted."""
    match = _SIZE.fullmatch(text.strip().lower())
    if match is None:
        raise ValueError(f"expected a size ({SIZE_FORMS}), got {text!r}")
    value = float(match.group("n")) * _SIZE_FACTORS[match.group("unit") or ""]
    if math.isinf(value):
        raise ValueError(f"size out of range: {text!r}")
    size = math.floor(value)
    if size < 1:
        raise ValueError(f"a size must be at least 1 byte, got {text!r}")
    return size


def format_span(seconds: float) -> str:
    """A duration as the command line takes it: ``1h30m``, ``2m``, ``45s``, ``2.5s``."""
    whole = round(seconds)
    if abs(seconds - whole) > 0.0005:
        fraction = f"{seconds % 60:.3f}".rstrip("0").rstrip(".")
        minutes = int(seconds // 60)
        return (format_span(minutes * 60) if minutes else "") + f"{fraction}s"
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    text = (f"{hours}h" if hours else "") + (f"{minutes}m" if minutes else "")
    return text + (f"{secs}s" if secs or not text else "")
