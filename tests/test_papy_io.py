"""workers.io: print_ and load_file (plain and follow mode)."""
import io
import threading

import pytest

from papy import Piper, Plumber, workers
from papy._runtime import Feed, RunContext, current_stop_event


def test_print_(capsys):
    assert workers.io.print_(["hello"]) is None
    assert workers.io.print_([42, "ignored"]) is None
    assert capsys.readouterr().out == "hello\n42\n"


def test_load_file_text_and_bytes():
    lines = list(workers.io.load_file(io.StringIO("a\nb\nlast")))
    assert lines == ["a\n", "b\n", "last"]
    assert list(workers.io.load_file(io.BytesIO(b"x\ny\n"))) == [b"x\n", b"y\n"]
    assert list(workers.io.load_file(io.StringIO(""))) == []


def test_load_file_rejects_a_bad_wait():
    with pytest.raises(ValueError):
        next(workers.io.load_file(io.StringIO("a\n"), follow=True, wait=0))


def test_follow_joins_a_partial_line_and_ends_on_the_stop_event(tmp_path):
    path = tmp_path / "grows"
    path.write_bytes(b"one\ntw")
    context = RunContext("test")
    with open(path, "rb") as handle:
        feed = Feed(workers.io.load_file(handle, follow=True, wait=0.05), context)
        assert next(feed) == b"one\n"
        with open(path, "ab") as growing:
            growing.write(b"o\nthree\n")
        assert next(feed) == b"two\n"
        assert next(feed) == b"three\n"
        timer = threading.Timer(0.2, context.request_stop)
        timer.start()
        with pytest.raises(StopIteration):  # waits for data until the stop
            next(feed)
        timer.join()
    assert feed.taken == 3


def test_the_stop_event_is_seen_only_inside_a_feed():
    seen = []

    def probe():
        seen.append(current_stop_event())
        yield 1

    context = RunContext("test")
    assert next(Feed(probe(), context)) == 1
    assert seen == [context.stop_event]
    assert current_stop_event() is None


def test_load_file_as_a_pipeline_input(tmp_path, capsys):
    path = tmp_path / "lines.txt"
    path.write_text("alpha\nbeta\n")
    plumber = Plumber()
    plumber.add_pipe((Piper(strip), Piper(workers.io.print_)))
    with open(path) as handle:
        plumber.start([workers.io.load_file(handle)])
        plumber.run()
        plumber.wait()
        plumber.pause()
        plumber.stop()
    assert capsys.readouterr().out == "alpha\nbeta\n"


def strip(inbox):
    return inbox[0].rstrip("\n")
