"""One operation in a process of its own, as a Cloudify manager's mgmtworker runs it.

    PLUGIN_VENV/bin/python -P tools/manager_dispatch.py DIR

is ``python -m cloudify.dispatch DIR`` for a deployment kept in cloudify-common's
``local.FileStorage``: it reads ``DIR/input.json`` (the task's cloudify_context
without its ``storage`` object, args, kwargs, and ``storage_dir``), puts that
folder's deployment storage back into the context, runs the handler
``cloudify.dispatch.TASK_HANDLERS`` names for the task, and writes
``DIR/output.json`` in ``cloudify.dispatch.main``'s format (``{"type": "result"
| "error", "payload": ...}``). ``DIR/process.json`` says which process and
Python ran it, and where the plugin's package was imported from.

``tools.manager`` starts it, by file path and with ``-P``, so that neither the
repository nor this folder is on ``sys.path``: the plugin comes from the venv.
Only the standard library and cloudify-common are imported here, because the
test process imports this module too, for :class:`LockedFileStorage`.

Fork server: ``python -P tools/manager_dispatch.py --serve SOCKET PACKAGE...``
imports the PACKAGEs and every module in them once, builds the plugin's clients
once and drops them (:func:`warm_up`), then forks a new process for each
operation a launcher asks for on the Unix socket SOCKET (see :func:`serve`).
Each child starts as a new process would after its imports and a first client,
with nothing an operation left, and runs :func:`main`; only the Python start,
the imports and botocore's reading of its service data are saved (about a
second per operation).

Crash injection: with ``DIE_ONCE_AFTER_VARIABLE`` set to ``Operation:MARKER``
(see :func:`die_once_after_setting`), the first process whose EC2
``Operation`` succeeds creates MARKER and dies on the spot (``os._exit``),
after AWS acted and before the plugin saw the answer.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import importlib
import json
import logging
import os
import pkgutil
import selectors
import signal
import socket
import sys
import tempfile
import threading
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cloudify import dispatch, logs
from cloudify.error_handling import serialize_known_exception
from cloudify.utils import ENV_AGENT_LOG_LEVEL
from cloudify.workflows import local

DIE_ONCE_AFTER_VARIABLE = "CLOUDIFY_MANAGER_MODE_DIE_ONCE_AFTER"
DIED_EXIT_CODE = 86
SERVE_OPTION = "--serve"
READY = "ready"
# The fork server's request: one JSON line {"folder": ..., "environment": {...}}, sent
# with the write end of the pipe that takes the child's stdout and stderr. Answers:
# "pid N" once forked, "exit CODE" (os.waitstatus_to_exitcode) once it ended.
# The launcher may send "kill" meanwhile.
REQUEST_LIMIT = 1 << 20
REQUEST_TIMEOUT = 10.0
PR_SET_PDEATHSIG = 1  # linux/prctl.h
# The services the plugin calls: the fork server builds a client of each once (see warm_up).
WARM_UP_SERVICES = ("ec2", "service-quotas", "sts")


def write_atomically(path: Path, text: str, scratch: Path) -> None:
    """Writes ``path`` through a temporary file in ``scratch`` (same file system) and
    os.replace, so that a reader sees the old or the new content, never a part."""
    scratch.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=scratch, prefix=f"{path.name}.")
    try:
        with os.fdopen(fd, "w") as stream:
            stream.write(text)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


class LockedFileStorage(local.FileStorage):
    """``local.FileStorage`` shared by several processes: node instance files are
    replaced atomically, and each node instance's read-modify-write (an update
    with its version check) holds an ``flock`` on the instance's lock file as
    well as the thread lock FileStorage takes.

    ``operation_launcher``, when set (by the process that runs the workflow),
    runs the operation tasks of this storage's deployments; see
    ``tools.manager.SubprocessOperationHandler``."""

    def __init__(self, storage_dir: str | Path, operation_launcher: Any = None) -> None:
        super().__init__(str(storage_dir))
        self.storage_dir = Path(storage_dir)
        self.operation_launcher = operation_launcher

    def load(self, name: str) -> LockedDeploymentStorage | None:
        deployment = self.get_deployment(name)
        return None if deployment is None else LockedDeploymentStorage(self, deployment)

    def lock_path(self, deployment_id: str, node_instance_id: str) -> Path:
        # Not in node-instances/, where every file is taken for an instance.
        folder = self.storage_dir / "locks" / deployment_id
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"{node_instance_id}.lock"

    def store_instance(self, deployment_id: str, instance: Any) -> Any:
        path = Path(self._instance_path(deployment_id, instance.id))
        write_atomically(path, json.dumps(instance, cls=local.JSONEncoderWithDatetime), self.storage_dir / "scratch")
        return local.NodeInstance(instance)


class LockedDeploymentStorage(local.DeploymentStorage):
    """A deployment of :class:`LockedFileStorage`: its per-instance lock is also an
    ``flock``, taken once per thread however deeply the thread lock nests."""

    def __init__(self, storage: LockedFileStorage, deployment: Any) -> None:
        super().__init__(storage, deployment)
        self._file_locks: dict[str, tuple[int, int]] = {}  # instance id -> (nesting depth, locked fd)

    @contextlib.contextmanager
    def _lock(self, instance_id: str) -> Iterator[None]:
        with super()._lock(instance_id):  # the thread lock: one thread of this process at a time
            depth, fd = self._file_locks.get(instance_id, (0, -1))
            if depth == 0:
                fd = os.open(self._storage.lock_path(self.name, instance_id), os.O_CREAT | os.O_RDWR, 0o600)
                fcntl.flock(fd, fcntl.LOCK_EX)  # and one process at a time
            self._file_locks[instance_id] = (depth + 1, fd)
            try:
                yield
            finally:
                if depth == 0:
                    del self._file_locks[instance_id]
                    os.close(fd)  # releases the flock
                else:
                    self._file_locks[instance_id] = (depth, fd)


def die_once_after_setting(operation: str, marker: Path) -> str:
    """The value of ``DIE_ONCE_AFTER_VARIABLE`` that kills the first operation
    process whose ``operation`` succeeds; ``marker`` records that it happened."""
    return f"{operation}:{marker}"


def arm_die_once_after(setting: str | None) -> None:
    """Registers the crash of ``setting`` (see :func:`die_once_after_setting`) as
    a botocore built-in handler, so every client of every session made from
    now on has it."""
    if not setting:
        return
    import botocore.handlers

    operation, marker = setting.split(":", 1)

    def die_once(http_response: Any, **_: Any) -> None:
        if http_response.status_code >= 300:  # refused, or a dry run: AWS did nothing
            return
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:  # it happened already, in this process or another
            return
        os.write(fd, f"process {os.getpid()} died right after {operation}\n".encode())
        os.close(fd)
        print(f"killed on purpose right after {operation} (crash injection)", flush=True)
        os._exit(DIED_EXIT_CODE)

    botocore.handlers.BUILTIN_HANDLERS.append((f"after-call.ec2.{operation}", die_once))


def describe_process(task_name: str) -> dict[str, Any]:
    """This process, its Python, and the file its task's top-level package came from."""
    package = sys.modules.get(task_name.split(".", 1)[0])
    return {
        "pid": os.getpid(),
        "executable": sys.executable,
        "prefix": sys.prefix,
        "package_file": getattr(package, "__file__", None),
    }


