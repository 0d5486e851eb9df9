"""Every template in papy/templates/ runs on small data and gives the right answers.

The templates are loaded the way ``papy run`` loads them (papy.cli.load_module: their
functions travel to worker processes by value); most runs use thread pools to stay fast, one
per template uses processes. Ctrl-C and SIGTERM are checked on the grep template in a child
interpreter, through ``python -m papy run``.
"""
from __future__ import annotations

import collections
import io
import os
import queue
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from remote_servers import servers  # noqa: F401  (fixture)

from papy import IMap
from papy.cli import load_module, run_plumber
from papy.workers.io import load_file

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = ROOT / "papy" / "templates"


def template(name: str):
    return load_module(TEMPLATES / f"{name}.py")


def thread_pool(n=2, **options):
    return IMap(worker_type="thread", worker_num=n, **options)


QUIET = {"progress": "off", "show_summary": False}


def test_every_template_has_pipeline_and_main():
    names = sorted(p.stem for p in TEMPLATES.glob("*.py") if not p.stem.startswith("_"))
    assert names == ["grep", "psc", "remote", "wordcount"]
    for name in names:
        module = template(name)
        assert callable(module.pipeline) and callable(module.main), name
        assert module.__doc__ and "python -m papy run papy/templates/" in module.__doc__



@pytest.fixture(autouse=True)
def _restore_sys_path(monkeypatch):
    """load_module puts a module's folder first on sys.path (as python FILE does)."""
    monkeypatch.setattr(sys, "path", list(sys.path))

# -- wordcount -----------------------------------------------------------------------------

TEXTS = {"a.txt": "The cat and the hat.\nThe end\n", "b.txt": "Été, été! don't stop\n",
         "sub/c.txt": "", "skip.md": "not counted"}


def write_folder(root: Path) -> Path:
    for name, text in TEXTS.items():
        path = root / name
        path.parent.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def serial_counts(module, paths):
    words, files = collections.Counter(), {}
    for path in paths:
        text = Path(path).read_text(encoding="utf-8")
        found = [w.lower() for w in module.WORD.findall(text)]
        words.update(found)
        files[path] = (len(found), len(set(found)))
    return words, files


@pytest.mark.parametrize("worker_type", ["thread", "process"])
def test_wordcount_counts_per_word_and_per_file(tmp_path, worker_type):
    wc = template("wordcount")
    paths = wc.find_files(write_folder(tmp_path), "*.txt")
    assert [Path(p).name for p in paths] == ["a.txt", "b.txt", "c.txt"]
    totals = wc.Totals()
    imap = IMap(worker_type=worker_type, worker_num=2)
    assert run_plumber(wc.pipeline(imap, totals), [paths], **QUIET) == 0
    words, files = serial_counts(wc, paths)
    assert totals.words == words
    assert totals.words["the"] == 3 and totals.words["été"] == 2 and totals.words["don't"] == 1
    assert {p: (c.words, c.distinct) for p, c in totals.files.items()} == files
    assert totals.files[paths[0]].lines == 2 and totals.files[paths[0]].top == "the"
    assert totals.files[paths[2]] == wc.FileCount(0, 0, 0, 0, "")


