"""Plain functions as steps (issue 17, item 7): ``f(x)``, and ``f(x, y)`` for a join, used
without a wrapper: ``Piper(f, plain=True)`` / ``Worker(f, plain=True)``."""
from __future__ import annotations

import math

import pytest

from papy import IMap, Piper, PiperError, Plumber, Worker, fingerprint
from papy._plain import PlainCall


def scale(x, k):
    return x * k


def add(x, y):
    return x + y


def first(inbox):
    return inbox[0]


@pytest.mark.parametrize("kind", ["linear", "thread", "process"])
def test_plain_functions_chain_and_join_on_every_kind_of_piper(kind):
    parallel = False if kind == "linear" else IMap(worker_type=kind, worker_num=2)
    number = Piper(float, plain=True, parallel=parallel)         # a builtin type
    scaled = Piper(Worker(scale, (10,), plain=True), parallel=parallel)
    root = Piper(math.sqrt, plain=True)
    total = Piper(add, plain=True, parallel=parallel)             # a join: add(x, y)
    plumber = Plumber(report_failures=False)
    plumber.add_pipe((number, scaled, total))
    plumber.add_pipe((number, root, total))
    out = plumber.collect([["1", "4", "x", "9"]])[total]
    assert out[:2] + out[3:] == [11.0, 42.0, 93.0]
    assert isinstance(out[2], PiperError) and out[2].piper_name == "float"
    assert out[2].item == ["x"]                  # the inbox, as for any function
    assert [p.name for p in plumber.postorder()] == ["float", "scale", "sqrt", "add"]


def test_a_plain_composition_passes_results_as_they_are():
    assert Worker((float, math.sqrt), plain=True)(["16"]) == 4.0
    assert Worker(pow, (2,), plain=True)([7]) == 49
    assert Worker(add, plain=True)([1, 2]) == 3
    mixed = Worker([Worker(float, plain=True), Worker(first)])    # plain, then inbox
    assert mixed(["2"]) == 2.0


def test_plain_errors_are_error_items_with_the_users_traceback():
    def invert(x):
        return 1 / x
    error = Worker(invert, plain=True)([0])
    assert type(error.exception) is ZeroDivisionError and error.inbox == [0]
    assert "in invert" in error.traceback_text and "_worker.py" not in error.traceback_text
    assert Worker(float, plain=True)(["x"]).traceback_text.startswith("ValueError")


def test_plain_is_checked():
    with pytest.raises(TypeError, match="Worker plain must be True or False"):
        Worker(add, plain="yes")
    with pytest.raises(TypeError, match="a Worker keeps the convention"):
        Worker(Worker(first), plain=True)
    with pytest.raises(PiperError, match=r"give Worker\(f, plain=True\) instead"):
        Piper(Worker(first), plain=True)
    with pytest.raises(TypeError, match=r"cannot be called as add\(inbox\).*takes plain=True"):
        Worker(add)                      # f(x, y) without plain: said at once, with the fix
    with pytest.raises(TypeError, match="takes functions or Workers, not 3"):
        Worker([add, 3], plain=True)


def test_plain_and_inbox_workers_differ_in_equality_and_fingerprint():
    assert Worker(add, plain=True) == Worker(add, plain=True)
    assert Worker(first, plain=True) != Worker(first)
    assert fingerprint(Worker(first, plain=True)) != fingerprint(Worker(first))
    assert isinstance(Worker(add, plain=True).task[0], PlainCall)
    assert Worker((float, add), plain=True).__name__ == "float>add"


def test_a_plain_pipeline_survives_save_and_load(tmp_path):
    plumber = Plumber()
    plumber.add_pipe((Piper(float, plain=True), Piper(Worker(scale, (3,), plain=True)),
                      Piper(Worker([Worker(float, plain=True), Worker(first)]))))
    path = str(tmp_path / "saved.py")
    plumber.save(path)
    with open(path, encoding="utf-8") as handle:
        assert "plain=True" in handle.read()
    loaded = Plumber()
    loaded.load(path)
    assert list(loaded.collect([["2", "5"]]).values()) == [[6.0, 15.0]]
