"""papy: parallel pipelines for Python.

A pipeline is a directed acyclic graph of Pipers (nodes evaluating a Worker, a composition
of user functions) joined by pipes; each Piper runs linearly or on an IMap (a pool of
threads, processes or remote workers, possibly shared by several Pipers). A Plumber runs
the graph. See docs/papy.md.

    from papy import *

    def grep(inbox, pattern):
        return inbox[0] if pattern in inbox[0] else None

    with IMap(worker_type='thread', worker_num=2) as pool:
        plumber = Plumber()
        plumber.add_pipe((Piper(Worker(grep, ('papy',)), parallel=pool),
                          Piper(workers.io.print_)))
        plumber.start([['papy 1', 'other', 'papy 2']]); plumber.run()
        plumber.wait(); plumber.pause(); plumber.stop()

Only ``papy`` (this package) is the pipeline layer; ``imap`` is the pool and never imports
papy. The ``papy`` logger has a NullHandler; ``papy.start_logger()`` shows the records.
"""
import logging

import imap as _imap
from imap import IMap, imports

from . import workers
from ._cache import Cache
from ._dagger import Dagger
from ._errors import DaggerError, PapyError, PiperError, PlumberError, WorkerError
from ._fanout import Args, Multiple
from ._fingerprint import fingerprint
from ._frame import Frame
from ._logging import start_logger as start_logger  # papy.start_logger, not in __all__
from ._piper import Piper
from ._plumber import Plumber
from ._progress import summary as summary  # papy.summary, not in __all__
from ._reduce import Reducer
from ._runner import add_run_options as add_run_options  # for templates, not in __all__
from ._runner import run_options as run_options
from ._runner import run_plumber as run_plumber
from ._runtime import current_stop_event as current_stop_event  # not in __all__
from ._signals import handle_signals as handle_signals  # not in __all__
from ._worker import Worker
from . import inline as inline  # papy.inline, the job_stream front end (not in __all__)

logging.getLogger("papy").addHandler(logging.NullHandler())
# the Workers of Pipers unpickle papy's classes in every worker process: the fork server
# imports papy once instead (when no process pool has started the fork server yet), with
# the cache's side of a Worker (imported by papy only when a Worker has a cache: each
# worker would import it before its first result)
_imap.preload("papy", "papy._cache_worker")

__all__ = ["Worker", "Piper", "Dagger", "Plumber", "IMap", "imports", "workers",
           "PapyError", "WorkerError", "PiperError", "DaggerError", "PlumberError",
           "Cache", "fingerprint", "Multiple", "Args", "Reducer", "Frame"]
