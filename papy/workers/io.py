"""Worker functions and input generators for printing and reading files.

``file_refs(paths)`` is an input too: ``FileRef`` items (paths) whose cache key is the
file's content checksum (papy._fileref; docs/cache.md).

``print_`` is a worker function (inbox convention: the item is ``inbox[0]``); ``load_file``
(alias ``make_lines``, its 1.0.8 name) is a generator to use as an input of a pipeline, e.g.
``plumber.set_inputs([load_file(h)])``; with ``follow=True`` it reads like ``tail -F``.
File handles cannot be sent to other processes: use them in inputs and in linear Pipers.
"""
from __future__ import annotations

import logging
import os
import stat as stat_module
import time
from typing import IO, Iterator

from imap import waiting_for_input

from .._fileref import FileRef, file_refs
from .._runtime import current_stop_event
from .streams import (dump_pickle_stream, dump_stream, json_dumps, json_loads,
                      load_pickle_stream, load_stream, pickle_dumps, pickle_loads)
from .transfer import ItemRef, TransferError, dump_item, load_item, sweep_leftovers

log = logging.getLogger("papy")  # one name for the whole package (and "imap")

__all__ = ["print_", "load_file", "make_lines", "file_refs", "FileRef",
           "dump_stream", "load_stream", "dump_pickle_stream", "load_pickle_stream",
           "pickle_dumps", "pickle_loads", "json_dumps", "json_loads",
           "dump_item", "load_item", "sweep_leftovers", "ItemRef", "TransferError"]


def print_(inbox) -> None:
    """Print the item (``inbox[0]``) and return None; an output Piper for quick looks.

    Example::

        >>> print_(['hello'])
        hello
    """
    print(inbox[0], flush=True)


def load_file(handle: IO, follow: bool = False, wait: float = 0.1) -> Iterator:
    """Yield the lines of an open file (``str`` or ``bytes`` as the handle gives them,
    newline included).

    ``follow=False``: the lines up to the end of the file (a last line without a newline
    included), then the generator ends.

    ``follow=True`` behaves like ``tail -F``: at the end of the file it waits ``wait``
    seconds and looks again, forever; each complete line is yielded as soon as it has been
    appended, and a partial last line waits for its newline. When the handle is a regular
    file it also survives, without losing or repeating a line:

    - truncation (``copytruncate``: the file shrinks below what was read): it reads the
      file again from the start; a partial line read before the truncation is dropped
      (a warning says so), its end is gone with the old content;
    - rotation (``handle.name`` now names another file: renamed and created anew): it
      reads the old file to its end, then opens the path in the same mode (text or binary,
      the handle's encoding and errors) and reads it from the start; a partial last line
      of the old file waits for its newline in the new one. The handle given is left open
      (it is the caller's); the files opened here are closed when the generator ends.

    When the Plumber that reads this generator is stopped (``chinkup()``/``stop()``) it
    ends at once, even while it waits for data; a partial line that is still without its
    newline is then not yielded (a warning says so). Used outside a Plumber it never ends
    by itself. ``make_lines`` is the same reader under its 1.0.8 name.

    Example (the seed's grep pipeline, ``plumber`` a Plumber)::

        plumber.set_inputs([load_file(open('input_file'), follow=True)])
        plumber.plunge()          # ... lines appended to input_file are processed ...
        plumber.chinkup()         # returns promptly
    """
    if wait <= 0:
        raise ValueError(f"load_file wait must be seconds > 0, not {wait!r}")
    if not follow:
        yield from iter(handle.readline, handle.read(0))
        return
    source = _Followed(handle)
    try:
        yield from _follow(source, wait)
    finally:
        source.close()


def make_lines(handle: IO, follow: bool = False, wait: float = 0.1) -> Iterator:
    """The 1.0.8 name of ``load_file``: the same reader, with the same arguments.

    Example::

        >>> import io
        >>> list(make_lines(io.StringIO('a\\nb')))
        ['a\\n', 'b']
    """
    return load_file(handle, follow, wait)


