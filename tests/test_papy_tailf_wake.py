"""workers.io.load_file(follow=True) woken by the kernel (inotify), and its polling fallback.

A reader thread pulls the generator while the test changes the file. Each change is made
while the reader sleeps at the end of the file, in a sleep that began after the previous
change (so the reader has read everything before it): the wake-up itself is under test, and
nothing depends on timing. In "inotify" mode the reader is given ``wait=60``: a reader that
polled instead of being woken would miss the deadline, which is the only clock (a generous
guard against hangs). In "polling" mode inotify is made unavailable, as on a system
without it.
"""
from __future__ import annotations

import errno
import logging
import os
import queue
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from papy.workers import _follow, _inotify
from papy.workers._inotify import Inotify
from papy.workers.io import load_file

DEADLINE = 20.0             # only against hangs
pytestmark = pytest.mark.timeout(60)
RELAY = "papy-load_file-stop"


def append(path: Path, data: str, mode: str = "a") -> None:
    with open(path, mode) as handle:
        handle.write(data)


def no_inotify(*args: object) -> Any:
    raise OSError(errno.ENOSYS, "test: no inotify here")


@pytest.fixture(params=["inotify", "polling"])
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "polling":
        monkeypatch.setattr(_follow, "Inotify", no_inotify)
    return str(request.param)


def wait_for(mode: str) -> float:
    """The reader's ``wait``: one the deadline would catch if it were used in inotify mode."""
    return 60.0 if mode == "inotify" else 0.02


class Follower:
    """Reads ``load_file(handle, follow=True)`` in a thread until ``stop`` is set (as a
    Plumber's stop event: the reader sees it through ``current_stop_event``) or ``limit``
    lines were read (then it closes the generator)."""

    def __init__(self, handle: IO[str], monkeypatch: pytest.MonkeyPatch, wait: float,
                 limit: int | None = None) -> None:
        self.stop = threading.Event()
        self.lines: queue.Queue[str] = queue.Queue()
        self.kernel: set[bool] = set()       # Sleeper.kernel at each sleep
        self._cond = threading.Condition()
        self._sleeps, self._asleep, self._mark = 0, False, 0
        self.failure: BaseException | None = None
        real_sleep = _follow.Sleeper.sleep

        def sleep(sleeper: _follow.Sleeper) -> bool:
            with self._cond:
                self._sleeps += 1
                self._asleep = True
                self.kernel.add(sleeper.kernel)
                self._cond.notify_all()
            try:
                return real_sleep(sleeper)
            finally:
                with self._cond:
                    self._asleep = False

        monkeypatch.setattr(_follow.Sleeper, "sleep", sleep)
        monkeypatch.setattr(_follow, "current_stop_event", lambda: self.stop)
        self._reader = load_file(handle, follow=True, wait=wait)
        self._limit = limit
        self.thread = threading.Thread(target=self._read, name="test-follower")
        self.thread.start()

    def _read(self) -> None:
        try:
            for count, line in enumerate(self._reader, 1):
                self.lines.put(line)
                if count == self._limit:
                    break
        except BaseException as exc:  # noqa: BLE001 - the test's thread raises it in finish()
            self.failure = exc
        finally:
            self._reader.close()

    def asleep(self) -> None:
        """Until the reader sleeps in a sleep that began after the last change."""
        with self._cond:
            assert self._cond.wait_for(lambda: self._sleeps > self._mark and self._asleep,
                                       DEADLINE), "the reader never went to sleep"

    def change(self, action: Callable[[], object]) -> None:
        """Do ``action`` while the reader sleeps (after it has read all before)."""
        self.asleep()
        with self._cond:
            self._mark = self._sleeps
        action()

    def take(self, count: int) -> list[str]:
        return [self.lines.get(timeout=DEADLINE) for _ in range(count)]

    @property
    def sleeps(self) -> int:
        with self._cond:
            return self._sleeps

    def finish(self) -> None:
        self.stop.set()
        self.thread.join(DEADLINE)
        assert not self.thread.is_alive(), "the reader did not end at the stop"
        if self.failure is not None:
            raise self.failure


Start = Callable[..., Follower]