def test_wordcount_main_on_a_folder_and_on_the_demo(tmp_path, capsys):
    wc = template("wordcount")
    write_folder(tmp_path)
    assert wc.main([str(tmp_path), "--top", "2", "--worker-type", "thread", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^a\.txt\s+7\s+5\s+2\s+the$", out, re.M)
    assert "  3  the" in out and "11 words, 8 distinct" in out
    assert wc.main(["--worker-type", "thread", "--quiet"]) == 0          # the demo files
    demo = capsys.readouterr()
    assert "demo files" in demo.err and "seed.txt" in demo.out


def test_wordcount_main_usage_errors(tmp_path, capsys):
    wc = template("wordcount")
    assert wc.main([str(tmp_path / "missing"), "--quiet"]) == 2
    assert wc.main([str(tmp_path), "--quiet"]) == 2                       # no *.txt files
    assert "no file matches" in capsys.readouterr().err


# -- grep ----------------------------------------------------------------------------------

class QueueOut:
    """An ``out`` for the grep template whose lines a test can wait for."""

    def __init__(self):
        self.lines: queue.Queue = queue.Queue()

    def write(self, text):
        self.lines.put(text)

    def flush(self):
        pass

    def take(self, count, timeout=30):
        return [self.lines.get(timeout=timeout) for _ in range(count)]


def test_grep_follows_a_growing_file_until_chinkup(tmp_path):
    grep = template("grep")
    path = tmp_path / "growing.log"
    path.write_text("papy 0\nother\n")
    out = QueueOut()
    with open(path) as handle:
        plumber = grep.pipeline(r"papy \d", thread_pool(), out)
        plumber.set_inputs([load_file(handle, follow=True)])
        plumber.plunge()
        try:
            assert out.take(1) == ["papy 0\n"]
            with open(path, "a") as writer:                 # the file grows
                writer.write("no\npapy 1\npapy x\npapy 2\n")
            assert out.take(2) == ["papy 1\n", "papy 2\n"]
        finally:
            plumber.chinkup()                                # returns although following
    counters = {p.name: c for p, c in plumber.stats["pipers"].items()}
    assert counters["grep"].items_in == 6 and counters["write"].items_out == 6
    assert out.lines.empty()


def test_grep_without_follow_and_the_demo(tmp_path, capsys):
    grep = template("grep")
    path = tmp_path / "log"
    path.write_text("a papy line\nnothing\npapyrus\n")
    argv = [str(path), "papy", "--no-follow", "--worker-type", "thread", "--quiet"]
    assert grep.main(argv) == 0
    assert capsys.readouterr().out == "a papy line\npapyrus\n"
    out, err = io.StringIO(), io.StringIO()
    assert grep.demo("papy", thread_pool(), delay=0, out=out, stream=err) == 0
    assert out.getvalue().splitlines() == [line.rstrip("\n") for line in grep.DEMO_LINES
                                           if "papy" in line]
    assert "papy grep demo" in err.getvalue()
    assert grep.main([str(tmp_path / "missing"), "--quiet"]) == 2


@pytest.mark.parametrize("signum, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)],
                         ids=["ctrl-c", "sigterm"])
def test_grep_stops_cleanly_on_a_signal(tmp_path, signum, status):
    """python -m papy run papy/templates/grep.py FILE, process workers; a signal while it
    follows ends it gracefully: the summary is printed and the exit code says why."""
    path = tmp_path / "growing.log"
    path.write_text("papy first\n")
    boot = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
            "from papy.cli import main; sys.exit(main(sys.argv[1:]))")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    child = subprocess.Popen(
        [sys.executable, "-c", boot, "run", str(TEMPLATES / "grep.py"), str(path), "papy",
         "--progress", "log"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        cwd=tmp_path, env=env)
    try:
        assert child.stdout.readline() == "papy first\n"      # it runs, and follows
        with open(path, "a") as writer:
            writer.write("papy second\n")
        assert child.stdout.readline() == "papy second\n"
        child.send_signal(signum)
        out, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
    assert child.returncode == status, err
    assert "interrupted: stopping gracefully" in err
    assert re.search(r"grep\s+2\s+2\s+0", err), err              # the summary
    assert out == ""


# -- psc -----------------------------------------------------------------------------------

def serial_psc(psc, targets, rates):
    out = io.StringIO()
    for target in targets:
        lanes = [[psc.evaluate([variant])] for variant in psc.variants([target], rates)]
        psc.show([psc.best(lanes)], out)
    return out.getvalue()


@pytest.mark.parametrize("worker_type, stride", [("thread", 1), ("thread", 4), ("process", 3)])
def test_psc_sweep_matches_a_serial_sweep(worker_type, stride):
    psc = template("psc")
    targets, rates = [0.5, 2.0, 5.0, 10.0, 30.0], (0.05, 0.1, 0.2, 0.4)
    out = io.StringIO()
    imap = IMap(worker_type=worker_type, worker_num=2, stride=stride)
    plumber = psc.pipeline(rates, imap, out)
    assert run_plumber(plumber, [targets], **QUIET) == 0
    assert out.getvalue() == serial_psc(psc, targets, rates)
    assert "cube root of 10    best rate 0.05" in out.getvalue()
    made = {p.name: (c.items_in, c.items_out) for p, c in plumber.stats["pipers"].items()}
    assert made == {"variants": (5, 20), "evaluate": (20, 20), "best": (20, 5), "show": (5, 5)}
    assert psc.best([[(1.0, 0.1, 0.5)], [(1.0, 0.2, 0.25)]])[:3] == (1.0, 0.2, 0.25)
    with pytest.raises(ValueError, match="out of step"):
        psc.best([[(1.0, 0.1, 0.5)], [(2.0, 0.2, 0.25)]])


def test_psc_main(capsys):
    psc = template("psc")
    argv = ["--targets", "1", "8", "--rates", "0.1", "0.4", "--worker-type", "thread",
            "--quiet"]
    assert psc.main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[3] for line in lines] == ["1", "8"]


# -- remote --------------------------------------------------------------------------------

def test_remote_on_local_processes(capsys):
    remote = template("remote")
    assert remote.main(["--items", "5", "--local", "2", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert len(re.findall(r"^item\s+\d+ ->", out, re.M)) == 5
    assert sum(int(n) for n in re.findall(r": (\d+) items$", out, re.M)) == 5


def test_remote_on_a_loopback_server(servers):  # noqa: F811
    remote = template("remote")
    server = servers()
    counts, out = collections.Counter(), io.StringIO()
    imap = remote.make_imap([server.address], per_host=2)
    assert imap.worker_num == 0 and imap.worker_remote
    assert run_plumber(remote.pipeline(imap, counts, out), [range(8)], **QUIET) == 0
    results = [line.split() for line in out.getvalue().splitlines()]
    assert [int(r[1]) for r in results] == list(range(8))
    expected = [remote.work([k])[1] for k in range(8)]
    assert [int(r[3]) for r in results] == expected
    pids = {int(r[-1]) for r in results}                    # the server's forked children
    assert pids and os.getpid() not in pids and server.pid not in pids
    assert sum(counts.values()) == 8


def test_remote_usage_errors(capsys):
    remote = template("remote")
    assert remote.main(["--remote", "nohost:", "--quiet"]) == 2
    assert remote.main(["--tls-keyfile", "k.pem", "--quiet"]) == 2
    assert "mutual TLS needs" in capsys.readouterr().err
    assert remote.main(["--remote", "127.0.0.1:1", "--items", "2", "--quiet",
                        "--remote-timeout", "2"]) == 1       # nothing listens there


def test_threads_of_a_run_are_gone():
    """A run leaves no thread behind (the leak guard checks it after every test too)."""
    before = set(threading.enumerate())
    wc = template("wordcount")
    assert run_plumber(wc.pipeline(thread_pool(), wc.Totals()), [[]], **QUIET) == 0
    assert set(threading.enumerate()) <= before
