"""Manager mode: every operation in a new Python process, in the plugin's own venv.

A Cloudify manager's mgmtworker runs each operation as ``python -m
cloudify.dispatch DIR`` in the plugin's virtualenv, which cloudify-common's
``cloudify.plugin_installer`` makes: ``_make_virtualenv`` (a venv whose .pth
links the worker's site-packages), then ``wagon.install``. Nothing in memory
survives from one operation to the next.

:class:`ManagerDeployment` has :class:`tools.local.LocalDeployment`'s API. Its
workflows still run in this process, on cloudify-common's local engine, with the
deployment in a ``local.FileStorage`` folder (what ``cfy`` uses), but each
operation task runs in a new process, ``tools/manager_dispatch.py`` in the venv
that :func:`plugin_venv` made from the wagon.

The seam is cloudify-common's own registry of task handlers: the engine runs an
operation task as ``cloudify.dispatch.dispatch(__cloudify_context=...)``, which
hands it to ``cloudify.dispatch.TASK_HANDLERS[context["type"]]``.
:func:`install_operation_handler` registers :class:`SubprocessOperationHandler`
there for ``operation``; it launches a process only for tasks whose storage has
an ``operation_launcher`` (a ManagerDeployment's) and handles any other task in
this process exactly as before, so in-process deployments are unaffected.

The process's output.json turns back into the task's result or its exception
(``cloudify.error_handling.deserialize_known_exception``), so OperationRetry,
RecoverableError and NonRecoverableError mean to the engine what they mean in
process. A process that exits without output.json is a failed, retryable task
(RecoverableError), as a crashed worker's. What an operation prints (its
ctx.logger lines among them) goes on to this process's stdout, each line
prefixed with ``[pid N]``: into the deployment's EventTally during ``execute``.
``DIE_ONCE_AFTER_VARIABLE`` (tools.manager_dispatch) crashes one on purpose.

``start="fork"`` forks each operation's process from a :class:`ForkServer` of
the plugin venv, which imported the plugin once (and built its clients once, to
fill botocore's data caches), instead of starting a Python: still a new process
per operation with nothing an earlier one left in memory, about a second sooner.
``start="spawn"`` (the default) starts each one as a manager does.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import hashlib
import json
import os
import re
import selectors
import shutil
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cloudify import dispatch
from cloudify.error_handling import deserialize_known_exception
from cloudify.exceptions import NonRecoverableError, RecoverableError

from tools import manager_dispatch
from tools.local import ROOT, LocalDeployment
from tools.manager_dispatch import (
    DIE_ONCE_AFTER_VARIABLE,
    READY,
    SERVE_OPTION,
    LockedFileStorage,
    die_once_after_setting,
)

DIST = ROOT / "dist"
VENV_CACHE = ROOT / "build" / "manager" / "venvs"
RUNNER = Path(manager_dispatch.__file__).resolve()
# The test venv has the plugin installed (editable), which a manager's worker venv has
# not: without --ignore-installed, pip in the linked plugin venv would find it there and
# install nothing. Its dependencies come from the worker venv, as cloudify-common does
# on a manager; that also keeps a py311 wagon usable on Python 3.13.
WAGON_INSTALL_ARGS = ["--ignore-installed", "--no-deps"]
# Variables that would put other code than the plugin venv's on the operation's sys.path.
NOT_INHERITED = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")
DEFAULT_OPERATION_TIMEOUT = 600.0
STARTS = ("spawn", "fork")
SERVER_START_TIMEOUT = 120.0  # a fork server's imports, on a loaded machine
FORK_TIMEOUT = 60.0  # from a request to the forked child's pid
PLUGIN_PACKAGES = ("ec2",)  # what a fork server imports before it forks

__all__ = [
    "DIE_ONCE_AFTER_VARIABLE",
    "ForkServer",
    "LockedFileStorage",
    "ManagerDeployment",
    "OperationProcess",
    "PluginVenv",
    "SubprocessOperationHandler",
    "WagonNotFound",
    "die_once_after_setting",
    "install_operation_handler",
    "plugin_venv",
    "wagon_in",
]


class WagonNotFound(FileNotFoundError):
    """No single wagon where one was looked for."""


def wagon_in(folder: Path = DIST) -> Path:
    """The one wagon in ``folder`` (``make wagon`` leaves one in dist/)."""
    found = sorted(folder.glob("*.wgn"))
    if len(found) != 1:
        raise WagonNotFound(f"expected one wagon in {folder}, found {[p.name for p in found]}: run `make wagon`")
    return found[0]


@dataclass(frozen=True)
class PluginVenv:
    """A plugin's virtualenv as a manager makes it."""

    path: Path
    wagon: Path

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"

    def holds(self, file: str | Path) -> bool:
        """Whether ``file`` lies inside this venv (symbolic links not followed: the
        venv's python is one)."""
        return Path(os.path.abspath(file)).is_relative_to(os.path.abspath(self.path))


