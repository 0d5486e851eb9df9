"""Process pools seen from a script run in a subprocess (issues 18, 11.5, 17.2): a parent
killed with SIGKILL mid-item, fork servers that die, broken pools, a missing __main__ guard.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from proc_tree import DESCENDANTS

DEADLINE = 60
GONE_WITHIN = 3.0
ROOT = Path(__file__).resolve().parent.parent



def write(tmp_path: Path, source: str, name: str = "script.py") -> Path:
    script = tmp_path / name
    script.write_text(textwrap.dedent(source))
    return script


def run(script: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, str(script), *args] if stdin is None else \
        [sys.executable, "-", *args]
    return subprocess.run(command, check=False, input=stdin, capture_output=True, text=True,
                          timeout=DEADLINE, cwd=script.parent)


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(") ")[1][0] != "Z"
    except OSError:
        return False


# -- a parent killed with SIGKILL while its workers are inside long items (18.1) ----------

LONG_ITEMS = DESCENDANTS + """
    import itertools, os, sys, threading, time
    from imap import IMap

    def long_item(x, marker):
        open(f"{marker}.{os.getpid()}", "w").close()
        time.sleep(30)
        return x

    if __name__ == '__main__':
        method, marker = sys.argv[1], sys.argv[2]
        if method == 'forkserver-threaded':     # a thread: multiprocessing's forkserver
            method = 'forkserver'
            threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
        pool = IMap(worker_num=2, stride=2, start_method=method)
        pool.add_task(long_item, itertools.count(), args=(marker,))
        pool.start()
        folder, name = os.path.split(marker)
        while len([f for f in os.listdir(folder) if f.startswith(name + '.')]) < 2:
            time.sleep(0.01)                    # both workers are inside an item
        print(' '.join(str(pid) for pid in descendants()), flush=True)
        time.sleep(60)
"""


@pytest.mark.parametrize("method", ["forkserver", "forkserver-threaded", "fork", "spawn"])
def test_every_worker_and_fork_server_dies_with_a_parent_killed_mid_item(tmp_path, method):
    """Items of 30 s are running when the parent is killed with SIGKILL: every process under
    it (workers, fork servers, multiprocessing's helpers) is gone within 3 s."""
    script = write(tmp_path, LONG_ITEMS)
    # multiprocessing's forkserver puts its socket in a folder of its own under TMPDIR, which
    # only a parent that exits removes: this one is killed, so that folder is the test's
    # (short: a unix socket's path has at most 107 bytes)
    scratch = tempfile.mkdtemp(prefix="papy-")
    parent = subprocess.Popen([sys.executable, str(script), method, str(tmp_path / "running")],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "TMPDIR": scratch})
    try:
        family = [int(pid) for pid in parent.stdout.readline().split()]
        assert len(family) >= 2, parent.stderr.read()
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(DEADLINE)
        end = time.monotonic() + GONE_WITHIN
        while any(alive(pid) for pid in family) and time.monotonic() < end:
            time.sleep(0.05)
        assert [pid for pid in family if alive(pid)] == []
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        parent.stdout.close()
        parent.stderr.close()
        shutil.rmtree(scratch)


# -- a fork server that dies while the pool runs (18.2) -----------------------------------

SERVER_KILLED = """
    import os, signal, sys, threading, time
    import multiprocessing.forkserver
    from imap import IMap
    from imap.backends import _forkserver

    def item(x):
        time.sleep(0.001)
        return x

    def server():
        return _forkserver.server_pid() or \\
            multiprocessing.forkserver._forkserver._forkserver_pid

    def workers():
        pid = server()
        try:
            with open(f'/proc/{pid}/task/{pid}/children') as handle:
                return [int(child) for child in handle.read().split()]
        except (OSError, TypeError):
            return []

    def chaos(server_kills, worker_kills, killed):
        time.sleep(0.3)
        for _ in range(server_kills):           # several times within a second
            try:
                os.kill(server(), signal.SIGKILL)
            except (ProcessLookupError, TypeError):
                pass
            time.sleep(0.1)
        for _ in range(worker_kills):
            time.sleep(0.2)
            for pid in workers()[:1]:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)

    if __name__ == '__main__':
        threaded, items = sys.argv[1] == 'threaded', int(sys.argv[2])
        if threaded:                            # multiprocessing's forkserver
            threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
        killed = []
        with IMap(worker_num=2) as pool:
            results = pool.add_task(item, range(items))
            pool.start()
            threading.Thread(target=chaos, args=(5, 3, killed), daemon=True).start()
            failed = 0
            for _ in range(items):
                try:
                    results.next(timeout=30)
                except Exception as exc:
                    failed += 1
                    print(type(exc).__name__, exc, file=sys.stderr)
        print(failed, len(killed))
"""


