"""Frames in papy's model: a loop per item whose body runs on the pools, many loops at once,
each with its own store; nested frames; errors in place."""
from __future__ import annotations

import os
from typing import Any

import pytest

from papy import Frame, IMap, Multiple, Piper, PiperError, Plumber, Reducer

pytestmark = pytest.mark.timeout(120)


def begin(store: Any, first: int) -> Any:
    """Sum 1..first: once, then done."""
    if not hasattr(store, "value"):
        store.first, store.value, store.pid = first, 0, os.getpid()
        return first
    return None


def count_to(inbox: list[int]) -> Multiple:
    return Multiple(range(1, inbox[0] + 1))


def accumulate(store: Any, item: int) -> None:
    store.value += item


def pair(store: Any) -> tuple[int, int]:
    return store.first, store.value


def run_one(piper: Piper, data: Any) -> list[Any]:
    plumber = Plumber()
    plumber.add_piper(piper)
    return plumber.collect([data])[piper]


@pytest.mark.parametrize("kind", ["linear", "thread", "process"])
def test_sum_through_each_item(kind: str) -> None:
    items = [4, 5, 8, 1, 30]
    expected = sorted((n, sum(range(1, n + 1))) for n in items)
    if kind == "linear":
        frame = Frame(begin, accumulate, body=[Piper(count_to)], emit=pair)
        assert sorted(run_one(frame, items)) == expected
        return
    with IMap(worker_type=kind, worker_num=2) as pool:
        frame = Frame(begin, accumulate, body=[Piper(count_to, parallel=pool)], emit=pair,
                      parallel=pool)
        assert sorted(run_one(frame, items)) == expected


def test_start_and_end_run_on_the_pool() -> None:
    def own_pid(store: Any) -> int:
        return int(store.pid)

    with IMap(worker_type="process", worker_num=1) as pool:
        frame = Frame(begin, accumulate, body=[Piper(count_to, parallel=pool)],
                      emit=own_pid, parallel=pool)
        assert run_one(frame, [3]) != [os.getpid()]