def run(folder: Path) -> None:
    """Runs the task of ``folder/input.json``; writes output.json and process.json."""
    inputs = json.loads((folder / "input.json").read_text())
    context = inputs["cloudify_context"]
    environment = local.load_env(context["deployment_id"], LockedFileStorage(inputs["storage_dir"]))
    context["storage"] = environment.storage
    handler = dispatch.TASK_HANDLERS[context["type"]](
        cloudify_context=context, args=inputs["args"], kwargs=inputs["kwargs"]
    )
    try:
        logs.setup_subprocess_logger()  # what dispatch.main does before handling the task
        payload = handler.handle()
        payload_type = "result"
    except BaseException as error:  # as dispatch.main: the operation's own error, unwrapped
        payload_type = "error"
        wrapped = getattr(error, "wrapped_exc", None)
        if wrapped is not None:
            payload = serialize_known_exception(wrapped, error.wrapped_tb)  # type: ignore[attr-defined]
        else:
            payload = serialize_known_exception(error)
        logging.getLogger(__name__).error(
            "Task %s[%s] raised:\n%s", context["task_name"], context.get("task_id", "<no-id>"), payload.get("traceback")
        )
    scratch = folder / "scratch"
    output = json.dumps({"type": payload_type, "payload": payload}, default=repr)
    write_atomically(folder / "process.json", json.dumps(describe_process(context["task_name"])), scratch)
    write_atomically(folder / "output.json", output, scratch)


