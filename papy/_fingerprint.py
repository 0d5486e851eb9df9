"""fingerprint(func): a stable digest of what a function does, for cache keys.

The digest covers, for a plain function (pypipegraph's ``FunctionInvariant``, made a key):

- its **source** without the ``def`` line, the decorators and the docstring, normalised by
  the parser (``ast.unparse``: comments and layout do not count); for a lambda or a
  generator expression, the source of the expression itself. Code without a source file
  (``exec``, ``python -c``) has none: the byte code stands alone;
- its **byte code**, normalised: one line per instruction, ``opname argument``, with the
  offsets, the line numbers, the addresses and the names of the code objects left out;
  nested code (inner functions, lambdas, comprehensions, generator expressions) is written
  out in place; constants are written in a canonical form (sets sorted); the docstring is
  not used by any instruction, so it does not count. The parameters (names, kinds) and the
  defaults count too: they change what a call does;
- the **values its closure captures**: their ``repr`` with dicts and sets sorted and
  ``" at 0x..."`` addresses cut; ``self``, ``__class__`` and modules left out. Captured
  *functions* are not written by ``repr`` but by their own fingerprint (a decorator's inner
  function is then told apart by the function it wraps: without this, two functions
  wrapped by one decorator would share a key);
- for ``functools.wraps`` wrappers, the wrapped function (``__wrapped__``) as well.

A bound method is its function (``self`` left out); a ``functools.partial`` its function and
its arguments; a Worker the fingerprints of its functions, in order (its arguments are
part of a cache key, not of the fingerprint); a builtin its qualified name; a class its
qualified name and the fingerprints of the functions it defines; any other callable object
the fingerprint of its type's ``__call__``. Anything not callable is a TypeError.

The result depends on nothing of the process (no ``id``, no ``hash()`` of a str, no
address), so it is the same in every process, on every host, and across runs, for the same
code on the same Python version. The byte code differs between Python versions, so does
the fingerprint. What the function reads from its module's globals (helpers it calls,
module constants) is not part of it.
"""
from __future__ import annotations

import ast
import dis
import functools
import hashlib
import inspect
import linecache
import re
import sys
import textwrap
import types
from collections.abc import Callable
from typing import Any

__all__ = ["fingerprint"]

VERSION = 1         # of the description below: bump to change every fingerprint

_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
_BUILTIN_TYPES = (types.BuiltinFunctionType, types.MethodWrapperType,
                  types.MethodDescriptorType, types.WrapperDescriptorType,
                  types.ClassMethodDescriptorType)
# the flags that change what calling the code does
_FLAGS = (inspect.CO_VARARGS | inspect.CO_VARKEYWORDS | inspect.CO_GENERATOR
          | inspect.CO_COROUTINE | inspect.CO_ASYNC_GENERATOR | inspect.CO_ITERABLE_COROUTINE)
_MAX_DEPTH = 50


def fingerprint(func: Callable[..., Any]) -> str:
    """A hex digest of ``func``'s code, closure values and defaults (module docstring).

    Example::

        >>> def double(x):
        ...     return 2 * x
        >>> def twice(x):
        ...     '''another name, another docstring'''
        ...     return 2 * x
        >>> def triple(x):
        ...     return 3 * x
        >>> fingerprint(double) == fingerprint(twice), fingerprint(double) == fingerprint(triple)
        (True, False)
    """
    if not callable(func):
        raise TypeError(f"fingerprint needs a callable (a function, a method, a Worker, ...), "
                        f"not {type(func).__name__}: {func!r:.80}")
    text = describe(func)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def describe(func: Callable[..., Any]) -> str:
    """The text that :func:`fingerprint` digests (to see why two fingerprints differ)."""
    return f"papy-fingerprint {VERSION} {sys.implementation.cache_tag}\n" + \
        _Describer().callable_text(func)