def test_many_loops_at_once_each_with_its_store(worker_type: str) -> None:
    items = list(range(200))
    with IMap(worker_type=worker_type, worker_num=2) as pool:
        frame = Frame(begin, accumulate, body=[Piper(count_to, parallel=pool)], emit=pair,
                      parallel=pool)
        out = run_one(frame, items)
    assert sorted(out) == [(n, n * (n + 1) // 2) for n in items]


def test_the_loop_runs_until_start_returns_none(worker_type: str) -> None:
    """Doubling until at least the item: start is called again with the original item
    each time nothing of the loop is outstanding."""
    def again(store: Any, first: int) -> Any:
        store.total = getattr(store, "total", 1)
        store.calls = getattr(store, "calls", 0) + 1
        return Multiple([store.total] * store.total) if store.total < first else None

    def one(inbox: list[int]) -> int:
        return 1

    def add_one(store: Any, item: int) -> None:
        store.total += item

    with IMap(worker_type=worker_type, worker_num=2) as pool:
        frame = Frame(again, add_one, body=[Piper(one, parallel=pool)],
                      emit=lambda s: (s.total, s.calls), parallel=pool)
        out = run_one(frame, [3, 8, 9, 1])
    assert sorted(out) == [(1, 1), (4, 3), (8, 4), (16, 5)]


def test_what_end_returns_goes_through_the_body_again(worker_type: str) -> None:
    """end returns item - 1 while positive: a countdown per loop."""
    def start(store: Any, first: int) -> Any:
        if not hasattr(store, "seen"):
            store.seen = []
            return first
        return None

    def end(store: Any, item: int) -> Any:
        store.seen.append(item)
        return item - 1 if item > 0 else None

    def ident(inbox: list[int]) -> int:
        return inbox[0]

    with IMap(worker_type=worker_type, worker_num=2) as pool:
        frame = Frame(start, end, body=[Piper(ident, parallel=pool)],
                      emit=lambda s: s.seen, parallel=pool)
        out = run_one(frame, [3, 0])
    assert sorted(out) == [[0], [3, 2, 1, 0]]


def test_an_empty_body() -> None:
    def start(store: Any, first: int) -> Any:
        if not hasattr(store, "value"):
            return first
        return None

    def end(store: Any, item: int) -> None:
        store.value = item * 10

    assert sorted(run_one(Frame(start, end, emit=lambda s: s.value), [1, 2])) == [10, 20]


def test_nested_frames(worker_type: str) -> None:
    def outer(store: Any, first: int) -> Any:
        if not hasattr(store, "value"):
            store.first, store.value = first, 0
            return Multiple(range(1, first + 1))
        return None

    def inner(store: Any, k: int) -> Any:
        if not hasattr(store, "value"):
            store.value = 0
            return Multiple(range(1, k + 1))
        return None

    def square(inbox: list[int]) -> int:
        return inbox[0] ** 2

    with IMap(worker_type=worker_type, worker_num=2) as pool:
        inner_frame = Frame(inner, accumulate, body=[Piper(square, parallel=pool)],
                            emit=lambda s: s.value, parallel=pool)
        frame = Frame(outer, accumulate, body=[inner_frame], emit=pair, parallel=pool)
        out = run_one(frame, [2, 5])
    assert sorted(out) == [(n, sum(sum(x * x for x in range(1, k + 1))
                                   for k in range(1, n + 1))) for n in (2, 5)]


def test_a_frame_in_a_reducer_body() -> None:
    def add(store: Any, works: list[Any], others: list[Any]) -> None:
        store.items = getattr(store, "items", []) + list(works)
        for other in others:
            store.items += getattr(other, "items", [])

    with IMap(worker_type="thread", worker_num=2) as pool:
        frame = Frame(begin, accumulate, body=[Piper(count_to, parallel=pool)], emit=pair,
                      parallel=pool)
        reducer = Reducer(add, body=[frame], emit=lambda s: sorted(s.items), parallel=pool)
        assert run_one(reducer, [3, 4]) == [[(3, 6), (4, 10)]]


def test_errors(worker_type: str) -> None:
    """An error item into the frame is passed on; an error item out of the body is kept
    and counted (the loop goes on); a start that raises ends its loop with an error."""
    def check(inbox: list[int]) -> int:
        if inbox[0] == 99:
            raise ValueError(99)
        return inbox[0]

    def start(store: Any, first: int) -> Any:
        if first == 7:
            raise RuntimeError("seven")
        if not hasattr(store, "value"):
            store.first, store.value = first, 0
            return Multiple([first, 99])
        return None

    def body_check(inbox: list[int]) -> int:
        if inbox[0] == 99:
            raise KeyError(99)
        return inbox[0]

    with IMap(worker_type=worker_type, worker_num=2) as pool:
        frame = Frame(start, accumulate, body=[Piper(body_check, parallel=pool)],
                      emit=pair, parallel=pool)
        plumber = Plumber()
        plumber.add_pipe((Piper(check, parallel=pool), frame))
        out = plumber.collect([[1, 99, 7, 2]])[frame]
        counters = plumber.stats["pipers"][frame]
    values = sorted(x for x in out if not isinstance(x, PiperError))
    assert values == [(1, 1), (2, 2)]
    assert sum(isinstance(x, PiperError) for x in out) == 2    # the 99 input, the 7 loop
    assert len(frame.error_items) == 2                          # the 99s of loops 1 and 2
    assert counters.errors == 4


def test_bad_arguments() -> None:
    with pytest.raises(TypeError):
        Frame(begin, 3)
    with pytest.raises(ValueError, match="Reducer"):
        Frame(begin, accumulate, body=[Reducer(lambda s, w, o: None)])
    with pytest.raises(TypeError):
        Frame(begin, accumulate, body=[count_to])


def test_a_worker_that_dies_ends_one_loop() -> None:
    def deadly(store: Any, first: int) -> Any:
        if first == 3:
            os._exit(3)
        return begin(store, first)

    with IMap(worker_type="process", worker_num=2) as pool:
        frame = Frame(deadly, accumulate, body=[Piper(count_to, parallel=pool)], emit=pair,
                      parallel=pool)
        out = run_one(frame, [1, 2, 3, 4])
    values = [x for x in out if not isinstance(x, PiperError)]
    assert set(values) <= {(1, 1), (2, 3), (4, 10)}           # (3, 6) never comes
    assert len(out) == 4 and len(values) < 4       # the dead worker's batch: errors in place
