"""workers.io.load_file(follow=True) as ``tail -F``: appends, copytruncate and rotation.

The unit tests drive the generator by hand: it runs only inside ``next()``, so the file is
changed between two pulls and nothing depends on timing (a reader that never sees a line
would block: the per-test timeout is the guard). The pipeline test changes the file while
a Plumber runs, waiting each time until the pipeline has produced the lines written so far.
"""
import contextlib
import itertools
import logging
import os
import shutil
import time

import pytest

from papy import IMap, Piper, Plumber, workers
from papy.workers.io import load_file, make_lines

DEADLINE = 30.0             # only against hangs
pytestmark = pytest.mark.timeout(60)


def append(path, data, mode="a"):
    with open(path, mode) as handle:
        handle.write(data)


def take(reader, n):
    return list(itertools.islice(reader, n))


def following(handle, **options):
    return contextlib.closing(load_file(handle, follow=True, wait=0.02, **options))


def open_fds_to(path):
    """The descriptors of this process open on path (read from /proc/self/fd)."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == str(path):
                found.append(fd)
        except OSError:
            pass
    return found


# -- truncation ----------------------------------------------------------------------------
def test_copytruncate_reads_again_from_the_start(tmp_path):
    path = tmp_path / "log"
    append(path, "one\ntwo\nthree\n")
    with open(path) as handle, following(handle) as reader:
        assert take(reader, 3) == ["one\n", "two\n", "three\n"]
        shutil.copy(path, tmp_path / "log.1")
        os.truncate(path, 0)
        append(path, "four\n")              # shorter than what was read: seen as shrunk
        assert take(reader, 1) == ["four\n"]
        append(path, "five\n")
        assert take(reader, 1) == ["five\n"]


def test_truncation_to_a_smaller_size_and_twice(tmp_path):
    path = tmp_path / "log"
    append(path, "aaaaaaaa\nbbbbbbbb\n")
    with open(path, "rb") as handle, following(handle) as reader:
        assert take(reader, 2) == [b"aaaaaaaa\n", b"bbbbbbbb\n"]
        append(path, b"cccc\n", "wb")       # truncated and rewritten in one go
        assert take(reader, 1) == [b"cccc\n"]
        os.truncate(path, 0)
        append(path, b"d\n", "ab")          # the second truncation of the same file
        assert take(reader, 1) == [b"d\n"]


def test_a_partial_line_is_dropped_at_truncation_with_a_warning(tmp_path, caplog):
    path = tmp_path / "log"
    append(path, "one\npart")
    with open(path) as handle, following(handle) as reader:
        assert take(reader, 1) == ["one\n"]
        os.truncate(path, 0)
        append(path, "two\n")
        with caplog.at_level(logging.WARNING, logger="papy"):
            assert take(reader, 1) == ["two\n"]
    assert any("truncated" in r.getMessage() and "dropped" in r.getMessage()
               for r in caplog.records)


# -- rotation ------------------------------------------------------------------------------
def test_rotation_finishes_the_old_file_then_reads_the_new_one(tmp_path):
    path = tmp_path / "log"
    append(path, "1\n2\n")
    with open(path) as handle, following(handle) as reader:
        assert take(reader, 2) == ["1\n", "2\n"]
        os.rename(path, tmp_path / "log.1")
        append(tmp_path / "log.1", "3\n")   # the writer still holds the old file
        assert take(reader, 1) == ["3\n"]   # no new file yet: the old one is followed
        append(tmp_path / "log.1", "4\n")
        append(path, "5\n6\n")              # the new file appears
        assert take(reader, 3) == ["4\n", "5\n", "6\n"]
        append(path, "7\n")
        assert take(reader, 1) == ["7\n"]
        assert not handle.closed


def test_a_partial_line_waits_for_its_newline_across_rotation(tmp_path):
    path = tmp_path / "log"
    append(path, "a\nhalf ")
    with open(path) as handle, following(handle) as reader:
        assert take(reader, 1) == ["a\n"]
        os.rename(path, tmp_path / "log.1")
        append(path, "done\nb\n")
        assert take(reader, 2) == ["half done\n", "b\n"]


def test_rotation_then_truncation_of_the_new_file(tmp_path):
    path = tmp_path / "log"
    append(path, "old\n")
    with open(path) as handle, following(handle) as reader:
        assert take(reader, 1) == ["old\n"]
        os.rename(path, tmp_path / "log.1")
        append(path, "new 1\nnew 2\n")
        assert take(reader, 2) == ["new 1\n", "new 2\n"]
        os.truncate(path, 0)
        append(path, "new 3\n")
        assert take(reader, 1) == ["new 3\n"]


def test_the_new_file_is_opened_in_the_handles_mode(tmp_path):
    path = tmp_path / "log"
    append(path, "café\n".encode("latin-1"), "wb")
    with open(path, encoding="latin-1") as handle, following(handle) as reader:
        assert take(reader, 1) == ["café\n"]
        os.rename(path, tmp_path / "log.1")
        append(path, "déjà\n".encode("latin-1"), "wb")
        assert take(reader, 1) == ["déjà\n"]
    append(path, b"x\n", "wb")
    with open(path, "rb") as handle, following(handle) as reader:
        assert take(reader, 1) == [b"x\n"]
        os.rename(path, tmp_path / "log.2")
        append(path, b"y\n", "wb")
        assert take(reader, 1) == [b"y\n"]


def test_closes_the_files_it_opens_not_the_callers(tmp_path):
    path = tmp_path / "log"
    append(path, "1\n")
    with open(path) as handle:
        with following(handle) as reader:
            assert take(reader, 1) == ["1\n"]
            os.rename(path, tmp_path / "log.1")
            append(path, "2\n")
            assert take(reader, 1) == ["2\n"]
            assert len(open_fds_to(path)) == 1              # the new file, opened here
        assert open_fds_to(path) == []                      # closed with the generator
        assert not handle.closed and open_fds_to(tmp_path / "log.1")


def test_handles_without_a_path_are_followed_like_tail_f(tmp_path):
    path = tmp_path / "log"
    append(path, "one\n")
    fd = os.open(path, os.O_RDONLY)
    with open(fd) as handle, following(handle) as reader:   # handle.name is an int
        assert take(reader, 1) == ["one\n"]
        os.truncate(path, 0)
        append(path, "2\n")                 # truncation is still noticed
        assert take(reader, 1) == ["2\n"]


# -- make_lines ----------------------------------------------------------------------------
def test_make_lines_is_the_same_reader(tmp_path):
    assert "make_lines" in workers.io.__all__
    path = tmp_path / "log"
    append(path, "1\n2\nlast")
    with open(path) as handle:
        assert list(make_lines(handle)) == ["1\n", "2\n", "last"]
    with pytest.raises(ValueError), open(path) as handle:
        next(make_lines(handle, follow=True, wait=0))
    with open(path) as handle, contextlib.closing(make_lines(handle, True, 0.02)) as reader:
        assert take(reader, 2) == ["1\n", "2\n"]
        os.rename(path, tmp_path / "log.1")
        append(tmp_path / "log.1", " line\n")
        append(path, "3\n")
        assert take(reader, 2) == ["last line\n", "3\n"]


# -- in a running pipeline -----------------------------------------------------------------
class Collected:
    """The lines the pipeline's last Piper has seen, in order (``worker``: that Piper's
    function)."""

    def __init__(self):
        self.lines = []

        def collect(inbox):
            self.lines.append(inbox[0])
        self.worker = collect

    def wait_for(self, count):
        deadline = time.monotonic() + DEADLINE
        while len(self.lines) < count:
            assert time.monotonic() < deadline, f"{len(self.lines)} of {count}: {self.lines}"
            time.sleep(0.01)


def passed(inbox):
    return inbox[0]


def lines(first, stop):
    return "".join(f"line {n}\n" for n in range(first, stop))


@pytest.mark.parametrize("parallel", ["linear", "thread", "process"])
def test_append_truncate_and_rotate_while_a_plumber_runs(tmp_path, parallel):
    path, collected = tmp_path / "log", Collected()
    # the default stride: a followed file needs no small one (load_file tells the feeder)
    imap = False if parallel == "linear" else IMap(worker_type=parallel, worker_num=2)
    plumber = Plumber()
    plumber.add_pipe((Piper(passed, parallel=imap), Piper(collected.worker)))
    append(path, lines(0, 10))
    with open(path) as handle:
        plumber.set_inputs([load_file(handle, follow=True, wait=0.02)])
        plumber.plunge()
        try:
            collected.wait_for(10)
            append(path, lines(10, 20))                         # appended
            collected.wait_for(20)
            shutil.copy(path, tmp_path / "log.1")               # copytruncate
            os.truncate(path, 0)
            append(path, lines(20, 23))                         # shorter than before
            collected.wait_for(23)
            append(path, lines(23, 30) + "line 30 half")        # and a partial line
            collected.wait_for(30)
            os.rename(path, tmp_path / "log.2")                 # rotation
            append(tmp_path / "log.2", " done\n" + lines(31, 35))   # the old file goes on
            append(path, lines(35, 40))                         # the new file
            collected.wait_for(40)
            append(path, lines(40, 50))
            collected.wait_for(50)
        finally:
            began = time.monotonic()
            plumber.chinkup()
            took = time.monotonic() - began
    expected = [f"line {n}\n" for n in range(50)]
    expected[30] = "line 30 half done\n"
    assert collected.lines == expected
    assert took < 2.0