def _follow(source: "_Followed", wait: float) -> Iterator:
    """The ``follow=True`` loop: read lines, and at the end of the file look for a
    truncation or a rotation, or wait (on the Plumber's stop event when there is one)."""
    newline = b"\n" if source.binary else "\n"
    pending = None              # a line read without its newline yet
    switch_due = False          # rotated: the old file is read to its end, then reopened
    while True:
        chunk = source.handle.readline()
        if chunk:
            pending = chunk if pending is None else pending + chunk
            if pending.endswith(newline):
                line, pending = pending, None
                yield line
            continue
        if switch_due:
            switch_due = False
            if source.reopen():
                continue
        change = source.change()
        if change is _TRUNCATED:
            if pending:
                log.warning("load_file(%s): truncated with a partial last line of %d "
                            "characters (no newline yet); it was dropped", source.path,
                            len(pending))
            pending = None
            continue
        if change is _ROTATED:
            switch_due = True   # one more read to the end: the writer may have added lines
            continue
        waiting_for_input()          # lines read so far go to the workers now
        stop = current_stop_event()
        if stop is None:
            time.sleep(wait)
        elif stop.wait(wait):
            if pending:
                log.warning("load_file(%s): stopped with a partial last line of %d "
                            "characters (no newline yet); it was not yielded",
                            source.path or getattr(source.handle, "name", source.handle),
                            len(pending))
            return


_TRUNCATED = object()
_ROTATED = object()


class _Followed:
    """The file ``load_file(follow=True)`` reads now, and the path it follows.

    ``fd`` is None when the handle is not a regular file (a pipe, a StringIO): then only
    ``tail -f`` applies. ``path`` is None when ``handle.name`` does not name the handle's
    file when reading starts (``'<stdin>'``, a descriptor, a file already replaced): then
    truncation is still noticed, rotation is not.
    """

    def __init__(self, handle: IO):
        self.handle, self.own = handle, False
        self.binary = isinstance(handle.read(0), bytes)
        self.encoding = getattr(handle, "encoding", None)
        self.errors = getattr(handle, "errors", None)
        self.fd = _regular_fd(handle)
        self.path = _followed_path(handle, self.fd)
        self._last_error = None

    def change(self):
        """At the end of the file: _TRUNCATED (and back at the start), _ROTATED or None."""
        if self.fd is None:
            return None
        try:
            stat = os.fstat(self.fd)
            if stat.st_size < os.lseek(self.fd, 0, os.SEEK_CUR):
                log.info("load_file(%s): file truncated, reading it from the start",
                         self.path or self.handle)
                self.handle.seek(0)
                return _TRUNCATED
            if self.path is None:
                return None
            named = os.stat(self.path)
        except OSError:              # renamed away and not created again yet: keep reading
            return None
        if (named.st_ino, named.st_dev) != (stat.st_ino, stat.st_dev):
            return _ROTATED
        return None

    def reopen(self) -> bool:
        """Open the path again (after a rotation); False, to try later, when it fails."""
        try:
            if self.binary:
                handle = open(self.path, "rb")
            else:
                handle = open(self.path, encoding=self.encoding, errors=self.errors)
        except OSError as exc:
            if str(exc) != self._last_error:      # said once, not at every look
                self._last_error = str(exc)
                log.warning("load_file(%s): cannot open the new file yet: %s", self.path, exc)
            return False
        log.info("load_file(%s): file replaced, reading the new one", self.path)
        self.close()
        self.handle, self.own, self._last_error = handle, True, None
        self.fd = _regular_fd(handle)
        return True

    def close(self) -> None:
        """Close the file opened here, if any (never the caller's handle)."""
        if self.own:
            self.handle.close()
            self.own = False


def _regular_fd(handle: IO) -> int | None:
    try:
        fd = handle.fileno()
        return fd if stat_module.S_ISREG(os.fstat(fd).st_mode) else None
    except (OSError, ValueError, AttributeError):   # io.UnsupportedOperation is both
        return None


def _followed_path(handle: IO, fd: int | None) -> str | bytes | None:
    name = getattr(handle, "name", None)
    if fd is None or not isinstance(name, (str, bytes)):
        return None
    try:
        named, opened = os.stat(name), os.fstat(fd)
    except (OSError, ValueError):
        return None
    if (named.st_ino, named.st_dev) != (opened.st_ino, opened.st_dev):
        log.debug("load_file(%r): the name is not the handle's file, not followed", name)
        return None
    return os.path.abspath(name)
