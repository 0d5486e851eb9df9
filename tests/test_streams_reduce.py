"""Reducers in papy's model: folding in the pool's workers, recurrence through a body,
windows, errors in place, bounded memory on an endless input; the result of an associative
fold does not depend on the worker count, the stride or the pool kind."""
from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from papy import IMap, Multiple, Piper, PiperError, Plumber, Reducer
from papy.inline import Object

pytestmark = pytest.mark.timeout(120)


def add(store: Any, works: list[int], others: list[Any]) -> None:
    """Sum, count and the pids that folded (an associative fold)."""
    if not hasattr(store, "total"):
        store.total, store.count, store.pids = 0, 0, set()
    if works:
        store.pids.add(os.getpid())
    store.total += sum(works)
    store.count += len(works)
    for other in others:
        if hasattr(other, "total"):
            store.total += other.total
            store.count += other.count
            store.pids |= other.pids


def totals(store: Any) -> tuple[int, int]:
    return (getattr(store, "total", 0), getattr(store, "count", 0))


def run_one(reducer: Reducer, data: Any) -> list[Any]:
    plumber = Plumber()
    plumber.add_piper(reducer)
    return plumber.collect([data])[reducer]


@pytest.mark.parametrize("kind", ["linear", "thread", "process"])
def test_sum_and_count(kind: str) -> None:
    if kind == "linear":
        out = run_one(Reducer(add), range(10_000))
        assert totals(out[0]) == (sum(range(10_000)), 10_000)
        return
    with IMap(worker_type=kind, worker_num=2) as pool:
        out = run_one(Reducer(add, parallel=pool), range(10_000))
    assert totals(out[0]) == (sum(range(10_000)), 10_000)
    if kind == "process":
        assert os.getpid() not in out[0].pids        # folded in the workers


