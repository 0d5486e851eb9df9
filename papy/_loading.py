"""Loading a pipeline module for ``papy run`` and ``papy graph``.

A pipeline module has a ``main(argv)`` (called with ARGS; it returns the exit code), or a
``pipeline()`` returning a Plumber (or the ``(pipers, xtras, pipes)`` of a module written
by ``Plumber.save``) and, optionally, ``inputs()`` returning one iterable per input Piper.

The module is loaded under a private name that is not left in ``sys.modules``, so its
functions travel to worker processes and hosts by value, as those of a ``__main__`` script.
"""
from __future__ import annotations

import importlib.util
import itertools
import sys
import traceback
from pathlib import Path
from types import ModuleType
from typing import IO, Any

from ._plumber import Plumber

__all__ = ["UsageError", "load_module", "build_plumber", "open_inputs"]

_loaded = itertools.count()


class UsageError(Exception):
    """The command line asks for something that cannot be done (exit code 2)."""


def load_module(path: str | Path) -> ModuleType:
    """Run the Python file ``path`` as a module and return it (``UsageError`` if it cannot).

    Like ``python FILE``: its folder goes first on ``sys.path``; its ``__name__`` is not
    ``'__main__'``, so its ``if __name__ == '__main__':`` block does not run.
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"no such file: {str(path)!r}")
    if path.suffix != ".py":
        raise UsageError(f"{str(path)!r} is not a Python file (.py)")
    stem = "".join(c if c.isalnum() else "_" for c in path.stem)
    name = f"papy_run_{stem}_{next(_loaded)}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise UsageError(f"{str(path)!r} cannot be loaded as a module")
    module = importlib.util.module_from_spec(spec)
    folder = str(path.resolve().parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    sys.modules[name] = module          # while it runs only (dataclasses, typing look here)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        detail = "".join(traceback.format_exception(exc)).rstrip()
        raise UsageError(f"cannot load {str(path)!r}:\n{detail}") from exc
    finally:
        sys.modules.pop(name, None)     # functions then travel by value to worker processes
    return module


def build_plumber(module: ModuleType) -> Plumber:
    """The Plumber of a module's ``pipeline()`` (called without arguments)."""
    make = getattr(module, "pipeline", None)
    if not callable(make):
        raise UsageError(f"{module.__file__!r} has no pipeline() function (and no main()); "
                         f"see docs/cli.md for what papy run expects")
    try:
        made = make()
    except TypeError as exc:
        raise UsageError(f"pipeline() of {module.__file__!r} cannot be called without "
                         f"arguments: {exc}; give its parameters defaults") from exc
    if isinstance(made, Plumber):
        return made
    if isinstance(made, tuple) and len(made) == 3:          # a module written by save()
        pipers, xtras, pipes = made
        return Plumber(pipers=pipers, pipes=pipes, xtras=xtras)
    raise UsageError(f"pipeline() of {module.__file__!r} returned {type(made).__name__}; "
                     f"it must return a Plumber (or the (pipers, xtras, pipes) of save())")


def open_inputs(paths: list[str], opened: list[IO[str]]) -> list[Any]:
    """``load_file`` of each path ('-': stdin); the files opened are added to ``opened``
    (the caller closes them)."""
    from .workers.io import load_file
    handles = []
    for path in paths:
        if path == "-":
            handles.append(load_file(sys.stdin))
            continue
        try:
            handle = open(path, encoding="utf-8")
        except OSError as exc:
            raise UsageError(f"--input {path!r}: {exc.strerror}") from exc
        opened.append(handle)
        handles.append(load_file(handle))
    return handles
