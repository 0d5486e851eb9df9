"""The failure matrix of a bare IMap, in the style of CPython's test_deadlock.py.

Each fault hits exactly one item (index FAULTY) of 24; on every pool kind where the fault
can happen, the run must complete, that one item must be an error of the expected type in
its position, every other item must arrive exactly once and in order, and the pool must
have replaced any worker it lost.
"""
import ctypes
import os
import signal

import pytest

from imap import IMap, SerializationError, WorkerDiedError

FAULTY = 5
ITEMS = 24
PARENT = os.getpid()


class ExplodesInWorker:
    """Pickles fine here; unpickling it anywhere but in the test process raises."""

    def __reduce__(self):
        return (_rebuild_in_parent_only, (PARENT,))


class ExplodesInParent:
    """Made in a worker; unpickling it back in the test process (``parent``) raises."""

    def __init__(self, parent):
        self.parent = parent

    def __reduce__(self):
        return (_rebuild_outside_parent_only, (self.parent,))


class CannotPickle:
    def __reduce__(self):
        raise TypeError("this object refuses to be pickled")


def _rebuild_in_parent_only(parent):
    if os.getpid() != parent:
        raise ValueError("cannot be rebuilt in a worker")
    return "rebuilt"


def _rebuild_outside_parent_only(parent):
    if os.getpid() == parent:
        raise ValueError("cannot be rebuilt in the parent")
    return "rebuilt"


def raises(x):
    if x == FAULTY:
        raise KeyError(x)
    return x


def exits(x):
    if x == FAULTY:
        os._exit(3)
    return x


def crashes(x):
    if x == FAULTY:
        ctypes.string_at(0)
    return x


def killed(x):
    if x == FAULTY:
        os.kill(os.getpid(), signal.SIGKILL)
    return x


def returns_unpicklable(x):
    return CannotPickle() if x == FAULTY else x


def returns_unloadable(x, parent=None):
    return ExplodesInParent(parent) if x == FAULTY else x


def identity(x):
    return x if not isinstance(x, str) else FAULTY


def plain_items():
    return list(range(ITEMS))


def items_with(bad):
    items = list(range(ITEMS))
    items[FAULTY] = bad
    return items


FAULTS = {
    # name: (function, items, expected error type, pool kinds where the fault can happen)
    "raises": (raises, plain_items, KeyError, ("inline", "thread", "process", "remote")),
    "exits": (exits, plain_items, WorkerDiedError, ("process", "remote")),
    "crashes": (crashes, plain_items, WorkerDiedError, ("process", "remote")),
    "killed": (killed, plain_items, WorkerDiedError, ("process", "remote")),
    "item cannot be pickled": (identity, lambda: items_with(CannotPickle()),
                               SerializationError, ("process", "remote")),
    "item cannot be unpickled in the worker": (identity, lambda: items_with(ExplodesInWorker()),
                                               SerializationError, ("process", "remote")),
    "result cannot be pickled": (returns_unpicklable, plain_items, SerializationError,
                                 ("process", "remote")),
    "result cannot be unpickled in the parent": (returns_unloadable, plain_items,
                                                 SerializationError, ("process",)),
}


def options_for(kind, forking_server):
    if kind == "remote":
        return dict(worker_num=0, worker_remote=[(forking_server.address, 2)])
    return dict(worker_type=kind, worker_num=2)


CASES = [(name, kind) for name, (_, _, _, kinds) in FAULTS.items() for kind in kinds]


@pytest.mark.parametrize("fault, kind", CASES, ids=[f"{n}-{k}" for n, k in CASES])
def test_exactly_the_affected_item_fails(fault, kind, forking_server):
    func, make_items, error, _ = FAULTS[fault]
    pool = IMap(**options_for(kind, forking_server), stride=4)
    extra = dict(args=(PARENT,)) if func is returns_unloadable else {}
    results = pool.add_task(func, make_items(), **extra)
    outcome = []
    with pool:
        pool.start()
        for _ in range(ITEMS):
            try:
                outcome.append(results.next(timeout=60))
            except error as exc:
                outcome.append(type(exc))
        with pytest.raises(StopIteration):
            results.next(timeout=60)
    expected = list(range(ITEMS))
    expected[FAULTY] = error
    assert outcome == expected


def test_remote_reply_that_cannot_be_unpickled_fails_its_batch_only(forking_server):
    """Known limit of the remote pool: the whole batch holding such a result fails (the
    other batches are unaffected); local process pools fail only that item."""
    pool = IMap(worker_num=0, worker_remote=[(forking_server.address, 1)], stride=1)
    results = pool.add_task(returns_unloadable, range(ITEMS), args=(PARENT,))
    with pool:
        pool.start()
        outcome = []
        for _ in range(ITEMS):
            try:
                outcome.append(results.next(timeout=60))
            except Exception:  # noqa: BLE001
                outcome.append("error")
    assert outcome[FAULTY] == "error"
    assert [x for i, x in enumerate(outcome) if i != FAULTY] == \
        [x for x in range(ITEMS) if x != FAULTY]