class _Describer:
    """One description; ``seen`` breaks cycles (a function capturing itself)."""

    def __init__(self) -> None:
        self.seen: set[int] = set()

    def callable_text(self, func: Any) -> str:
        if id(func) in self.seen:
            return "<recursive>"
        self.seen.add(id(func))
        try:
            return self._callable_text(func)
        finally:
            self.seen.discard(id(func))

    def _callable_text(self, func: Any) -> str:
        from ._plain import PlainCall
        from ._worker import Worker  # papy._worker imports this lazily: no cycle
        if isinstance(func, Worker):
            return "worker[" + ", ".join(self.callable_text(f) for f in func.task) + "]"
        if isinstance(func, PlainCall):         # f(*inbox): not the same call as f(inbox)
            return "plain " + self.callable_text(func.func)
        stands_for = getattr(func, "__papy_fingerprint_of__", None)   # a cached function
        if stands_for is not None:
            return self.callable_text(stands_for)
        if isinstance(func, types.MethodType):
            return self.callable_text(func.__func__)          # self left out
        if isinstance(func, functools.partial):
            return (f"partial({self.callable_text(func.func)}, "
                    f"{normal_repr(func.args)}, {normal_repr(func.keywords)})")
        if isinstance(func, types.FunctionType):
            return self.function_text(func)
        if isinstance(func, _BUILTIN_TYPES):
            return "builtin " + _builtin_name(func)
        if isinstance(func, type):
            return self.class_text(func)
        if isinstance(func, (staticmethod, classmethod)):
            return self.callable_text(func.__func__)
        call = type(func).__call__      # callable(func) was checked by fingerprint()
        return f"instance of {_qualified(type(func))}: {self.callable_text(call)}"

    def function_text(self, func: types.FunctionType) -> str:
        code = func.__code__
        parts = [
            "source:\n" + source_text(func),
            "code:\n" + code_text(code),
            "defaults: " + normal_repr(func.__defaults__) + " " + normal_repr(func.__kwdefaults__),
            "closure: " + self.closure_text(func),
        ]
        wrapped = getattr(func, "__wrapped__", None)
        if wrapped is not None and callable(wrapped):
            parts.append("wraps: " + self.callable_text(wrapped))
        return "function(\n" + "\n".join(parts) + "\n)"

    def closure_text(self, func: types.FunctionType) -> str:
        captured = []
        # one cell per free variable
        for name, cell in zip(func.__code__.co_freevars, func.__closure__ or (), strict=True):
            if name in ("self", "__class__"):
                continue
            try:
                value = cell.cell_contents
            except ValueError:
                captured.append(f"{name}=<empty>")
                continue
            if isinstance(value, types.ModuleType):
                continue
            if isinstance(value, (types.FunctionType, types.MethodType, functools.partial)
                          + _BUILTIN_TYPES):
                captured.append(f"{name}=<{self.callable_text(value)}>")
            else:
                captured.append(f"{name}={normal_repr(value)}")
        return "; ".join(captured)

    def class_text(self, cls: type) -> str:
        members = []
        for name, value in sorted(vars(cls).items()):
            if isinstance(value, (types.FunctionType, staticmethod, classmethod)):
                members.append(f"{name}: {self.callable_text(value)}")
            elif isinstance(value, property) and value.fget is not None:
                members.append(f"{name}: property {self.callable_text(value.fget)}")
        bases = ", ".join(_qualified(base) for base in cls.__bases__)
        return f"class {_qualified(cls)}({bases}) {{\n" + "\n".join(members) + "\n}"


def code_text(code: types.CodeType, depth: int = 0) -> str:
    """The normalised byte code of ``code`` (module docstring), nested code in place."""
    if depth > _MAX_DEPTH:
        return "<too deep>"
    positional = code.co_posonlyargcount, code.co_argcount, code.co_kwonlyargcount
    count = code.co_argcount + code.co_kwonlyargcount + bool(code.co_flags & inspect.CO_VARARGS) \
        + bool(code.co_flags & inspect.CO_VARKEYWORDS)
    lines = [f"args {positional} {code.co_varnames[:count]} flags {code.co_flags & _FLAGS}",
             f"exceptions {code.co_exceptiontable.hex()}"]
    for instruction in dis.get_instructions(code):
        value = instruction.argval
        if isinstance(value, types.CodeType):
            nested = textwrap.indent(code_text(value, depth + 1), "  ")
            lines.append(f"{instruction.opname} code(\n{nested}\n)")
        elif instruction.arg is None:
            lines.append(instruction.opname)
        else:
            lines.append(f"{instruction.opname} {normal_repr(value)}")
    return "\n".join(lines)


