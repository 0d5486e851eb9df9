"""imap: a lazy, buffered, multi-task parallel map on threads, processes and remote hosts.

    from imap import IMap, imports

    for y in IMap(f, xs):          # like map(f, xs), on worker processes
        ...

See docs/imap.md for the model (tasks, stride, buffer) and every parameter.
"""
from ._errors import (IMapError, RemoteError, RemoteTraceback, SerializationError,
                      WorkerDiedError, WorkerStartError)
from ._feeder import waiting_for_input
from ._config import preload  # noqa: F401 - imap.preload, not in __all__
from ._imap import IMap
from ._results import TaskIterator
from ._imports import imports
from ._sources import IterableSource
from ._queue import QueueClosedError, TaskQueue
from ._execute import ExecuteIterator, execute
from ._executor import Executor
from .protocols import BatchFunction, BatchSource, Results, Wake

__all__ = ["IMap", "TaskIterator", "imports", "waiting_for_input", "IMapError",
           "WorkerDiedError", "SerializationError", "WorkerStartError", "RemoteError",
           "RemoteTraceback", "BatchSource", "BatchFunction", "Results", "Wake",
           "IterableSource", "TaskQueue", "QueueClosedError", "execute", "ExecuteIterator",
           "Executor"]
