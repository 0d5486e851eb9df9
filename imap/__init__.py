"""imap: a lazy, buffered, multi-task parallel map on threads, processes, remote hosts and
Dask clusters.

    from imap import IMap, imports

    for y in IMap(f, xs):          # like map(f, xs), on worker processes
        ...

See docs/imap.md for the model (tasks, stride, buffer) and every parameter.
"""
import logging as _logging

from ._errors import (BrokenPoolError, IMapError, IMapWarning, RemoteError, RemoteTraceback,
                      SerializationError, WorkerDiedError, WorkerStartError)
from ._feeder import waiting_for_input
from ._config import override_workers as override_workers  # imap.<name>, not in __all__
from ._config import preload as preload  # imap.<name>, not in __all__
from ._config import seconds as _seconds
from .backends._shm import unlink_shm as unlink_shm  # for papy, not in __all__
from ._imap import IMap
from ._results import TaskIterator
from ._imports import imports
from ._sources import IterableSource
from ._calls import PushSource
from ._calls import take_from as take_from  # for papy's queues, not in __all__
from ._queue import QueueClosedError, TaskQueue
from ._execute import ExecuteIterator, execute
from ._executor import Executor
from .protocols import BatchFunction, BatchSource, Results, Wake

check_seconds = _seconds    # for papy, not in __all__ (an assignment: re-exported for mypy)

_logging.getLogger(__name__).addHandler(_logging.NullHandler())   # the library's only handler

__all__ = ["IMap", "TaskIterator", "imports", "waiting_for_input", "IMapError",
           "WorkerDiedError", "SerializationError", "WorkerStartError", "RemoteError",
           "RemoteTraceback", "BrokenPoolError", "IMapWarning", "BatchSource", "BatchFunction",
           "Results", "Wake", "IterableSource", "TaskQueue", "QueueClosedError", "execute",
           "ExecuteIterator", "Executor", "PushSource"]
