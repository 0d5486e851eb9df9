"""Linux process controls shared by every process imap starts: the one PR_SET_PDEATHSIG
helper (worker processes, imap's fork server and its workers, the connection processes of
``python -m imap.server``) and PR_SET_NAME.

Imports only the standard library, so a module that runs in a fresh worker or server process
pays nothing for it. On other platforms (or without a usable libc) every call is a no-op.
"""
from __future__ import annotations

import ctypes
import os
import signal
import sys

__all__ = ["PR_SET_NAME", "die_with_parent", "prctl"]

_PR_SET_PDEATHSIG = 1
PR_SET_NAME = 15


def prctl(option: int, value: int | bytes) -> bool:
    """``prctl(option, value)``; False when it failed or does not exist here."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)   # libc is among this process's symbols
        return bool(libc.prctl(option, value, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def die_with_parent(expected_parent: int | None, exit_code: int = 1) -> None:
    """Linux: this process gets SIGKILL when its parent dies (PR_SET_PDEATHSIG); when the
    parent (``expected_parent``) is gone already, leave at once with ``exit_code``."""
    if not sys.platform.startswith("linux"):
        return
    prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL))
    if expected_parent is not None and os.getppid() != expected_parent:
        os._exit(exit_code)
