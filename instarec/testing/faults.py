"""Injected failures for the simulated origin: per-request faults, latency, manifest failures.

Decisions are seeded *per URL and attempt*, not drawn from one shared random stream: the n-th
request for a given path gets the same verdict whatever order concurrent requests arrive in, so
a test with a seed is reproducible even with parallel downloads. The manifest is one URL, so its
verdicts follow the manifest request number.
"""

from __future__ import annotations

import collections
import enum
import hashlib
import random
from dataclasses import dataclass

__all__ = ["Fault", "FaultConfig", "FaultPlan", "RateLimit", "Verdict"]


class Fault(enum.Enum):
    """What can go wrong with one request (media, init, or the manifest when asked for)."""

    ERROR_503 = "503"
    ERROR_429 = "429"  # with a Retry-After header
    RESET = "reset"  # TCP reset before any response byte
    TRUNCATE = "truncate"  # headers promise Content-Length, half the body, then a clean close
    SLOW_FIRST_BYTE = "slow"  # the response starts after a stall of real seconds
    RESET_MID_BODY = "reset_mid_body"  # headers and half the body, then a TCP reset


@dataclass(frozen=True, slots=True)
class Verdict:
    """The fault drawn for one request and, for a stall, how long it lasts (real seconds)."""

    fault: Fault | None
    stall: float = 0.0


@dataclass(frozen=True, slots=True)
class FaultConfig:
    """Fault probabilities (each per request, summed at most 1), latency and manifest failures.

    ``latency`` (real seconds) is added to every request of every kind; the other fields only
    touch the request kinds in ``kinds`` (media and init segments by default; add "manifest" to
    give manifest requests the same faults, drawn per manifest request number). With
    ``max_per_url`` set, a URL stops failing after that many injected faults, which lets a test
    demand "every segment fails exactly once" with probability 1.0 and ``max_per_url=1`` (the
    manifest counts as one URL). A stall lasts ``slow_first_byte_delay`` seconds, or a seeded
    uniform time up to ``slow_first_byte_max`` when that is set. ``manifest_failure`` is older
    and separate: a manifest request answers ``manifest_failure_status`` with that probability,
    whatever ``kinds`` says.
    """

    seed: int = 0
    error_503: float = 0.0
    error_429: float = 0.0
    retry_after: int = 1  # seconds, sent in Retry-After with 429
    reset: float = 0.0
    truncate: float = 0.0
    slow_first_byte: float = 0.0
    slow_first_byte_delay: float = 2.0  # real seconds
    slow_first_byte_max: float | None = None  # set: stalls last delay..max real seconds
    reset_mid_body: float = 0.0
    max_per_url: int | None = None
    kinds: frozenset[str] = frozenset({"media", "init"})
    latency: float = 0.0  # real seconds added to every request
    manifest_failure: float = 0.0  # probability that one manifest request answers an error
    manifest_failure_status: int = 503
    # Requests of ``kinds`` served per real second, over a sliding second; above it, 429 with
    # ``Retry-After: retry_after`` (a CDN's per-client rate limit). None: no limit.
    rate_limit: float | None = None
    # Outages: from each start to each end (virtual seconds), every request of every kind
    # (the manifest, /time, media) is reset before an answer, as when the server or the
    # network between is down.
    outages: tuple[tuple[float, float], ...] = ()

    def __post_init__(self) -> None:
        probabilities = (
            self.error_503,
            self.error_429,
            self.reset,
            self.truncate,
            self.slow_first_byte,
            self.reset_mid_body,
            self.manifest_failure,
        )
        if any(p < 0 or p > 1 for p in probabilities):
            raise ValueError("fault probabilities must be between 0 and 1")
        if self.media_fault_probability > 1 + 1e-9:
            raise ValueError("the media fault probabilities must add up to at most 1")
        if self.rate_limit is not None and self.rate_limit <= 0:
            raise ValueError("rate_limit must be positive")
        if self.latency < 0 or self.slow_first_byte_delay < 0:
            raise ValueError("delays must not be negative")
        if self.slow_first_byte_max is not None and (
            self.slow_first_byte_max < self.slow_first_byte_delay
        ):
            raise ValueError("slow_first_byte_max must not be below slow_first_byte_delay")
        if any(not 0 <= start < end for start, end in self.outages):
            raise ValueError("an outage runs from a start >= 0 to a later end")
        unknown = set(self.kinds) - {"media", "init", "manifest"}
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}: use media, init, manifest")
        # Accept any iterable of kinds (a set, a list) but store a frozenset.
        object.__setattr__(self, "kinds", frozenset(self.kinds))

    @property
    def media_fault_probability(self) -> float:
        return (
            self.error_503
            + self.error_429
            + self.reset
            + self.truncate
            + self.slow_first_byte
            + self.reset_mid_body
        )

    @property
    def any_fault(self) -> bool:
        return self.media_fault_probability > 0 or self.manifest_failure > 0 or bool(self.outages)

    def out_at(self, virtual_time: float) -> bool:
        """Whether the server is down at ``virtual_time``."""
        return any(start <= virtual_time < end for start, end in self.outages)


