"""Pacing EC2 requests across the processes of this host, once EC2 has throttled. Ctx-free.

EC2 throttles each API action per account and region with a token bucket.
botocore's adaptive retry mode slows a client down after a throttle, but its
estimate lives in one client of one process, starts from nothing in each new
process, and never goes below 0.5 requests per second per process: ten
deployments in ten processes still ask RunInstances (2 per second) for 5.

Here, once any process of this host is answered ``RequestLimitExceeded``
(or another throttling code) for an action at an endpoint, every process of
this host that calls that action there takes a turn: requests, retries
included, are spaced at the action's documented refill rate (and a
``MARGIN`` for the network's jitter), until
``WINDOW`` seconds have passed without a throttle. Before the first throttle
nothing is paced, so an account with raised limits, and the ordinary path,
pay nothing. The turns are kept in a small file per endpoint and action in
a folder of the system's temporary folder that only this user may write to,
under an exclusive ``flock``; where that is not possible (no ``fcntl``, a
folder others may write to, a symbolic link) nothing is paced.

The turns are wall-clock times, since they are shared between processes and
the folder may outlive a reboot (``time.monotonic()`` restarts from a small
value at boot). A turn or a pacing window further away than pacing ever makes
(a clock that jumped, a damaged file) is dropped, so a wrong clock costs at
most one window of pacing, never a stall.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from ec2 import errors

try:
    import fcntl
except ImportError:  # not POSIX: no pacing
    fcntl = None  # type: ignore[assignment]

# Seconds without a throttle after which an action is no longer paced.
WINDOW = 60.0
# The longest wait for a turn; a turn further away is dropped as a clock jump or damage.
LONGEST_WAIT = 120.0
# Seconds added to each interval: a turn is taken here, and the token at
# EC2 a network trip later, and trips vary; without it a request whose
# predecessor travelled slower arrives just before its token.
MARGIN = 0.05
# EC2's documented default refill rates, requests per second ("Request
# throttling for the Amazon EC2 API"): the actions with their own bucket, then
# the classes. Non-mutating actions get the unfiltered rate, the lower one.
ACTION_RATES = {
    "RunInstances": 2.0,
    "StartInstances": 2.0,
    "TerminateInstances": 5.0,
    "CreateTags": 10.0,
    "DeleteTags": 10.0,
}
RESOURCE_INTENSIVE_RATE = 5.0
MUTATING_RATE = 5.0
NON_MUTATING_RATE = 10.0
NON_MUTATING_PREFIXES = ("Describe", "Get", "List", "Search")


def refill_rate(action: str) -> float:
    """Requests per second EC2's default bucket for ``action`` refills at."""
    if action in ACTION_RATES:
        return ACTION_RATES[action]
    return NON_MUTATING_RATE if action.startswith(NON_MUTATING_PREFIXES) else MUTATING_RATE


def interval(action: str) -> float:
    """Seconds between two paced requests of ``action``."""
    return 1.0 / refill_rate(action) + MARGIN


def default_folder() -> Path:
    return Path(tempfile.gettempdir()) / f"cloudify-aws-plugin-pacing-{os.getuid()}"


def is_private(folder: Path) -> bool:
    """True if ``folder`` is a real folder of this user that no one else may write to."""
    try:
        status = os.lstat(folder)
    except OSError:
        return False
    return (
        stat.S_ISDIR(status.st_mode)
        and status.st_uid == os.getuid()
        and not status.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    )


class Pacer:
    """The turns of one endpoint's actions on this host (``folder`` holds them)."""

    def __init__(
        self,
        endpoint: str,
        folder: Path | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.endpoint = endpoint
        self.folder = folder or default_folder()
        self.clock, self.sleep = clock, sleep

    def before_send(self, action: str) -> float:
        """Waits for this request's turn if ``action`` is being paced; returns the seconds waited."""
        path = self._path(action)
        if fcntl is None or not path.exists():
            return 0.0
        with self._locked(path) as state:
            if state is None:
                return 0.0
            now = self.clock()
            until, turn = state.get("until", 0.0), max(now, state.get("next", now))
            if not now < until <= now + WINDOW or turn > now + LONGEST_WAIT:
                state.clear()  # quiet for the window (paced no more), or a clock jump
                return 0.0
            state["next"] = turn + interval(action)
        if turn > now:
            self.sleep(turn - now)
        return turn - now

    def throttled(self, action: str) -> None:
        """Notes a throttling answer to ``action``: it is paced, from one interval from now, for the window."""
        if fcntl is None:
            return
        with contextlib.suppress(OSError):
            self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        with self._locked(self._path(action), create=True) as state:
            if state is None:
                return
            now = self.clock()
            state["next"] = max(state.get("next", now), now + interval(action))
            state["until"] = now + WINDOW

    def _path(self, action: str) -> Path:
        digest = hashlib.sha256(f"{self.endpoint}\n{action}".encode()).hexdigest()[:24]
        return self.folder / f"{digest}.json"

    @contextlib.contextmanager
    def _locked(self, path: Path, create: bool = False) -> Iterator[dict | None]:
        """The file's state, under an exclusive lock, written back; None when the file cannot be opened.
        (An emptied file stays: removing it could strand a process waiting for its lock.)"""
        flags = os.O_RDWR | os.O_NOFOLLOW | (os.O_CREAT if create else 0)
        try:
            if not is_private(self.folder):
                raise PermissionError(f"{self.folder} is not private to this user")
            handle: IO[str] = os.fdopen(os.open(path, flags, 0o600), "r+", encoding="utf-8")
        except (OSError, ValueError):
            yield None
            return
        with handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            handle.seek(0)
            try:
                state = json.loads(handle.read() or "{}")
            except ValueError:
                state = {}
            if not isinstance(state, dict) or not all(isinstance(v, (int, float)) for v in state.values()):
                state = {}
            yield state
            handle.seek(0)
            handle.truncate()
            handle.write(json.dumps(state))
            handle.flush()


def register(client: Any, endpoint: str) -> Pacer:
    """Paces ``client``'s requests with every other process of this host that calls ``endpoint``."""
    pacer = Pacer(endpoint)

    def before_send(event_name: str = "", **_: Any) -> None:
        pacer.before_send(event_name.rsplit(".", 1)[-1])

    def needs_retry(response: Any = None, event_name: str = "", **_: Any) -> None:
        if errors.answer_code(response) in errors.THROTTLING_CODES:
            pacer.throttled(event_name.rsplit(".", 1)[-1])

    client.meta.events.register("before-send.ec2", before_send)
    client.meta.events.register("needs-retry.ec2", needs_retry)
    return pacer
