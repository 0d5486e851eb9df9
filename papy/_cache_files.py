"""Writing a cache's files whole, and removing them quietly.

    write_atomic(path, data)    a temporary file in the final folder, then a rename: two
                                writers of one file leave one of the two, whole; a writer
                                killed meanwhile leaves a temporary file (its name starts
                                with a dot) that prune and clear remove
    write_all(fd, data)         however many writes it takes (a segment's pack, a temporary
                                file's bytes)
    remove(path)                False when the file was not there or could not be removed

``write_atomic`` and ``write_all`` raise OSError (a full disk: ENOSPC, EDQUOT, EFBIG);
``remove`` logs why at debug level and returns False.
"""
from __future__ import annotations

import itertools
import logging
import os
import socket
import threading

__all__ = ["HOST", "write_atomic", "write_all", "remove"]

log = logging.getLogger(__name__)

#: this host's name as it appears in the names of the files its processes write
HOST = socket.gethostname().replace("/", "_") or "host"
_temp_counter = itertools.count()


def write_atomic(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename (creating the
    folder if needed). Raises OSError (a full disk: ENOSPC, EDQUOT, EFBIG)."""
    folder, name = os.path.split(path)
    temp = os.path.join(folder, f".{name}.{HOST}-{os.getpid()}-{threading.get_ident()}-"
                                f"{next(_temp_counter)}")
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileNotFoundError:
        os.makedirs(folder, exist_ok=True)
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        try:
            write_all(fd, data)
        finally:
            os.close(fd)
        os.replace(temp, path)
    except BaseException:
        remove(temp)
        raise


def write_all(fd: int, data: bytes) -> None:
    """``data`` to ``fd``, however many writes it takes (OSError)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def remove(path: str) -> bool:
    """Remove a file; False when it was not there or could not be removed."""
    try:
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False
    except OSError as exc:
        log.debug("cannot remove %s: %s", path, exc)
        return False