@pytest.mark.parametrize("threads", ["one thread", "threaded"])
def test_a_pool_goes_on_when_its_fork_server_dies(tmp_path, threads):
    """The fork server is killed 5 times within a second, then workers are killed: the
    stream completes, and only items of workers that were killed themselves may fail."""
    script = write(tmp_path, SERVER_KILLED)
    done = run(script, "threaded" if threads == "threaded" else "plain", "4000")
    assert done.returncode == 0, done.stderr
    failed, killed = map(int, done.stdout.split())
    assert failed <= killed, done.stderr
    if threads == "one thread":
        assert "imap's fork server died: worker processes now start with" in done.stderr


# -- a broken pool is a state, not a flood (11.5) ------------------------------------------

IMPORT_ERROR_IN_MAIN = """
    from imap import IMap
    if __name__ == '__mp_main__':               # what a worker imports: it fails there
        import a_module_the_workers_do_not_have

    def double(x):
        return 2 * x

    if __name__ == '__main__':
        print(list(IMap(double, range(200), worker_num=2, start_method='spawn')))
"""


def test_workers_that_cannot_import_the_main_module_fail_the_start_once(tmp_path):
    done = run(write(tmp_path, IMPORT_ERROR_IN_MAIN))
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("imap._errors.BrokenPoolError: worker process")
    assert "exited with code 1 before it was ready" in last
    assert "imports the main module" in last and "traceback, if any, is on stderr" in last
    assert done.stderr.count("Traceback") <= 3       # the parent's and the first workers'


BAD_IMPORTS = """
    import logging, os
    from imap import IMap, imports
    logging.basicConfig(format='LOG %(levelname)s %(message)s')

    if __name__ == '__main__':
        os.environ['ONLY_HERE'] = str(os.getpid())
        import only_here                         # imported here, not in the workers

        @imports(['only_here'])
        def use(x):
            return only_here.VALUE + x

        failures = set()
        with IMap(use, range(200), worker_num=2, start_method='spawn') as pool:
            for _ in range(200):
                try:
                    pool.next()
                except ImportError as exc:
                    failures.add(str(exc))
        print(failures)
"""


def test_a_bad_imports_fails_every_item_with_one_clear_error_logged_once(tmp_path):
    (tmp_path / "only_here.py").write_text(textwrap.dedent("""
        import os
        if os.environ.get('ONLY_HERE') != str(os.getpid()):
            raise ImportError('only_here can be imported by its parent process only')
        VALUE = 1
    """))
    done = run(write(tmp_path, BAD_IMPORTS))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "{'only_here can be imported by its parent process only'}"
    logged = [line for line in done.stderr.splitlines() if line.startswith("LOG ERROR")]
    assert len(logged) == 1 and "only_here can be imported" in logged[0]
    assert "every item of task 0 fails with this error" in logged[0]


# -- the missing __main__ guard (17.2) -----------------------------------------------------

UNGUARDED = """
    from imap import IMap

    def double(x):
        return 2 * x

    print('module body')
    print(list(IMap(double, range(20), worker_num=2)))
"""


