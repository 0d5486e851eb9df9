"""The papy command (papy.cli): every sub-command, its --help, its exit codes; the live
progress display and the final summary (papy._progress).

Most tests call ``papy.cli.main(argv)`` in this process; the ones about signals, the
``python -m papy`` entry and the server run a child interpreter.
"""
from __future__ import annotations

import io
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import types
from pathlib import Path

import pytest

from papy import IMap, Piper, Plumber, Worker
from papy import cli
from papy._progress import Progress, expected_totals, figures, summary

ROOT = Path(__file__).resolve().parent.parent
ENV = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))


def write(folder: Path, name: str, *parts: str) -> str:
    path = folder / name
    path.write_text("\n".join(textwrap.dedent(part) for part in parts), encoding="utf-8")
    return str(path)


PIPELINE = """
    from papy import IMap, Piper, Plumber, Worker

    def double(inbox):
        return inbox[0] * 2

    def fail_on_3(inbox):
        if inbox[0] == 6:
            raise ValueError("six")
        return inbox[0]

    def keep(inbox, out):
        out.append(inbox[0])
        return inbox[0]

    RESULTS = []

    def pipeline(fail=False):
        imap = IMap(worker_type="thread", worker_num=2)
        first = Piper(double, parallel=imap, name="double")
        second = Piper(fail_on_3 if fail else double, parallel=imap, name="second")
        plumber = Plumber()
        plumber.add_pipe((first, second, Piper(Worker(keep, (RESULTS,)), name="keep")))
        return plumber
"""



@pytest.fixture(autouse=True)
def _restore_sys_path(monkeypatch):
    """load_module puts a module's folder first on sys.path (as python FILE does)."""
    monkeypatch.setattr(sys, "path", list(sys.path))

# -- the command line ---------------------------------------------------------------------

@pytest.mark.parametrize("argv", [["--help"], ["new", "--help"], ["run", "--help"],
                                  ["graph", "--help"], ["serve", "--help"]])
def test_help_everywhere(argv, capsys):
    assert cli.main(argv) == 0
    assert "usage:" in capsys.readouterr().out


def test_usage_errors_exit_2(capsys):
    assert cli.main([]) == 2
    assert cli.main(["frobnicate"]) == 2
    assert cli.main(["graph"]) == 2
    assert cli.main(["serve", "--no-such-option"]) == 2
    assert "usage:" in capsys.readouterr().err


def test_version(capsys):
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("papy ")


