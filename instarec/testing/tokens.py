"""Expiring signed URLs for the simulated origin: a token in the query, rotating on the virtual
clock, as signed CDNs hand out (``?sig=…&exp=…``).

Pure: the origin asks for the token of a virtual instant and checks the one a request carries.
The manifest URL carries the token; the manifest's segment addresses carry the token the
manifest was asked with (a CDN rewriting its manifests signs them so): every URL of a recording
expires with the manifest URL it came from.
"""

from __future__ import annotations

import hmac
import math
from dataclasses import dataclass
from hashlib import sha256


@dataclass(frozen=True, slots=True)
class RotatingTokens:
    """A new token every ``period`` virtual seconds; each stays valid ``grace`` seconds after the
    next one is out, then its URLs are refused."""

    secret: bytes
    period: float
    grace: float

    def query(self, now: float) -> str:
        """The query (without '?') of the token current at virtual time ``now``."""
        issued = math.floor(now / self.period + 1e-9)
        expiry_ms = round(((issued + 1) * self.period + self.grace) * 1000)
        return f"sig={self._sign(expiry_ms)}&exp={expiry_ms}"

    def valid(self, sig: str | None, exp: str | None, now: float) -> bool:
        """Whether a request carrying ``sig`` and ``exp`` at virtual time ``now`` is served."""
        if not sig or not exp or not exp.isdigit():
            return False
        expiry_ms = int(exp)
        return hmac.compare_digest(sig, self._sign(expiry_ms)) and now * 1000 < expiry_ms

    def _sign(self, expiry_ms: int) -> str:
        return hmac.new(self.secret, str(expiry_ms).encode(), sha256).hexdigest()[:20]


def with_query(query: str, extra: str) -> str:
    """``query`` ('' or '?a=b') with the items of ``extra`` (no '?') added."""
    if not extra:
        return query
    return f"{query}&{extra}" if query else f"?{extra}"
