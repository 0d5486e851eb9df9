"""The seam between the IMap front end and the kinds of workers.

A pool is a set of *slots*. Each slot is one parent-side thread (``imap._pool``) that
takes batches from the pool's dispatch queue and hands each one to its ``WorkerHandle``:

    feeder thread --Batch--> dispatch queue --> slot thread 1 --run(batch)--> WorkerHandle 1
                                            --> slot thread 2 --run(batch)--> WorkerHandle 2 ...
    slot thread --deliver(batch, values, errors)--> IMap result store --> next() / iteration

A handle evaluates one batch at a time. It is one of:

- ``ThreadHandle``: evaluates in the slot thread itself (``imap.backends.thread``);
- ``ProcessHandle``: a local worker process behind a pipe (``imap.backends.process``);
- ``RemoteHandle``: one connection to an RPyC classic server (``imap.backends.remote``).

A handle never raises for an item: an exception of the user's function is an entry of the
``errors`` dict (the exception object, with the worker-side traceback as ``__cause__``). It
raises ``WorkerLost`` when the worker itself is gone (process died, connection dropped,
stalled past its timeout); the slot then re-queues the batch's other items, fails the
item that was being evaluated (when known) and opens a fresh worker.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from collections.abc import Callable
from typing import Any


class WorkerLost(Exception):  # noqa: N818 - a public name of the backend seam since the first IMap
    """Raised by ``WorkerHandle.run`` when the worker died or became unreachable.

    ``position`` is the index within the batch of the item being evaluated when the worker
    was lost, or None when it is not known (the items are then re-run one by one, and an
    item that kills a worker again fails in place). ``exitcode`` is the process exit code
    (negative: killed by that signal) or None.

    ``before_work``: the worker died before it began this batch (while idle, starting, or
    loading the task's function), so no item of the batch is to blame: the batch is run
    again as it is. ``server_died``: the worker died because its fork server died (it was
    killed with it): not the items' fault either.
    """

    def __init__(self, message: str, position: int | None = None, exitcode: int | None = None,
                 timed_out: bool = False, before_work: bool = False,
                 server_died: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.position = position
        self.exitcode = exitcode
        self.timed_out = timed_out   # killed because the item ran past the task's item_timeout
        self.before_work = before_work
        self.server_died = server_died


_task_keys = itertools.count(1)


@dataclass(eq=False)
class TaskSpec:
    """What a worker needs to evaluate one task's items: ``func(item, *args, **kwargs)``.

    ``key`` is unique within the interpreter, so a worker can cache the loaded function
    by key and a function is shipped once per worker (process or connection), not per item.
    ``payload`` is the dill pickle of ``(func, args, kwargs)``, made once by the front end
    for pools that need it (process, remote).
    """

    task_id: int
    func: Callable[..., Any]
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    payload: bytes | None = None
    key: int = field(default_factory=lambda: next(_task_keys))
    #: seconds one item may run; past it the worker is killed and replaced (processes,
    #: remote) or the item abandoned (threads), and the item fails with TimeoutError
    item_timeout: float | None = None
    #: the front end's feeder of the run the task belongs to (never sent to a worker):
    #: a delivered batch is counted back there even after its task was removed
    owner: Any = None


@dataclass(eq=False)
class Batch:
    """Consecutive items ``start .. start+len(items)-1`` of one task.

    ``tracked``: evaluate item by item and record the position being evaluated, so a
    worker's death can be blamed on one item (chosen for slow items and for re-runs).
    ``isolated``: a single item re-run after a worker died with it in an untracked batch.
    ``counted``: the front end counts this batch as in flight until it is delivered (when a
    batch is split after a worker died, exactly one of its pieces keeps the flag).
    ``nbytes``: set by handles that serialise: bytes sent and received for this batch, so
    the batch size also adapts to the size of the items, not only to their time.
    ``attempts``: how often an isolated item was lost with its worker without being blamed.
    """

    task: TaskSpec
    start: int
    items: list[Any]
    tracked: bool = False
    isolated: bool = False
    counted: bool = False
    nbytes: int = 0
    attempts: int = 0


class WorkerHandle:
    """One worker of a pool. Subclasses implement the four methods below.

    Threads: ``open``/``run``/``close`` are called from the slot's own thread; ``kill`` may
    be called from any thread (at a forced stop) and must make a running ``run`` return or
    raise ``WorkerLost`` promptly where the kind of worker allows it (processes and
    connections do; threads cannot be interrupted).
    """

    #: a short description used in messages, e.g. 'process 1234' or 'host:18812 slot 2'
    name: str = "worker"
    #: start failures in a row (open() failed, or the worker died before it did any work)
    #: after which the pool gives up this slot
    start_attempts: int = 3

    def open(self) -> None:
        """Start the worker or connect to it. Raise ``imap.WorkerStartError`` on failure."""
        raise NotImplementedError

    def run(self, batch: Batch) -> tuple[list[Any], dict[int, BaseException] | None, float]:
        """Evaluate ``batch``; return ``(values, errors, elapsed_seconds)``.

        ``values`` has one entry per item (None where an error is); ``errors`` is None or
        ``{position: exception}``. Raise ``WorkerLost`` if the worker is gone.
        """
        raise NotImplementedError

    def close(self) -> None:
        """Stop the worker gracefully after its current batch. Idempotent."""
        raise NotImplementedError

    def kill(self) -> None:
        """Stop the worker now. Idempotent; callable from any thread."""
        self.close()


def describe(obj: Any) -> str:
    """A short name for a function or other object, for error messages."""
    return getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None) or repr(obj)
