"""papy.fingerprint: every rule of issue 13 item 1, and stability across processes."""
from __future__ import annotations

import functools
import json
import os
import subprocess
import sys

import cache_functions as cf
import pytest

from papy import Worker, fingerprint
from papy._fingerprint import describe

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)


def test_same_body_under_another_name_or_docstring_is_equal():
    assert fingerprint(cf.double) == fingerprint(cf.twice)


def test_a_changed_constant_or_body_differs():
    assert fingerprint(cf.double) != fingerprint(cf.triple)
    assert fingerprint(cf.LAMBDA_ONE) != fingerprint(cf.LAMBDA_OTHER)


def test_renamed_parameter_differs():
    # the body's text and its byte code name the parameter
    assert fingerprint(cf.double) != fingerprint(cf.double_again)


def test_defaults_count():
    assert fingerprint(cf.with_default) != fingerprint(cf.with_other_default)


def test_lambdas_with_equal_code_are_equal():
    assert fingerprint(cf.LAMBDA_ONE) == fingerprint(cf.LAMBDA_TWO)
    assert "x + 1" in describe(cf.LAMBDA_ONE)


def test_generator_expressions_with_equal_code_are_equal():
    assert fingerprint(cf.GENEXPR_A) == fingerprint(cf.GENEXPR_B)
    assert fingerprint(cf.generator_sum) == fingerprint(cf.generator_sum)
    assert " at 0x" not in describe(cf.generator_sum)    # nested code, no address


def test_inner_functions_equal_for_equal_captured_values():
    assert fingerprint(cf.adder(1)) == fingerprint(cf.adder(1))
    assert fingerprint(cf.adder(1)) != fingerprint(cf.adder(2))


def test_nested_functions_defined_twice_are_equal():
    def outer():
        def nested(x):
            return [y * 2 for y in x]
        return nested
    assert fingerprint(outer()) == fingerprint(outer())


def test_captured_dicts_and_sets_are_sorted():
    text = describe(cf.captures_dict())
    assert "'a': 1, 'b': 2, 'c': builtins.set{1, 2, 3}" in text


def test_captured_self_modules_are_left_out():
    import math

    class Holder:
        def method(self):
            def inner(x):
                return self, math.sqrt(x)
            return inner
    one, two = Holder().method(), Holder().method()
    assert fingerprint(one) == fingerprint(two)
    assert "self=" not in describe(one) and "math" not in describe(one).split("closure:")[1]


def test_captured_functions_count_by_their_fingerprint():
    # without wraps, the inner function captures what it wraps: told apart by that
    assert fingerprint(cf.bare_decorator(cf.double)) == fingerprint(cf.bare_decorator(cf.twice))
    assert fingerprint(cf.bare_decorator(cf.double)) != fingerprint(cf.bare_decorator(cf.triple))
    assert fingerprint(cf.logged(cf.double)) != fingerprint(cf.logged(cf.triple))


def test_addresses_are_cut_from_captured_reprs():
    marker = object()

    def uses():
        return marker
    assert " at 0x" not in describe(uses) and "<object object>" in describe(uses)


def test_bound_method_leaves_self_out():
    assert fingerprint(cf.Scaler(2).scale) == fingerprint(cf.Scaler(3).scale)
    assert fingerprint(cf.Scaler(2).scale) == fingerprint(cf.Scaler.scale)


def test_callable_object_and_class():
    assert fingerprint(cf.Scaler(2)) == fingerprint(cf.Scaler(5))     # self left out
    assert fingerprint(cf.Scaler) != fingerprint(cf.Scaler(2))


def test_partial_counts_its_arguments():
    assert fingerprint(functools.partial(cf.with_default, n=1)) == \
        fingerprint(functools.partial(cf.with_default, n=1))
    assert fingerprint(functools.partial(cf.with_default, n=1)) != \
        fingerprint(functools.partial(cf.with_default, n=2))


def test_builtins_by_name():
    assert fingerprint(len) == fingerprint(len) != fingerprint(abs)
    assert fingerprint([].append) == fingerprint([1, 2].append)


def test_worker_is_the_fingerprints_of_its_functions():
    assert fingerprint(Worker((cf.inc, cf.square))) == fingerprint(Worker((cf.inc, cf.square)))
    assert fingerprint(Worker((cf.inc, cf.square))) != fingerprint(Worker((cf.square, cf.inc)))
    assert fingerprint(Worker(cf.inc, (1,))) == fingerprint(Worker(cf.inc, (2,)))  # args: key


def test_not_callable_is_a_type_error():
    for value in (3, "text", None, [cf.double]):
        with pytest.raises(TypeError, match="fingerprint needs a callable"):
            fingerprint(value)


def test_code_without_source_still_has_a_fingerprint():
    namespace: dict = {}
    exec("def made(x):\n    return x * 7\n", namespace)  # code without a file
    text = describe(namespace["made"])
    assert "source:\n\ncode:" in text and "LOAD_CONST 7" in text
    assert len(fingerprint(namespace["made"])) == 64


def test_async_and_generator_functions_differ_from_plain():
    def plain(x):
        return x

    def gen(x):
        yield x

    async def coro(x):
        return x
    assert len({fingerprint(plain), fingerprint(gen), fingerprint(coro)}) == 3


NAMES = ["double", "twice", "triple", "with_default", "membership", "generator_sum",
         "LAMBDA_ONE", "GENEXPR_A"]
PRINT = ("import json, cache_functions as cf; from papy import fingerprint, Worker; "
         "names = json.loads(input()); "
         "out = {n: fingerprint(getattr(cf, n)) for n in names}; "
         "out['adder'] = fingerprint(cf.adder(5)); out['dict'] = fingerprint(cf.captures_dict()); "
         "out['worker'] = fingerprint(cf.WORKERS['chain']); print(json.dumps(out))")


@pytest.mark.parametrize("seed", ["0", "12345"])
def test_same_in_another_process_and_hash_seed(seed):
    here = {name: fingerprint(getattr(cf, name)) for name in NAMES}
    here.update(adder=fingerprint(cf.adder(5)), dict=fingerprint(cf.captures_dict()),
                worker=fingerprint(cf.WORKERS["chain"]))
    env = dict(os.environ, PYTHONHASHSEED=seed,
               PYTHONPATH=os.pathsep.join([ROOT, TESTS, os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-c", PRINT], input=json.dumps(NAMES), env=env,
                          capture_output=True, text=True, timeout=60, check=True)
    assert json.loads(done.stdout) == here
