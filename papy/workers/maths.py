"""Arithmetic worker functions: wrappers of ``operator`` and ``math`` (inbox convention).

- unary: ``f(inbox)`` is ``f(inbox[0])``, e.g. ``sqrt([16.0]) == 4.0``;
- binary, two flavours: ``f(inbox, b)`` takes the second operand as a constant (give it
  as the Worker's argument: ``Worker(add, (2,))``), ``fstar(inbox)`` takes both operands
  from the inputs of a join (``addstar([1, 2]) == 3``).

Functions: abs acos asin atan ceil cos cosh degrees exp fabs floor frexp log10 modf radians
sin sinh sqrt tan tanh (unary); add sub mul div floordiv mod lshift pow atan2 fmod hypot
ldexp log, each with its ``...star`` twin (binary). ``div`` is true division (``/``);
``fmodr`` is the original's name of ``fmod``, kept as an alias; ``log(inbox, base=e)``.

The wrappers are generated from the tables below, so each one is a plain module-level
function (picklable by reference, with a docstring and an example) and none can drift
from the operation it names. Like ``abs`` and ``pow`` of the original, some names are
those of builtins: import the module (``from papy.workers import maths``), not ``*``.
"""
from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from imap import imports

__all__: list[str] = []  # filled in by _finish

# name, operation, description, example inbox, example result
_UNARY: list[tuple[str, Callable[[Any], Any], str, str, str]] = [
    ("abs", operator.abs, "the absolute value", "[-2]", "2"),
    ("acos", math.acos, "the arc cosine, in radians", "[1.0]", "0.0"),
    ("asin", math.asin, "the arc sine, in radians", "[0.0]", "0.0"),
    ("atan", math.atan, "the arc tangent, in radians", "[0.0]", "0.0"),
    ("ceil", math.ceil, "the smallest integer >= x", "[1.2]", "2"),
    ("cos", math.cos, "the cosine of x radians", "[0.0]", "1.0"),
    ("cosh", math.cosh, "the hyperbolic cosine", "[0.0]", "1.0"),
    ("degrees", math.degrees, "x radians in degrees", "[math.pi]", "180.0"),
    ("exp", math.exp, "e ** x", "[0.0]", "1.0"),
    ("fabs", math.fabs, "the absolute value as a float", "[-2]", "2.0"),
    ("floor", math.floor, "the largest integer <= x", "[1.8]", "1"),
    ("frexp", math.frexp, "(m, e) with x == m * 2 ** e", "[8.0]", "(0.5, 4)"),
    ("log10", math.log10, "the base-10 logarithm", "[100.0]", "2.0"),
    ("modf", math.modf, "the fractional and integer parts", "[2.5]", "(0.5, 2.0)"),
    ("radians", math.radians, "x degrees in radians", "[180.0]", "3.141592653589793"),
    ("sin", math.sin, "the sine of x radians", "[0.0]", "0.0"),
    ("sinh", math.sinh, "the hyperbolic sine", "[0.0]", "0.0"),
    ("sqrt", math.sqrt, "the square root", "[16.0]", "4.0"),
    ("tan", math.tan, "the tangent of x radians", "[0.0]", "0.0"),
    ("tanh", math.tanh, "the hyperbolic tangent", "[0.0]", "0.0"),
]

# name, operation, formula of (x, b), operands x and b of the examples, example result
_BINARY: list[tuple[str, Callable[[Any, Any], Any], str, str, str, str]] = [
    ("add", operator.add, "x + b", "2", "3", "5"),
    ("sub", operator.sub, "x - b", "5", "3", "2"),
    ("mul", operator.mul, "x * b", "2", "3", "6"),
    ("div", operator.truediv, "x / b", "3", "2", "1.5"),
    ("floordiv", operator.floordiv, "x // b", "7", "2", "3"),
    ("mod", operator.mod, "x % b", "7", "3", "1"),
    ("lshift", operator.lshift, "x << b", "1", "3", "8"),
    ("pow", math.pow, "math.pow(x, b)", "2", "3", "8.0"),
    ("atan2", math.atan2, "math.atan2(x, b), the angle of the point (b, x)", "1.0", "1.0",
     "0.7853981633974483"),
    ("fmod", math.fmod, "math.fmod(x, b)", "7.0", "3.0", "1.0"),
    ("hypot", math.hypot, "math.hypot(x, b), the length of the vector (x, b)", "3.0", "4.0",
     "5.0"),
    ("ldexp", math.ldexp, "x * 2 ** b", "0.5", "4", "8.0"),
]


def _module_of(operation: Callable[..., Any]) -> str:
    return "operator" if getattr(operation, "__module__", None) in ("operator", "_operator") \
        else "math"


def _finish(function: Callable[..., Any], name: str, doc: str,
            operation: Callable[..., Any]) -> None:
    """Make ``function`` a public function of this module called ``name``."""
    function.__name__ = function.__qualname__ = name
    function.__module__ = __name__
    function.__doc__ = doc
    imports([_module_of(operation)])(function)
    globals()[name] = function
    __all__.append(name)


