"""papy.workers.maths: every wrapper against the operator/math function it names."""
import math
import operator
import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

from papy import Worker
from papy.workers import maths

UNARY = {
    "abs": operator.abs, "acos": math.acos, "asin": math.asin, "atan": math.atan,
    "ceil": math.ceil, "cos": math.cos, "cosh": math.cosh, "degrees": math.degrees,
    "exp": math.exp, "fabs": math.fabs, "floor": math.floor, "frexp": math.frexp,
    "log10": math.log10, "modf": math.modf, "radians": math.radians, "sin": math.sin,
    "sinh": math.sinh, "sqrt": math.sqrt, "tan": math.tan, "tanh": math.tanh,
}
BINARY = {
    "add": operator.add, "sub": operator.sub, "mul": operator.mul, "div": operator.truediv,
    "floordiv": operator.floordiv, "mod": operator.mod, "lshift": operator.lshift,
    "pow": math.pow, "atan2": math.atan2, "fmod": math.fmod, "hypot": math.hypot,
    "ldexp": math.ldexp, "log": math.log,
}


def test_every_listed_function_exists_and_is_exported():
    names = set(UNARY) | set(BINARY) | {name + "star" for name in BINARY} | {"fmodr"}
    assert names <= set(maths.__all__)
    for name in names:
        assert callable(getattr(maths, name)), name


@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_functions_apply_to_inbox_0(name):
    x = 0.5
    assert getattr(maths, name)([x]) == UNARY[name](x)


@pytest.mark.parametrize("name", sorted(BINARY))
def test_binary_functions_with_a_constant_and_from_a_join(name):
    x, b = 6, 2
    expected = BINARY[name](x, b)
    assert getattr(maths, name)([x], b) == expected
    assert getattr(maths, name + "star")([x, b]) == expected


def test_the_originals_bugs_are_fixed():
    assert maths.sub([5], 3) == 2                  # the original called operator.mub
    assert maths.hypot([3], 4) == 5.0               # the original took one operand
    assert maths.hypotstar([3, 4]) == 5.0
    assert maths.atan2star([1.0, 1.0]) == math.atan2(1.0, 1.0)  # no stray argument
    assert maths.div([3], 2) == 1.5                 # true division in Python 3
    assert maths.fmodr([7.0], 3.0) == maths.fmod([7.0], 3.0) == 1.0


def test_log_defaults_to_the_natural_logarithm():
    assert maths.log([math.e]) == 1.0
    assert maths.log([8], 2) == 3.0
    assert maths.logstar([8, 2]) == 3.0


def test_functions_carry_imports_and_a_docstring_with_an_example():
    for name in maths.__all__:
        function = getattr(maths, name)
        assert function.imports in (["math"], ["operator"]), name
        assert ">>> " in function.__doc__, name
        assert function.__module__ == "papy.workers.maths"


def test_functions_pickle_by_reference():
    for name in maths.__all__:
        function = getattr(maths, name)
        assert pickle.loads(pickle.dumps(function)) is function


def test_in_a_worker_the_constant_is_the_workers_argument():
    assert Worker(maths.add, (2,))([40]) == 42
    assert Worker((maths.mul, maths.sqrt), ((4,), ()))([4]) == 4.0
    assert Worker(maths.addstar)([40, 2]) == 42


@given(st.floats(-1e6, 1e6), st.floats(-1e6, 1e6))
def test_add_and_hypot_agree_with_the_operators(x, y):
    assert maths.add([x], y) == maths.addstar([x, y]) == x + y
    assert maths.hypot([x], y) == math.hypot(x, y)


def test_type_checkers_see_every_generated_function():
    """The TYPE_CHECKING block of maths.py declares exactly the functions the tables make
    (a type checker cannot see names put in globals() at import time)."""
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(maths))
    blocks = [node for node in tree.body if isinstance(node, ast.If)
              and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"]
    assert len(blocks) == 1
    declared = [node.name for node in blocks[0].body if isinstance(node, ast.FunctionDef)]
    generated = set(maths.__all__) - {"log", "logstar", "fmodr"}
    assert len(declared) == len(set(declared))
    assert set(declared) == generated