def plugin_venv(wagon: Path, cache: Path = VENV_CACHE) -> PluginVenv:
    """The plugin venv of ``wagon`` for this Python, made as a manager makes it
    (``plugin_installer._make_virtualenv`` linked to this venv, then
    ``wagon.install``) once per wagon content and linked venv, under ``cache``.
    As on a manager, a ``plugin.id`` file marks a finished installation."""
    digest = hashlib.sha256()
    with wagon.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    # The venv links this one and copies its .pth files (editable installs among them).
    digest.update(f"{sys.prefix}\0{sys.version}".encode())
    for pth in sorted(Path(sysconfig.get_path("purelib")).glob("*.pth")):
        digest.update(pth.read_bytes())
    plugin_id = digest.hexdigest()
    target = cache / f"py{sys.version_info[0]}{sys.version_info[1]}-{plugin_id[:16]}"
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / f"{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another test session may be making the same venv
        marker = target / "plugin.id"
        if not (marker.exists() and marker.read_text() == plugin_id):
            shutil.rmtree(target, ignore_errors=True)
            _install(wagon, target)
            marker.write_text(plugin_id)
    return PluginVenv(target, wagon)


def _install(wagon_file: Path, target: Path) -> None:
    import wagon
    from cloudify import plugin_installer

    plugin_installer._make_virtualenv(sys.executable, str(target))
    try:
        wagon.install(str(wagon_file), venv=str(target), ignore_platform=True, install_args=WAGON_INSTALL_ARGS)
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise


def operation_environment() -> dict[str, str]:
    """This process's environment less the variables that would put other code than
    the plugin venv's on an operation's sys.path."""
    return {key: value for key, value in os.environ.items() if key not in NOT_INHERITED}


