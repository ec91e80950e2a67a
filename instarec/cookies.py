"""Cookies from a Netscape/Mozilla ``cookies.txt`` file (``--cookies``).

Only reading and filtering: ``http.py`` hands the result to its session.
"""

from __future__ import annotations

import http.cookiejar
import time
from dataclasses import dataclass
from pathlib import Path

from instarec.errors import UsageError


@dataclass(frozen=True, slots=True)
class Cookie:
    name: str
    value: str
    domain: str
    host_only: bool
    path: str
    secure: bool


def load_cookies_file(path: Path) -> tuple[Cookie, ...]:
    """Read a Netscape/Mozilla ``cookies.txt`` (as exported by browser extensions)."""
    jar = http.cookiejar.MozillaCookieJar()
    try:
        # Session cookies are exported with expiry 0 and are exactly what a logged-in browser
        # sends, so keep them; really expired cookies are dropped below.
        jar.load(str(path), ignore_discard=True, ignore_expires=True)
    except FileNotFoundError as exc:
        raise UsageError(f"cookies file not found: {path}") from exc
    except http.cookiejar.LoadError as exc:
        raise UsageError(f"invalid cookies file {path}: {exc} (expected Netscape format)") from exc
    except OSError as exc:
        raise UsageError(f"cannot read cookies file {path}: {exc.strerror or exc}") from exc
    now = time.time()
    cookies = []
    for c in jar:
        # Browser exports write 0 for session cookies; MozillaCookieJar reads it as "expired".
        if c.value is None or (c.expires and c.expires < now):
            continue
        cookies.append(
            Cookie(
                name=c.name,
                value=c.value,
                domain=c.domain.lstrip("."),
                host_only=not c.domain_initial_dot,
                path=c.path or "/",
                secure=c.secure,
            )
        )
    return tuple(cookies)
