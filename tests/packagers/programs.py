"""The programs of a case: free ports, readiness waits, processes stopped by their own pid."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

# -- ports -------------------------------------------------------------------------------------


def free_port(kind: socket.SocketKind = socket.SOCK_STREAM) -> int:
    """A port of 127.0.0.1 nobody uses right now (the program then binds it itself)."""
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def wait_for_tcp(port: int, within: float = 10.0) -> None:
    """Wait until something accepts TCP connections on ``port`` of 127.0.0.1."""
    deadline = time.monotonic() + within
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return


_UDP_TABLE = Path("/proc/net/udp")


def _udp_bound(port: int) -> bool | None:
    """Whether some process has bound UDP ``port``; None where the kernel does not say."""
    try:
        rows = _UDP_TABLE.read_text().splitlines()[1:]
    except OSError:
        return None
    wanted = f":{port:04X}"
    return any(len(row.split()) > 1 and row.split()[1].endswith(wanted) for row in rows)


async def wait_for_udp(port: int, within: float = 10.0) -> None:
    """Wait until a process listens on UDP ``port`` (Linux); elsewhere, give it a second."""
    deadline = time.monotonic() + within
    while True:
        bound = _udp_bound(port)
        if bound is None:
            await asyncio.sleep(1.0)
            return
        if bound:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing listens on UDP port {port}")
        await asyncio.sleep(0.05)


# -- programs ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Command:
    """A program of a case: its arguments and, for a server, how to know it is ready."""

    name: str
    argv: tuple[str, ...]
    ready: Callable[[], Awaitable[None]] | None = None


class Program:
    """One started program, its output in a log file, stopped by its own pid."""

    def __init__(self, process: asyncio.subprocess.Process, log_path: Path) -> None:
        self.process = process
        self.log_path = log_path

    @classmethod
    async def start(cls, command: Command, log_dir: Path) -> Program:
        log_path = log_dir / f"{command.name}.log"
        with log_path.open("wb") as log_file:
            process = await asyncio.create_subprocess_exec(
                *command.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_file,
                stderr=asyncio.subprocess.STDOUT,
            )
        program = cls(process, log_path)
        if command.ready is not None:
            try:
                await command.ready()
            except (OSError, TimeoutError):
                await program.stop()
                raise
        return program

    async def wait(self, within: float) -> int | None:
        """The exit code, or None if still running after ``within`` seconds."""
        try:
            return await asyncio.wait_for(self.process.wait(), within)
        except TimeoutError:
            return None

    def kill(self) -> None:
        if self.process.returncode is None:
            os.kill(self.process.pid, signal.SIGKILL)

    async def stop(self, grace: float = 3.0) -> None:
        """SIGTERM by pid, then SIGKILL if it lingers."""
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGTERM)
            if await self.wait(grace) is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.process.pid, signal.SIGKILL)
                await self.process.wait()


@contextlib.asynccontextmanager
async def running(command: Command, log_dir: Path) -> AsyncIterator[Program]:
    program = await Program.start(command, log_dir)
    try:
        yield program
    finally:
        await program.stop()
