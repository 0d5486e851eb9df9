"""Worker functions and input generators for printing and reading files.

``print_`` is a worker function (inbox convention: the item is ``inbox[0]``); ``load_file``
is a generator to use as an input of a pipeline, e.g. ``plumber.set_inputs([load_file(h)])``.
File handles cannot be sent to other processes: use them in inputs and in linear Pipers.
"""
from __future__ import annotations

import logging
import time
from typing import IO, Iterator

from imap import waiting_for_input

from .._runtime import current_stop_event
from .streams import (dump_pickle_stream, dump_stream, json_dumps, json_loads,
                      load_pickle_stream, load_stream, pickle_dumps, pickle_loads)
from .transfer import ItemRef, TransferError, dump_item, load_item, sweep_leftovers

log = logging.getLogger("papy")  # one name for the whole package (and "imap")

__all__ = ["print_", "load_file",
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

    ``follow=True`` behaves like ``tail -f``: at the end of the file it waits ``wait``
    seconds and looks again, forever; each complete line is yielded as soon as it has been
    appended, and a partial last line waits for its newline. When the Plumber that reads
    this generator is stopped (``chinkup()``/``stop()``) it ends at once, even while it waits
    for data; a partial line that is still without its newline is then not yielded (a
    warning says so). Used outside a Plumber it never ends by itself.

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
    pending = None
    while True:
        chunk = handle.readline()
        if chunk:
            pending = chunk if pending is None else pending + chunk
            if pending.endswith(b"\n" if isinstance(pending, bytes) else "\n"):
                line, pending = pending, None
                yield line
            continue
        waiting_for_input()          # lines read so far go to the workers now
        stop = current_stop_event()
        if stop is None:
            time.sleep(wait)
        elif stop.wait(wait):
            if pending:
                log.warning("load_file(%s): stopped with a partial last line of %d "
                            "characters (no newline yet); it was not yielded",
                            getattr(handle, "name", handle), len(pending))
            return
