"""Count words in a folder of text files: a fan-out and a join.

    file paths --> [read] --+--> [words]  (branch 1) --+--> [merge] --> report
                            +--> [lines]  (branch 2) --+
                   '------- one IMap -------'            linear: adds to the totals

``read`` opens a file and returns its text; ``words`` counts each word of it, ``lines``
counts its lines and characters (the fan-out: both read every text); ``merge`` joins the two
results of the same file (inbox[0] from ``words``, inbox[1] from ``lines``, in branch order)
and adds them to a ``Totals``: counts per word over all files, and per file.

    python -m papy run papy/templates/wordcount.py                 # demo files in a temp folder
    python -m papy run papy/templates/wordcount.py docs --glob '*.md' --top 15
    python -m papy run papy/templates/wordcount.py --help

Edit the functions, keep the inbox convention: a function gets ``inbox`` (one element per
upstream Piper) and returns one value. Functions run in worker processes: they must not
rely on state of this process (``merge`` is linear, it runs here and may).
"""
from __future__ import annotations

import argparse
import collections
import os
import re
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple, TextIO

from papy import (
    IMap, Piper, Plumber, Worker, add_run_options, imports, run_options, run_plumber)

WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)*")     # letters, with inner apostrophes

# -- 1. the functions (inbox convention) ------------------------------------------------


def read(inbox: Sequence[str]) -> tuple[str, str]:
    """A file path -> (path, text)."""
    path = inbox[0]
    with open(path, encoding="utf-8", errors="replace") as handle:
        return path, handle.read()


@imports(["re", "collections"])  # what a worker on another host must import
def words(inbox: Sequence[tuple[str, str]]) -> tuple[str, dict[str, int]]:
    """(path, text) -> (path, {word: count}); words are lower-cased."""
    path, text = inbox[0]
    return path, dict(collections.Counter(m.lower() for m in WORD.findall(text)))


def lines(inbox: Sequence[tuple[str, str]]) -> tuple[str, int, int]:
    """(path, text) -> (path, lines, characters)."""
    path, text = inbox[0]
    return path, text.count("\n") + (not text.endswith("\n") and bool(text)), len(text)


class Totals:
    """What ``merge`` adds up: ``words`` (all files), ``files`` ({path: FileCount})."""

    def __init__(self) -> None:
        self.words: collections.Counter[str] = collections.Counter()
        self.files: dict[str, FileCount] = {}


class FileCount(NamedTuple):
    """The counts of one file."""
    words: int
    distinct: int
    lines: int
    chars: int
    top: str


def merge(inbox: Sequence[Any], totals: Totals) -> FileCount:
    """[(path, counts), (path, lines, chars)] -> the file's FileCount, added to ``totals``."""
    (path, counts), (same_path, line_count, chars) = inbox
    if path != same_path:        # the join pairs items by position: this would be a bug
        raise ValueError(f"join out of step: {path!r} and {same_path!r}")
    top = max(counts.items(), key=lambda kv: (kv[1], kv[0]))[0] if counts else ""
    record = FileCount(sum(counts.values()), len(counts), line_count, chars, top)
    totals.words.update(counts)
    totals.files[path] = record
    return record


# -- 2. the pipeline ---------------------------------------------------------------------


def pipeline(imap: IMap[Any] | None = None, totals: Totals | None = None) -> Plumber:
    """The word-count Plumber: ``read``, ``words`` and ``lines`` on ``imap`` (default: a
    process pool with one worker per CPU), ``merge`` linear into ``totals``."""
    imap = imap if imap is not None else IMap(worker_type="process")
    totals = totals if totals is not None else Totals()
    reader = Piper(read, parallel=imap, name="read")
    counter = Piper(words, parallel=imap, name="words", branch=1)
    liner = Piper(lines, parallel=imap, name="lines", branch=2)
    merger = Piper(Worker(merge, (totals,)), name="merge")
    plumber = Plumber()
    plumber.add_pipe((reader, counter, merger))
    plumber.add_pipe((reader, liner, merger))
    return plumber


# -- 3. inputs, options, run -------------------------------------------------------------

DEMO_FILES = {
    "seed.txt": "PaPy is a framework to construct and execute pipelines of arbitrary tasks\n"
                "in parallel, locally with processes or threads, or remotely with RPyC.\n",
    "pipes.txt": "A pipeline is a graph of Pipers joined by pipes.\nA Piper evaluates a "
                 "Worker; a Worker composes functions.\nPipers run on IMaps: pools of "
                 "threads, processes or remote workers.\n",
    "stride.txt": "The stride is how many items of one task go to the workers before the "
                  "next task.\nThe buffer bounds how many items are in flight.\n",
}


def write_demo(folder: str) -> list[str]:
    """Write the demo texts into ``folder``; return their paths."""
    paths = []
    for name, text in DEMO_FILES.items():
        path = os.path.join(folder, name)
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text)
        paths.append(path)
    return paths


def find_files(folder: str, glob: str) -> list[str]:
    """The files under ``folder`` matching ``glob`` (recursively), sorted."""
    return sorted(str(p) for p in Path(folder).rglob(glob) if p.is_file())


def report(totals: Totals, top: int, root: str | None = None, out: TextIO = sys.stdout
           ) -> None:
    """Print the counts per file, then the ``top`` most frequent words."""
    names = {p: os.path.relpath(p, root) if root else p for p in totals.files}
    width = max([4] + [len(n) for n in names.values()])
    out.write(f"{'file':<{width}} {'words':>7} {'distinct':>8} {'lines':>6}  top word\n")
    for path, c in sorted(totals.files.items()):
        out.write(f"{names[path]:<{width}} {c.words:>7} {c.distinct:>8} {c.lines:>6}  "
                  f"{c.top}\n")
    out.write(f"\n{sum(totals.words.values())} words, {len(totals.words)} distinct; "
              f"the {top} most frequent:\n")
    for word, count in sorted(totals.words.items(), key=lambda kv: (-kv[1], kv[0]))[:top]:
        out.write(f"  {count:>6}  {word}\n")
    out.flush()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="wordcount", description="Count words per file and over all files of a folder "
        "(a fan-out and a join). Without FOLDER: a few demo files in a temporary folder.")
    parser.add_argument("folder", nargs="?", metavar="FOLDER", help="folder to read")
    parser.add_argument("--glob", default="*.txt", help="file name pattern, searched "
                        "recursively (default *.txt)")
    parser.add_argument("--top", type=int, default=10, help="most frequent words to show")
    parser.add_argument("--workers", type=int, default=None,
                        help="local workers (default: one per CPU)")
    parser.add_argument("--worker-type", choices=("process", "thread"), default="process")
    return add_run_options(parser).parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="papy-wordcount-") as scratch:
        if args.folder is None:
            root, paths = scratch, write_demo(scratch)
            print(f"no FOLDER given: counting {len(paths)} demo files in {scratch}",
                  file=sys.stderr)
        else:
            if not os.path.isdir(args.folder):
                print(f"wordcount: no such folder: {args.folder!r}", file=sys.stderr)
                return 2
            root, paths = args.folder, find_files(args.folder, args.glob)
            if not paths:
                print(f"wordcount: no file matches {args.glob!r} under {args.folder!r} "
                      f"(try --glob '*.md')", file=sys.stderr)
                return 2
        totals = Totals()
        imap = IMap(worker_type=args.worker_type, worker_num=args.workers)
        status = run_plumber(pipeline(imap, totals), [paths], **run_options(args))
        report(totals, args.top, root)
    return status


if __name__ == "__main__":
    sys.exit(main())
