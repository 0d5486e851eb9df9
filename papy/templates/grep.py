"""Follow a growing file like ``tail -f`` and print the lines that match a pattern.

    load_file(handle, follow=True) --> [grep] --> [write] --> stdout
                                       on an IMap   linear

``load_file(..., follow=True)`` (papy.workers.io) yields each line appended to the file, and
never ends by itself: Ctrl-C (or ``plumber.chinkup()`` from code) stops the pipeline
gracefully: the lines already read are still grepped and printed, then every thread and
worker is joined. This is the original PaPy's example pipeline.

    python -m papy run papy/templates/grep.py FILE PATTERN          # follow FILE; Ctrl-C ends
    python -m papy run papy/templates/grep.py FILE PATTERN --no-follow
    python -m papy run papy/templates/grep.py                       # demo on a temporary file

Edit ``grep`` (inbox convention: the line is ``inbox[0]``; return the line to keep it or
None to drop it) and ``write`` (the output Piper: it runs in this process).
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import threading
from collections.abc import Sequence
from typing import Any, Protocol

from papy import (
    IMap, Piper, Plumber, Worker, add_run_options, imports, run_options, run_plumber,
    summary)
from papy.workers.io import load_file

# -- 1. the functions (inbox convention) ------------------------------------------------


class Output(Protocol):
    """Where ``write`` puts the kept lines: a text file such as ``sys.stdout``."""

    def write(self, text: str, /) -> object: ...

    def flush(self) -> object: ...


@imports(["re"])  # what a worker on another host must import
def grep(inbox: Sequence[str], pattern: str) -> str | None:
    """The line if it matches the regular expression ``pattern``, else None."""
    line = inbox[0]
    return line if re.search(pattern, line) else None


def write(inbox: Sequence[str | None], out: Output) -> str | None:
    """Write a kept line to ``out`` (a linear Piper: ``out`` stays in this process)."""
    line = inbox[0]
    if line is not None:
        out.write(line if line.endswith("\n") else line + "\n")
        out.flush()
    return line


# -- 2. the pipeline ---------------------------------------------------------------------


def pipeline(pattern: str = "papy", imap: IMap[Any] | None = None, out: Output | None = None
             ) -> Plumber:
    """grep on ``imap`` (default: 2 worker processes), then ``write`` to ``out`` (stdout).

    The IMap keeps its default ``stride``, also for a followed file: ``load_file`` is woken
    by the kernel when a line is written and tells the IMap before it waits, so each line
    goes to a worker as soon as it is read (a small stride would only cost throughput)."""
    imap = imap if imap is not None else IMap(worker_type="process", worker_num=2)
    out = out if out is not None else sys.stdout
    grepper = Piper(Worker(grep, (pattern,)), parallel=imap, name="grep")
    printer = Piper(Worker(write, (out,)), name="write")
    plumber = Plumber()
    plumber.add_pipe((grepper, printer))
    return plumber


# -- 3. inputs, options, run -------------------------------------------------------------

DEMO_LINES = ["starting the demo\n", "papy follows this file\n", "a line without it\n",
              "papy prints the matching lines\n", "and drops the others\n",
              "last papy line of the demo\n"]


class _Watch:
    """The demo's ``out``: writes through, and sets ``seen`` at the demo's last line."""

    def __init__(self, out: Output, last: str) -> None:
        self.out, self.last, self.seen = out, last, threading.Event()

    def write(self, text: str) -> None:
        self.out.write(text)
        if text == self.last:
            self.seen.set()

    def flush(self) -> None:
        self.out.flush()


def demo(pattern: str, imap: IMap[Any] | None, delay: float = 0.2, out: Output | None = None,
         stream: Output | None = None) -> int:
    """Follow a temporary file while this thread appends DEMO_LINES to it; stop with
    ``chinkup()`` once the last matching line was printed (the seed's sequence)."""
    out = out if out is not None else sys.stdout
    stream = stream if stream is not None else sys.stderr
    watch = _Watch(out, DEMO_LINES[-1])
    with tempfile.TemporaryDirectory(prefix="papy-grep-") as folder:
        path = os.path.join(folder, "growing.log")
        stream.write(f"no FILE given: following {path} while this demo appends lines\n")
        with open(path, "w", encoding="utf-8") as writer, \
                open(path, encoding="utf-8") as reader:
            plumber = pipeline(pattern, imap, watch)
            plumber.set_inputs([load_file(reader, follow=True)])
            plumber.plunge()                   # runs in the background from here on
            try:
                for line in DEMO_LINES:        # the file grows while papy follows it
                    writer.write(line)
                    writer.flush()
                    watch.seen.wait(delay)
                if not watch.seen.wait(60):
                    stream.write("grep demo: the last line did not come through in 60 s\n")
            finally:
                plumber.chinkup()              # graceful: joins every thread and worker
    stream.write(summary(plumber, "papy grep demo") + "\n")
    return 0 if watch.seen.is_set() else 1


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="grep", description="Print the lines of FILE that match PATTERN (a regular "
        "expression), following FILE as it grows like tail -f; Ctrl-C ends. Without FILE: "
        "a demo on a temporary file.")
    parser.add_argument("file", nargs="?", metavar="FILE", help="file to follow")
    parser.add_argument("pattern", nargs="?", default="papy", metavar="PATTERN",
                        help="regular expression (default: papy)")
    parser.add_argument("--no-follow", action="store_true",
                        help="read FILE to its end and stop (like grep, not tail -f)")
    parser.add_argument("--workers", type=int, default=2, help="worker threads or processes")
    parser.add_argument("--worker-type", choices=("process", "thread"), default="process")
    return add_run_options(parser, progress="log").parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    imap = IMap(worker_type=args.worker_type, worker_num=args.workers)
    if args.file is None:
        return demo(args.pattern, imap)
    try:
        handle = open(args.file, encoding="utf-8", errors="replace")
    except OSError as exc:
        print(f"grep: cannot open {args.file!r}: {exc.strerror}", file=sys.stderr)
        return 2
    with handle:
        lines = load_file(handle, follow=not args.no_follow)
        return run_plumber(pipeline(args.pattern, imap), [lines], **run_options(args))


if __name__ == "__main__":
    sys.exit(main())