def _unary(name: str, operation: Callable[[Any], Any], what: str, example: str,
           result: str) -> None:
    def function(inbox: Sequence[Any]) -> Any:
        return operation(inbox[0])
    doc = (f"Return {what} of x = inbox[0] ({_module_of(operation)}.{operation.__name__})."
           f"\n\n    >>> {name}({example})\n    {result}\n    ")
    _finish(function, name, doc, operation)


def _binary(name: str, operation: Callable[[Any, Any], Any], formula: str, x: str, b: str,
            result: str) -> None:
    def constant(inbox: Sequence[Any], b: Any) -> Any:
        return operation(inbox[0], b)

    def star(inbox: Sequence[Any]) -> Any:
        return operation(*inbox)
    _finish(constant, name, f"Return {formula} for x = inbox[0] and a constant b."
            f"\n\n    >>> {name}([{x}], {b})\n    {result}\n    ", operation)
    _finish(star, name + "star", f"Return {formula} for x = inbox[0] and b = inbox[1] "
            f"(the inputs of a join).\n\n    >>> {name}star([{x}, {b}])\n    {result}\n    ",
            operation)


if TYPE_CHECKING:  # the functions made below by _unary and _binary, for type checkers
    # (tests/test_workers_maths.py checks that these are the names the tables make)
    def abs(inbox: Sequence[Any]) -> Any: ...  # noqa: A001 - the original's name
    def ceil(inbox: Sequence[float]) -> int: ...
    def floor(inbox: Sequence[float]) -> int: ...
    def frexp(inbox: Sequence[float]) -> tuple[float, int]: ...
    def modf(inbox: Sequence[float]) -> tuple[float, float]: ...
    def acos(inbox: Sequence[float]) -> float: ...
    def asin(inbox: Sequence[float]) -> float: ...
    def atan(inbox: Sequence[float]) -> float: ...
    def cos(inbox: Sequence[float]) -> float: ...
    def cosh(inbox: Sequence[float]) -> float: ...
    def degrees(inbox: Sequence[float]) -> float: ...
    def exp(inbox: Sequence[float]) -> float: ...
    def fabs(inbox: Sequence[float]) -> float: ...
    def log10(inbox: Sequence[float]) -> float: ...
    def radians(inbox: Sequence[float]) -> float: ...
    def sin(inbox: Sequence[float]) -> float: ...
    def sinh(inbox: Sequence[float]) -> float: ...
    def sqrt(inbox: Sequence[float]) -> float: ...
    def tan(inbox: Sequence[float]) -> float: ...
    def tanh(inbox: Sequence[float]) -> float: ...
    def add(inbox: Sequence[Any], b: Any) -> Any: ...
    def addstar(inbox: Sequence[Any]) -> Any: ...
    def sub(inbox: Sequence[Any], b: Any) -> Any: ...
    def substar(inbox: Sequence[Any]) -> Any: ...
    def mul(inbox: Sequence[Any], b: Any) -> Any: ...
    def mulstar(inbox: Sequence[Any]) -> Any: ...
    def div(inbox: Sequence[Any], b: Any) -> Any: ...
    def divstar(inbox: Sequence[Any]) -> Any: ...
    def floordiv(inbox: Sequence[Any], b: Any) -> Any: ...
    def floordivstar(inbox: Sequence[Any]) -> Any: ...
    def mod(inbox: Sequence[Any], b: Any) -> Any: ...
    def modstar(inbox: Sequence[Any]) -> Any: ...
    def lshift(inbox: Sequence[Any], b: Any) -> Any: ...
    def lshiftstar(inbox: Sequence[Any]) -> Any: ...
    def pow(inbox: Sequence[float], b: float) -> float: ...  # noqa: A001 - the original's name
    def powstar(inbox: Sequence[float]) -> float: ...
    def atan2(inbox: Sequence[float], b: float) -> float: ...
    def atan2star(inbox: Sequence[float]) -> float: ...
    def fmod(inbox: Sequence[float], b: float) -> float: ...
    def fmodstar(inbox: Sequence[float]) -> float: ...
    def hypot(inbox: Sequence[float], b: float) -> float: ...
    def hypotstar(inbox: Sequence[float]) -> float: ...
    def ldexp(inbox: Sequence[float], b: int) -> float: ...
    def ldexpstar(inbox: Sequence[float]) -> float: ...


for _unary_row in _UNARY:
    _unary(*_unary_row)
for _binary_row in _BINARY:
    _binary(*_binary_row)
del _unary_row, _binary_row


@imports(["math"])
def log(inbox: Sequence[float], base: float = math.e) -> float:
    """Return the logarithm of x = inbox[0] to ``base`` (natural by default).

    >>> log([8.0], 2)
    3.0
    """
    return math.log(inbox[0], base)


@imports(["math"])
def logstar(inbox: Sequence[float]) -> float:
    """Return the logarithm of x = inbox[0] to the base b = inbox[1] (a join).

    >>> logstar([8.0, 2.0])
    3.0
    """
    return math.log(*inbox)


fmodr = fmod  # the original's name (sic), defined by _binary above
__all__ += ["log", "logstar", "fmodr"]
