"""One call to see what papy and imap are doing: ``start_logger()``.

The library itself only installs a ``NullHandler`` on the ``papy`` logger (and imap on
``imap``); nothing is printed unless the application configures logging. ``start_logger``
is that configuration for users who do not want to write it.
"""
from __future__ import annotations

import logging
import logging.handlers
import sys
from typing import TextIO

__all__ = ["start_logger"]

LOGGER_NAMES = ("papy", "imap")
_MARK = "_papy_start_logger"    # an attribute on the handlers start_logger installed
FORMAT = "%(levelname)-8s %(asctime)s [%(name)s] %(threadName)s - %(message)s"


def start_logger(log_to_stream: bool = True, log_to_file: bool = False,
                 level: int | str = logging.INFO, filename: str = "papy.log",
                 stream: TextIO | None = None, rotate: bool = True, max_bytes: int = 512 * 1024,
                 backups: int = 3, fmt: str = FORMAT) -> list[logging.Handler]:
    """Send the records of the ``papy`` and ``imap`` loggers to the console and/or a file.

    ``level`` applies to both loggers and handlers. ``stream`` defaults to ``sys.stderr``;
    with ``log_to_file`` records go to ``filename``, rotated at ``max_bytes`` keeping
    ``backups`` old files (``rotate=False``: one growing file). Calling it again replaces
    the handlers of the previous call. Returns the handlers it installed.

    Example::

        >>> import papy
        >>> papy.start_logger(level="DEBUG", log_to_file=True, filename="run.log")
    """
    if isinstance(level, str):
        level = logging.getLevelName(level.upper())
    formatter = logging.Formatter(fmt)
    handlers: list[logging.Handler] = []
    if log_to_stream:
        handlers.append(logging.StreamHandler(stream if stream is not None else sys.stderr))
    if log_to_file:
        if rotate:
            handlers.append(logging.handlers.RotatingFileHandler(
                filename, maxBytes=max_bytes, backupCount=backups))
        else:
            handlers.append(logging.FileHandler(filename))
    for handler in handlers:
        handler.setFormatter(formatter)
        handler.setLevel(level)
        setattr(handler, _MARK, True)   # what a later call replaces
    for name in LOGGER_NAMES:
        logger = logging.getLogger(name)
        for old in [h for h in logger.handlers if getattr(h, _MARK, False)]:
            logger.removeHandler(old)
            if old not in handlers:
                old.close()
        logger.setLevel(level)
        for handler in handlers:
            logger.addHandler(handler)
    return handlers
