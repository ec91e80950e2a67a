"""Signed URLs: the manifest URL a recording is signed under now, and how a URL built under an
earlier signature reads under a fresh one.

CDNs sign a broadcast's URLs with a token, mostly in the query (``?sig=…&exp=…``, Instagram's
``?oh=…&oe=…``), sometimes in the path, and the token expires. A fresh manifest URL carries a
fresh token, and so do the segment addresses of the manifest fetched from it; the segments
queued (or being searched for) were built from the old manifest and carry the old one.

:class:`Resigning` is one rewrite, learned from two URLs naming the same resource under the old
and the fresh signature: the manifest URL itself, and each representation's addresses before
and after. It moves what the two share to its new form: the part of the path before where the
two paths agree (a token in the path, another CDN host, a representation renamed), the whole
query when a URL carries exactly the old one (addresses inheriting the manifest's query), else
each query parameter whose value was the old one's. :class:`SignedLocation` keeps the rewrites
learned so far, oldest first, each learned on what the ones before it make of the old URL, so a
URL signed under any earlier token reads under the newest. URLs are handled as text, byte for
byte: a signed query must not be re-quoted.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass(frozen=True, slots=True)
class _Parts:
    base: str  # scheme://host/path
    query: str  # without the '?'
    fragment: str  # with its '#', or ''

    def url(self) -> str:
        return self.base + (f"?{self.query}" if self.query else "") + self.fragment


def _parts(url: str) -> _Parts:
    rest, hash_, fragment = url.partition("#")
    base, _, query = rest.partition("?")
    return _Parts(base, query, hash_ + fragment)


def _params(query: str) -> list[tuple[str, str]]:
    """The query's items as (name, raw item), in order; nothing is decoded."""
    return [(item.partition("=")[0], item) for item in query.split("&") if item]


def _directories(base: str) -> tuple[str, list[str]]:
    """``scheme://host`` and the path's directories (the file name left out)."""
    split = urlsplit(base)
    origin = f"{split.scheme}://{split.netloc}"
    return origin, split.path.split("/")[:-1]


def _prefixes(old: str, new: str) -> tuple[str, str]:
    """The parts of two bases before the directories their paths end with in common."""
    old_origin, old_dirs = _directories(old)
    new_origin, new_dirs = _directories(new)
    shared = 0
    while (
        shared < min(len(old_dirs), len(new_dirs)) - 1  # the leading '' stays in the prefix
        and old_dirs[-1 - shared] == new_dirs[-1 - shared]
    ):
        shared += 1
    keep_old = old_dirs[: len(old_dirs) - shared]
    keep_new = new_dirs[: len(new_dirs) - shared]
    return old_origin + "/".join(keep_old) + "/", new_origin + "/".join(keep_new) + "/"


@dataclass(frozen=True, slots=True)
class Resigning:
    """How a URL signed like ``old`` reads signed like ``new`` (see :func:`learn`)."""

    old_prefix: str
    new_prefix: str
    old_query: str
    new_query: str
    # Each parameter of the old query: (its raw item, the fresh raw item or '' when the fresh
    # query has no parameter of that name).
    items: tuple[tuple[str, str], ...]
    added: tuple[str, ...]  # raw items of parameters only the fresh query has

    def apply(self, url: str) -> str:
        parts = _parts(url)
        base = parts.base
        if self.old_prefix != self.new_prefix and base.startswith(self.old_prefix):
            base = self.new_prefix + base[len(self.old_prefix) :]
        return _Parts(base, self._query(parts.query), parts.fragment).url()

    def _query(self, query: str) -> str:
        if not self.old_query or self.old_query == self.new_query:
            return query
        if query == self.old_query:
            return self.new_query  # an address inheriting the manifest URL's query
        replaced = dict(self.items)
        items = [raw for _, raw in _params(query)]
        if not any(raw in replaced for raw in items):
            return query  # signed by something else, or not at all
        present = {name for name, _ in _params(query)}
        renewed = [replaced.get(raw, raw) for raw in items]
        renewed += [raw for raw in self.added if raw.partition("=")[0] not in present]
        return "&".join(raw for raw in renewed if raw)


def learn(old: str, new: str) -> Resigning | None:
    """The rewrite taking ``old`` to ``new``, two URLs of one resource; None if they are equal."""
    if old == new:
        return None
    old_parts, new_parts = _parts(old), _parts(new)
    old_prefix, new_prefix = _prefixes(old_parts.base, new_parts.base)
    fresh = dict(_params(new_parts.query))
    old_names = {name for name, _ in _params(old_parts.query)}
    items = tuple(
        (raw, fresh.get(name, ""))
        for name, raw in _params(old_parts.query)
        if fresh.get(name) != raw
    )
    added = tuple(raw for name, raw in _params(new_parts.query) if name not in old_names)
    return Resigning(old_prefix, new_prefix, old_parts.query, new_parts.query, items, added)


class SignedLocation:
    """The manifest URL a recording's requests are signed under now.

    Every request of the recording asks :meth:`sign` for the URL to use, so re-signing reaches
    the segments already queued as well as those built later; ``generation`` counts the fresh
    signatures taken, so a request refused under an older one knows to ask again.
    """

    def __init__(self, manifest_url: str) -> None:
        self._manifest_url = manifest_url
        self._rewrites: list[Resigning] = []
        self.generation = 0

    @property
    def manifest_url(self) -> str:
        return self._manifest_url

    def sign(self, url: str) -> str:
        """``url``, built under this or any earlier signature, as the current one signs it."""
        for rewrite in self._rewrites:
            url = rewrite.apply(url)
        return url

    def moved(self, url: str) -> None:
        """The manifest says it lives at ``url`` now (MPD ``Location``): no new signature."""
        self._manifest_url = url

    def renew(self, fresh_url: str, same_resources: Iterable[tuple[str, str]] = ()) -> None:
        """Sign under ``fresh_url`` from now on.

        ``same_resources``: (URL under the old manifest, URL under the fresh one) pairs naming
        one resource each (a representation's init segment and media template), from which the
        rewrites are learned besides the manifest URL's own.
        """
        for old, new in ((self._manifest_url, fresh_url), *same_resources):
            rewrite = learn(self.sign(old), new)
            if rewrite is not None:
                self._rewrites.append(rewrite)
        self._manifest_url = fresh_url
        self.generation += 1
