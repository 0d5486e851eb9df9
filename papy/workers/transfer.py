"""Move an item outside the pool's channel: only a small descriptor travels the pipeline.

``dump_item([item], type=...)`` puts the item somewhere and returns an :class:`ItemRef`;
``load_item([ref])`` (in any process on the same host; for ``tcp`` any host that can reach
the address) gets the item back and removes what held it::

    dumping process                                    loading process
    file  a private temp file (mode 0600)              read it, unlink it
    shm   a POSIX shared-memory segment                read it, unlink it
          /papy_<pid>_<random> (posix_ipc, 0600)
    fifo  a named pipe (0600) and a writer thread,     open it (the writer then unlinks
          blocked until a loader opens the pipe        it), read up to the end
    tcp   a socket listening on 127.0.0.1 and a        connect, send the token, read
          server thread that serves one loader         up to the end

Items: ``bytes``, ``bytearray`` and ``memoryview`` travel as they are, ``str`` as UTF-8,
anything else as a pickle (protocol 5); ``load_item`` returns the same type (a memoryview
comes back as bytes).

Clean-up, whatever happens:

1. loaded: the loader removes the file or segment; the fifo writer and the tcp server
   end and remove the FIFO or close the socket;
2. not loaded within ``timeout`` seconds: the tcp server stops listening; the janitor
   removes the file, segment or FIFO (and releases the fifo writer). The janitor is one
   daemon thread per process, alive only while something waits to be loaded; it hears of
   loads in its own process at once, and of loads by other processes by checking once a
   second whether the file, segment or FIFO still exists;
3. the dumping process exits (a pool worker stopped by its IMap included): whatever it
   still holds is removed, by a multiprocessing finaliser (which also runs at exit of the
   main process). A process killed by SIGKILL cleans nothing; ``sweep_leftovers()``
   removes what dead processes left (names carry the pid: ``/dev/shm/papy_<pid>_*``,
   ``<tempdir>/papy_item_<pid>_*`` and ``papy_fifo_<pid>_*``).

Modules: this one is the front (the three functions, checks and dispatch);
``_transfer_item`` the descriptor, errors and encoding; ``_transfer_local`` file, shm and
fifo; ``_transfer_tcp`` tcp; ``_transfer_janitor`` the janitor and the removers.
"""
from __future__ import annotations

import os
import re
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

from imap import imports

from ._transfer_item import (DEFAULT_TIMEOUT, KINDS, LOAD_TIMEOUT, SHM_PREFIX, ItemRef,
                             TransferError, as_ref, decode, encode)
from ._transfer_janitor import SWEEP_SECONDS, unlink, unlink_shm
from ._transfer_local import dump_fifo, dump_file, dump_shm, load_fifo, load_file, load_shm
from ._transfer_tcp import dump_tcp, load_tcp

__all__ = ["dump_item", "load_item", "sweep_leftovers", "ItemRef", "TransferError", "KINDS",
           "SHM_PREFIX", "DEFAULT_TIMEOUT", "LOAD_TIMEOUT", "SWEEP_SECONDS"]