@pytest.mark.parametrize("fed", ["file", "stdin"])
def test_a_missing_main_guard_is_reported_once_before_any_worker_starts(tmp_path, fed):
    script = write(tmp_path, UNGUARDED)
    done = run(script) if fed == "file" else run(script, stdin=script.read_text())
    assert done.returncode == 1
    assert done.stdout == "module body\n"           # the body ran once: no worker ran it
    assert done.stderr.count("Traceback") == 1
    assert 'outside an `if __name__ == "__main__":` block' in done.stderr
    assert 'if __name__ == "__main__":\n        ...' in done.stderr
    assert (f"{script}:8)" if fed == "file" else "<stdin>:8)") in done.stderr


WORKER_SIDE_GUARD = """
    import imap.backends._main_guard as guard
    guard.check_main_module = lambda method: None    # only the workers' check is left
    from imap import IMap

    def double(x):
        return 2 * x

    print(list(IMap(double, range(20), worker_num=2, start_method='spawn')))
"""


def test_a_worker_importing_an_unguarded_main_module_stops_and_the_parent_says_why(tmp_path):
    done = run(write(tmp_path, WORKER_SIDE_GUARD))
    assert done.returncode == 1
    assert done.stderr.count("Traceback") == 1      # the parent's: the workers say nothing
    assert "imap._errors.BrokenPoolError: worker process" in done.stderr
    assert "started a pool: the module has no `if __name__ == \"__main__\":` guard" \
        in done.stderr


GUARDED = """
    from imap import IMap

    def double(x):
        return 2 * x

    if __name__ == '__main__':
        print(list(IMap(double, range(5), worker_num=2)))
"""


def test_a_guarded_script_fed_on_stdin_runs(tmp_path):
    done = run(write(tmp_path, GUARDED), stdin=textwrap.dedent(GUARDED))
    assert done.returncode == 0, done.stderr
    assert done.stdout == "[0, 2, 4, 6, 8]\n"


# -- a signal at any moment of the start-up (18.4) -----------------------------------------

STARTING_PIPELINE = """
    import itertools, sys, time
    from papy import IMap, Piper, Plumber, Worker, handle_signals

    def inc(inbox):
        return inbox[0] + 1

    def slow(inbox):
        time.sleep(0.001)
        return inbox[0]

    if __name__ == '__main__':
        imap = IMap(worker_type='process', worker_num=2, start_method=sys.argv[1])
        plumber = Plumber()
        plumber.add_pipe((Piper(Worker(inc), parallel=imap), Piper(Worker(slow), parallel=imap),
                          Piper(inc)))
        with handle_signals(plumber):
            print('ready', flush=True)
            plumber.start([itertools.count()])
            plumber.run()
            plumber.wait()
"""
SCAN = 24          # signals, half SIGINT, half SIGTERM


def test_a_signal_at_any_moment_of_the_start_up_ends_with_its_message_and_code(tmp_path):
    """Signals at random moments (seeded) in the first 0.3 s after the handlers are in place,
    while the pipeline starts its pools (fork server or spawn): each program ends with exit
    code 130/143, `papy: stopped by SIG...` and no traceback, within 3 s."""
    import random
    script = write(tmp_path, STARTING_PIPELINE)
    moments = random.Random(18).sample(range(300), SCAN)
    programs = []
    try:
        for k in range(SCAN):       # one starts while the ones signalled before end
            signum = signal.SIGINT if k % 2 else signal.SIGTERM
            method, delay = "spawn" if k % 4 > 1 else "forkserver", moments[k] / 1000
            program = subprocess.Popen([sys.executable, str(script), method],
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                       text=True)
            programs.append((program, signum, method, delay))
            assert program.stdout.readline() == "ready\n"
            time.sleep(delay)
            program.send_signal(signum)
        failures = []
        for program, signum, method, delay in programs:
            _, stderr = program.communicate(timeout=DEADLINE)
            name = signal.Signals(signum).name
            if (program.returncode != 128 + signum or "Traceback" in stderr
                    or f"papy: stopped by {name}" not in stderr):
                failures.append(f"{name} after {delay:.3f} s ({method}): exit "
                                f"{program.returncode}\n{stderr[-2000:]}")
        assert failures == []
    finally:
        for program, *_ in programs:
            if program.poll() is None:
                program.kill()
                program.communicate()