def test_python_dash_m_papy_is_the_command(tmp_path):
    done = subprocess.run([sys.executable, "-m", "papy", "new", "--list"], cwd=tmp_path,
                          env=ENV, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.split() == ["grep", "psc", "remote",
                                                             "wordcount"]


# -- papy new -----------------------------------------------------------------------------

def test_new_writes_a_runnable_file_from_a_template(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["new", "mygrep", "--template", "grep"]) == 0
    made = tmp_path / "mygrep.py"
    text = made.read_text()
    assert text.startswith("# mygrep.py: a papy pipeline made by 'papy new'")
    assert text.endswith((ROOT / "papy" / "templates" / "grep.py").read_text())
    compile(text, str(made), "exec")
    assert "python -m papy run mygrep.py" in capsys.readouterr().out
    module = cli.load_module(made)
    assert isinstance(module.pipeline(), Plumber)


def test_new_refuses_what_it_cannot_do(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["new", "x.py"]) == 0                                  # default: grep
    assert cli.main(["new", "x.py"]) == 2                                  # exists
    assert "exists" in capsys.readouterr().err
    assert cli.main(["new", "x.py", "--force", "--template", "psc"]) == 0
    assert "produce / spawn / consume" in (tmp_path / "x.py").read_text()
    assert cli.main(["new", "y", "--template", "nope"]) == 2
    assert cli.main(["new", "no/such/dir/z"]) == 2
    assert cli.main(["new"]) == 2
    err = capsys.readouterr().err
    assert "no template 'nope'; choose one of grep, psc, remote, wordcount" in err
    assert "no such folder" in err and "needs a NAME" in err


# -- papy run -----------------------------------------------------------------------------

def test_run_calls_main_with_the_arguments_and_returns_its_status(tmp_path):
    path = write(tmp_path, "m.py", """
        def main(argv):
            return int(argv[0]) if argv else None
    """)
    assert cli.main(["run", path]) == 0
    assert cli.main(["run", path, "7"]) == 7
    exits = write(tmp_path, "e.py", "import sys\ndef main(argv):\n    sys.exit(3)\n")
    assert cli.main(["run", exits]) == 3


def test_run_pipeline_with_inputs(tmp_path, capsys):
    path = write(tmp_path, "p.py", PIPELINE, "def inputs():\n    return [range(5)]\n")
    assert cli.main(["run", path, "--progress", "log", "--interval", "5"]) == 0
    err = capsys.readouterr().err
    assert re.search(r"papy done: keep: 5 out", err)
    assert re.search(r"^\s+double\s+5\s+5\s+0\s", err, re.M)
    assert "items: 5 taken from the inputs; failed: 0; error items: 0" in err


def test_run_pipeline_on_input_files(tmp_path, capsys):
    path = write(tmp_path, "p.py", PIPELINE)
    data = write(tmp_path, "data.txt", "a\nbc\n")
    assert cli.main(["run", path, "--input", data, "--quiet"]) == 0
    assert capsys.readouterr().err == ""
    assert cli.main(["run", path, "--input", str(tmp_path / "missing")]) == 2
    assert cli.main(["run", path]) == 2                            # no inputs at all
    assert "no main() and no inputs()" in capsys.readouterr().err


def test_run_exit_3_when_items_fail_and_1_when_the_run_fails(tmp_path, capsys):
    failing = write(tmp_path, "f.py", PIPELINE, """
        _make = pipeline
        def pipeline():
            return _make(fail=True)
        def inputs():
            return [range(5)]
    """)
    assert cli.main(["run", failing, "--progress", "off"]) == cli.EXIT_ITEMS_FAILED == 3
    err = capsys.readouterr().err
    assert "papy: 1 input item failed (of 5 taken from the inputs)" in err
    assert re.search(r"^\s+second\s+5\s+5\s+1\s+1\s", err, re.M)     # failed, errors
    assert re.search(r"^\s+keep\s+5\s+5\s+0\s+1\s", err, re.M)       # passed it on
    raising = write(tmp_path, "r.py", PIPELINE, """
        def inputs():
            def numbers():
                yield 1
                raise OSError("the disk is gone")
            return [numbers()]
    """)
    assert cli.main(["run", raising, "--quiet"]) == 1
    assert "the pipeline failed: OSError: the disk is gone" in capsys.readouterr().err


def test_run_refuses_files_it_cannot_run(tmp_path, capsys):
    assert cli.main(["run", str(tmp_path / "missing.py")]) == 2
    assert cli.main(["run", write(tmp_path, "t.txt", "x")]) == 2
    assert cli.main(["run", write(tmp_path, "s.py", "def (:\n")]) == 2
    assert cli.main(["run", write(tmp_path, "n.py", "x = 1\n")]) == 2
    assert cli.main(["run", write(tmp_path, "a.py", "def pipeline(x):\n    pass\n")]) == 2
    assert cli.main(["run", write(tmp_path, "w.py", "def pipeline():\n    return 1\n")]) == 2
    err = capsys.readouterr().err
    for text in ("no such file", "not a Python file", "SyntaxError", "no pipeline()",
                 "cannot be called without arguments", "it must return a Plumber"):
        assert text in err


def test_run_a_module_written_by_save(tmp_path, capsys):
    source = cli.load_module(write(tmp_path, "p.py", PIPELINE))
    saved = str(tmp_path / "saved.py")
    source.pipeline().save(saved)
    data = write(tmp_path, "data.txt", "x\ny\n")
    assert cli.main(["run", saved, "--input", data, "--progress", "off"]) == 0
    assert "items: 2 taken from the inputs" in capsys.readouterr().err


def test_loaded_functions_run_in_worker_processes(tmp_path):
    """load_module leaves no trace in sys.modules, so functions travel by value."""
    module = cli.load_module(write(tmp_path, "p.py", PIPELINE))
    assert module.__name__ not in sys.modules
    imap = IMap(worker_type="process", worker_num=2)
    out = []
    plumber = Plumber()
    plumber.add_pipe((Piper(module.double, parallel=imap), Piper(Worker(module.keep, (out,)))))
    assert cli.run_plumber(plumber, [range(4)], progress="off", show_summary=False) == 0
    assert out == [0, 2, 4, 6]


INFINITE = """
    import itertools, sys

    def shout(inbox):
        print("item", inbox[0], flush=True)
        return inbox[0]

    def pipeline():
        plumber = Plumber()
        plumber.add_pipe((Piper(double, parallel=IMap(worker_type="process", worker_num=1,
                                                      stride=1)), Piper(shout)))
        return plumber

    def inputs():
        return [itertools.count()]
"""


def test_run_ctrl_c_stops_gracefully_with_130(tmp_path):
    path = write(tmp_path, "inf.py", PIPELINE, INFINITE)
    boot = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
            "from papy.cli import main; sys.exit(main(sys.argv[1:]))")
    child = subprocess.Popen([sys.executable, "-c", boot, "run", path, "--progress", "off"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=ENV, cwd=tmp_path)
    try:
        assert child.stdout.readline() == "item 0\n"
        child.send_signal(signal.SIGINT)
        # read on through the same buffered reader: readline() may have buffered more
        # lines than it returned (communicate() would read past them)
        out = child.stdout.read()
        err = child.stderr.read()
        child.wait(timeout=60)
        child.stdout.close()
        child.stderr.close()
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
    assert child.returncode == 130, err
    taken = int(re.search(r"items: (\d+) taken", err).group(1))
    assert len(out.splitlines()) + 1 == taken          # every item taken was printed


# -- papy graph ---------------------------------------------------------------------------

GRAPH = """
    from papy import IMap, Piper, Plumber

    def f(inbox):
        return inbox

    def pipeline():
        shared = IMap(worker_type="thread", worker_num=3, name="pool")
        source = Piper(f, parallel=shared, name="source")
        left = Piper(f, parallel=shared, name='left "L"', branch=1)
        right = Piper(f, name="right", branch=2, produce=2)
        join = Piper(f, name="join")
        plumber = Plumber()
        plumber.add_pipe((source, left, join))
        plumber.add_pipe((source, right, join))
        return plumber
"""


def test_graph_dot(tmp_path, capsys):
    assert cli.main(["graph", write(tmp_path, "g.py", GRAPH)]) == 0
    dot = capsys.readouterr().out
    assert dot.startswith("digraph papy {") and dot.rstrip().endswith("}")
    assert 'p1 [label="left \\"L\\"\\nf()"];' in dot
    assert 'p2 [label="right\\nf()\\nproduce=2\\nlinear"];' in dot
    assert 'label="IMap pool: 3 threads"' in dot and "p0; p1;" in dot
    assert "in0 -> p0;" in dot and "p0 -> p1;" in dot and "p0 -> p2;" in dot
    assert 'p1 -> p3 [label="inbox[0]"];' in dot and 'p2 -> p3 [label="inbox[1]"];' in dot


def test_graph_of_default_names_names_each_function_once():
    plumber = Plumber()
    plumber.add_pipe((Piper(double_it), Piper(double_it, parallel=IMap(worker_type="thread",
                                                                      worker_num=1))))
    dot = cli.graph_text(plumber)
    assert 'p0 [label="double_it\\nlinear"];' in dot
    assert 'p1 [label="double_it_2"];' in dot


def double_it(inbox):
    return inbox[0] * 2


def test_graph_mermaid(tmp_path, capsys):
    assert cli.main(["graph", write(tmp_path, "g.py", GRAPH), "--format", "mermaid"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("flowchart TD\n")
    assert '  subgraph imap0 ["IMap pool: 3 threads"]' in text
    assert '    p1["left #quot;L#quot;<br/>f()"]' in text
    assert '  p1 -->|"inbox[0]"| p3' in text and "  in0 --> p0" in text


def test_graph_png_with_and_without_graphviz(tmp_path, capsys, monkeypatch):
    path = write(tmp_path, "g.py", GRAPH)
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    assert cli.main(["graph", path, "--png", str(tmp_path / "g.png")]) == 2
    assert "needs Graphviz's 'dot' program" in capsys.readouterr().err
    fake = tmp_path / "bin"
    fake.mkdir()
    dot = fake / "dot"        # a stand-in for Graphviz: copies its input to the -o file
    dot.write_text(f"#!{sys.executable}\nimport sys\n"
                   "open(sys.argv[sys.argv.index('-o') + 1], 'w').write(sys.stdin.read())\n")
    dot.chmod(0o755)
    monkeypatch.setenv("PATH", str(fake))
    assert cli.main(["graph", path, "--format", "mermaid", "--png", str(tmp_path / "g.png")]) == 0
    assert (tmp_path / "g.png").read_text().startswith("digraph papy {")


# -- papy serve ---------------------------------------------------------------------------

def test_serve_is_the_imap_server(tmp_path):
    server = subprocess.Popen([sys.executable, "-m", "papy", "serve", "--port", "0"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=ENV, cwd=tmp_path)
    try:
        line = server.stdout.readline()
        match = re.fullmatch(r"listening on 127\.0\.0\.1:(\d+)\n", line)
        assert match, server.stderr.read()
        # A connection that the server accepts shows its accept loop runs: a signal that
        # comes before that loop started can be missed by imap.server (see issue 7 report).
        with socket.create_connection(("127.0.0.1", int(match.group(1))), timeout=30):
            while "accepted" not in server.stderr.readline():
                pass
        server.send_signal(signal.SIGTERM)
        server.communicate(timeout=30)
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate()
    assert server.returncode == 0


def test_serve_refuses_a_network_address_without_tls(capsys):
    assert cli.main(["serve", "--host", "0.0.0.0"]) == 2
    assert "refusing to listen" in capsys.readouterr().err


# -- progress and summary -----------------------------------------------------------------

def inc(inbox):
    return inbox[0] + 1


def pairs(inbox):
    return (inbox[0], inbox[0])


def add2(inbox):
    return inbox[0][0] + inbox[1][0]


def two_outputs():
    source = Piper(inc, name="source")
    plumber = Plumber()
    plumber.add_pipe((source, Piper(inc, name="out_a")))
    plumber.add_pipe((source, Piper(pairs, produce=2, name="split"),
                      Piper(add2, consume=2, name="out_b")))
    return plumber


def run_with(plumber, data, progress):
    plumber.start([data])
    progress.start()
    plumber.run()
    plumber.wait()
    progress.stop()
    plumber.pause()
    plumber.stop()


def test_progress_log_lines_for_each_output(tmp_path):
    stream = io.StringIO()
    plumber = two_outputs()
    progress = Progress(plumber, "log", stream, interval=0.01)
    run_with(plumber, range(7), progress)
    done = [line for line in stream.getvalue().splitlines() if " papy done: " in line]
    assert [line.split(": ")[1] for line in done] == ["out_a", "out_b"]
    assert "out_a: 7 out (" in done[0] and "7 in, 0 errors" in done[0]
    assert not progress.running and progress.error is None


def test_progress_bars_without_tqdm(monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)             # import tqdm fails
    monkeypatch.setenv("COLUMNS", "80")
    stream = io.StringIO()
    plumber = two_outputs()
    totals = {plumber.get_outputs()[0]: 7}                     # out_b: no known total
    run_with(plumber, range(7), Progress(plumber, "bar", stream, interval=0.01, totals=totals))
    updates = stream.getvalue().split("\x1b[2F")               # redraws move 2 lines up
    last = updates[-1].split("\n")
    assert last[-1] == "" and len(last) == 3                   # a line per output Piper
    assert re.fullmatch(r"\x1b\[2Kout_a +\[#+\] 7/7 items, \d+/s, 0 errors", last[0])
    assert re.fullmatch(r"\x1b\[2Kout_b +7 items, \d+/s, 0 errors", last[1])
    assert all(len(line) <= 4 + 79 for line in last)


def test_progress_bars_with_tqdm(monkeypatch):
    made = []

    class FakeBar:
        def __init__(self, **options):
            self.options, self.n, self.closed, self.postfix = options, 0, False, ""
            made.append(self)

        def set_postfix_str(self, text, refresh=True):
            self.postfix = text

        def refresh(self):
            pass

        def close(self):
            self.closed = True

    monkeypatch.setitem(sys.modules, "tqdm", types.SimpleNamespace(tqdm=FakeBar))
    plumber = two_outputs()
    plumber.start([range(5)])
    totals = expected_totals(plumber, [range(5)])
    progress = Progress(plumber, "bar", io.StringIO(), interval=0.01, totals=totals).start()
    plumber.run()
    plumber.wait()
    progress.stop()
    plumber.pause()
    plumber.stop()
    assert [(b.options["desc"], b.options["total"], b.options["position"]) for b in made] == \
        [("out_a", 5, 0), ("out_b", 5, 1)]
    assert [b.n for b in made] == [5, 5] and all(b.closed for b in made)
    assert made[0].postfix == "0 errors"


def test_expected_totals_follow_produce_and_consume():
    plumber = two_outputs()
    plumber.start([range(5)])
    try:
        totals = {p.name: n for p, n in expected_totals(plumber, [range(5)]).items()}
    finally:
        plumber.stop()
    assert totals == {"source": 5, "out_a": 5, "split": 10, "out_b": 5}
    assert expected_totals(plumber, [iter(range(5))]) == {}        # no length: no totals


def test_auto_mode_and_bad_options():
    plumber = two_outputs()
    assert Progress(plumber, "auto", io.StringIO()).mode == "log"  # not a terminal
    with pytest.raises(ValueError, match="one of auto, bar, log, off"):
        Progress(plumber, "fancy")
    with pytest.raises(ValueError, match="seconds > 0"):
        Progress(plumber, "log", interval=0)
    off = Progress(plumber, "off").start()
    assert not off.running
    off.stop()


def test_a_broken_stream_stops_the_display_not_the_run():
    class Broken(io.StringIO):
        def write(self, text):
            raise OSError("stream closed")

    plumber = two_outputs()
    progress = Progress(plumber, "log", Broken(), interval=0.01)
    run_with(plumber, range(3), progress)
    assert isinstance(progress.error, OSError)
    assert not progress.running and not any(t.name.startswith("papy-progress")
                                            for t in threading.enumerate())


def test_summary_table():
    plumber = two_outputs()
    run_with(plumber, range(4), Progress(plumber, "off"))
    text = summary(plumber)
    assert text.startswith("papy run: 4 pipers, run time ")
    assert re.search(r"^\s+split\s+4\s+8\s+0\s", text, re.M)
    assert re.search(r"^\s+out_b\s+8\s+4\s+0\s", text, re.M)
    assert "items: 4 taken from the inputs; failed: 0; error items: 0" in text
    assert sorted(f.name for f in figures(plumber)) == ["out_a", "out_b", "source", "split"]


def test_run_plumber_writes_everything_to_its_stream(capsys):
    """The summary, the verbose lines and the report of the failed items go to ``stream``
    (and the exit code says some items failed); nothing goes to stderr."""
    plumber = Plumber()
    plumber.add_pipe((Piper(double_it), Piper(double_it)))
    report = io.StringIO()
    assert cli.run_plumber(plumber, [[1, None, 3]], progress="off", stream=report,
                           verbose=True) == cli.EXIT_ITEMS_FAILED
    text = report.getvalue()
    assert "papy: piper 'double_it' failed on item 1 (inbox [None]): TypeError" in text
    assert "papy: 1 input item failed (of 3 taken from the inputs)" in text
    assert "items: 3 taken from the inputs; failed: 1; error items: 2" in text
    assert capsys.readouterr().err == ""
    assert plumber.verbose is False and plumber.report_failures is True     # restored