def wait_until_gone(name: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while any(t.name == name for t in threading.enumerate()):
        assert time.monotonic() < deadline, f"thread {name} still running"
        time.sleep(0.01)


@pytest.fixture
def follower(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str
             ) -> Iterator[Start]:
    started: list[Follower] = []
    handles: list[IO[str]] = []

    def start(path: Path, **options: Any) -> Follower:
        handle = open(path)  # closed at the end of the test
        handles.append(handle)
        started.append(Follower(handle, monkeypatch, wait_for(mode), **options))
        return started[-1]

    yield start
    try:
        for each in started:
            each.finish()
            assert each.kernel <= {mode == "inotify"}
    finally:
        for handle in handles:
            handle.close()


# -- woken by a change ---------------------------------------------------------------------
def test_a_line_written_while_the_reader_sleeps_wakes_it(tmp_path: Path,
                                                         follower: Start) -> None:
    path = tmp_path / "log"
    append(path, "one\n")
    reader = follower(path)
    assert reader.take(1) == ["one\n"]
    for n in range(5):
        line = f"line {n}\n"
        reader.change(lambda line=line: append(path, line))  # type: ignore[misc]
        assert reader.take(1) == [line]


def test_a_partial_line_waits_for_its_newline(tmp_path: Path, follower: Start) -> None:
    path = tmp_path / "log"
    path.touch()
    reader = follower(path)
    reader.change(lambda: append(path, "ha"))
    reader.change(lambda: append(path, "lf"))
    reader.change(lambda: append(path, " done\nnext\n"))
    assert reader.take(2) == ["half done\n", "next\n"]


def test_copytruncate_while_the_reader_sleeps(tmp_path: Path, follower: Start) -> None:
    path = tmp_path / "log"
    append(path, "one\ntwo\nthree\n")
    reader = follower(path)
    assert reader.take(3) == ["one\n", "two\n", "three\n"]

    def copytruncate() -> None:
        shutil.copy(path, tmp_path / "log.1")
        os.truncate(path, 0)
    reader.change(copytruncate)
    reader.change(lambda: append(path, "four\n"))
    assert reader.take(1) == ["four\n"]
    reader.change(lambda: append(path, "x\n", "w"))    # truncated and rewritten at once
    assert reader.take(1) == ["x\n"]


def test_rotation_while_the_reader_sleeps(tmp_path: Path, follower: Start) -> None:
    path, old = tmp_path / "log", tmp_path / "log.1"
    append(path, "1\n")
    reader = follower(path)
    assert reader.take(1) == ["1\n"]
    reader.change(lambda: os.rename(path, old))
    reader.change(lambda: append(old, "2\n"))           # the writer still has the old file
    assert reader.take(1) == ["2\n"]
    reader.change(lambda: append(path, "3\n"))          # the new file appears
    assert reader.take(1) == ["3\n"]
    reader.change(lambda: append(path, "4\n"))          # and is watched in its turn
    assert reader.take(1) == ["4\n"]
    append(old, "lost\n")                               # the old one is no longer read
    reader.change(lambda: append(path, "5\n"))
    assert reader.take(1) == ["5\n"]


def test_a_partial_line_across_a_rotation_while_sleeping(tmp_path: Path,
                                                         follower: Start) -> None:
    path = tmp_path / "log"
    append(path, "a\nhalf ")
    reader = follower(path)
    assert reader.take(1) == ["a\n"]
    reader.change(lambda: os.rename(path, tmp_path / "log.1"))
    reader.change(lambda: append(path, "done\nb\n"))
    assert reader.take(2) == ["half done\n", "b\n"]


def test_rotation_of_the_file_a_symbolic_link_names(tmp_path: Path,
                                                    follower: Start) -> None:
    real = tmp_path / "real"
    real.mkdir()
    target, link = real / "app.log", tmp_path / "app.log"
    append(target, "1\n")
    link.symlink_to(target)
    reader = follower(link)
    assert reader.take(1) == ["1\n"]
    reader.change(lambda: os.rename(target, real / "app.log.1"))
    reader.change(lambda: append(target, "2\n"))      # in another folder than the link's
    assert reader.take(1) == ["2\n"]


def test_the_file_deleted_and_created_again(tmp_path: Path, follower: Start) -> None:
    path = tmp_path / "log"
    append(path, "1\n")
    reader = follower(path)
    assert reader.take(1) == ["1\n"]
    reader.change(lambda: os.unlink(path))
    reader.change(lambda: append(path, "2\n"))
    assert reader.take(1) == ["2\n"]


# -- stop ----------------------------------------------------------------------------------
def test_the_stop_wakes_a_sleeping_reader(tmp_path: Path, follower: Start) -> None:
    path = tmp_path / "log"
    append(path, "1\n")
    reader = follower(path)
    assert reader.take(1) == ["1\n"]
    reader.asleep()
    began = time.monotonic()
    reader.finish()                 # sets the stop, joins the reader (the deadline guards)
    assert time.monotonic() - began < DEADLINE
    wait_until_gone(RELAY)


def test_the_stop_relay_ends_when_the_reader_is_closed_without_a_stop(
        tmp_path: Path, follower: Start) -> None:
    path = tmp_path / "log"
    append(path, "1\n")
    reader = follower(path, limit=2)
    assert reader.take(1) == ["1\n"]
    reader.change(lambda: append(path, "2\n"))
    assert reader.take(1) == ["2\n"]
    reader.thread.join(DEADLINE)                    # it closed the generator after 2 lines
    assert not reader.thread.is_alive()
    assert not reader.stop.is_set()
    wait_until_gone(RELAY)                          # within StopPipe.LINGER


def test_an_idle_file_does_not_wake_the_reader(tmp_path: Path, follower: Start,
                                               mode: str) -> None:
    if mode == "polling":
        pytest.skip("polling wakes every `wait` seconds by design")
    path = tmp_path / "log"
    append(path, "1\n")
    reader = follower(path)
    assert reader.take(1) == ["1\n"]
    reader.asleep()
    time.sleep(0.3)                 # a reader that polled every 0.02 s would wake ~15 times
    assert reader.sleeps == 1
    reader.change(lambda: append(path, "2\n"))
    assert reader.take(1) == ["2\n"]


# -- when the kernel cannot tell -----------------------------------------------------------
def reader_mode(path: Path) -> bool:
    """Sleeper.kernel of a reader of ``path`` (made by hand, not run)."""
    with open(path) as handle:
        sleeper = _follow.Sleeper(_follow.Followed(handle), 0.1)
        try:
            return sleeper.kernel
        finally:
            sleeper.close()


@pytest.mark.parametrize("code, level, words", [
    (errno.EMFILE, logging.WARNING, "max_user_instances"),
    (errno.ENOSPC, logging.WARNING, "max_user_watches"),
    (errno.ENOSYS, logging.INFO, "inotify not available"),
])
def test_without_inotify_it_polls_and_says_so(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch,
                                              caplog: pytest.LogCaptureFixture, code: int,
                                              level: int, words: str) -> None:
    def refused(*args: object) -> Any:
        raise OSError(code, os.strerror(code))
    path = tmp_path / "log"
    path.touch()
    assert reader_mode(path) is True
    monkeypatch.setattr(_follow, "Inotify", refused)
    with caplog.at_level(logging.INFO, logger="papy"):
        assert reader_mode(path) is False
    assert any(r.levelno == level and words in r.getMessage() for r in caplog.records)


def test_a_file_system_inotify_does_not_see_is_polled(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "log"
    path.touch()
    monkeypatch.setattr(_follow, "watchable_by_kernel", lambda fd: False)
    with caplog.at_level(logging.INFO, logger="papy"):
        assert reader_mode(path) is False
    assert any("network or FUSE" in r.getMessage() for r in caplog.records)


def test_a_watch_that_fails_after_the_instance_was_made_closes_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[Inotify] = []

    class Failing(Inotify):
        def __init__(self) -> None:
            super().__init__()
            made.append(self)

        def add_watch(self, path: str | bytes, mask: int) -> int:
            raise OSError(errno.ENOSPC, "test: no more watches")
    monkeypatch.setattr(_follow, "Inotify", Failing)
    path = tmp_path / "log"
    path.touch()
    assert reader_mode(path) is False
    assert made and all(each._fd is None for each in made)


# -- the ctypes layer ----------------------------------------------------------------------
def test_inotify_events_name_the_entries_and_watches_can_go_twice(tmp_path: Path) -> None:
    watcher = Inotify()
    try:
        wd = watcher.add_watch(str(tmp_path), _inotify.FOLDER_EVENTS)
        assert watcher.read_events() == []
        (tmp_path / "new.log").touch()
        os.rename(tmp_path / "new.log", tmp_path / "old.log")
        events = watcher.read_events()
        assert [(e.wd, e.name) for e in events if e.mask & _inotify.IN_CREATE] == [
            (wd, b"new.log")]
        assert any(e.name == b"old.log" and e.mask & _inotify.IN_MOVED_TO for e in events)
        watcher.remove_watch(wd)
        watcher.remove_watch(wd)        # already gone: no error
        with pytest.raises(OSError):
            watcher.add_watch(str(tmp_path / "missing"), _inotify.FILE_EVENTS)
    finally:
        watcher.close()
        watcher.close()
    with pytest.raises(ValueError):
        watcher.fileno()


def test_files_on_proc_are_not_left_to_inotify(tmp_path: Path) -> None:
    with open("/proc/self/status") as generated, open(tmp_path / "log", "w") as local:
        assert _inotify.watchable_by_kernel(generated.fileno()) is False
        assert _inotify.watchable_by_kernel(local.fileno()) is True
