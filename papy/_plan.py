"""The plan of a run: which nodes a Dagger's graph becomes, and the run built from them.

    Dagger (topology) --postorder, join order, fusion (papy._fuse_groups)--> nodes
        --Run.add_node, upstream first--> Run (papy._run), with its IMap tasks

Fusion is a decision of the plan: a chain of Pipers on one IMap with nothing for the run
to do between them becomes one node (its last Piper owns the node; the chain's Workers run
one after the other where the IMap evaluates). ``fuse=False`` keeps one node per Piper.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._errors import DaggerError
from ._fuse_groups import groups
from ._run import Run

if TYPE_CHECKING:
    from ._dagger import Dagger
    from ._piper import Piper

__all__ = ["build_run"]


def build_run(dagger: Dagger, datas: Any, fuse: bool = True) -> Run:
    """Connect every Piper of ``dagger`` in one run (see the module docstring).

    ``datas[i]`` feeds the i-th input Piper. Without ``datas``, input Pipers must have been
    connected by hand already (their run is extended). Undone when it fails.
    """
    order = dagger.postorder()
    inputs = [p for p in order if not dagger.get_upstream(p)]
    if datas is not None:
        if isinstance(datas, (str, bytes)) or not hasattr(datas, "__len__"):
            raise DaggerError(f"give one iterable per input Piper in a list, e.g. "
                              f"start([range(10)]), not {datas!r}")
        datas = list(datas)
        if len(datas) != len(inputs):
            hint = ""
            if not any(hasattr(d, "__iter__") and not isinstance(d, (str, bytes))
                       for d in datas):
                hint = (": give one iterable per input Piper in a list, e.g. "
                        "start([range(10)]) instead of start(range(10))")
            raise DaggerError(f"{len(datas)} input iterables for {len(inputs)} input Pipers "
                              f"{[p.name for p in inputs]}{hint}")
        for piper, data in zip(inputs, datas, strict=True):    # lengths checked above
            if not hasattr(data, "__iter__"):
                raise TypeError(
                    f"the input of piper {piper.name!r} is not iterable "
                    f"({type(data).__name__}): give one iterable per input Piper, e.g. "
                    f"start([range(10)]) or start([open(path)])")
    run = _existing_run(dagger, inputs, datas)
    fused = groups(order, dagger.get_upstream, dagger.get_downstream) if fuse else {}
    absorbed = {id(p) for members, _ in fused.values() for p in members[:-1]}
    done = []
    try:
        for piper in order:
            if id(piper) in absorbed:
                continue
            chain, stage_inputs = fused.get(id(piper), ((piper,), None))
            head = chain[0]
            if piper.connected and datas is None:
                continue                # an input connected by hand
            if dagger.get_upstream(head):
                inbox: list[Any] = dagger.get_upstream(head)
            elif datas is not None:
                inbox = [datas[inputs.index(head)]]
            else:
                raise DaggerError(f"input piper {head.name!r} has no input: give datas")
            if piper.connected:
                raise DaggerError(f"piper {piper.name!r} is already connected")
            piper._join(run, chain, inbox, stage_inputs)
            done.append(piper)
    except BaseException:
        for piper in reversed(done):
            piper.disconnect(forced=True)
        raise
    return run


def _existing_run(dagger: Dagger, inputs: list[Piper], datas: Any) -> Run:
    if datas is None:
        runs = {id(p._run): p._run for p in inputs if p._run is not None and p.connected}
        if len(runs) == 1:
            return next(iter(runs.values()))
    return Run(repr(dagger))
