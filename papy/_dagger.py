"""Dagger: a directed acyclic graph of Pipers connected by pipes (upstream -> downstream).

Orders, all deterministic:

- ``postorder()``: a topological order (upstream first) made with ``graphlib``; among Pipers
  that become ready together, by ``branch`` (no branch first, then ascending), then by the
  order the Pipers were added.
- the inputs of a join (``get_upstream``): by ``branch`` (no branch first, then ascending),
  then by the order their pipes were added. This is the order of ``inbox[0], inbox[1], ...``.
- ``get_inputs()`` / ``get_outputs()``: in postorder; ``datas[i]`` feeds ``get_inputs()[i]``.

A pipe that would close a cycle is refused with a DaggerError naming the Pipers on it.
"""
from __future__ import annotations

import graphlib
import logging
from typing import TYPE_CHECKING, Any, Iterable, Iterator, Literal, Sequence, overload

from ._errors import DaggerError, PapyError
from ._piper import Piper

if TYPE_CHECKING:
    from ._run import Run

log = logging.getLogger("papy")  # one name for the whole package (and "imap")

__all__ = ["Dagger"]

#: a Piper of a Dagger given as itself or as its ``id()``
PiperRef = Piper | int

#: a saved copy of a Dagger's tables (``_snapshot``)
_Tables = tuple[dict[int, Piper], dict[int, object], dict[int, list[Piper]],
                dict[int, list[Piper]]]


def _branch_key(piper: Piper) -> tuple[int, Any]:
    return (0, 0) if piper.branch is None else (1, piper.branch)


