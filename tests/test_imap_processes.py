"""Process pools seen from a user's script: code shipping, start methods, interpreter exit."""
import subprocess
import sys
import textwrap

import pytest

from proc_tree import DESCENDANTS

DEADLINE = 60


def run_script(tmp_path, source, *args):
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(source))
    return subprocess.run([sys.executable, "-W", "error", str(script), *args],
                          capture_output=True, text=True, timeout=DEADLINE)


MAIN_FUNCTIONS = """
    import sys
    from imap import IMap, imports

    OFFSET = 100

    def from_main(x):                 # a __main__ function reading a __main__ global
        return x + OFFSET

    def make_closure(k):
        def closure(x):
            return x * k
        return closure

    @imports(['math'])
    def with_imports(x):
        return math.sqrt(x)

    if __name__ == '__main__':
        method = sys.argv[1]
        with IMap(worker_num=2, start_method=method) as pool:
            a = pool.add_task(from_main, range(5))
            b = pool.add_task(make_closure(3), range(5))
            c = pool.add_task(lambda x: -x, range(5))
            d = pool.add_task(with_imports, [4, 9])
            pool.start()
            print(list(a), list(b), list(c), list(d))
"""


@pytest.mark.parametrize("method", ["fork", "forkserver", "spawn"])
def test_main_functions_lambdas_closures_under_every_start_method(tmp_path, method):
    done = run_script(tmp_path, MAIN_FUNCTIONS, method)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ("[100, 101, 102, 103, 104] [0, 3, 6, 9, 12] "
                                   "[0, -1, -2, -3, -4] [2.0, 3.0]")
    assert "Warning" not in done.stderr


EXIT_WITHOUT_STOP = """
    import itertools, os
    from imap import IMap

    def slow_square(x):
        return x * x

    if __name__ == '__main__':
        pool = IMap(slow_square, itertools.count(), worker_num=2)
        print([pool.next() for _ in range(3)], flush=True)
        threads = IMap(slow_square, itertools.count(), worker_type='thread', worker_num=2)
        print([threads.next() for _ in range(3)], flush=True)
        forked = IMap(slow_square, itertools.count(), worker_num=1, start_method='fork')
        print([forked.next() for _ in range(3)], flush=True)
        # no stop(): the interpreter must still exit
"""


def test_exit_without_stop_does_not_hang(tmp_path):
    done = run_script(tmp_path, EXIT_WITHOUT_STOP)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:3] == ["[0, 1, 4]"] * 3




PARENT_KILLED = DESCENDANTS + """
    import itertools, os, sys, time
    from imap import IMap

    def square(x):
        time.sleep(0.01)
        return x * x

    if __name__ == '__main__':
        pool = IMap(square, itertools.count(), worker_num=2, start_method=sys.argv[1])
        pool.next()
        print(' '.join(str(pid) for pid in descendants()), flush=True)
        time.sleep(60)
"""


@pytest.mark.parametrize("method", ["forkserver", "fork", "spawn"])
def test_workers_die_with_a_parent_killed_by_sigkill(tmp_path, method):
    import os
    import signal
    import time
    script = tmp_path / "parent.py"
    script.write_text(textwrap.dedent(PARENT_KILLED))
    parent = subprocess.Popen([sys.executable, str(script), method], stdout=subprocess.PIPE,
                              text=True)
    try:
        workers = [int(pid) for pid in parent.stdout.readline().split()]
        assert len(workers) >= 2
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(DEADLINE)
        end = time.monotonic() + 3.0
        alive = workers
        while alive and time.monotonic() < end:
            alive = [pid for pid in workers if _alive(pid)]
            time.sleep(0.05)
        assert alive == [], f"workers {alive} outlived their parent"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        parent.stdout.close()


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(") ")[1][0] != "Z"
    except OSError:
        return False


RUN_UNTIL_SIGNALLED = DESCENDANTS + """
    import itertools, multiprocessing, sys, time
    from imap import IMap

    def slow(x):
        time.sleep(0.01)
        return x

    if __name__ == '__main__':
        with IMap(slow, itertools.count(), worker_num=2) as pool:
            pool.next()
            print(' '.join(str(pid) for pid in descendants()), flush=True)
            for _ in pool:
                pass
"""


@pytest.mark.parametrize("signum", ["SIGINT", "SIGTERM"])
def test_a_signal_ends_an_imap_program_and_its_workers(tmp_path, signum):
    import signal
    import time
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(RUN_UNTIL_SIGNALLED))
    program = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        workers = [int(pid) for pid in program.stdout.readline().split()]
        assert len(workers) >= 2
        sent = time.monotonic()
        program.send_signal(getattr(signal, signum))
        program.wait(DEADLINE)
        assert time.monotonic() - sent < 3.0
        end = time.monotonic() + 3.0
        while any(_alive(pid) for pid in workers) and time.monotonic() < end:
            time.sleep(0.05)
        assert not any(_alive(pid) for pid in workers)
        if signum == "SIGINT":
            assert "KeyboardInterrupt" in program.stderr.read()
    finally:
        if program.poll() is None:
            program.kill()
            program.wait()
        program.stdout.close()
        program.stderr.close()
