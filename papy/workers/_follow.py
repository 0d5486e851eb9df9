"""``load_file(follow=True)``: a file read like ``tail -F``, woken by the kernel.

    writer --append, truncate, rename--> file --readline()--> follow_lines() --yield--> input
                                          |                      |  at the end of the file:
    inotify (Linux): the file, the folder of its path ---+       |  change()? else sleep()
    the Plumber's stop Event --> StopPipe (one thread) --+--> Sleeper.sleep() (poll())

At the end of the file the reader looks for a truncation or a rotation
(``Followed.change``), then sleeps (``Sleeper.sleep``) until:

- kernel mode (Linux, a regular file on a local file system): inotify reports a change of
  the file being read (written, truncated, renamed, deleted) or of the folder of its path
  (an entry created, renamed or deleted: the new file of a rotation). No timer: a line
  written is seen at once, an idle file costs nothing;
- polling mode (no inotify, or its limits reached; a file system whose changes inotify
  misses, e.g. NFS; a pipe or a StringIO): ``wait`` seconds have passed;
- in both modes: the Plumber that reads the input stops (``papy.current_stop_event()``).

Shutdown, when the generator is closed (the pipeline stops, or its owner closes it):
1. ``Sleeper.close()``: the inotify descriptor and the StopPipe's reading end are closed;
   the StopPipe's thread ends at once if the stop event is set, else within
   ``StopPipe.LINGER`` seconds;
2. ``Followed.close()``: the files opened after a rotation are closed (never the caller's
   handle).
"""
from __future__ import annotations

import errno
import logging
import os
import select
import stat as stat_module
import threading
import time
from collections.abc import Generator
from typing import IO, AnyStr, Generic

from imap import waiting_for_input

from .._runtime import current_stop_event
from ._inotify import FILE_EVENTS, FOLDER_EVENTS, Inotify, watchable_by_kernel

log = logging.getLogger(__name__)

__all__ = ["follow_lines"]


def follow_lines(handle: IO[AnyStr], wait: float) -> Generator[AnyStr, None, None]:
    """The ``follow=True`` reader of ``load_file`` (see its docstring for the semantics):
    read lines; at the end of the file look for a truncation or a rotation, or sleep."""
    source: Followed[AnyStr] = Followed(handle)
    sleeper = Sleeper(source, wait)
    newline = source.newline
    pending: AnyStr | None = None   # a line read without its newline yet
    switch_due = False          # rotated: the old file is read to its end, then reopened
    readline = source.handle.readline
    try:
        while True:
            chunk = readline()
            if chunk:
                pending = chunk if pending is None else pending + chunk
                if pending.endswith(newline):
                    line, pending = pending, None
                    yield line
                continue
            if switch_due:
                switch_due = False
                if source.reopen():
                    sleeper.retarget(source)    # before the new file is read: no change lost
                    readline = source.handle.readline
                    continue
            change = source.change()
            if change is _TRUNCATED:
                if pending:
                    log.warning("load_file(%s): truncated with a partial last line of %d "
                                "characters (no newline yet); it was dropped", source.label,
                                len(pending))
                pending = None
                continue
            if change is _ROTATED:
                switch_due = True   # one more read to the end: the writer may have added
                continue
            waiting_for_input()          # lines read so far go to the workers now
            if sleeper.sleep():
                if pending:
                    log.warning("load_file(%s): stopped with a partial last line of %d "
                                "characters (no newline yet); it was not yielded",
                                source.label, len(pending))
                return
    finally:
        sleeper.close()
        source.close()


_TRUNCATED = object()
_ROTATED = object()


