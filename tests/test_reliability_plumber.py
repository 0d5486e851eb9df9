r"""The failure matrix in a whole pipeline: a fan-out and a join on one pool.

    input -> A -> B (branch 1) -> D (join: inbox = [B, C])
              \-> C (branch 2) -/

Every Piper runs on the same 2-worker IMap (thread, process or remote: ``pool_options``).
Each fault hits exactly one item (index FAULTY) of ITEMS, in A (so both branches and the
join see it), in B only (the join must still pair C's good value with B's error) or in D. In every
case the run completes, the output D holds a PiperError exactly at FAULTY (whose cause
chain ends in the expected error type), every other item arrives exactly once with its
expected value, and the run raises no run-level failure.
"""
import ctypes
import os
import signal

import pytest

from imap import SerializationError, WorkerDiedError
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


ALL = ("thread", "process", "remote")
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
