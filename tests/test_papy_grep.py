"""The seed's example, in Python 3: grep a file that grows while the pipeline runs.

    grepper = Piper(Worker(grep, ('papy',)), parallel=IMap(process, 2))  ->  Piper(print_)
    pipes.set_inputs([workers.io.load_file(handle, follow=True)]); pipes.plunge()
    ... lines are appended ...;  pipes.chinkup()

A tail -f input trickles, so the IMap gets a small stride: with the default stride the feeder
would gather a long batch of lines before evaluating any.
"""
import time

import pytest

from papy import IMap, Piper, Plumber, Worker, imports, workers

DEADLINE = 30.0         # only against hangs


@imports(["re"])
def grep(inbox, pattern):
    """Searches the line for pattern; None if it is not found."""
    if re.search(pattern, inbox[0]):    # noqa: F821 - bound by @imports
        return inbox[0]


def pipeline(imap):
    grepper = Piper(Worker(grep, ("papy",)), parallel=imap)
    printer = Piper(workers.io.print_)
    pipes = Plumber()
    pipes.add_pipe((grepper, printer))
    return pipes


class Output:
    """Everything printed so far (capsys hands out only what is new)."""

    def __init__(self, capsys):
        self.capsys, self.lines = capsys, []

    def wait_for(self, expected: list) -> None:
        deadline = time.monotonic() + DEADLINE
        while not all(line in self.lines for line in expected):
            assert time.monotonic() < deadline, f"still missing: {expected}, got {self.lines}"
            self.lines += self.capsys.readouterr().out.splitlines()
            time.sleep(0.02)

    def final(self) -> list:
        self.lines += self.capsys.readouterr().out.splitlines()
        return self.lines


def append(path, lines):
    with open(path, "a") as handle:
        handle.writelines(line + "\n" for line in lines)


def text(n):
    return f"line {n} papy" if n % 3 == 0 else f"line {n} other"


@pytest.mark.parametrize("worker_type", ["process", "thread"])
def test_grep_a_growing_file(tmp_path, capsys, worker_type):
    path = tmp_path / "input_file"
    append(path, [text(n) for n in range(5)])
    output = Output(capsys)
    imap = IMap(worker_type=worker_type, worker_num=2, stride=2)
    with open(path) as handle:
        pipes = pipeline(imap)
        pipes.set_inputs([workers.io.load_file(handle, follow=True)])
        pipes.plunge()
        try:
            output.wait_for([text(0), text(3)])
            for chunk in range(4):                      # the file grows, in four appends
                append(path, [text(n) for n in range(5 + 10 * chunk, 15 + 10 * chunk)])
                output.wait_for([text(n) for n in range(10 * chunk + 5, 15 + 10 * chunk)
                                 if n % 3 == 0])
        finally:
            began = time.monotonic()
            pipes.chinkup()
            took = time.monotonic() - began
    assert took < 2.0
    lines = [line for line in output.final() if line]   # lines keep their newline: blanks
    matching = [text(n) for n in range(45) if n % 3 == 0]
    assert sorted(line for line in lines if line != "None") == sorted(matching)
    assert all(lines.count(line) == 1 for line in matching)
    assert lines.count("None") == 45 - len(matching)
    assert not imap.started


def test_chinkup_does_not_wait_for_the_follow_interval(tmp_path, capsys):
    path = tmp_path / "input_file"
    append(path, ["one papy"])
    output = Output(capsys)
    with IMap(worker_type="thread", worker_num=2, stride=2) as imap, open(path) as handle:
        pipes = pipeline(imap)
        pipes.set_inputs([workers.io.load_file(handle, follow=True, wait=60)])
        pipes.plunge()
        output.wait_for(["one papy"])
        began = time.monotonic()
        pipes.chinkup()
        assert time.monotonic() - began < 2.0


def test_a_partial_line_waits_for_its_newline(tmp_path, capsys):
    path = tmp_path / "input_file"
    append(path, ["first papy"])
    output = Output(capsys)
    with IMap(worker_type="thread", worker_num=2, stride=2) as imap, open(path) as handle:
        pipes = pipeline(imap)
        pipes.set_inputs([workers.io.load_file(handle, follow=True)])
        pipes.plunge()
        try:
            output.wait_for(["first papy"])
            with open(path, "a") as growing:
                growing.write("second pa")
                growing.flush()
                time.sleep(0.3)                 # (a missed partial line would show here)
                assert not any(line.startswith("second") for line in output.final())
                growing.write("py\n")
            output.wait_for(["second papy"])
        finally:
            pipes.chinkup()
    assert output.final().count("second papy") == 1


def test_pause_and_stop_while_the_input_waits_for_data(tmp_path, capsys):
    path = tmp_path / "input_file"
    append(path, ["first papy"])
    output = Output(capsys)
    with IMap(worker_type="thread", worker_num=2, stride=2) as imap, open(path) as handle:
        pipes = pipeline(imap)
        pipes.start([workers.io.load_file(handle, follow=True)])
        pipes.run()
        output.wait_for(["first papy"])
        began = time.monotonic()
        pipes.pause()                   # the plunger waits inside the input: no waiting here
        assert time.monotonic() - began < 2.0 and pipes.state.value == "paused"
        pipes.run()                     # the same reader goes on
        append(path, ["second papy"])
        output.wait_for(["second papy"])
        pipes.pause()
        began = time.monotonic()
        pipes.stop()
        assert time.monotonic() - began < 2.0
    assert [line for line in output.final() if "papy" in line] == ["first papy", "second papy"]
