"""The error tree of instarec.

Every failure a user can meet is an ``InstarecError`` subclass carrying the
process exit code that ``cli.py`` returns for it::

    InstarecError (1)
    ├── UsageError (2)              bad options, output path problems
    ├── ManifestError (3)           body is not a usable MPD (HTML, malformed XML, empty, ...)
    ├── NetworkError (4)            DNS, refused connection, HTTP errors after retries
    │   ├── HttpStatusError (4)     a final, non-retried HTTP status (carries .status)
    │   │   └── SegmentMissing (4)  404/410 on a segment: the caller records a gap
    │   ├── ManifestUnavailableError (4)   manifest answered 401/403/404/410
    │   └── UrlExpiredError (4)     the signed URLs expired mid-recording, none fresh came
    ├── UnsupportedStreamError (5)  DRM, no video and no audio representation
    │   └── Mp4Error (5)            media that is not the fragmented MP4 it should be
    ├── MergeError (6)              ffmpeg failed
    │   └── FFmpegNotFoundError (7)
    ├── StorageError (8)            output dir not writable
    │   └── DiskFullError (8)       no space left (ENOSPC, EDQUOT): a rerun resumes
    └── CancelledByUser (130)       the user cancelled a question (quality picker)

Library errors (aiohttp, lxml, OSError) are translated at the module boundary with
``raise ... from exc`` so the cause stays visible in ``-v`` tracebacks; ``storage_error`` is the
one place an ``OSError`` from the file system becomes a ``StorageError``.
"""

from __future__ import annotations

import errno
from pathlib import Path

EXIT_OK = 0
EXIT_INTERRUPTED = 130


class InstarecError(Exception):
    """Base class: a failure with a one-line message meant for the user."""

    exit_code: int = 1


class UsageError(InstarecError):
    exit_code = 2


class ManifestError(InstarecError):
    exit_code = 3


class NetworkError(InstarecError):
    exit_code = 4


class HttpStatusError(NetworkError):
    """A final (not retried) HTTP error status."""

    def __init__(self, message: str, status: int, url: str) -> None:
        super().__init__(message)
        self.status = status
        self.url = url


class SegmentMissing(HttpStatusError):
    """404/410 on a segment: it does not exist (yet, or any more)."""


class ManifestUnavailableError(NetworkError):
    """The manifest URL answered with a final HTTP error status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


# How the end reason of a recording whose server stopped answering begins (it is no end of
# the broadcast: the recording stops merged and resumable, with the network's exit code).
SERVER_UNREACHABLE = "the server answered nothing"


class UrlExpiredError(NetworkError):
    """The signed URLs stopped answering (401/403/410) in the middle of a recording and no fresh
    one came: the recording stops, merging what it has and keeping it for a rerun to resume."""


class UnsupportedStreamError(InstarecError):
    exit_code = 5


class MergeError(InstarecError):
    exit_code = 6


class FFmpegNotFoundError(MergeError):
    exit_code = 7


class StorageError(InstarecError):
    exit_code = 8


class DiskFullError(StorageError):
    """The file system has no space left: what is on disk stays, a rerun resumes."""


class Mp4Error(UnsupportedStreamError):
    """The bytes are not the (fragmented) MP4 structure a segment or init segment must have."""


_NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})


def storage_error(exc: OSError, action: str, path: Path | str) -> StorageError:
    """The project's error for ``exc`` raised while doing ``action`` ("write", ...) on ``path``."""
    if exc.errno in _NO_SPACE:
        return DiskFullError(f"disk full: cannot {action} {path}")
    return StorageError(f"cannot {action} {path}: {exc.strerror or exc}")


class CancelledByUser(InstarecError):
    exit_code = 130
