"""The graph of a pipeline as text: Graphviz DOT or Mermaid (``papy graph``).

Each Piper is a box (its name, its function unless the name is the function's,
produce/spawn/consume when not 1, 'linear'), the Pipers of one IMap are grouped in a box
labelled with the pool, pipes are arrows (the inbox slot on the arrows into a join), and
each input Piper has an 'input k' node.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._dagger import Dagger

__all__ = ["graph_text"]

Node = tuple[str, list[str]]            # (id, label lines)
Group = tuple[Any, list[str]]           # (IMap, member ids)
Edge = tuple[str, str, str]             # (up id, down id, label)


def _graph_model(plumber: Dagger) -> tuple[list[Node], list[Group], list[Edge], list[str]]:
    """(nodes, groups, edges, inputs): ids and label lines of the Pipers, (IMap, member
    ids) per IMap, (up, down, label) per pipe, and the ids of the input Pipers."""
    order = plumber.postorder()
    ids = {id(p): f"p{k}" for k, p in enumerate(order)}
    nodes: list[Node] = []
    groups: dict[int, Group] = {}
    for piper in order:
        lines = [piper.name]            # a default name is the function's already
        if not getattr(piper, "_default_name", False) and piper.name != piper.worker.__name__:
            lines.append(f"{piper.worker.__name__}()")
        shape = [f"{key}={getattr(piper, key)}" for key in ("consume", "spawn", "produce")
                 if getattr(piper, key) != 1]
        if shape:
            lines.append(" ".join(shape))
        if piper.parallel is False:
            lines.append("linear")
        else:
            imap = piper.parallel
            groups.setdefault(id(imap), (imap, []))[1].append(ids[id(piper)])
        nodes.append((ids[id(piper)], lines))
    edges: list[Edge] = []              # (up, down, label): joins name their inbox slots
    for piper in order:
        ups = plumber.get_upstream(piper)
        edges += [(ids[id(up)], ids[id(piper)], f"inbox[{k}]" if len(ups) > 1 else "")
                  for k, up in enumerate(ups)]
    inputs = [ids[id(p)] for p in plumber.get_inputs()]
    return nodes, list(groups.values()), edges, inputs


def _imap_label(imap: Any) -> str:
    if imap.worker_type == "dask":
        where = getattr(imap.worker_remote, "scheduler_address", None) or imap.worker_remote
        return f"IMap {imap.name}: {imap.worker_num} Dask threads" + (
            f" at {where}" if isinstance(where, str) else "")
    kind = {"process": "processes", "thread": "threads"}.get(imap.worker_type,
                                                              imap.worker_type)
    workers = [f"{imap.worker_num} {kind}"] if imap.worker_num else []
    workers += [f"{n} on {host}:{port}" for host, port, n in imap.worker_remote or []]
    return f"IMap {imap.name}: " + ", ".join(workers)


def _dot(plumber: Dagger) -> str:
    nodes, groups, edges, inputs = _graph_model(plumber)
    q = _dot_quote
    out = ["digraph papy {", "  rankdir=TB;",
           '  node [shape=box, style="rounded", fontname="Helvetica"];']
    for k in range(len(inputs)):
        out.append(f'  in{k} [shape=plaintext, label={q(f"input {k}")}];')
    for node_id, lines in nodes:
        out.append(f"  {node_id} [label={q(chr(10).join(lines))}];")
    for k, (imap, members) in enumerate(groups):
        out.append(f"  subgraph cluster_{k} {{")
        out.append(f'    label={q(_imap_label(imap))}; style="dashed";')
        out.append(f"    {'; '.join(members)};")
        out.append("  }")
    out += [f"  in{k} -> {node_id};" for k, node_id in enumerate(inputs)]
    out += [f"  {a} -> {b}" + (f" [label={q(label)}]" if label else "") + ";"
            for a, b, label in edges]
    out.append("}")
    return "\n".join(out) + "\n"


def _dot_quote(text: str) -> str:
    text = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{text}"'


def _mermaid(plumber: Dagger) -> str:
    nodes, groups, edges, inputs = _graph_model(plumber)
    q = _mermaid_quote
    labels = dict(nodes)
    grouped = {m for _, members in groups for m in members}
    out = ["flowchart TD"]
    for k in range(len(inputs)):
        out.append(f"  in{k}([{q(f'input {k}')}])")
    for node_id, lines in nodes:
        if node_id not in grouped:
            out.append(f"  {node_id}[{q('<br/>'.join(lines))}]")
    for k, (imap, members) in enumerate(groups):
        out.append(f"  subgraph imap{k} [{q(_imap_label(imap))}]")
        out += [f"    {m}[{q('<br/>'.join(labels[m]))}]" for m in members]
        out.append("  end")
    out += [f"  in{k} --> {node_id}" for k, node_id in enumerate(inputs)]
    out += [f"  {a} -->" + (f"|{q(label)}|" if label else "") + f" {b}"
            for a, b, label in edges]
    return "\n".join(out) + "\n"


def _mermaid_quote(text: str) -> str:
    return '"' + text.replace('"', "#quot;") + '"'


def graph_text(plumber: Dagger, fmt: str = "dot") -> str:
    """The DAG of ``plumber`` as Graphviz DOT (``fmt='dot'``) or Mermaid text."""
    if fmt == "dot":
        return _dot(plumber)
    if fmt == "mermaid":
        return _mermaid(plumber)
    raise ValueError(f"graph format must be 'dot' or 'mermaid', not {fmt!r}")
