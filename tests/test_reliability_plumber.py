r"""The failure matrix in a whole pipeline: a fan-out and a join on one pool.

    input -> A -> B (branch 1) -> D (join: inbox = [B, C])
              \-> C (branch 2) -/

Every Piper runs on the same 2-worker IMap (inline, thread, process or remote).
Each fault hits exactly one item (index FAULTY) of ITEMS, in A (so both branches and the
join see it), in B only (the join must still pair C's good value with B's error) or in D. In every
case the run completes, the output D holds a PiperError exactly at FAULTY (whose cause
chain ends in the expected error type), every other item arrives exactly once with its
expected value, and the run raises no run-level failure.
"""
import ctypes
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from imap import SerializationError, WorkerDiedError
from proc_tree import DESCENDANTS
from papy import IMap, Piper, PiperError, Plumber, Worker, WorkerError

FAULTY = 5
ITEMS = 24
PARENT = os.getpid()


class CannotPickle:
    def __reduce__(self):
        raise TypeError("this object refuses to be pickled")


class ExplodesInWorker:
    """Pickles fine here; unpickling it anywhere but in the test process raises."""

    def __reduce__(self):
        return (_rebuild_in_parent_only, (PARENT,))


class ExplodesInParent:
    """Made in a worker; unpickling it back in the test process (``parent``) raises."""

    def __init__(self, parent):
        self.parent = parent    # given by the test: a spawned worker has its own PARENT

    def __reduce__(self):
        return (_rebuild_outside_parent_only, (self.parent,))


def _rebuild_in_parent_only(parent):
    if os.getpid() != parent:
        raise ValueError("cannot be rebuilt in a worker")
    return FAULTY


def _rebuild_outside_parent_only(parent):
    if os.getpid() == parent:
        raise ValueError("cannot be rebuilt in the parent")
    return FAULTY


def _fault(x, how, parent=None):
    if x != FAULTY:
        return x
    if how == "raises":
        raise KeyError(x)
    if how == "exits":
        os._exit(3)
    if how == "crashes":
        ctypes.string_at(0)
    if how == "killed":
        os.kill(os.getpid(), signal.SIGKILL)
    if how == "result cannot be pickled":
        return CannotPickle()
    if how == "result cannot be unpickled":
        return ExplodesInParent(parent)
    return x


def stage_a(inbox, how="", where="A"):
    return _fault(inbox[0], how) if where == "A" else inbox[0]


def stage_b(inbox, how="", where="A"):
    x = _fault(inbox[0], how) if where == "B" else inbox[0]
    return x if isinstance(x, CannotPickle | ExplodesInParent) else x * 10


def stage_c(inbox):
    return inbox[0] + 1


def join_d(inbox, how="", where="A", parent=None):
    total = inbox[0] + inbox[1]
    if where == "D" and total == expected_value(FAULTY):
        return _fault(FAULTY, how, parent)
    return total


def expected_value(x):
    return x * 10 + x + 1


ALL = ("inline", "thread", "process", "remote")
REMOTE_OR_PROCESS = ("process", "remote")
FAULTS = {
    # name: (where, input item at FAULTY or None, expected root cause, pool kinds)
    "raises": ("A", None, KeyError, ALL),
    "raises-in-one-branch": ("B", None, KeyError, ALL),
    "exits": ("A", None, WorkerDiedError, REMOTE_OR_PROCESS),
    "exits-in-one-branch": ("B", None, WorkerDiedError, REMOTE_OR_PROCESS),
    "crashes": ("A", None, WorkerDiedError, REMOTE_OR_PROCESS),
    "killed": ("A", None, WorkerDiedError, REMOTE_OR_PROCESS),
    "killed-in-one-branch": ("B", None, WorkerDiedError, REMOTE_OR_PROCESS),
    "item cannot be pickled": ("A", CannotPickle, SerializationError, REMOTE_OR_PROCESS),
    "item cannot be unpickled in the worker": ("A", ExplodesInWorker, SerializationError,
                                               REMOTE_OR_PROCESS),
    "result cannot be pickled": ("A", None, SerializationError, REMOTE_OR_PROCESS),
    "result cannot be pickled-in-one-branch": ("B", None, SerializationError,
                                               REMOTE_OR_PROCESS),
    # remote: a reply that cannot be unpickled fails its whole batch (tested on a bare IMap
    # in test_reliability_imap.py); local process pools fail only that item
    # (at the output D: on a shared IMap, A's result goes to B and C without ever being
    # unpickled in the parent, so the fault has no effect there; D's result must be)
    "result cannot be unpickled": ("D", None, SerializationError, ("process",)),
}
CASES = [(name, kind) for name, (*_, kinds) in FAULTS.items() for kind in kinds]


