"""What ``papy run`` shows when items fail, and when its output is closed early (issue 17,
items 1 and 3), each through ``python -m papy run`` in a child process: the report on
stderr, the exit codes, ``--fail-fast``, ``-v``, and ``| head``."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GREP = ROOT / "papy" / "templates" / "grep.py"
ENV = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
DEADLINE = 60           # seconds: a hang guard only

PIPELINE = """
    import itertools
    from papy import IMap, Piper, Plumber

    def parse(inbox):
        return int(inbox[0])

    def double(inbox):
        return inbox[0] * 2

    def pipeline():
        imap = IMap(worker_type="process", worker_num=2)
        plumber = Plumber()
        plumber.add_pipe((Piper(parse, parallel=imap), Piper(double, parallel=imap),
                          Piper(double)))
        return plumber
"""


def module(folder: Path, inputs: str) -> str:
    path = folder / "pipeline.py"
    path.write_text(textwrap.dedent(PIPELINE) + textwrap.dedent(inputs), encoding="utf-8")
    return str(path)


def papy_run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "papy", "run", *args], capture_output=True,
                          text=True, cwd=cwd, env=ENV, timeout=DEADLINE)


def test_failed_items_are_reported_by_piper_and_type_with_a_traceback_and_exit_3(tmp_path):
    path = module(tmp_path, """
        def inputs():
            return [["1", "x", "3", "y", "5"]]
    """)
    done = papy_run(path, "--progress", "off", cwd=tmp_path)
    assert done.returncode == 3, done.stderr
    err = done.stderr
    assert "papy: 2 input items failed (of 5 taken from the inputs)" in err
    assert "  piper 'parse': ValueError: 2 items; the first, item 1, inbox ['x']:" in err
    assert f'File "{path}", line 6, in parse' in err                # the worker's traceback
    assert "    ValueError: invalid literal for int() with base 10: 'x'" in err
    table = err[err.index("papy run: 3 pipers"):]
    assert "  parse " in table and "double_2" in table and "piper_" not in table
    assert "failed: 2; error items: 6" in table


def test_fail_fast_stops_an_endless_input_at_the_first_failed_item(tmp_path):
    path = module(tmp_path, """
        def inputs():
            return [(str(n) if n != 100 else "bad" for n in itertools.count())]
    """)
    done = papy_run(path, "--fail-fast", "--quiet", cwd=tmp_path)
    assert done.returncode == 3, done.stderr
    lines = done.stderr.splitlines()
    assert lines[0] == ("papy: stopped at the first failed item (fail fast): piper 'parse' "
                        "failed on item 100 (inbox ['bad']): ValueError: invalid literal for "
                        "int() with base 10: 'bad'")
    assert lines[1] == "    Traceback (most recent call last):"
    assert "input items failed" not in done.stderr            # no second report


def test_verbose_shows_each_failed_item_as_it_fails(tmp_path):
    path = module(tmp_path, """
        def inputs():
            return [["x", "2", "y"]]
    """)
    done = papy_run(path, "-v", "--quiet", cwd=tmp_path)
    assert done.returncode == 3
    assert done.stderr.count("papy: piper 'parse' failed on item") == 2
    assert "papy: piper 'parse' failed on item 2 (inbox ['y'])" in done.stderr


def test_a_run_that_fails_still_exits_1(tmp_path):
    path = module(tmp_path, """
        def inputs():
            def numbers():
                yield "1"
                raise OSError("the disk is gone")
            return [numbers()]
    """)
    done = papy_run(path, "--quiet", cwd=tmp_path)
    assert done.returncode == 1
    assert "papy: the pipeline failed: OSError: the disk is gone" in done.stderr


def test_head_closing_the_output_of_a_followed_file_ends_the_run_with_exit_0(tmp_path):
    """grep FILE | head: once head has its lines and exits, the next line papy writes meets
    a broken pipe; the run stops there (no flood of error items, no traceback), exit 0."""
    log = tmp_path / "growing.log"
    log.write_text("".join(f"papy {n}\n" for n in range(5)))
    child = subprocess.Popen(
        [sys.executable, "-m", "papy", "run", str(GREP), str(log), "papy", "--progress",
         "off"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
        env=ENV)
    try:
        assert child.stdout.readline() == "papy 0\n"              # it runs, and follows
        child.stdout.close()                                       # head has had enough
        deadline = time.monotonic() + DEADLINE
        with open(log, "a", encoding="utf-8") as writer:
            while child.poll() is None and time.monotonic() < deadline:
                writer.write("papy again\n")                       # papy writes; EPIPE
                writer.flush()
                time.sleep(0.05)
        err = child.stderr.read()
        child.wait(DEADLINE)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stderr.close()
    assert child.returncode == 0, err
    assert "the output was closed (a broken pipe at piper 'write'): the run stopped early" in err
    for noise in ("Traceback", "Exception ignored", "items failed", "pipeline failed"):
        assert noise not in err, err


def test_head_on_a_big_file_stops_early_without_errors(tmp_path):
    big = tmp_path / "big.txt"
    big.write_text("".join(f"papy line {n}\n" for n in range(200_000)))
    script = (f"set -o pipefail; {sys.executable} -m papy run {GREP} {big} papy --no-follow "
              f"--progress off 2>err.txt | head -n 2")
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, cwd=tmp_path,
                          env=ENV, timeout=DEADLINE)
    err = (tmp_path / "err.txt").read_text()
    assert done.returncode == 0, err
    assert done.stdout == "papy line 0\npapy line 1\n"
    assert "Traceback" not in err and "Exception ignored" not in err
    taken = int(err.split("items: ")[1].split(" taken")[0])
    assert taken < 200_000 or "the output was closed" not in err   # it stopped reading
