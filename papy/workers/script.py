"""Run an external program as a worker function: the item in, the program's output back.

``script(inbox, command, item_as='argument', output='stdout')`` runs ``command`` (a list
of arguments, or a string split like a shell would, but run without a shell) once per
item:

- ``item_as``: how the item (``inbox[0]``) reaches the program: ``'argument'`` (in place
  of ``{}`` in the command, or appended), ``'stdin'``, ``'file'`` (a temp file holding the
  item; its path in place of ``{}``, or appended) or None (not passed);
- ``output``: what comes back: ``'stdout'``, or ``'file'`` (the program writes the file
  whose path replaces ``{out}`` in the command, or is appended last);
- a non-zero exit raises :class:`ScriptError` with ``returncode`` and ``stderr``; in a
  Piper it becomes the item's ``WorkerError``, so the pipeline goes on with the next item;
- ``timeout`` kills the program (and anything it started) and raises
  ``subprocess.TimeoutExpired``.

Temp files (``papy_script_<pid>_*``) live in ``dir`` (the temp directory by default) and
are removed after the run.
"""
from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

from imap import imports

__all__ = ["script", "ScriptError"]

ITEM_AS = ("argument", "stdin", "file", None)
OUTPUTS = ("stdout", "file")


class ScriptError(RuntimeError):
    """A program run by :func:`script` exited with a non-zero code (or was killed).

    ``args`` is ``(command, returncode, stderr)``, also available under those names; a
    negative ``returncode`` is the signal that killed the program.
    """

    def __init__(self, command: Sequence[str], returncode: int, stderr: str | bytes) -> None:
        super().__init__(list(command), returncode, stderr)

    @property
    def command(self) -> list[str]:
        command: list[str] = self.args[0]
        return command

    @property
    def returncode(self) -> int:
        returncode: int = self.args[1]
        return returncode

    @property
    def stderr(self) -> str | bytes:
        stderr: str | bytes = self.args[2]
        return stderr

    def __str__(self) -> str:
        code = self.returncode
        how = (f"was killed by {signal.Signals(-code).name}" if code < 0 and
               -code in signal.valid_signals() else f"exited with code {code}")
        stderr = self.stderr.decode(errors="replace") if isinstance(self.stderr, bytes) \
            else self.stderr
        tail = stderr.strip()[-500:]
        return f"{shlex.join(self.command)} {how}" + (f"; stderr: {tail}" if tail else "")


@imports(["os", "re", "shlex", "signal", "subprocess", "tempfile"])
def script(inbox: Sequence[Any], command: str | Sequence[str],
           item_as: str | None = "argument", output: str = "stdout",
           timeout: float | None = None, text: bool = True, cwd: str | None = None,
           env: Mapping[str, str] | None = None,
           dir: str | None = None,  # noqa: A002 - as tempfile's
           suffix: str = "") -> str | bytes:
    """Run ``command`` on the item and return its output (``str`` when ``text``, else
    ``bytes``); see the module documentation for ``item_as`` and ``output``.

    >>> script(['hello world'], 'tr a-z A-Z', item_as='stdin')
    'HELLO WORLD'
    >>> script(['3'], ['seq', '{}'])
    '1\\n2\\n3\\n'
    >>> script(['b\\na\\n'], 'sort {} -o {out}', item_as='file', output='file')
    'a\\nb\\n'
    """
    if item_as not in ITEM_AS:
        raise ValueError(f"script item_as must be one of {ITEM_AS}, not {item_as!r}")
    if output not in OUTPUTS:
        raise ValueError(f"script output must be one of {OUTPUTS}, not {output!r}")
    argv = shlex.split(command) if isinstance(command, str) else [str(a) for a in command]
    if not argv:
        raise ValueError("script needs a command, e.g. ['sort', '-n'] or 'sort -n'")
    item = inbox[0]
    temp_files: list[str] = []
    try:
        stdin_data = _as_bytes(item) if item_as == "stdin" else None
        places: dict[str, str] = {}
        if item_as == "argument":
            places["{}"] = os.fsdecode(item) if isinstance(item, bytes) else str(item)
        elif item_as == "file":
            places["{}"] = _temp_file(temp_files, dir, suffix, _as_bytes(item))
        out_path = _temp_file(temp_files, dir, "", b"") if output == "file" else None
        if out_path is not None:
            places["{out}"] = out_path
        argv = _place(argv, places)
        stdout = _run(argv, stdin_data, output == "stdout", timeout, cwd, env)
        if out_path is not None:
            with open(out_path, "rb") as handle:
                stdout = handle.read()
        return stdout.decode() if text else stdout
    finally:
        for path in temp_files:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass


def _run(argv: list[str], stdin_data: bytes | None, capture: bool, timeout: float | None,
         cwd: str | None, env: Mapping[str, str] | None) -> bytes:
    """Run argv in its own session; a timeout kills the whole session."""
    with subprocess.Popen(argv, stdin=subprocess.DEVNULL if stdin_data is None else
                          subprocess.PIPE, stdout=subprocess.PIPE if capture else
                          subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=cwd, env=env,
                          start_new_session=True) as process:
        try:
            stdout, stderr = process.communicate(stdin_data, timeout=timeout)
        except BaseException:  # a timeout, or the worker interrupted: leave nothing running
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.communicate()
            raise
    if process.returncode:
        raise ScriptError(argv, process.returncode, stderr.decode(errors="replace"))
    return stdout or b""


def _place(argv: list[str], places: dict[str, str]) -> list[str]:
    """Put each value where its placeholder is (inside arguments too), else append it.

    One pass over the command, so a value that contains a placeholder stays as it is.
    """
    if not places:
        return argv
    pattern = re.compile("|".join(re.escape(p) for p in places))
    placed = [pattern.sub(lambda match: places[match.group()], a) for a in argv]
    return placed + [value for key, value in places.items()
                     if not any(key in argument for argument in argv)]


def _as_bytes(item: object) -> bytes:
    if isinstance(item, (bytes, bytearray, memoryview)):
        return bytes(item)
    return str(item).encode()


def _temp_file(temp_files: list[str], directory: str | None, suffix: str, data: bytes) -> str:
    fd, path = tempfile.mkstemp(suffix, f"papy_script_{os.getpid()}_", directory)
    temp_files.append(path)
    with open(fd, "wb") as handle:
        handle.write(data)
    return path
