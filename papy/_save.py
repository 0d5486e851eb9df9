"""Save a pipeline as a runnable Python module, and load it back.

The module written by ``Plumber.save(filename)`` looks like::

    from papy import *                    # Worker, Piper, IMap, imports, workers, ...
    from mypackage.steps import clean     # functions of importable modules: imported
    import re                             # the imports of the files of the functions below

    @imports(['re'])                      # functions of __main__ (or of no importable
                                          # module, e.g. a loaded pipeline): their source
    def grep(inbox, pattern): ...

    def pipeline():
        imap_0 = IMap(worker_type='process', worker_num=2, worker_remote=[...], stride=2, ...)
        piper_0 = Piper(Worker((clean,), ((),), ({},)), parallel=imap_0, ..., name='clean')
        piper_1 = Piper(Worker((grep,), (('papy',),), ({},)), parallel=False, ...)
        pipers = [piper_0, piper_1]
        xtras = [None, None]
        pipes = [(piper_0, piper_1)]
        return pipers, xtras, pipes

    if __name__ == '__main__':
        pipeline()

Loading runs that code (only load files you trust). Arguments, kwargs, branches and xtras
must be Python literals (their ``repr`` is written); lambdas, nested functions and bound
methods cannot be saved (a PlumberError says which).
"""
from __future__ import annotations

import ast
import functools
import importlib
import importlib.util
import inspect
import itertools
import linecache
import os
import textwrap
import time
import types
from typing import TYPE_CHECKING, Any, Callable

from ._errors import PlumberError
from ._plain import PlainCall
from ._worker import Worker

if TYPE_CHECKING:
    from ._dagger import Dagger

__all__ = ["save_pipeline", "load_pipeline"]

_IMAP_FIELDS = ("worker_type", "worker_num", "worker_remote", "stride", "buffer", "ordered",
                "skip", "name", "start_method", "remote_tls", "remote_timeout")
_PIPER_FIELDS = ("consume", "produce", "spawn", "timeout", "branch", "debug", "name", "track",
                 "repeat", "drop_none")
_loaded = itertools.count()


def _literal(value: object, what: str) -> str:
    text = repr(value)
    try:
        same = ast.literal_eval(text) == value
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        same = False
    if not same:
        raise PlumberError(f"cannot save {what} = {text[:100]}: only Python literals (numbers, "
                           f"strings, tuples, lists, dicts, sets, None, booleans) can be saved")
    return text


class _Writer:
    """Collects the imports, sources and names a saved module needs."""

    def __init__(self) -> None:
        self.imports: dict[tuple[str, str], str] = {}   # (module, name) -> local alias
        self.sources: dict[int, str] = {}               # id(func) -> source text
        self.main_imports: list[str] = []
        self.taken: set[str] = set()

    def function(self, func: Callable[..., Any]) -> str:
        """An expression naming ``func`` in the saved module."""
        if isinstance(func, functools.partial):
            args = ", ".join([self.function(func.func)] +
                             [_literal(a, f"an argument of {func!r}") for a in func.args] +
                             [f"{k}={_literal(v, f'an argument of {func!r}')}"
                              for k, v in func.keywords.items()])
            return f"{self.alias('functools', 'partial')}({args})"
        module = getattr(func, "__module__", None)
        qualname = getattr(func, "__qualname__", None) or getattr(func, "__name__", None)
        if not module or not qualname or "<" in qualname or inspect.ismethod(func):
            raise PlumberError(f"cannot save {func!r}: lambdas, nested functions and bound "
                               f"methods cannot be saved; use a module-level function")
        if module != "__main__" and _locate(module, qualname) is func:
            top, _, rest = qualname.partition(".")
            return self.alias(module, top) + ("." + rest if rest else "")
        if "." in qualname or not inspect.isfunction(func):
            raise PlumberError(f"cannot save {module}.{qualname}: it is not importable and "
                               f"has no source that can be written")
        if id(func) not in self.sources:
            if func.__name__ in self.taken:
                raise PlumberError(f"cannot save two functions named {func.__name__!r}; "
                                   f"rename one of them")
            self.source(func)
            self.taken.add(func.__name__)
        return func.__name__

    def alias(self, module: str, name: str) -> str:
        key = (module, name)
        if key not in self.imports:
            alias = name
            for k in itertools.count(1):
                if alias not in self.taken:
                    break
                alias = f"{name}_{k}"
            self.imports[key] = alias
            self.taken.add(alias)
        return self.imports[key]

    def source(self, func: types.FunctionType) -> None:
        """Keep the source of ``func`` and the top-level imports of the file it is in."""
        try:
            self.sources[id(func)] = textwrap.dedent(inspect.getsource(func))
        except (OSError, TypeError) as exc:
            raise PlumberError(f"cannot save {func.__qualname__}: its source is not "
                               f"available ({exc})") from exc
        try:
            tree = ast.parse("".join(linecache.getlines(func.__code__.co_filename)))
        except (SyntaxError, ValueError):
            return
        for node in tree.body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                line = ast.unparse(node)
                if line not in self.main_imports and line != "from papy import *":
                    self.main_imports.append(line)


def _locate(module: str, qualname: str) -> object:
    try:
        obj: object = importlib.import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part)
        return obj
    except (ImportError, AttributeError):
        return None