class Followed(Generic[AnyStr]):
    """The file being read now, and the path followed.

    ``fd`` is None when the handle is not a regular file (a pipe, a StringIO): then only
    ``tail -f`` applies. ``path`` is None when ``handle.name`` does not name the handle's
    file when reading starts (``'<stdin>'``, a descriptor, a file already replaced): then
    truncation is still noticed, rotation is not.
    """

    def __init__(self, handle: IO[AnyStr]) -> None:
        self.handle: IO[AnyStr] = handle
        self.own = False                # handle opened here (after a rotation)
        empty = handle.read(0)
        self.binary = isinstance(empty, bytes)
        self.newline: AnyStr = empty + ("\n" if isinstance(empty, str) else b"\n")
        self.encoding: str | None = getattr(handle, "encoding", None)
        self.errors: str | None = getattr(handle, "errors", None)
        self.fd = _regular_fd(handle)
        self.path = _followed_path(handle, self.fd)
        self.label: object = self.path or getattr(handle, "name", None) or handle
        self._last_error: str | None = None

    def change(self) -> object | None:
        """At the end of the file: _TRUNCATED (and back at the start), _ROTATED or None."""
        if self.fd is None:
            return None
        try:
            opened = os.fstat(self.fd)
            if opened.st_size < os.lseek(self.fd, 0, os.SEEK_CUR):
                log.info("load_file(%s): file truncated, reading it from the start",
                         self.label)
                self.handle.seek(0)
                return _TRUNCATED
            if self.path is None:
                return None
            named = os.stat(self.path)
        except OSError:              # renamed away and not created again yet: keep reading
            return None
        if (named.st_ino, named.st_dev) != (opened.st_ino, opened.st_dev):
            return _ROTATED
        return None

    def reopen(self) -> bool:
        """Open the path again (after a rotation); False, to try later, when it fails."""
        assert self.path is not None, "rotation is only seen when the path is known"
        handle: IO[AnyStr]
        try:
            # the mode is the first handle's, so AnyStr is right, but mypy cannot tie
            # self.binary to it; kept open: closed by close()
            if self.binary:
                handle = open(self.path, "rb")  # type: ignore[assignment]  # AnyStr = bytes
            else:
                handle = open(  # type: ignore[assignment]  # AnyStr = str
                    self.path, encoding=self.encoding, errors=self.errors)
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

    def folders(self) -> list[str]:
        """The folders where the new file of a rotation appears: the path's, and the
        folder of the file it names when it is a symbolic link."""
        if self.path is None:
            return []
        path = os.fsdecode(self.path)
        folders = [os.path.dirname(path)]
        real = os.path.dirname(os.path.realpath(path))
        return folders if real in folders else folders + [real]

    def close(self) -> None:
        """Close the file opened here, if any (never the caller's handle)."""
        if self.own:
            self.handle.close()
            self.own = False


def _regular_fd(handle: IO[AnyStr]) -> int | None:
    try:
        fd = handle.fileno()
        return fd if stat_module.S_ISREG(os.fstat(fd).st_mode) else None
    except (OSError, ValueError, AttributeError):   # io.UnsupportedOperation is both
        return None


def _followed_path(handle: IO[AnyStr], fd: int | None) -> str | bytes | None:
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


# -- sleeping at the end of the file -------------------------------------------------------

class Sleeper:
    """Where the reader waits at the end of the file: on the kernel (inotify and the stop
    pipe, in one ``poll()``), or on a clock of ``wait`` seconds (the stop event's ``wait``).
    """

    def __init__(self, source: Followed[AnyStr], wait: float) -> None:
        self.wait = wait
        self._watcher = _KernelWatch.open(source, wait)
        self._stop_pipe: StopPipe | None = None
        self._poller = select.poll()
        if self._watcher is not None:
            self._poller.register(self._watcher.fileno(), select.POLLIN)

    @property
    def kernel(self) -> bool:
        """True: woken by inotify; False: looking every ``wait`` seconds."""
        return self._watcher is not None

    def sleep(self) -> bool:
        """Until the file may have changed; True when the pipeline reading it stops."""
        stop = current_stop_event()
        if stop is not None and stop.is_set():
            return True
        if self._watcher is None:
            if stop is None:
                time.sleep(self.wait)
                return False
            return stop.wait(self.wait)
        pipe = self._stop_pipe_for(stop)
        ready = {fd for fd, _ in self._poller.poll()}
        self._watcher.drain()
        if pipe is None or pipe.fd not in ready:
            return False
        if stop is not None and stop.is_set():
            return True
        log.error("load_file: the thread that relays the pipeline's stop has ended (its "
                  "error was logged); looking every %s s from now on", self.wait)
        self._close_watch()
        return False

    def retarget(self, source: Followed[AnyStr]) -> None:
        """Watch the file opened after a rotation instead of the old one."""
        if self._watcher is not None and not self._watcher.retarget(source.fd):
            log.info("load_file(%s): cannot watch the new file; looking every %s s",
                     source.label, self.wait)
            self._close_watch()

    def close(self) -> None:
        self._close_watch()
        self._close_stop_pipe()

    def _stop_pipe_for(self, stop: threading.Event | None) -> StopPipe | None:
        """The StopPipe of ``stop`` (made at the first sleep of a run, kept after)."""
        pipe = self._stop_pipe
        if pipe is not None and pipe.event is stop:
            return pipe
        self._close_stop_pipe()
        if stop is None:
            return None
        self._stop_pipe = pipe = StopPipe(stop)
        self._poller.register(pipe.fd, select.POLLIN)
        return pipe

    def _close_watch(self) -> None:
        if self._watcher is not None:
            self._poller.unregister(self._watcher.fileno())
            self._watcher.close()
            self._watcher = None

    def _close_stop_pipe(self) -> None:
        if self._stop_pipe is not None:
            self._poller.unregister(self._stop_pipe.fd)
            self._stop_pipe.close()
            self._stop_pipe = None


