"""Shared fixtures for the test suite."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from instarec.testing.media import MediaSpec, TestMedia, default_cache_dir, generate_media


def _media_cache_dir() -> Path:
    env = os.environ.get("INSTAREC_MEDIA_CACHE")
    return Path(env) if env else default_cache_dir()


@pytest.fixture(scope="session")
def media_cache_dir() -> Path:
    """Where generated test media is cached: $INSTAREC_MEDIA_CACHE or the user cache dir."""
    return _media_cache_dir()


# Run last: the chaos seeds keep both cores busy, and the real packagers' matrix (started at
# once, in the background) must not share them with those while it plays in real time.
_LAST = ("tests/test_real_packagers.py", "tests/test_chaos.py::test_chaos_seed")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        return next((n + 1 for n, prefix in enumerate(_LAST) if item.nodeid.startswith(prefix)), 0)

    items.sort(key=rank)  # stable: the order within each group stays


def pytest_collection_finish(session: pytest.Session) -> None:
    from tests.test_real_packagers import start_matrix

    factory = session.config._tmp_path_factory  # type: ignore[attr-defined]
    start_matrix(session, _media_cache_dir(), lambda: factory.mktemp("packagers"))


@pytest.fixture(scope="session")
def test_media(media_cache_dir: Path) -> TestMedia:
    """The default media (about 30 s, variable segments): made once, then read from the cache."""
    return generate_media(MediaSpec(), media_cache_dir)


@pytest.fixture(scope="session")
def constant_media(media_cache_dir: Path) -> TestMedia:
    """Constant 2 s segments: what a ``$Number$`` + ``@duration`` origin needs."""
    return generate_media(MediaSpec(segment_durations="constant"), media_cache_dir)