def _remote_literal(worker_type: object, value: Any) -> object:
    """``worker_remote`` as saved: (host:port, n) pairs; for a Dask IMap the scheduler's
    address (a Client or a cluster object is saved as its ``scheduler_address``)."""
    if worker_type != "dask":
        return [(f"[{h}]:{p}" if ":" in h else f"{h}:{p}", n) for h, p, n in value or []]
    if value is None or isinstance(value, str):
        return value
    scheduler = getattr(value, "scheduler", None)        # a Client
    return getattr(value, "scheduler_address", None) or getattr(scheduler, "address", value)


def _imap_expression(imap: object) -> str:
    fields: list[str] = []
    for field in _IMAP_FIELDS:
        if not hasattr(imap, field):
            continue
        value = getattr(imap, field)
        if field == "worker_remote":
            value = _remote_literal(getattr(imap, "worker_type", None), value)
        fields.append(f"{field}={_literal(value, f'{imap!r}.{field}')}")
    return f"IMap({', '.join(fields)})"


def _worker_expression(writer: _Writer, worker: Worker) -> str:
    plain = {type(f) is PlainCall for f in worker.task}
    if len(plain) > 1:      # plain and inbox functions composed: one Worker for each
        parts = [_worker_expression(writer, Worker(f.func if type(f) is PlainCall else f,
                                                   a, k, plain=type(f) is PlainCall))
                 for f, a, k in zip(worker.task, worker.args, worker.kwargs, strict=True)]
        return f"Worker(({', '.join(parts)},))"
    functions = ", ".join(writer.function(f.func if type(f) is PlainCall else f)
                          for f in worker.task)
    args = _literal(tuple(worker.args), f"the arguments of worker {worker.__name__!r}")
    kwargs = _literal(tuple(worker.kwargs), f"the kwargs of worker {worker.__name__!r}")
    return f"Worker(({functions},), {args}, {kwargs}{', plain=True' if True in plain else ''})"


def save_pipeline(dagger: Dagger, filename: str | os.PathLike[str]) -> None:
    """Write ``dagger`` (its Pipers, pipes, xtras, IMaps) as a runnable module."""
    writer = _Writer()
    pipers = dagger.nodes()
    names = {id(p): f"piper_{k}" for k, p in enumerate(pipers)}
    imaps: dict[int, tuple[str, object]] = {}
    body: list[str] = []
    for piper in pipers:
        if hasattr(piper, "node_type"):     # a Reducer, a Frame: functions and a body
            raise PlumberError(f"cannot save {type(piper).__name__} {piper.name!r}: save "
                            f"writes Pipers of Workers only")
        if piper.parallel is not False and id(piper.parallel) not in imaps:
            var = f"imap_{len(imaps)}"
            imaps[id(piper.parallel)] = (var, piper.parallel)
            body.append(f"    {var} = {_imap_expression(piper.parallel)}")
    for piper in pipers:
        parallel = imaps[id(piper.parallel)][0] if piper.parallel is not False else "False"
        options = [f"parallel={parallel}"]
        options += [f"{f}={_literal(getattr(piper, f), f'{piper.name}.{f}')}"
                    for f in _PIPER_FIELDS]
        body.append(f"    {names[id(piper)]} = Piper({_worker_expression(writer, piper.worker)}"
                    f", {', '.join(options)})")
    xtras = [_literal(dagger._xtras.get(id(p)), f"the xtra of {p.name}") for p in pipers]
    body.append(f"    pipers = [{', '.join(names[id(p)] for p in pipers)}]")
    body.append(f"    xtras = [{', '.join(xtras)}]")
    pipes = ", ".join(f"({names[id(a)]}, {names[id(b)]})" for a, b in dagger.pipes())
    body.append(f"    pipes = [{pipes}]")
    body.append("    return pipers, xtras, pipes")
    header = [f'"""A papy pipeline saved on {time.strftime("%Y-%m-%d %H:%M:%S")}.',
              "", "Load it with Plumber().load(filename); loading runs this code.", '"""',
              "from papy import *"]
    header += [f"from {m} import {n}" + (f" as {a}" if a != n else "")
               for (m, n), a in writer.imports.items()]
    header += writer.main_imports
    text = "\n".join(header) + "\n\n\n"
    text += "".join(source.rstrip() + "\n\n\n" for source in writer.sources.values())
    text += "def pipeline():\n" + "\n".join(body) + "\n\n\nif __name__ == '__main__':\n"
    text += "    pipeline()\n"
    with open(filename, "w", encoding="utf-8") as handle:
        handle.write(text)


def load_pipeline(dagger: Dagger, filename: str | os.PathLike[str]) -> None:
    """Run the module ``filename`` and add the Pipers and pipes of its ``pipeline()``."""
    stem = "".join(c if c.isalnum() else "_" for c in os.path.basename(str(filename)))
    name = f"papy_saved_{stem}_{next(_loaded)}"
    spec = importlib.util.spec_from_file_location(name, filename)
    if spec is None or spec.loader is None:
        raise PlumberError(f"cannot load {filename!r}: not a Python file")
    # not put in sys.modules: its functions cannot be imported by name in a worker, so
    # they are sent by value (as functions of __main__ are), whatever the start method
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
        pipers, xtras, pipes = module.pipeline()
    except Exception as exc:
        raise PlumberError(f"cannot load the pipeline in {filename!r}: "
                           f"{type(exc).__name__}: {exc}") from exc
    # not strict, as it always was: with fewer xtras (a module written by hand) the Pipers
    # left over are added by their pipes only
    for piper, xtra in zip(pipers, xtras, strict=False):
        dagger.add_piper(piper, xtra)
    dagger.add_pipes(pipes)
