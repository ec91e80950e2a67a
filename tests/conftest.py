"""Shared fixtures for the test suite."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from instarec.testing.media import MediaSpec, TestMedia, default_cache_dir, generate_media


@pytest.fixture(scope="session")
def media_cache_dir() -> Path:
    """Where generated test media is cached: $INSTAREC_MEDIA_CACHE or the user cache dir."""
    env = os.environ.get("INSTAREC_MEDIA_CACHE")
    return Path(env) if env else default_cache_dir()


@pytest.fixture(scope="session")
def test_media(media_cache_dir: Path) -> TestMedia:
    """The default media (about 30 s, variable segments): made once, then read from the cache."""
    return generate_media(MediaSpec(), media_cache_dir)


@pytest.fixture(scope="session")
def constant_media(media_cache_dir: Path) -> TestMedia:
    """Constant 2 s segments: what a ``$Number$`` + ``@duration`` origin needs."""
    return generate_media(MediaSpec(segment_durations="constant"), media_cache_dir)
