"""The connection of a Dask IMap to its cluster: checks at construction, and the session
of one run (``imap.backends.dask`` has the whole picture).

    IMap(...)  dask_workers(worker_remote, worker_num): the target checked, the threads
               counted (a scheduler address is asked once, by a short-lived Client)
    start()    _Session.open(): the Client (and the LocalCluster for None) made here, a
               probe task run on the cluster
    run        payload(spec): the future of a task's function, one per task and run;
               lost(): the reason the scheduler cannot be used any more, or None
    stop()     every slot returns its lease; the last one closes the session

State (``_State``, changed under ``_Session._lock``):

    NEW --open()--> OPEN --the scheduler is lost--> LOST --last lease--> CLOSED
                    OPEN --last lease--> CLOSED

Shutdown order (the last lease): the payload futures are released, then the Client and
the LocalCluster if the session made them (and the LocalCluster's folder, made unless Dask's
"temporary-directory" is configured); what the caller gave is never closed.
"""
from __future__ import annotations

import enum
import itertools
import logging
import os
import shutil
import tempfile
import threading
import uuid
from typing import Any

import dask
import distributed
from distributed import Client, Future
from distributed.deploy.cluster import Cluster

from .._errors import SerializationError, WorkerStartError
from . import _dask_side
from .base import TaskSpec, describe

__all__ = ["CONNECT_TIMEOUT", "dask_workers"]

log = logging.getLogger(__name__)

#: seconds to connect to a scheduler, and for the probe task to run at start
CONNECT_TIMEOUT = 30.0


# -- construction-time checks ---------------------------------------------------------

def dask_workers(target: Any, worker_num: int | None) -> tuple[Any, int]:
    """Check ``worker_remote`` for a Dask IMap; return it with the number of Dask threads to
    keep busy (``worker_num``, by default the cluster's threads).

    ``target`` is a ``distributed.Client`` (synchronous, running), a ``Cluster`` (e.g. a
    ``LocalCluster`` or a dask-jobqueue cluster), a scheduler address
    (``'tcp://host:8786'``, asked for its threads now unless ``worker_num`` is given) or None
    (the IMap makes a ``LocalCluster`` of ``worker_num`` processes, default: the CPUs).
    """
    if worker_num is not None and (isinstance(worker_num, bool) or not isinstance(
            worker_num, int) or worker_num < 1):
        raise ValueError(f"worker_num must be an int >= 1 or None (the cluster's threads) for "
                         f"worker_type='dask', not {worker_num!r}")
    if target is None:
        return None, worker_num or os.cpu_count() or 1
    if isinstance(target, Client):
        if target.asynchronous:
            raise ValueError("worker_remote: an asynchronous distributed.Client cannot serve "
                             "an IMap (its slots wait in threads); give a synchronous one or "
                             "its scheduler address")
        if target.status != "running":
            raise ValueError(f"worker_remote: the distributed.Client is {target.status}, not "
                             f"running")
        # distributed does not annotate Client.nthreads
        threads = worker_num or sum(target.nthreads().values())  # type: ignore[no-untyped-call]
    elif isinstance(target, Cluster):
        threads = worker_num or sum(w.get("nthreads", 0) for w in
                                    target.scheduler_info.get("workers", {}).values())
    elif isinstance(target, str) and target.strip():
        target = target.strip()
        threads = worker_num or _ask_threads(target)
    else:
        raise TypeError(f"worker_remote for worker_type='dask' is a distributed.Client, a "
                        f"Dask Cluster, a scheduler address such as 'tcp://host:8786', or "
                        f"None (a LocalCluster of its own), not {target!r}")
    if threads < 1:
        raise ValueError(f"the Dask cluster at {_where(target)} has no workers yet; give "
                         f"worker_num=N (the Dask threads the IMap should keep busy)")
    return target, threads


class _OwnClient(Client):
    """The Client an IMap makes: never Dask's default client, and one that cannot connect
    stops its IO loop thread (distributed 2026.8 leaves it running: the failed Client is
    gone, but its LoopRunner still counts it)."""

    def __init__(self, target: Any):
        # distributed does not annotate Client.__init__
        super().__init__(target, set_as_default=False,  # type: ignore[no-untyped-call]
                         timeout=CONNECT_TIMEOUT)

    def start(self, **kwargs: Any) -> None:
        try:
            super().start(**kwargs)  # type: ignore[no-untyped-call]  # distributed: untyped
        except BaseException:
            runner = getattr(self, "_loop_runner", None)
            if runner is not None:
                _quietly(runner.stop)
            raise


def _ask_threads(address: str) -> int:
    try:
        with _OwnClient(address) as client:
            return sum(client.nthreads().values())
    except (OSError, TimeoutError) as exc:
        raise WorkerStartError(f"cannot reach the Dask scheduler at {address}: "
                               f"{type(exc).__name__}: {exc}") from exc


def _where(target: Any) -> str:
    if isinstance(target, Client):
        return str(getattr(target.scheduler, "address", target))
    if isinstance(target, Cluster):
        return str(target.scheduler_address)
    return str(target)


# -- the session: one per run of an IMap ------------------------------------------------

class _State(enum.Enum):
    NEW = "new"
    OPEN = "open"
    LOST = "lost"        # the scheduler went away: every batch fails at once
    CLOSED = "closed"