class ForkServer:
    """A process of the plugin venv's Python that imported the plugin once and forks
    a new process for each operation (``tools.manager_dispatch.serve``). It ends
    when :meth:`close` is called or this process exits."""

    def __init__(self, plugin: PluginVenv, packages: tuple[str, ...] = PLUGIN_PACKAGES) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="manager-fork-"))
        self.address = str(self.folder / "socket")
        self.process = subprocess.Popen(
            [str(plugin.python), "-P", str(RUNNER), SERVE_OPTION, self.address, *packages],
            cwd=self.folder,
            env=operation_environment(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        said = _first_line(self.process.stdout, SERVER_START_TIMEOUT)
        if said != READY:
            self.close()
            raise RuntimeError(f"the fork server of {plugin.path} did not start (it said {said!r})")

    def start(self, folder: Path, environment: dict[str, str]) -> ForkedProcess:
        """Forks the process that runs ``folder``'s task (see manager_dispatch.run)."""
        return ForkedProcess(self.address, folder, environment)

    def close(self) -> None:
        if self.process.stdin:
            with contextlib.suppress(OSError):
                self.process.stdin.close()  # the server's signal to end
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stdout:
            self.process.stdout.close()
        shutil.rmtree(self.folder, ignore_errors=True)


def _first_line(stream: Any, timeout: float) -> str:
    """The first line ``stream`` (a pipe) gives within ``timeout`` seconds, else ""."""
    if stream is None:
        return ""
    with selectors.DefaultSelector() as selector:
        selector.register(stream, selectors.EVENT_READ)
        if not selector.select(timeout):
            return ""
    return stream.readline().strip()


class ForkedProcess:
    """A child of a ForkServer, with the parts of subprocess.Popen's API that
    :class:`OperationLauncher` uses: ``pid``, ``returncode``, ``communicate`` (its
    stdout and stderr together) and ``kill``."""

    def __init__(self, address: str, folder: Path, environment: dict[str, str]) -> None:
        self.returncode: int | None = None
        self._answers = b""
        self._printed: list[bytes] = []
        read_end, write_end = os.pipe()
        self._connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            try:
                self._connection.connect(address)
                request = json.dumps({"folder": str(folder), "environment": environment}) + "\n"
                socket.send_fds(self._connection, [request.encode()], [write_end])
            finally:
                os.close(write_end)  # the child holds the only other copy: EOF when it ends
            self.pid = int(self._answer("pid", FORK_TIMEOUT))
        except BaseException:
            os.close(read_end)
            self._connection.close()
            raise
        self._reader = threading.Thread(target=self._read, args=(read_end,), daemon=True)
        self._reader.start()

    def _read(self, read_end: int) -> None:
        with open(read_end, "rb") as stream:
            for chunk in iter(lambda: stream.read1(1 << 16), b""):
                self._printed.append(chunk)

    def _answer(self, word: str, timeout: float | None) -> str:
        """The value of the server's next answer, which must be ``word``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self._answers:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise subprocess.TimeoutExpired(f"operation process {getattr(self, 'pid', '?')}", timeout or 0)
            self._connection.settimeout(remaining)
            try:
                received = self._connection.recv(4096)
            except TimeoutError:
                continue
            if not received:
                raise RuntimeError("the fork server hung up")
            self._answers += received
        line, _, self._answers = self._answers.partition(b"\n")
        said, _, value = line.decode().partition(" ")
        if said != word:
            raise RuntimeError(f"the fork server said {line!r}, not {word}")
        return value

    def communicate(self, timeout: float | None = None) -> tuple[str, None]:
        if self.returncode is None:
            try:
                self.returncode = int(self._answer("exit", timeout))
            except subprocess.TimeoutExpired:
                raise  # still running: the caller may kill it, then wait again
            except BaseException:  # the server is gone, and its child with it (PR_SET_PDEATHSIG)
                self._connection.close()
                raise
            self._connection.close()
        self._reader.join()
        return b"".join(self._printed).decode(errors="replace"), None

    def kill(self) -> None:
        if self.returncode is None:
            with contextlib.suppress(OSError):
                self._connection.sendall(b"kill\n")


_fork_servers: dict[Path, ForkServer] = {}
_fork_servers_lock = threading.Lock()


def fork_server(plugin: PluginVenv) -> ForkServer:
    """This process's fork server for ``plugin``, started on first use."""
    with _fork_servers_lock:
        server = _fork_servers.get(plugin.path)
        if server is None or server.process.poll() is not None:
            if server is not None:
                server.close()
            server = _fork_servers[plugin.path] = ForkServer(plugin)
        return server


@atexit.register
def _close_fork_servers() -> None:
    with _fork_servers_lock:
        for server in _fork_servers.values():
            server.close()
        _fork_servers.clear()


@dataclass
class OperationProcess:
    """One operation's process: what ran, where, from spawn to exit, and how it ended
    (``result``, ``error``, ``died``: no output.json, or ``timeout``)."""

    task_name: str
    operation: str
    node_instance: str
    folder: str
    pid: int
    started: float
    ended: float
    returncode: int | None
    outcome: str
    executable: str | None = None
    package_file: str | None = None

    @property
    def seconds(self) -> float:
        return self.ended - self.started

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "seconds": self.seconds}


class OperationLauncher:
    """Runs operation tasks, each in a new process of the plugin venv's Python,
    and records them in ``processes``. Called by SubprocessOperationHandler."""

    def __init__(
        self, plugin: PluginVenv, storage_dir: Path, timeout: float = DEFAULT_OPERATION_TIMEOUT, start: str = "spawn"
    ) -> None:
        if start not in STARTS:
            raise ValueError(f"start is one of {STARTS}, not {start!r}")
        self.plugin = plugin
        self.storage_dir = storage_dir
        self.timeout = timeout
        self.start = start
        self.processes: list[OperationProcess] = []
        self._lock = threading.Lock()

    def __call__(self, cloudify_context: dict, args: Any, kwargs: dict) -> Any:
        """Runs one operation task in a new process; returns its result, or raises
        its error as the engine would have seen it in this process."""
        context = {key: value for key, value in cloudify_context.items() if key != "storage"}
        folder = self._dispatch_folder(context)
        inputs = {"cloudify_context": context, "args": list(args), "kwargs": kwargs}
        (folder / "input.json").write_text(json.dumps({**inputs, "storage_dir": str(self.storage_dir)}))
        record, printed, output = self._run(folder, context)
        with self._lock:
            self.processes.append(record)
        # The operation's lines (its ctx.logger's and the rest) go on to this process's
        # stdout, where the deployment's EventTally reads them.
        if printed:
            sys.stdout.write("".join(f"[pid {record.pid}] {line}\n" for line in printed.splitlines()))
        if output is None:
            raise self._no_output_error(context, record, printed)
        if output["type"] == "error":
            raise deserialize_known_exception(output["payload"])
        return output["payload"]

    def _no_output_error(self, context: dict, record: OperationProcess, printed: str) -> Exception:
        """The task's error when its process wrote no output.json: it was killed at its
        timeout (retried if the operation's timeout_recoverable says so, or if the timeout
        was this launcher's guard), or it died, as a crashed worker, and is retried."""
        last = printed.strip().splitlines()[-1:] if printed else []
        said = f": {last[0]}" if last else ""
        where = f"the process of {record.operation} on {record.node_instance} (pid {record.pid})"
        if record.outcome == "timeout":
            final = context.get("timeout") and not context.get("timeout_recoverable")
            error = NonRecoverableError if final else RecoverableError
            return error(f"{where} was killed after {self._timeout(context):g} s{said}")
        return RecoverableError(
            f"{where} exited with code {record.returncode} without writing output.json, as a crashed worker{said}"
        )

    def _dispatch_folder(self, context: dict) -> Path:
        """A new folder for the task's input.json and output.json, named after it."""
        node_instance = _node_instance(context)
        operation = ".".join(_operation(context).split(".")[-2:])
        label = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{node_instance}.{operation}")
        root = self.storage_dir / "dispatch"
        root.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f"{label}-", dir=root))

    def _run(self, folder: Path, context: dict) -> tuple[OperationProcess, str, dict | None]:
        """Runs the runner on ``folder`` in the plugin venv's Python, from ``folder``
        and without the variables that would put other code on its path; returns the
        process's record, what it printed, and its output.json (None if it wrote none)."""
        started = time.monotonic()
        process = self._start_process(folder)
        try:
            printed, _ = process.communicate(timeout=self._timeout(context))
            timed_out = False
        except subprocess.TimeoutExpired:
            process.kill()
            printed, _ = process.communicate()
            timed_out = True
        ended = time.monotonic()
        output = _read_json(folder / "output.json")
        described = _read_json(folder / "process.json") or {}
        record = OperationProcess(
            task_name=context["task_name"],
            operation=_operation(context),
            node_instance=_node_instance(context),
            folder=str(folder),
            pid=process.pid,
            started=started,
            ended=ended,
            returncode=process.returncode,
            outcome="timeout" if timed_out else output["type"] if output else "died",
            executable=described.get("executable"),
            package_file=described.get("package_file"),
        )
        return record, printed, output

    def _start_process(self, folder: Path) -> subprocess.Popen | ForkedProcess:
        if self.start == "fork":
            return fork_server(self.plugin).start(folder, operation_environment())
        return subprocess.Popen(
            [str(self.plugin.python), "-P", str(RUNNER), str(folder)],
            cwd=folder,
            env=operation_environment(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
        )

    def _timeout(self, context: dict) -> float:
        """The operation's own timeout (the blueprint's), else this launcher's guard."""
        return float(context.get("timeout") or self.timeout)


def _operation(context: dict) -> str:
    return (context.get("operation") or {}).get("name") or context["task_name"]


def _node_instance(context: dict) -> str:
    """The task's node instance, and for a relationship operation the related one."""
    related = (context.get("related") or {}).get("node_id")
    node_instance = context.get("node_id") or "-"
    return f"{node_instance}->{related}" if related else node_instance


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


class SubprocessOperationHandler(dispatch.OperationHandler):
    """cloudify.dispatch's handler of operation tasks: a task whose deployment storage
    has an ``operation_launcher`` runs through it, in a new process; any other task
    here, as dispatch.OperationHandler runs it."""

    def handle(self) -> Any:
        launcher = getattr(self.cloudify_context.get("storage"), "operation_launcher", None)
        if launcher is None:
            return super().handle()
        return launcher(self.cloudify_context, self.args, self.kwargs)


def install_operation_handler() -> None:
    """Makes SubprocessOperationHandler cloudify.dispatch's handler of operation tasks
    (idempotent; tasks of in-process deployments are handled as before)."""
    dispatch.TASK_HANDLERS["operation"] = SubprocessOperationHandler


class ManagerDeployment(LocalDeployment):
    """A blueprint deployed in a ``local.FileStorage`` folder, ``storage_dir`` (a new
    temporary folder if not given), whose operations each run in a new process of
    ``plugin``'s venv (by default, the venv of the wagon in dist/), started or forked
    as ``start`` says. ``processes`` lists those processes, in the order they ended."""

    def __init__(
        self,
        blueprint: Path,
        name: str = "local",
        inputs: dict | None = None,
        resolver: Any = None,
        echo: bool = False,
        storage_dir: Path | None = None,
        plugin: PluginVenv | None = None,
        operation_timeout: float = DEFAULT_OPERATION_TIMEOUT,
        start: str = "spawn",
    ) -> None:
        self.storage_dir = storage_dir or Path(tempfile.mkdtemp(prefix="manager-mode-"))
        self.plugin = plugin or plugin_venv(wagon_in())
        self.launcher = OperationLauncher(self.plugin, self.storage_dir, operation_timeout, start)
        install_operation_handler()
        storage = LockedFileStorage(self.storage_dir, operation_launcher=self.launcher)
        super().__init__(blueprint, name=name, inputs=inputs, resolver=resolver, echo=echo, storage=storage)

    @property
    def processes(self) -> list[OperationProcess]:
        return list(self.launcher.processes)