def import_all(package_name: str) -> None:
    """Imports a package and every module in it."""
    package = importlib.import_module(package_name)
    for module in pkgutil.walk_packages(getattr(package, "__path__", []), prefix=f"{package_name}."):
        importlib.import_module(module.name)


def warm_up(connection: Any) -> None:
    """Builds one client of each service the plugin calls, on a botocore session of
    the plugin's ``connection`` module (its shared data loader), and drops it:
    botocore's caches then hold the service data, as in a process that built a
    client before. Nothing of the plugin's own changes (its client cache, the
    secrets' log filter, pacing), no request is sent, and each operation builds
    its own clients. It only saves time: a failure is reported, and serving goes on."""
    try:
        for service in WARM_UP_SERVICES:
            connection._core_session().create_client(
                service, region_name="us-east-1", aws_access_key_id="warm-up", aws_secret_access_key="warm-up"
            )
    except Exception as error:
        print(f"the fork server's warm-up failed, and is skipped: {error!r}", file=sys.stderr, flush=True)


def serve(address: str, packages: list[str]) -> int:
    """The fork server: imports ``packages``, prints READY, then forks a child for
    each request on the Unix socket ``address`` and reports its pid and exit. It
    stays single-threaded (so forking is safe) and ends when its stdin closes
    (the launcher is gone); a child still running then, or whose launcher hung
    up, is killed, and a child dies with the server (PR_SET_PDEATHSIG)."""
    for package in packages:
        import_all(package)
    if "ec2.connection" in sys.modules:
        warm_up(sys.modules["ec2.connection"])
    if threading.active_count() != 1:
        print(f"the imports started threads ({threading.enumerate()}): forking would not be safe", file=sys.stderr)
        return 1
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(address)
    listener.listen(64)
    print(READY, flush=True)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    stdin = sys.stdin.fileno()
    selector.register(stdin, selectors.EVENT_READ)
    children: dict[int, socket.socket] = {}
    try:
        while True:
            for key, _ in selector.select(timeout=0.005 if children else None):
                if key.fileobj == stdin:
                    if not os.read(stdin, 1024):
                        return 0
                elif key.fileobj is listener:
                    connection, _ = listener.accept()
                    forked = _fork_for(connection, listener)
                    if forked is not None:
                        children[forked] = connection
                        selector.register(connection, selectors.EVENT_READ, forked)
                else:
                    said = _receive(key.fileobj)
                    if said == b"kill" or not said:  # asked to, or the launcher hung up: nobody waits for it
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(key.data, signal.SIGKILL)
                    if not said:
                        selector.unregister(key.fileobj)
            _reap(children, selector)
    finally:
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _reap(children: dict[int, socket.socket], selector: selectors.BaseSelector) -> None:
    """Reports the exit of every child that ended, and forgets it."""
    while children:
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            return
        connection = children.pop(pid)
        with contextlib.suppress(OSError):
            connection.sendall(f"exit {os.waitstatus_to_exitcode(status)}\n".encode())
        with contextlib.suppress(KeyError, ValueError):
            selector.unregister(connection)
        connection.close()


