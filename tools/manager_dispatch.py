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

Crash injection: with ``DIE_ONCE_AFTER_VARIABLE`` set to ``Operation:MARKER``
(see :func:`die_once_after_setting`), the first process whose EC2
``Operation`` succeeds creates MARKER and dies on the spot (``os._exit``),
after AWS acted and before the plugin saw the answer.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import sys
import tempfile
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


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(f"usage: {argv[0]} DIR (DIR holds input.json)", file=sys.stderr)
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
