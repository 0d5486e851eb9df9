"""SIGINT and SIGTERM to a program running a Plumber (plunge() on an infinite input, process
pool): it ends within 3 seconds, says why, and leaves no worker process alive.

Without ``papy.handle_signals``: Ctrl-C ends the program with a KeyboardInterrupt
traceback, SIGTERM kills it silently; in both cases the workers die with it (SIGTERM: by
PR_SET_PDEATHSIG, the interpreter does no cleanup). With it: a one-line message, a
graceful ``chinkup()`` bounded by ``grace`` seconds (then the pools are stopped forced),
exit code 130 (SIGINT) or 143 (SIGTERM).
"""
import signal
import subprocess
import sys
import textwrap
import time

import pytest

DEADLINE = 60
LIMIT = 3.0

PROGRAM = """
    import itertools, multiprocessing, sys, time
    from papy import IMap, Piper, Plumber
    from papy._signals import handle_signals

    def slow(inbox, seconds):
        time.sleep(seconds)
        return inbox[0]

    def passer(inbox):
        return inbox[0]

    if __name__ == '__main__':
        handled, seconds, stride = sys.argv[1] == 'handled', float(sys.argv[2]), int(sys.argv[3])
        with IMap(worker_type='process', worker_num=2, stride=stride) as imap:
            plumber = Plumber()
            plumber.add_pipes([(Piper(Worker(slow, (seconds,)), parallel=imap),
                                Piper(passer, parallel=imap), Piper(passer))])
            plumber.set_inputs([itertools.count()])
            guard = handle_signals(plumber) if handled else contextlib.nullcontext()
            with guard:
                plumber.plunge()
                while not imap.buffer_used:      # the workers are busy with items
                    time.sleep(0.01)
                print(' '.join(str(c.pid) for c in multiprocessing.active_children()),
                      flush=True)
                plumber.wait()
"""


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(") ")[1][0] != "Z"
    except OSError:
        return False


def signal_program(tmp_path, signum, handled, seconds=0.01, stride=2):
    """Start the program, send ``signum`` once its workers are busy; return (exit code,
    seconds to exit, stderr, workers still alive 3 s after it exited)."""
    script = tmp_path / "pipeline.py"
    source = textwrap.dedent(PROGRAM).replace(
        "import itertools,", "import contextlib, itertools,").replace(
        "from papy import IMap, Piper, Plumber", "from papy import IMap, Piper, Plumber, Worker")
    script.write_text(source)
    program = subprocess.Popen(
        [sys.executable, str(script), "handled" if handled else "plain", str(seconds),
         str(stride)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        workers = [int(pid) for pid in program.stdout.readline().split()]
        assert len(workers) == 2, program.stderr.read()
        sent = time.monotonic()
        program.send_signal(signum)
        program.wait(DEADLINE)
        took = time.monotonic() - sent
        end = time.monotonic() + LIMIT
        while any(_alive(pid) for pid in workers) and time.monotonic() < end:
            time.sleep(0.05)
        return program.returncode, took, program.stderr.read(), \
            [pid for pid in workers if _alive(pid)]
    finally:
        if program.poll() is None:
            program.kill()
            program.wait()
        program.stdout.close()
        program.stderr.close()


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)],
                         ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_a_plumber_with_a_message_and_no_worker_left(tmp_path, signum, code):
    status, took, stderr, alive = signal_program(tmp_path, signum, handled=True)
    name = signal.Signals(signum).name
    assert status == code, stderr
    assert took < LIMIT, f"took {took:.1f} s"
    assert alive == []
    assert f"papy: {name} received: stopping the pipeline" in stderr
    assert f"papy: stopped by {name}" in stderr
    assert "Traceback" not in stderr


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_slow_items_in_flight_are_stopped_after_the_grace_period(tmp_path, signum):
    """Items of 5 s each in flight: chinkup() cannot finish them within the grace period
    (1.5 s), so the pools are stopped forced; the program still ends within 3 s."""
    status, took, stderr, alive = signal_program(tmp_path, signum, handled=True, seconds=5.0)
    assert status == 128 + signum, stderr
    assert took < LIMIT, f"took {took:.1f} s"
    assert alive == []
    assert "did not stop in time: stopping its pools" in stderr


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_without_handle_signals_the_program_still_ends_and_its_workers_die(tmp_path, signum):
    """The baseline: no message (SIGTERM) or a traceback (SIGINT), but no hang and no
    orphan: SIGTERM kills the interpreter without cleanup, the workers die by
    PR_SET_PDEATHSIG."""
    status, took, stderr, alive = signal_program(tmp_path, signum, handled=False)
    assert status == -signum, stderr
    assert took < LIMIT, f"took {took:.1f} s"
    assert alive == []
    if signum == signal.SIGINT:
        assert "KeyboardInterrupt" in stderr
    # SIGTERM: nothing from papy (a worker may print a BrokenPipeError traceback if it
    # sees the pipe close before its death signal)
    assert "papy:" not in stderr


def test_grace_must_not_be_negative():
    from papy import Plumber
    from papy._signals import handle_signals
    with pytest.raises(ValueError, match="grace must be >= 0"):
        handle_signals(Plumber(), grace=-1)


def test_other_exceptions_pass_through_and_handlers_are_restored():
    from papy import Plumber
    from papy._signals import handle_signals
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with pytest.raises(ZeroDivisionError):
        with handle_signals(Plumber()):
            assert signal.getsignal(signal.SIGTERM) is not before[0]
            1 / 0
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