def _receive(connection: Any) -> bytes:
    with contextlib.suppress(OSError):
        return connection.recv(64).strip()
    return b""


def _fork_for(connection: socket.socket, listener: socket.socket) -> int | None:
    """Reads one request from ``connection`` and forks its child; returns the child's
    pid (None, with the connection closed, for a request it could not serve)."""
    fds: list[int] = []
    try:
        connection.settimeout(REQUEST_TIMEOUT)  # a launcher that never sends must not stop the server
        message, fds, _, _ = socket.recv_fds(connection, REQUEST_LIMIT, 1)
        while not message.endswith(b"\n"):
            more = connection.recv(REQUEST_LIMIT)
            if not more:
                raise ValueError("the request ended before its newline")
            message += more
        connection.settimeout(None)
        request = json.loads(message)
        (output,) = fds
        sys.stdout.flush()
        sys.stderr.flush()
        server = os.getpid()
        pid = os.fork()
    except (OSError, ValueError):
        traceback.print_exc()
        for fd in fds:
            os.close(fd)
        connection.close()
        return None
    if pid == 0:
        listener.close()
        connection.close()
        _run_child(request, output, server)
    os.close(output)
    try:
        connection.sendall(f"pid {pid}\n".encode())
    except OSError:  # the launcher is gone: nobody waits for this child
        os.kill(pid, signal.SIGKILL)
    return pid


def _run_child(request: dict, output: int, server: int) -> None:
    """In the forked child: killed if the server dies; stdin from /dev/null, stdout
    and stderr to ``output``, no other descriptor; the request's folder, environment
    and arguments; then :func:`main`, its exit code passed on."""
    code = 1
    try:
        _die_with(server)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(output, 1)
        os.dup2(output, 2)
        _close_descriptors_from(3)
        os.chdir(request["folder"])
        os.environ.clear()
        os.environ.update(request["environment"])
        tempfile.tempdir = None  # chosen again from this environment, as at a start
        sys.argv = [sys.argv[0], request["folder"]]
        code = main(sys.argv)
    except SystemExit as exit:
        code = exit.code if isinstance(exit.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        with contextlib.suppress(BaseException):
            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def _die_with(server: int) -> None:
    """Asks Linux to kill this process when its parent, the server, dies (and
    exits if it died already); elsewhere the server's exit kills its children."""
    with contextlib.suppress(AttributeError, OSError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != server:
        os._exit(1)


def _close_descriptors_from(lowest: int) -> None:
    try:
        highest = max(map(int, os.listdir("/proc/self/fd")), default=lowest - 1)
    except OSError:  # no /proc
        highest = os.sysconf("SC_OPEN_MAX") - 1
    os.closerange(lowest, highest + 1)


def main(argv: list[str]) -> int:
    if len(argv) >= 3 and argv[1] == SERVE_OPTION:
        return serve(argv[2], argv[3:])
    if len(argv) != 2:
        print(f"usage: {argv[0]} DIR (DIR holds input.json) | {SERVE_OPTION} SOCKET PACKAGE...", file=sys.stderr)
        return 2
    # A manager's worker sets the operation process's log level; DEBUG (the default) prints every botocore line.
    os.environ.setdefault(ENV_AGENT_LOG_LEVEL, "WARNING")
    arm_die_once_after(os.environ.get(DIE_ONCE_AFTER_VARIABLE))
    try:
        run(Path(argv[1]).resolve())
    except Exception:  # the runner itself failed: no output.json, the parent reports a crashed process
        traceback.print_exc()
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
