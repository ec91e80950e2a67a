"""The error tree of instarec.

Every failure a user can meet is an ``InstarecError`` subclass carrying the
process exit code that ``cli.py`` returns for it::

    InstarecError (1)
    ├── UsageError (2)              bad options, output path problems
    ├── ManifestError (3)           body is not a usable MPD (HTML, malformed XML, empty, ...)
    ├── NetworkError (4)            DNS, refused connection, HTTP errors after retries
    │   └── ManifestUnavailableError (4)   manifest answered 401/403/404/410
    ├── UnsupportedStreamError (5)  DRM, no video and no audio representation
    ├── MergeError (6)              ffmpeg failed
    │   └── FFmpegNotFoundError (7)
    ├── StorageError (8)            output dir not writable, disk full
    └── CancelledByUser (130)       the user cancelled a question (quality picker)

Library errors (aiohttp, lxml, OSError) are translated at the module boundary with
``raise ... from exc`` so the cause stays visible in ``-v`` tracebacks.
"""

from __future__ import annotations

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


class ManifestUnavailableError(NetworkError):
    """The manifest URL answered with a final HTTP error status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class UnsupportedStreamError(InstarecError):
    exit_code = 5


class MergeError(InstarecError):
    exit_code = 6


class FFmpegNotFoundError(MergeError):
    exit_code = 7


class StorageError(InstarecError):
    exit_code = 8


class CancelledByUser(InstarecError):
    exit_code = 130
