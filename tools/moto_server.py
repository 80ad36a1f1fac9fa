"""The moto server that tools/emulator.py starts: ``python tools/moto_server.py
[--watchdog] ARGS``, where ARGS are moto_server's own (``-H 127.0.0.1 -p PORT``).

Two things on top of ``python -m moto.server``:

- moto recomputes, on every request, two answers that cannot change while the
  server runs: the list of its service folders (a directory listing and a stat
  per folder) and a response class's method names (``inspect.getmembers``).
  They are remembered here, which about halves the server's CPU per request
  (6.8 to 3.5 ms for describes, measured). The answers stay the same; with a
  moto that lacks either function, the server runs as it is.
- ``--watchdog``: a thread reads stdin and ends the process at EOF, that is as
  soon as the parent's end of the pipe closes (the parent exited or was killed,
  even with SIGKILL).

It is run as a file, so it imports nothing from this project.
"""

from __future__ import annotations

import functools
import os
import sys
import threading


def remember_lookups() -> bool:
    """Makes moto's two per-request lookups remember their answers; False if this moto has neither."""
    import moto.backends
    import moto.core.responses

    if not hasattr(moto.backends, "list_of_moto_modules") or not hasattr(
        moto.core.responses, "method_names_from_class"
    ):
        return False
    modules = tuple(moto.backends.list_of_moto_modules())
    moto.backends.list_of_moto_modules = lambda: iter(modules)
    moto.core.responses.method_names_from_class = functools.cache(moto.core.responses.method_names_from_class)
    return True


def watch_stdin() -> None:
    while os.read(0, 4096):
        pass
    os._exit(0)


def main(argv: list[str]) -> None:
    if argv[:1] == ["--watchdog"]:
        argv = argv[1:]
        threading.Thread(target=watch_stdin, daemon=True).start()
    remember_lookups()
    from moto.server import main as serve

    serve(argv)


if __name__ == "__main__":
    main(sys.argv[1:])