def normal_repr(value: Any, depth: int = 0) -> str:
    """``repr`` without addresses, with dicts and sets in sorted order (recursively)."""
    if depth > _MAX_DEPTH:
        return "<too deep>"
    kind = type(value)
    if kind is dict or isinstance(value, dict):
        items = sorted(f"{normal_repr(k, depth + 1)}: {normal_repr(v, depth + 1)}"
                       for k, v in value.items())
        return f"{_qualified(kind)}{{{', '.join(items)}}}"
    if isinstance(value, (set, frozenset)):
        members = sorted(normal_repr(v, depth + 1) for v in value)
        return f"{_qualified(kind)}{{{', '.join(members)}}}"
    if kind is list or kind is tuple:
        inner = ", ".join(normal_repr(v, depth + 1) for v in value)
        return f"[{inner}]" if kind is list else f"({inner},)"
    if isinstance(value, types.CodeType):
        return f"code({code_text(value, depth + 1)})"
    try:
        text = repr(value)
    except Exception as exc:  # noqa: BLE001 - a broken __repr__ still gives a stable text
        text = f"<{_qualified(kind)} whose repr raised {type(exc).__name__}>"
    return _ADDRESS.sub("", text)


def source_text(func: types.FunctionType) -> str:
    """The normalised source of the body (module docstring), or "" when there is none."""
    code = func.__code__
    lines = linecache.getlines(code.co_filename, func.__globals__)
    if not lines:
        return ""
    text = "".join(lines)
    if code.co_name in ("<lambda>", "<genexpr>"):
        return _expression_source(code, lines)
    tree = _parse(code.co_filename, text)
    if tree is None:
        return ""
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) \
                and node.name == code.co_name and _first_line(node) == code.co_firstlineno:
            return _body_source(node)
    return ""


def _first_line(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    return min([node.lineno] + [d.lineno for d in node.decorator_list])


def _body_source(node: ast.FunctionDef | ast.AsyncFunctionDef) -> str:
    body = node.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str):
        body = body[1:]     # the docstring
    return "\n".join(ast.unparse(statement) for statement in body)


def _expression_source(code: types.CodeType, lines: list[str]) -> str:
    """A lambda's body or a generator expression: the text its instructions cover."""
    spans = [(line, column, end_line, end_column)
             for line, end_line, column, end_column in code.co_positions()
             if line is not None and end_line is not None and column is not None
             and end_column is not None and (line, column) != (end_line, end_column)]
    # (an empty span: RESUME, at the def line)
    if not spans:
        return ""
    start = min((s[0], s[1]) for s in spans)
    end = max((s[2], s[3]) for s in spans)
    try:
        picked = lines[start[0] - 1:end[0]]
        if len(picked) == 1:
            segment = _cut(picked[0], start[1], end[1])
        else:
            segment = _cut(picked[0], start[1], None) + "".join(picked[1:-1]) + \
                _cut(picked[-1], 0, end[1])
    except IndexError:
        return ""
    try:
        return ast.unparse(ast.parse(segment.strip(), mode="eval"))
    except SyntaxError:
        return " ".join(segment.split())


def _cut(line: str, start: int, end: int | None) -> str:
    """Columns of ``co_positions`` are UTF-8 byte offsets."""
    raw = line.encode("utf-8")
    return raw[start:end].decode("utf-8", "replace")


@functools.lru_cache(maxsize=16)
def _parse(filename: str, text: str) -> ast.Module | None:
    del filename    # part of the cache key only
    try:
        return ast.parse(text)
    except (SyntaxError, ValueError):
        return None


def _builtin_name(func: Any) -> str:
    owner = getattr(func, "__self__", None)
    name = getattr(func, "__qualname__", None) or getattr(func, "__name__", repr(func))
    if owner is None or isinstance(owner, types.ModuleType):
        module = getattr(func, "__module__", None) or getattr(owner, "__name__", "")
        return f"{module}.{name}"
    owner_type = owner if isinstance(owner, type) else type(owner)      # self left out
    return f"{_qualified(owner_type)}.{getattr(func, '__name__', name)}"


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"