@imports(["os", "socket", "tempfile", "threading", "posix_ipc"])
def dump_item(inbox: Sequence[Any], type: str = "file",  # noqa: A002 - the original PaPy name
              timeout: float | None = DEFAULT_TIMEOUT,
              dir: str | None = None,  # noqa: A002 - as tempfile's
              prefix: str | None = None, suffix: str = "", host: str = "127.0.0.1"
              ) -> ItemRef:
    """Put the item (``inbox[0]``) in a file, fifo, tcp socket or shared-memory segment
    and return the :class:`ItemRef` that :func:`load_item` takes.

    ``timeout``: seconds after which an item nobody loaded is removed (None: only when
    loaded or when this process exits). ``dir``, ``prefix``, ``suffix``: where and how the
    file or FIFO is named (default: the temp directory, ``papy_item_<pid>_`` /
    ``papy_fifo_<pid>_``).
    ``host``: the address a ``tcp`` item listens on (loopback by default).

    >>> ref = dump_item([b'a large payload'], type='shm')
    >>> ref.kind, ref.size, load_item([ref])
    ('shm', 15, b'a large payload')
    """
    if type not in KINDS:
        raise ValueError(f"dump_item type must be one of {', '.join(map(repr, KINDS))}, "
                         f"not {type!r}")
    if timeout is not None and not timeout > 0:
        raise ValueError(f"dump_item timeout must be seconds > 0 or None, not {timeout!r}")
    payload, encoding = encode(inbox[0])
    size = memoryview(payload).nbytes
    expires = None if timeout is None else time.time() + timeout
    deadline = None if timeout is None else time.monotonic() + timeout
    location: str | tuple[str, int]
    if type == "file":
        location = dump_file(payload, deadline, dir, prefix or f"papy_item_{os.getpid()}_",
                             suffix)
    elif type == "shm":
        location = dump_shm(payload, deadline)
    elif type == "fifo":
        location = dump_fifo(payload, deadline, dir, prefix or f"papy_fifo_{os.getpid()}_",
                             suffix)
    else:
        location, token = dump_tcp(payload, deadline, host)
        return ItemRef(type, location, size, encoding, expires, token)
    return ItemRef(type, location, size, encoding, expires)


@imports(["os", "socket", "select", "posix_ipc"])
def load_item(inbox: Sequence[Any], remove: bool = True,
              timeout: float | None = LOAD_TIMEOUT) -> Any:
    """Return the item that :func:`dump_item` put where the descriptor ``inbox[0]`` says,
    and remove it (``remove=False`` keeps a ``file`` or ``shm`` item for other loaders
    until its timeout; ``fifo`` and ``tcp`` items can be loaded once only).

    ``timeout``: seconds a ``fifo`` or ``tcp`` loader waits for data before it gives up.
    Raises :class:`TransferError` when the item is gone (see its message for why).

    >>> load_item([dump_item(['text, or any picklable object'], type='file')])
    'text, or any picklable object'
    """
    ref = as_ref(inbox[0])
    if not remove and ref.kind in ("fifo", "tcp"):
        raise ValueError(f"a {ref.kind} item can be loaded once only: remove=False works for "
                         f"'file' and 'shm' items")
    data: bytes | bytearray
    if ref.kind == "file":
        data = load_file(ref, remove)
    elif ref.kind == "shm":
        data = load_shm(ref, remove)
    elif ref.kind == "fifo":
        data = load_fifo(ref, timeout)
    else:
        data = load_tcp(ref, timeout)
    return decode(data, ref.encoding)


@imports(["os", "re", "tempfile", "posix_ipc"])
def sweep_leftovers(directory: str | None = None) -> list[str]:
    """Remove the items that processes which no longer exist dumped and nobody loaded
    (a process killed by SIGKILL cleans nothing up); return what was removed.

    Only default names are recognised: ``/dev/shm/papy_<pid>_*`` and, in ``directory``
    (the temp directory by default), ``papy_item_<pid>_*`` and ``papy_fifo_<pid>_*``.

    >>> removed = sweep_leftovers()    # e.g. after a pool worker was killed
    """
    temp = directory or tempfile.gettempdir()
    places: list[tuple[str, re.Pattern[str], Callable[[str], None]]] = [
        ("/dev/shm", re.compile(r"papy_(\d+)_[0-9a-f]+$"),
         lambda name: unlink_shm("/" + name)),
        (temp, re.compile(r"papy_(?:item|fifo)_(\d+)_"),
         lambda name: unlink(os.path.join(temp, name)))]
    removed = []
    for folder, pattern, remove in places:
        for name in _listdir(folder):
            match = pattern.match(name)
            if match is None or os.path.exists(f"/proc/{match.group(1)}"):
                continue  # not ours, or its process still runs (and its janitor with it)
            remove(name)
            removed.append(os.path.join(folder, name))
    return removed


def _listdir(folder: str) -> list[str]:
    try:
        return os.listdir(folder)
    except OSError:
        return []