class _KernelWatch:
    """inotify watches on the file being read (through ``/proc/self/fd/N``: the open file
    itself, whatever its name is now) and on the folders where a rotation's new file
    appears. Any event only means "look again": ``Followed.change`` decides what happened.
    """

    def __init__(self, inotify: Inotify, file_wd: int) -> None:
        self._inotify, self._file_wd = inotify, file_wd

    @classmethod
    def open(cls, source: Followed[AnyStr], wait: float) -> _KernelWatch | None:
        """The watch of ``source``, or None (then the reader polls) when the kernel cannot
        tell: not a regular file, a file system inotify does not see (NFS, FUSE, ...),
        inotify missing or out of instances or watches (said in the log)."""
        if source.fd is None:
            return None
        if not watchable_by_kernel(source.fd):
            log.info("load_file(%s): inotify does not see the changes on this file system "
                     "(network or FUSE); looking every %s s", source.label, wait)
            return None
        inotify = None
        try:
            inotify = Inotify()
            file_wd = inotify.add_watch(f"/proc/self/fd/{source.fd}", FILE_EVENTS)
            for folder in source.folders():
                inotify.add_watch(folder, FOLDER_EVENTS)
        except OSError as exc:
            if inotify is not None:
                inotify.close()
            _say_no_inotify(source.label, wait, exc)
            return None
        return cls(inotify, file_wd)

    def fileno(self) -> int:
        return self._inotify.fileno()

    def retarget(self, fd: int | None) -> bool:
        """Watch the file open as ``fd`` instead of the old one; False if it cannot."""
        if fd is None:
            return False
        try:
            self._inotify.remove_watch(self._file_wd)
            self._file_wd = self._inotify.add_watch(f"/proc/self/fd/{fd}", FILE_EVENTS)
        except OSError as exc:
            log.debug("load_file: inotify on the new file failed: %s", exc)
            return False
        return True

    def drain(self) -> int:
        """Take the queued events (how many): they have woken the reader, who looks now."""
        return len(self._inotify.read_events())

    def close(self) -> None:
        self._inotify.close()


def _say_no_inotify(label: object, wait: float, exc: OSError) -> None:
    if exc.errno in (errno.EMFILE, errno.ENOSPC):
        log.warning("load_file(%s): the inotify limits of this user are reached (%s); "
                    "looking every %s s instead. Raise fs.inotify.max_user_instances or "
                    "fs.inotify.max_user_watches (sysctl) to be woken at once again",
                    label, exc, wait)
    else:
        log.info("load_file(%s): inotify not available (%s); looking every %s s",
                 label, exc, wait)


class StopPipe:
    """A descriptor that becomes readable when ``event`` is set.

    ``poll()`` waits on descriptors, and a ``threading.Event`` has none: a daemon thread
    waits on the event and writes one byte. It ends when the event is set, or at most
    ``LINGER`` seconds after ``close()``: an Event cannot be woken without setting it, so
    LINGER bounds how long the thread outlives its reader. It never delays a wake-up.
    """

    LINGER = 0.5

    def __init__(self, event: threading.Event) -> None:
        self.event = event
        self.fd, self._write_fd = os.pipe2(os.O_CLOEXEC)
        self._closed = False
        self._thread = threading.Thread(target=self._relay_stop, daemon=True,
                                        name="papy-load_file-stop")
        self._thread.start()

    def _relay_stop(self) -> None:
        try:
            while not self.event.wait(self.LINGER):
                if self._closed:
                    return
            if not self._closed:
                os.write(self._write_fd, b"\0")
        except BrokenPipeError:     # the reader closed its end meanwhile: nobody to wake
            pass
        except BaseException:
            log.exception("load_file: relaying the pipeline's stop failed")
            raise
        finally:
            os.close(self._write_fd)    # if it died: readable too, and the reader polls

    def close(self) -> None:
        """Close the reading end; the thread ends by itself (see LINGER)."""
        if not self._closed:
            self._closed = True
            os.close(self.fd)
