"""The one EC2 emulator launcher: a moto server in its own process on 127.0.0.1.

Used by the tests, the benchmarks and the demo. The server is
``tools/moto_server.py`` (moto's own server, with two of its per-request
lookups remembered), a plain child process by default. For a driver that may
be killed outright (the demo), two options tie it to its parent:

- ``watchdog``: a thread of the server reads its stdin pipe; when the
  parent's end closes (the parent exited or was killed, even with SIGKILL),
  the read sees EOF and the server exits at once.
- ``death_signal``: on Linux, PR_SET_PDEATHSIG sends it SIGTERM when the
  parent dies.

``new_session`` puts it in its own session, so that a Ctrl-C in the terminal
reaches only the parent, which then stops it in order.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import IO, Any

SERVER = Path(__file__).resolve().with_name("moto_server.py")
PR_SET_PDEATHSIG = 1


class EmulatorError(RuntimeError):
    """The emulator did not start; the message says why and where its log is."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def die_with_parent() -> None:
    """A ``preexec_fn`` for children: on Linux, SIGTERM them when their parent
    dies, however it dies. Elsewhere (no prctl) the parent's cleanup must do."""
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


class MotoServer:
    """A moto server reached over HTTP at ``url``; started (and, unless
    ``wait`` is false, ready) when the constructor returns. Usable as a
    context manager that stops it on exit."""

    def __init__(
        self,
        *,
        log_path: Path | None = None,
        watchdog: bool = False,
        death_signal: bool = False,
        new_session: bool = False,
        ami_validation: bool = True,
        wait: bool = True,
        ready_timeout: float = 30,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log: IO[bytes] | None = log_path.open("wb") if log_path else None
        arguments = ["-H", "127.0.0.1", "-p", str(self.port)]
        command = [str(SERVER), *(["--watchdog"] if watchdog else []), *arguments]
        env = dict(os.environ)
        if ami_validation:
            env["MOTO_ENABLE_AMI_VALIDATION"] = "true"
        self.process = subprocess.Popen(
            [sys.executable, *command],
            env=env,
            stdin=subprocess.PIPE if watchdog else subprocess.DEVNULL,
            stdout=self.log or subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            start_new_session=new_session,
            preexec_fn=die_with_parent if death_signal else None,
        )
        if wait:
            try:
                self.wait_ready(ready_timeout)
            except BaseException:
                self.stop()
                raise

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait_ready(self, timeout: float = 30) -> None:
        """Returns once the server answers; raises EmulatorError if it exits
        or does not answer within ``timeout`` seconds."""
        where = f"; see {self.log.name}" if self.log else ""
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise EmulatorError(f"the EC2 emulator exited with code {self.process.returncode}{where}")
            try:
                urllib.request.urlopen(f"{self.url}/moto-api/", timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise EmulatorError(f"the EC2 emulator did not answer within {timeout:.0f}s{where}") from None
                time.sleep(0.1)

    def reset(self) -> None:
        """Forgets every resource made so far."""
        urllib.request.urlopen(urllib.request.Request(f"{self.url}/moto-api/reset", method="POST"), timeout=30).close()

    def stop(self) -> None:
        """Terminates the server (kills it after 10 s); safe to call twice."""
        try:
            if self.process.poll() is None:
                self.process.terminate()
                try:
                    self.process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()
        finally:
            # Should the above be interrupted, the watchdog still ends it.
            if self.process.stdin:
                self.process.stdin.close()
            if self.log:
                self.log.close()

    def __enter__(self) -> MotoServer:
        return self

    def __exit__(self, *_: Any) -> None:
        self.stop()