def root_cause(error):
    """Follow a PiperError's cause chain down to the original exception."""
    while isinstance(error, (PiperError, WorkerError)) and error.args:
        error = error.args[0]
    return error


def options_for(kind, forking_server):
    if kind == "remote":
        return dict(worker_num=0, worker_remote=[(forking_server.address, 2)])
    return dict(worker_type=kind, worker_num=2)


def build(imap, how, where):
    kwargs = {"how": how.removesuffix("-in-one-branch"), "where": where}
    a = Piper(Worker(stage_a, kwargs=kwargs), parallel=imap, name="A")
    b = Piper(Worker(stage_b, kwargs=kwargs), parallel=imap, name="B", branch=1)
    kwargs = dict(kwargs, parent=PARENT)
    c = Piper(stage_c, parallel=imap, name="C", branch=2)
    d = Piper(Worker(join_d, kwargs=kwargs), parallel=imap, name="D", track=True)
    plumber = Plumber()
    plumber.add_pipes([(a, b, d), (a, c, d)])
    return plumber, d


def run_to_end(plumber, data):
    plumber.start([data])
    plumber.run()
    assert plumber.wait(timeout=90), "the pipeline did not finish (a hang)"
    plumber.pause()
    plumber.stop()


@pytest.mark.parametrize("fault, kind", CASES, ids=[f"{n}-{k}" for n, k in CASES])
def test_exactly_the_affected_item_fails_in_a_plumber(fault, kind, forking_server):
    where, bad_item, cause, _ = FAULTS[fault]
    data = list(range(ITEMS))
    if bad_item is not None:
        data[FAULTY] = bad_item()
    with IMap(**options_for(kind, forking_server), stride=4) as imap:
        plumber, output = build(imap, fault, where)
        run_to_end(plumber, data)
    tracked = plumber.stats["pipers_tracked"][output]
    assert sorted(tracked) == list(range(ITEMS)), "an item was lost or duplicated"
    error = tracked[FAULTY]
    assert isinstance(error, PiperError)
    assert isinstance(root_cause(error), cause), repr(error)
    good = {i: v for i, v in tracked.items() if i != FAULTY}
    assert good == {i: expected_value(i) for i in range(ITEMS) if i != FAULTY}


# -- signals -----------------------------------------------------------------------
# SIGINT and SIGTERM to a program running a Plumber (plunge() on an infinite input, process
# pool): it ends within 3 seconds, says why, and leaves no worker process alive.
#
# Without ``papy.handle_signals``: Ctrl-C ends the program with a KeyboardInterrupt
# traceback, SIGTERM kills it silently; in both cases the workers die with it (SIGTERM: by
# PR_SET_PDEATHSIG, the interpreter does no cleanup). With it: a one-line message, a
# graceful ``chinkup()`` bounded by ``grace`` seconds (then the pools are stopped forced),
# exit code 130 (SIGINT) or 143 (SIGTERM).
DEADLINE = 60
LIMIT = 3.0

PROGRAM = DESCENDANTS + """
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
                print(' '.join(str(pid) for pid in descendants()), flush=True)
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
        assert len(workers) >= 2, program.stderr.read()
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
    with pytest.raises(ValueError, match="grace must be a number of seconds >= 0"):
        handle_signals(Plumber(), grace=-1)
    with pytest.raises(ValueError, match="grace must be a number of seconds, not NaN"):
        handle_signals(Plumber(), grace=float("nan"))


def test_other_exceptions_pass_through_and_handlers_are_restored():
    from papy import Plumber
    from papy._signals import handle_signals
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with pytest.raises(ZeroDivisionError):
        with handle_signals(Plumber()):
            assert signal.getsignal(signal.SIGTERM) is not before[0]
            1 / 0  # noqa: B018 - raises in the block
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