def _draw(seed: int, *parts: object) -> float:
    """A uniform number in [0, 1) that depends only on the seed and the parts."""
    key = ":".join([str(seed), *map(str, parts)]).encode()
    digest = hashlib.blake2b(key, digest_size=8).digest()
    return random.Random(int.from_bytes(digest, "big")).random()


class FaultPlan:
    """Decides, request by request, which fault (if any) to inject.

    Keeps per-URL attempt counters; it is used from the event loop only, so no locking.
    """

    def __init__(self, config: FaultConfig) -> None:
        self.config = config
        self._attempts: dict[tuple[str, str], int] = {}
        self._faults_per_url: dict[str, int] = {}
        self._manifest_requests = 0

    def media_fault(self, kind: str, method: str, path: str) -> Fault | None:
        """The fault for this request of `kind` ("media"/"init"/"manifest") to `path`, or None.

        `path` is any stable name of the resource (the origin passes "track/index").
        """
        return self.verdict(kind, method, path).fault

    def verdict(self, kind: str, method: str, path: str) -> Verdict:
        """The fault (and stall length) for this request of `kind` to `path`."""
        cfg = self.config
        if kind not in cfg.kinds or cfg.media_fault_probability <= 0:
            return Verdict(None)
        attempt = self._attempts.get((method, path), 0)
        self._attempts[(method, path)] = attempt + 1
        if cfg.max_per_url is not None and self._faults_per_url.get(path, 0) >= cfg.max_per_url:
            return Verdict(None)
        roll = _draw(cfg.seed, method, path, attempt)
        # New kinds come last so that a seed keeps giving the verdicts it gave before them.
        for fault, probability in (
            (Fault.ERROR_503, cfg.error_503),
            (Fault.ERROR_429, cfg.error_429),
            (Fault.RESET, cfg.reset),
            (Fault.TRUNCATE, cfg.truncate),
            (Fault.SLOW_FIRST_BYTE, cfg.slow_first_byte),
            (Fault.RESET_MID_BODY, cfg.reset_mid_body),
        ):
            if roll < probability:
                self._faults_per_url[path] = self._faults_per_url.get(path, 0) + 1
                stall = self._stall(method, path, attempt) if fault is Fault.SLOW_FIRST_BYTE else 0
                return Verdict(fault, stall)
            roll -= probability
        return Verdict(None)

    def _stall(self, method: str, path: str, attempt: int) -> float:
        cfg = self.config
        if cfg.slow_first_byte_max is None:
            return cfg.slow_first_byte_delay
        spread = cfg.slow_first_byte_max - cfg.slow_first_byte_delay
        return cfg.slow_first_byte_delay + spread * _draw(cfg.seed, "stall", method, path, attempt)

    def manifest_fails(self) -> bool:
        """Whether this manifest request answers ``manifest_failure_status``."""
        n = self._manifest_requests
        self._manifest_requests += 1
        if self.config.manifest_failure <= 0:
            return False
        return _draw(self.config.seed, "manifest", n) < self.config.manifest_failure


class RateLimit:
    """A sliding one-second window of the requests served: the origin's per-client limit."""

    def __init__(self, per_second: float) -> None:
        self._per_second = per_second
        self._served: collections.deque[float] = collections.deque()

    def admit(self, now: float) -> bool:
        """Whether a request arriving at ``now`` (real seconds) is served; counts it if so."""
        while self._served and self._served[0] <= now - 1.0:
            self._served.popleft()
        if len(self._served) >= self._per_second:
            return False
        self._served.append(now)
        return True