class _Session:
    """The connection of one run of an IMap to a Dask cluster (see the module docstring)."""

    def __init__(self, target: Any, worker_num: int, name: str):
        self.target = target
        self.worker_num = worker_num
        self.name = name
        self.token = uuid.uuid4().hex[:16]
        self.client: Client | None = None
        self.address = _where(target) if target is not None else "(a LocalCluster)"
        self.leases = 0
        self.lost_reason = ""
        self._cluster: Any = None           # a LocalCluster made here
        self._scratch: str | None = None    # its workers' folder, made here (see _connect)
        self._owns_client = False
        self._payloads: dict[int, Future[bytes]] = {}
        self._keys = itertools.count()
        self._lock = threading.Lock()
        self._state = _State.NEW

    def open(self) -> None:
        try:
            self._connect()
            self._probe()
        except BaseException:
            self._close_connection()
            raise
        with self._lock:
            self._state = _State.OPEN

    def _connect(self) -> None:
        target = self.target
        try:
            if isinstance(target, Client):
                self.client = target
                return
            self._owns_client = True
            if target is None:
                # Dask's scheduler and workers keep their files in <temporary
                # folder>/dask-scratch-space, which nobody removes: unless Dask's
                # "temporary-directory" is configured, the cluster uses a folder of this
                # session instead, removed at close
                scratch = dask.config.get("temporary-directory", None)
                if scratch is None:
                    scratch = self._scratch = tempfile.mkdtemp(prefix="imap-dask-")
                with dask.config.set({"temporary-directory": scratch}):
                    # distributed does not annotate LocalCluster
                    self._cluster = distributed.LocalCluster(  # type: ignore[no-untyped-call]
                        n_workers=self.worker_num, threads_per_worker=1, processes=True,
                        host="127.0.0.1", dashboard_address="127.0.0.1:0",
                        local_directory=scratch)
                self.address = str(self._cluster.scheduler_address)
                target = self._cluster
            self.client = _OwnClient(target)
        except Exception as exc:  # any failure to connect
            what = "start a LocalCluster" if target is None else \
                f"connect to the Dask scheduler at {self.address}"
            raise WorkerStartError(f"cannot {what}: {type(exc).__name__}: {exc}") from exc

    def _probe(self) -> None:
        client = self.client
        assert client is not None
        try:
            future = client.submit(_dask_side.probe, key=f"imap-probe-{self.token}",
                                   pure=False)
            remote = tuple(future.result(timeout=CONNECT_TIMEOUT))
        except Exception as exc:  # e.g. imap not installed on the workers
            raise WorkerStartError(
                f"the Dask workers of {self.address} cannot run IMap batches: "
                f"{type(exc).__name__}: {exc}. Install papy on every worker (pip install "
                f"'papy[dask]', with the same Python minor version and dill as here), and "
                f"check that the cluster has workers") from exc
        local = _dask_side.probe()
        if remote != local:
            raise WorkerStartError(
                f"version mismatch with the Dask workers of {self.address}: there Python "
                f"{remote[0]}, dill {remote[1]}; here Python {local[0]}, dill {local[1]}. "
                f"Functions travel as bytecode: use the same Python minor version and dill "
                f"version everywhere")

    # -- used by the slots -------------------------------------------------------------

    def next_key(self) -> str:
        return f"imap-{self.name}-{self.token}-{next(self._keys)}"

    def payload(self, spec: TaskSpec) -> Future[bytes]:
        """The future of the task's dill payload, sent to the cluster once per session."""
        with self._lock:
            future = self._payloads.get(spec.key)
        if future is not None:
            return future
        data = spec.payload
        if data is None:
            import dill
            try:
                data = dill.dumps((spec.func, spec.args, spec.kwargs), recurse=True)
            except Exception as exc:
                raise SerializationError(
                    f"task {spec.task_id}: the function {describe(spec.func)} (with its args "
                    f"and kwargs) cannot be pickled with dill to send it to the Dask "
                    f"workers: {type(exc).__name__}: {exc}") from exc
        assert self.client is not None
        # a task that returns the payload, not scattered data: Dask recomputes it if the
        # worker holding it dies, whereas scattered data would be lost with it
        future = self.client.submit(_dask_side.hold, data, pure=False,
                                    key=f"imap-payload-{self.name}-{self.token}-{spec.key}")
        with self._lock:
            return self._payloads.setdefault(spec.key, future)

    def lost(self) -> str | None:
        """Why the scheduler cannot be used any more, or None while it can."""
        with self._lock:
            if self._state is _State.LOST:
                return self.lost_reason
            client = self.client
        status = client.status if client is not None else "closed"
        if status == "running":
            return None
        return self.mark_lost(f"the client's connection is {status}")

    def mark_lost(self, detail: str) -> str:
        with self._lock:
            if self._state is _State.OPEN:
                self._state = _State.LOST
                self.lost_reason = (f"the connection to the Dask scheduler at {self.address} "
                                    f"was lost ({detail}); stop() the IMap and start() it "
                                    f"again once the scheduler is back")
                log.error("%s: %s", self.name, self.lost_reason)
            return self.lost_reason

    def release(self) -> None:
        """A slot is done with the session; the last one closes it."""
        with self._lock:
            self.leases -= 1
            if self.leases > 0 or self._state is _State.CLOSED:
                return
            self._state = _State.CLOSED
            payloads = list(self._payloads.values())
            self._payloads.clear()
        for future in payloads:
            _quietly(future.release)
        self._close_connection()

    def _close_connection(self) -> None:
        client, cluster = self.client, self._cluster
        self._cluster = None
        if client is not None and self._owns_client:
            self.client = None
            # distributed does not annotate Client.close
            _quietly(lambda: client.close(timeout=CONNECT_TIMEOUT))  # type: ignore[no-untyped-call]
        if cluster is not None:
            _quietly(lambda: cluster.close(timeout=CONNECT_TIMEOUT))
        scratch, self._scratch = self._scratch, None
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


def _quietly(call: Any) -> None:
    try:
        call()
    except Exception:  # best effort during shutdown
        log.debug("ignored error while closing a Dask session", exc_info=True)