def test_emit_and_empty_input() -> None:
    def halves(store: Any) -> Multiple:
        total = getattr(store, "total", 0)
        return Multiple([total // 2, total - total // 2])

    assert run_one(Reducer(add, emit=halves), range(5)) == [5, 5]
    assert run_one(Reducer(add, emit=totals), []) == [(0, 0)]      # one fresh store
    assert run_one(Reducer(add, emit=lambda store: None), range(5)) == []


def test_a_standalone_reducer_is_read_like_a_piper() -> None:
    reducer = Reducer(add, emit=totals).connect([range(4)])
    reducer.start()
    assert list(reducer) == [(6, 4)]
    reducer.stop()


def test_in_a_pipeline_with_pipers_before_and_after(worker_type: str) -> None:
    def double(inbox: list[int]) -> int:
        return inbox[0] * 2

    def show(inbox: list[Any]) -> str:
        return f"{inbox[0][0]}/{inbox[0][1]}"

    with IMap(worker_type=worker_type, worker_num=2) as pool:
        first, after = Piper(double, parallel=pool), Piper(show, parallel=pool)
        reducer = Reducer(add, emit=totals, parallel=pool)
        plumber = Plumber()
        plumber.add_pipe((first, reducer, after))
        assert plumber.collect([range(100)])[after] == [f"{2 * sum(range(100))}/100"]
        counters = plumber.stats["pipers"][reducer]
        assert (counters.items_in, counters.items_out) == (100, 1)


def test_error_items_are_counted_and_kept_not_folded(worker_type: str) -> None:
    def check(inbox: list[int]) -> int:
        if inbox[0] % 10 == 3:
            raise ValueError(inbox[0])
        return inbox[0]

    with IMap(worker_type=worker_type, worker_num=2) as pool:
        reducer = Reducer(add, emit=totals, parallel=pool)
        plumber = Plumber()
        plumber.add_pipe((Piper(check, parallel=pool), reducer))
        out = plumber.collect([range(100)])[reducer]
        assert plumber.stats["pipers"][reducer].errors == 10
    assert out == [(sum(x for x in range(100) if x % 10 != 3), 90)]
    assert len(reducer.error_items) == 10
    assert all(isinstance(e, PiperError) for e in reducer.error_items)


def test_a_fold_that_raises_on_one_item_folds_the_others(worker_type: str) -> None:
    def picky(store: Any, works: list[int], others: list[Any]) -> None:
        if 13 in works:
            raise ArithmeticError("13")
        add(store, works, others)

    with IMap(worker_type=worker_type, worker_num=2) as pool:
        reducer = Reducer(picky, emit=totals, parallel=pool)
        assert run_one(reducer, range(50)) == [(sum(range(50)) - 13, 49)]
    assert len(reducer.error_items) == 1


def test_recurrence_goes_through_the_body(worker_type: str) -> None:
    """fold returns x // 2 for each x > 3: the halves go through the body (-1 each) and
    are folded again, until nothing is returned."""
    def collect_and_halve(store: Any, works: list[int], others: list[Any]) -> Multiple:
        store.seen = getattr(store, "seen", []) + list(works)
        for other in others:
            store.seen += getattr(other, "seen", [])
        return Multiple(x // 2 for x in works if x > 3)

    def minus_one(inbox: list[int]) -> int:
        return inbox[0] - 1

    def sequential(x: int) -> list[int]:
        seen, todo = [], [x - 1]
        while todo:
            y = todo.pop()
            seen.append(y)
            if y > 3:
                todo.append(y // 2 - 1)
        return seen

    with IMap(worker_type=worker_type, worker_num=2) as pool:
        reducer = Reducer(collect_and_halve, emit=lambda s: sorted(s.seen), parallel=pool,
                          body=[Piper(minus_one, parallel=pool)])
        out = run_one(reducer, [0, 5, 9, 40])
    assert out == [sorted(itertools.chain.from_iterable(map(sequential, [0, 5, 9, 40])))]


def test_windows_of_every_n_items_in_order(worker_type: str) -> None:
    with IMap(worker_type=worker_type, worker_num=2) as pool:
        out = run_one(Reducer(add, emit=totals, parallel=pool, every=7), range(50))
    assert out == [(sum(range(k, min(k + 7, 50))), min(7, 50 - k)) for k in range(0, 50, 7)]


def test_windows_with_a_body_and_recurrence() -> None:
    def halve(store: Any, works: list[int], others: list[Any]) -> Multiple:
        add(store, works, others)
        return Multiple(x // 2 for x in works if x > 1)

    def ident(inbox: list[int]) -> int:
        return inbox[0]

    def sequential(x: int) -> int:
        total = 0
        while x > 1:
            total += x
            x //= 2
        return total + x

    with IMap(worker_type="thread", worker_num=3) as pool:
        out = run_one(Reducer(halve, emit=lambda s: totals(s)[0], parallel=pool, every=5,
                              body=[Piper(ident, parallel=pool)]), range(20))
    assert out == [sum(map(sequential, range(k, k + 5))) for k in range(0, 20, 5)]


def test_interval_windows() -> None:
    """Five items, then the input waits until the first window was emitted (it closes
    ``interval`` seconds after its first item), then five more."""
    emitted = threading.Event()

    def source() -> Iterator[int]:
        yield from range(5)
        assert emitted.wait(60), "the first window was never emitted"
        yield from range(5, 10)

    with IMap(worker_type="thread", worker_num=2) as pool:
        reducer = Reducer(add, emit=totals, parallel=pool, interval=0.05)
        plumber = Plumber()
        plumber.add_piper(reducer)
        out = []
        for window in plumber.stream([source()]):
            out.append(window)
            emitted.set()
    assert out == [(sum(range(5)), 5), (sum(range(5, 10)), 5)]


def test_an_endless_input_into_windows_holds_a_bounded_number_of_items() -> None:
    with IMap(worker_type="thread", worker_num=2) as pool:
        reducer = Reducer(add, emit=totals, parallel=pool, every=1000)
        plumber = Plumber()
        plumber.add_piper(reducer)
        out = []
        for window in plumber.stream([itertools.count()]):
            run = reducer._run
            node = run.node_of(reducer)
            assert node.held() <= run.window() + 1000
            assert len(node.windows) <= run.window() // 1000 + 2
            out.append(window)
            if len(out) == 30:
                break
    assert out == [(sum(range(k, k + 1000)), 1000) for k in range(0, 30_000, 1000)]


def test_a_store_class_of_a_test_function_crosses_processes() -> None:
    class Tally:
        def __init__(self) -> None:
            self.n = 0

    def count(store: Tally, works: list[int], others: list[Tally]) -> None:
        store.n += len(works) + sum(o.n for o in others)

    with IMap(worker_type="process", worker_num=2) as pool:
        out = run_one(Reducer(count, store=Tally, parallel=pool, emit=lambda s: s.n),
                      range(1000))
    assert out == [1000]


def test_bad_arguments() -> None:
    with pytest.raises(TypeError):
        Reducer(42)
    with pytest.raises(ValueError):
        Reducer(add, every=0)
    with pytest.raises(ValueError):
        Reducer(add, interval=-1)
    with pytest.raises(ValueError, match="body"):
        Reducer(add, body=[Reducer(add)])
    with pytest.raises(ValueError, match="produce"):
        Reducer(add, body=[Piper(lambda inbox: inbox[0], produce=2)])
    assert isinstance(Reducer(add).store(), Object)


def _total(values: list[int], kind: str, workers: int, stride: int, every: int | None
           ) -> list[tuple[int, int]]:
    if kind == "linear":
        return run_one(Reducer(add, emit=totals, every=every), values)
    with IMap(worker_type=kind, worker_num=workers, stride=stride) as pool:
        return run_one(Reducer(add, emit=totals, parallel=pool, every=every), values)


@settings(max_examples=25, deadline=None)
@given(values=st.lists(st.integers(-1000, 1000), max_size=300),
       kind=st.sampled_from(["linear", "thread", "thread", "process"]),
       workers=st.integers(1, 3), stride=st.integers(1, 40),
       every=st.one_of(st.none(), st.integers(1, 50)))
def test_an_associative_fold_does_not_depend_on_workers_stride_or_pool(
        values: list[int], kind: str, workers: int, stride: int, every: int | None) -> None:
    if every is None:
        expected = [(sum(values), len(values))]
    else:
        expected = [(sum(values[k:k + every]), len(values[k:k + every]))
                    for k in range(0, len(values), every)]
    assert _total(values, kind, workers, stride, every) == expected


def test_a_worker_that_dies_loses_its_batch_not_the_run() -> None:
    def deadly(store: Any, works: list[int], others: list[Any]) -> None:
        if 13 in works:
            os._exit(3)
        add(store, works, others)

    with IMap(worker_type="process", worker_num=2) as pool:
        reducer = Reducer(deadly, emit=totals, parallel=pool)
        out = run_one(reducer, range(100))
    total, count = out[0]
    assert count < 100 and total <= sum(range(100)) - 13
    assert reducer.error_items           # the items of the batch that was lost
