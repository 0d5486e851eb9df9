"""Worker functions and input generators for printing and reading files.

``file_refs(paths)`` is an input too: ``FileRef`` items (paths) whose cache key is the
file's content checksum (papy._fileref; docs/cache.md).

``print_`` is a worker function (inbox convention: the item is ``inbox[0]``); ``load_file``
(alias ``make_lines``, its 1.0.8 name) is a generator to use as an input of a pipeline, e.g.
``plumber.set_inputs([load_file(h)])``; with ``follow=True`` it reads like ``tail -F``.
File handles cannot be sent to other processes: use them in inputs and in linear Pipers.
"""
from __future__ import annotations

from collections.abc import Generator, Sequence
from typing import IO, AnyStr

from .._fileref import FileRef, file_refs
from ._follow import follow_lines
from .streams import (dump_pickle_stream, dump_stream, json_dumps, json_loads,
                      load_pickle_stream, load_stream, pickle_dumps, pickle_loads)
from .transfer import ItemRef, TransferError, dump_item, load_item, sweep_leftovers

__all__ = ["print_", "load_file", "make_lines", "file_refs", "FileRef",
           "dump_stream", "load_stream", "dump_pickle_stream", "load_pickle_stream",
           "pickle_dumps", "pickle_loads", "json_dumps", "json_loads",
           "dump_item", "load_item", "sweep_leftovers", "ItemRef", "TransferError"]


def print_(inbox: Sequence[object]) -> None:
    """Print the item (``inbox[0]``) and return None; an output Piper for quick looks.

    Example::

        >>> print_(['hello'])
        hello
    """
    print(inbox[0], flush=True)


def load_file(handle: IO[AnyStr], follow: bool = False, wait: float = 0.1
              ) -> Generator[AnyStr, None, None]:
    """Yield the lines of an open file (``str`` or ``bytes`` as the handle gives them,
    newline included).

    ``follow=False``: the lines up to the end of the file (a last line without a newline
    included), then the generator ends.

    ``follow=True`` behaves like ``tail -F``: at the end of the file it waits for more,
    forever; each complete line is yielded as soon as it has been appended, and a partial
    last line waits for its newline. On Linux the kernel wakes it (inotify) when the file
    or the folder of its path changes, so a line is read as soon as it is written; where
    inotify cannot tell (another system, its per-user limits reached, a network or FUSE
    file system, a pipe) it looks again every ``wait`` seconds. When the handle is a
    regular file it also survives, without losing or repeating a line:

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
    yield from follow_lines(handle, wait)


def make_lines(handle: IO[AnyStr], follow: bool = False, wait: float = 0.1
               ) -> Generator[AnyStr, None, None]:
    """The 1.0.8 name of ``load_file``: the same reader, with the same arguments.

    Example::

        >>> import io
        >>> list(make_lines(io.StringIO('a\\nb')))
        ['a\\n', 'b']
    """
    return load_file(handle, follow, wait)