class Dagger:
    """A DAG of Pipers. ``Dagger(pipers=(), pipes=(), xtras=None)``.

    Example (``a``, ``b``, ``c``, ``e`` are Pipers)::

        dagger = Dagger()
        dagger.add_pipe((a, b, c))           # a -> b -> c
        dagger.add_pipe((a, e))              # fan-out: a feeds b and e
        dagger.get_inputs()                  # [a]
        dagger.get_outputs()                 # [e, c]: topological order, e is nearer a
    """

    #: evaluate each chain of Pipers on one IMap in one call (``papy._fuse``); False: never
    fuse = True

    def __init__(self, pipers: Sequence[Any] = (), pipes: Iterable[Iterable[Any]] = (),
                 xtras: Iterable[object] | None = None):
        self._pipers: dict[int, Piper] = {}          # insertion order
        self._xtras: dict[int, object] = {}
        self._up: dict[int, list[Piper]] = {}        # pipes into a Piper, in order added
        self._down: dict[int, list[Piper]] = {}
        xtra_list = list(xtras) if xtras is not None else [None] * len(pipers)
        # not strict: extra xtras (or Pipers) are ignored, as they always were
        for piper, xtra in zip(pipers, xtra_list, strict=False):
            self.add_piper(piper, xtra)
        self.add_pipes(pipes)

    # -- lookup -----------------------------------------------------------------------
    @overload
    def resolve(self, piper: object, forgive: Literal[False] = False) -> Piper: ...

    @overload
    def resolve(self, piper: object, forgive: bool) -> Piper | Literal[False]: ...

    def resolve(self, piper: object, forgive: bool = False) -> Piper | Literal[False]:
        """The Piper of this Dagger given as itself or as its ``id()``; else DaggerError
        (or False with ``forgive=True``)."""
        key = id(piper) if isinstance(piper, Piper) else piper
        if isinstance(key, int) and not isinstance(key, bool) and key in self._pipers:
            return self._pipers[key]
        if forgive:
            return False
        raise DaggerError(f"{piper!r} is not a Piper of {self!r}")

    def __len__(self) -> int:
        return len(self._pipers)

    def __iter__(self) -> Iterator[Piper]:
        return iter(list(self._pipers.values()))

    def __contains__(self, piper: object) -> bool:
        return bool(self.resolve(piper, forgive=True))

    def nodes(self) -> list[Piper]:
        """The Pipers, in the order they were added."""
        return list(self._pipers.values())

    def pipes(self) -> list[tuple[Piper, Piper]]:
        """The pipes as ``(upstream, downstream)`` pairs."""
        return [(up, self._pipers[key]) for key, ups in self._up.items() for up in ups]

    edges = pipes

    def get_upstream(self, piper: PiperRef) -> list[Piper]:
        """The Pipers that feed ``piper``, in join order (branch, then order added)."""
        piper = self.resolve(piper)
        try:
            return sorted(self._up[id(piper)], key=_branch_key)
        except TypeError as exc:
            raise DaggerError(f"the branches of the inputs of {piper.name!r} cannot be "
                              f"compared: {[u.branch for u in self._up[id(piper)]]}") from exc

    def get_downstream(self, piper: PiperRef) -> list[Piper]:
        piper = self.resolve(piper)
        return list(self._down[id(piper)])

    def postorder(self) -> list[Piper]:
        """All Pipers, upstream first (ties: branch, then order added)."""
        rank = {key: k for k, key in enumerate(self._pipers)}
        sorter: graphlib.TopologicalSorter[int] = graphlib.TopologicalSorter()
        for key, ups in self._up.items():
            sorter.add(key, *(id(u) for u in ups))
        try:
            sorter.prepare()
        except graphlib.CycleError as exc:
            names = " -> ".join(self._pipers[key].name for key in exc.args[1])
            raise DaggerError(f"the pipes form a cycle: {names}") from None
        order: list[Piper] = []
        while sorter.is_active():
            ready = list(sorter.get_ready())
            try:
                ready.sort(key=lambda key: (_branch_key(self._pipers[key]), rank[key]))
            except TypeError as exc:
                raise DaggerError(f"Piper branches cannot be compared: "
                                  f"{[self._pipers[k].branch for k in ready]}") from exc
            order.extend(self._pipers[key] for key in ready)
            sorter.done(*ready)
        return order

    def get_inputs(self) -> list[Piper]:
        """Pipers without upstream Pipers, in postorder."""
        return [p for p in self.postorder() if not self._up[id(p)]]

    def get_outputs(self) -> list[Piper]:
        """Pipers without downstream Pipers, in postorder."""
        return [p for p in self.postorder() if not self._down[id(p)]]

    # -- building ---------------------------------------------------------------------
    def add_piper(self, piper: Any, xtra: object = None, create: bool = True,
                  branch: Any = None) -> tuple[bool, Piper]:
        """Add a Piper (or its id, or anything ``Piper()`` accepts when ``create``).

        Returns ``(created, piper)``; adding a Piper twice is harmless.
        """
        found = self.resolve(piper, forgive=True)
        created = not found
        if found:
            piper = found
        else:
            if not isinstance(piper, Piper):
                if not create:
                    raise DaggerError(f"{piper!r} is not a Piper (and create=False)")
                try:
                    piper = Piper(piper)
                except (PapyError, TypeError, ValueError) as exc:
                    raise DaggerError(f"cannot make a Piper of {piper!r}: {exc}") from exc
            key = id(piper)
            self._number(piper)
            self._pipers[key], self._up[key], self._down[key] = piper, [], []
        if branch is not None:
            piper.branch = branch
        if xtra is not None:
            self._xtras[id(piper)] = xtra
        return created, piper

    def _number(self, piper: Piper) -> None:
        """A Piper named after its function by default gets a number when one of this
        Dagger's Pipers has that name already: 'parse', 'parse_2', 'parse_3', ..."""
        if not getattr(piper, "_default_name", False) or piper._run is not None:
            return
        taken = {p.name for p in self._pipers.values()}
        if piper.name in taken:
            base, number = piper.name, 2
            while f"{base}_{number}" in taken:
                number += 1
            piper.name = f"{base}_{number}"

    def del_piper(self, piper: PiperRef, forced: bool = False) -> None:
        """Remove a Piper and its pipes; one that feeds others needs ``forced=True``."""
        piper = self.resolve(piper)
        key = id(piper)
        if self._down[key] and not forced:
            raise DaggerError(f"piper {piper.name!r} feeds "
                              f"{[d.name for d in self._down[key]]}; use forced=True")
        for up in self._up[key]:
            self._down[id(up)].remove(piper)
        for down in self._down[key]:
            self._up[id(down)].remove(piper)
        tables: tuple[dict[int, Any], ...] = (self._pipers, self._up, self._down, self._xtras)
        for table in tables:
            table.pop(key, None)

    def add_pipe(self, pipe: Iterable[Any], branch: Any = None) -> None:
        """Add the pipes ``a -> b -> c`` of ``pipe = (a, b, c)`` (Pipers added as needed;
        ``branch`` is set on the Pipers this call adds). A cycle is a DaggerError."""
        if isinstance(pipe, (str, bytes, Piper)) or not hasattr(pipe, "__iter__"):
            raise DaggerError(f"a pipe is a sequence of Pipers, not {pipe!r}")
        saved = self._snapshot()
        try:
            pipers: list[Piper] = []
            for element in pipe:
                created, piper = self.add_piper(element)
                if created and branch is not None:
                    piper.branch = branch
                pipers.append(piper)
            for up, down in zip(pipers, pipers[1:], strict=False):    # pairs a -> b
                if up is down:
                    raise DaggerError(f"the pipes form a cycle: {up.name} -> {up.name}")
                if up not in self._up[id(down)]:
                    self._up[id(down)].append(up)
                    self._down[id(up)].append(down)
            self.postorder()
        except BaseException:
            self._restore(saved)
            raise

    def del_pipe(self, pipe: Iterable[PiperRef], forced: bool = False) -> None:
        """Remove the pipes of ``pipe`` (right to left) and the Pipers of ``pipe`` left
        without any pipe; ``forced=True`` also removes those left without downstream."""
        if isinstance(pipe, (str, bytes, Piper)) or not hasattr(pipe, "__iter__"):
            raise DaggerError(f"a pipe is a sequence of Pipers, not {pipe!r}")
        pipers = [self.resolve(p) for p in pipe]
        pairs = list(zip(pipers, pipers[1:], strict=False))
        for up, down in pairs:
            if up not in self._up[id(down)]:
                raise DaggerError(f"there is no pipe {up.name} -> {down.name}")
        for up, down in reversed(pairs):
            self._up[id(down)].remove(up)
            self._down[id(up)].remove(down)
        for piper in reversed(pipers):
            key = id(piper)
            if key in self._pipers and not self._down[key] and (forced or not self._up[key]):
                self.del_piper(piper)

    def add_pipers(self, pipers: Iterable[Any], *args: Any, **kwargs: Any) -> None:
        for piper in pipers:
            self.add_piper(piper, *args, **kwargs)

    def del_pipers(self, pipers: Iterable[PiperRef], *args: Any, **kwargs: Any) -> None:
        for piper in reversed(list(pipers)):
            self.del_piper(piper, *args, **kwargs)

    def add_pipes(self, pipes: Iterable[Iterable[Any]], *args: Any, **kwargs: Any) -> None:
        for pipe in pipes:
            self.add_pipe(pipe, *args, **kwargs)

    def del_pipes(self, pipes: Iterable[Iterable[PiperRef]], *args: Any, **kwargs: Any
                  ) -> None:
        for pipe in reversed(list(pipes)):
            self.del_pipe(pipe, *args, **kwargs)

    def _snapshot(self) -> _Tables:
        return (dict(self._pipers), dict(self._xtras), {k: list(v) for k, v in self._up.items()},
                {k: list(v) for k, v in self._down.items()})

    def _restore(self, saved: _Tables) -> None:
        self._pipers, self._xtras, self._up, self._down = saved

    # -- running (the original PaPy names; the run is papy._run.Run) -----------------
    def connect(self, datas: Any = None) -> None:
        """Connect every Piper: ``datas[i]`` feeds the i-th input Piper (if given), the
        others read their upstream Pipers in join order. Builds the run (``papy._run``):
        its nodes, the IMap tasks; chains of Pipers on one IMap are fused (``fuse``)."""
        from ._plan import build_run
        build_run(self, datas, fuse=self.fuse)

    def run_of(self) -> Run | None:
        """The run the Pipers of this Dagger are connected in (None: not connected)."""
        runs = {id(p._run): p._run for p in self._pipers.values()
                if p._run is not None and p.connected}
        if len(runs) > 1:
            raise DaggerError(f"the Pipers of {self!r} are connected in several pipelines; "
                              f"disconnect them first")
        return next(iter(runs.values()), None)

    def fused_chains(self) -> list[tuple[Piper, ...]]:
        """The chains of Pipers the current run evaluates as one call each (fusion), head
        first; [] when not connected or nothing was fused."""
        run = self.run_of()
        if run is None:
            return []
        return [node.pipers for node in run.nodes if node.fused]

    def disconnect(self, forced: bool = False) -> None:
        """Disconnect every connected Piper, downstream first."""
        for piper in reversed(self.postorder()):
            if piper.connected:
                piper.disconnect(forced)

    def start(self, datas: Any = None) -> None:
        """Start the run: every IMap of it (after all the tasks of every Piper that shares
        it were added by ``connect``), then its scheduler; every Piper is started. With
        ``datas``, ``connect(datas)`` first (as ``Plumber.start(datas)``)."""
        if datas is not None:
            self.connect(datas)
        run = self.run_of()
        if run is None:
            raise DaggerError(f"{self!r} is not connected; connect(datas) first")
        for piper in self.postorder():
            if not piper.started:
                piper.start()

    def stop(self) -> None:
        """End the inputs, drain the outputs (results are discarded), stop the IMaps."""
        run = self.run_of()
        if run is not None:
            run.stop()
            run.unstart_all()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({id(self)})"

    def __str__(self) -> str:
        lines = [repr(self), "pipers:"]
        lines += [f"  {p.name}" for p in self.postorder()]
        lines.append("pipes:")
        lines += [f"  {a.name}>>>{b.name}" for a, b in self.pipes()]
        return "\n".join(lines)
