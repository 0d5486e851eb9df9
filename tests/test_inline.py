"""papy.inline, job_stream's front end: its documented examples and its own tests, ported
(job_stream's python/job_stream/test/test_inline.py, test_map.py, test_pipes.py), each
checked against a plain sequential computation, on thread and process pools."""
from __future__ import annotations

import os
import threading
from typing import Any

import pytest

from papy import PiperError, inline
from papy.inline import Args, Multiple, Object, Work

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(params=["thread", "process", "inline"])
def worker_type(request: pytest.FixtureRequest) -> str:
    """Each test on a thread pool, a process pool, and without a pool ('inline')."""
    kind: str = request.param
    return kind


def work(items: Any, worker_type: str) -> Work:
    return Work(items, worker_type=worker_type, worker_num=2)


# -- the documented examples -----------------------------------------------------------------
def test_average_word_length(worker_type: str) -> None:
    words = "Hello there world, how are you?".split()
    w = work(words, worker_type)

    @w.job
    def get_len(word: str) -> int:
        return len(word)

    @w.reduce(emit=lambda store: store.len / store.count)
    def find_average(store: Any, inputs: list[int], others: list[Any]) -> None:
        if not hasattr(store, "init"):
            store.init = True
            store.count = 0
            store.len = 0.0
        for i in inputs:
            store.len += i
            store.count += 1
        for o in others:
            store.len += o.len
            store.count += o.count

    assert w.run() == [sum(map(len, words)) / len(words)]
    assert w.errors == []


def test_frame_sums_up_to_each_item(worker_type: str) -> None:
    w = work([4, 5, 8], worker_type)

    @w.frame
    def sum_through(store: Any, first: int) -> Any:
        if not hasattr(store, "value"):
            store.first = first
            store.value = 0
            return first
        return None

    @w.job
    def count_to(n: int) -> Multiple:
        return Multiple(range(1, n + 1))

    @w.frame_end
    def handle_next(store: Any, item: int) -> None:
        store.value += item

    results = w.run()
    assert sorted((s.first, s.value) for s in results) == [
        (n, sum(range(1, n + 1))) for n in (4, 5, 8)]


def test_frame_next_power_of_two(worker_type: str) -> None:
    w = work([3, 8, 9], worker_type)

    @w.frame(store=lambda: inline.Object(total=1), emit=lambda store: store.total)
    def next_power_of_two(store: Any, first: int) -> Any:
        if store.total < first:
            return inline.Multiple([store.total] * store.total)
        return None

    @w.job
    def a(item: int) -> int:
        return 1

    @w.frame_end
    def next_power_of_two_end(store: Any, item: int) -> None:
        store.total += item

    def sequential(n: int) -> int:
        total = 1
        while total < n:
            total *= 2
        return total

    assert sorted(w.run()) == sorted(map(sequential, [3, 8, 9])) == [4, 8, 16]


class SumStore:
    def __init__(self) -> None:
        self.value = 0


def test_job_after_reduce_and_another_reduce(worker_type: str) -> None:
    w = work([1, 2, 3], worker_type)

    @w.reduce(store=SumStore, emit=lambda store: store.value)
    def add(store: SumStore, works: list[int], others: list[SumStore]) -> None:
        for x in works:
            store.value += x
        for o in others:
            store.value += o.value

    @w.job
    def times_three(total: int) -> Multiple:
        return inline.Multiple([total] * 3)

    w.reduce(add, store=SumStore, emit=lambda store: store.value)
    assert w.run() == [sum([sum([1, 2, 3])] * 3)] == [18]


def test_init_adds_work(worker_type: str) -> None:
    w = work([1], worker_type)

    @w.init
    def add_two() -> int:
        return 2

    @w.init
    def add_three_four() -> Multiple:
        return inline.Multiple([3, 4])

    assert sorted(w.run()) == [1, 2, 3, 4]


def test_multiple_from_lists_tuples_generators_none_dropped(worker_type: str) -> None:
    seen: list[int] = []
    with work([], worker_type) as w:
        @w.init
        def from_list() -> Multiple:
            return Multiple([1, 2, 3])

        @w.init
        def from_tuple() -> Multiple:
            return Multiple((1, 2, 3))

        @w.init
        def from_generator() -> Multiple:
            def gen() -> Any:
                yield 1
                yield 2
                yield 3
            return Multiple(gen())

        @w.init
        def with_gaps() -> Multiple:
            return Multiple([None, 2, 3])

        @w.result
        def record(item: int) -> None:
            seen.append(item)
    assert sorted(seen) == [1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3]


def test_multiple_from_jobs_keeps_order_within_an_item(worker_type: str) -> None:
    w = work([0, 1, 2, 3], worker_type)

    @w.job
    def spread(n: int) -> Multiple:
        return Multiple((n, k) if k % 2 else None for k in range(5))

    results = w.run()
    for n in range(4):
        assert [r for r in results if r[0] == n] == [(n, 1), (n, 3)]


def test_nested_frames(worker_type: str) -> None:
    w = work([3, 4, 6], worker_type)

    @w.frame(emit=lambda store: (store.first, store.value))
    def outer(store: Any, first: int) -> Any:
        if not hasattr(store, "value"):
            store.first, store.value = first, 0
            return Multiple(range(1, first + 1))
        return None

    @w.frame(emit=lambda store: store.value)
    def inner(store: Any, k: int) -> Any:
        if not hasattr(store, "value"):
            store.value = 0
            return Multiple(range(1, k + 1))
        return None

    @w.job
    def square(x: int) -> int:
        return x * x

    @w.frame_end
    def inner_end(store: Any, x: int) -> None:
        store.value += x

    @w.frame_end
    def outer_end(store: Any, x: int) -> None:
        store.value += x

    def sequential(n: int) -> int:
        return sum(sum(x * x for x in range(1, k + 1)) for k in range(1, n + 1))

    assert sorted(w.run()) == [(n, sequential(n)) for n in (3, 4, 6)]


def test_empty_frame(worker_type: str) -> None:
    w = work([1, 2, 3], worker_type)

    @w.frame(emit=lambda store: store.value)
    def start(store: Any, first: int) -> Any:
        if not hasattr(store, "init"):
            store.init = True
            return first
        return None

    @w.frame_end
    def end(store: Any, item: int) -> None:
        store.value = item

    assert sorted(w.run()) == [1, 2, 3]


def test_frame_into_a_reduce(worker_type: str) -> None:
    w = work(["Apple", "Pear"], worker_type)

    @w.frame(emit=lambda store: f"{store.first} done")
    def begin(store: Any, first: str) -> Any:
        if not hasattr(store, "first"):
            store.first = first
            return "Recur"
        return None

    @w.job
    def forward(item: str) -> str:
        return item

    @w.frame_end
    def end(store: Any, item: str) -> None:
        assert item == "Recur"

    @w.reduce(store=list, emit=sorted)
    def gather(store: list[str], works: list[str], others: list[list[str]]) -> None:
        store.extend(works)
        for other in others:
            store.extend(other)

    assert w.run() == [["Apple done", "Pear done"]]


def test_reduce_recurs_through_its_scope(worker_type: str) -> None:
    w = work([8, 3, 1], worker_type)

    @w.job
    def halve(x: int) -> int:
        return x // 2 if x > 1 else x

    @w.reduce(emit=lambda store: store.steps)
    def count(store: Any, works: list[int], others: list[Any]) -> Any:
        store.steps = getattr(store, "steps", 0) + len(works) + sum(
            getattr(o, "steps", 0) for o in others)
        return Multiple(x for x in works if x > 1)

    def sequential(x: int) -> int:
        steps = 1
        while x > 1:
            x //= 2
            steps += 1
        return steps

    # 8 -> 4 -> 2 -> 1 -> (recurred 4, 2: halved again in the scope) ...
    assert w.run() == [sum(map(sequential, [8 // 2, 3 // 2, 1]))]


def test_reduce_every_n_items(worker_type: str) -> None:
    w = work(range(100), worker_type)

    @w.reduce(every=10, emit=lambda store: store.total)
    def total(store: Any, works: list[int], others: list[Any]) -> None:
        store.total = getattr(store, "total", 0) + sum(works) + sum(
            getattr(o, "total", 0) for o in others)

    assert w.run() == [sum(range(k, k + 10)) for k in range(0, 100, 10)]


def test_args_fan_out_into_jobs_and_results(worker_type: str) -> None:
    got: list[tuple[Any, ...]] = []
    w = work([Args(1, 2, d=4, c=3)], worker_type)

    @w.job
    def handle(a: int, b: int, c: int, d: int) -> Args:
        return Args(a + b, c * d)

    @w.result
    def show(total: int, product: int) -> None:
        got.append((total, product))

    assert w.run() is None
    assert got == [(3, 12)]


# -- job_stream's tests ----------------------------------------------------------------------
def test_finish(worker_type: str) -> None:
    w = work([1, 2, 3], worker_type)

    @w.finish
    def print_array(results: list[int]) -> list[int]:
        return sorted(results)

    assert w.run() == [1, 2, 3]


def test_result_in_the_main_program(worker_type: str) -> None:
    seen: list[tuple[str, int]] = []
    w = work([1, 2, 3], worker_type)

    @w.result
    def f(item: int) -> None:
        seen.append((threading.current_thread().name, item))

    assert w.run() is None
    assert sorted(item for _, item in seen) == [1, 2, 3]
    assert {name for name, _ in seen} == {threading.current_thread().name}


def test_with_block_runs_the_stream(worker_type: str) -> None:
    seen: list[int] = []
    with work([1, 2, 3], worker_type) as w:
        @w.job
        def handle(item: int) -> int:
            return item * 10

        @w.result
        def keep(item: int) -> None:
            seen.append(item)
    assert sorted(seen) == [10, 20, 30]


def test_with_block_without_result_runs_and_discards() -> None:
    ran: list[int] = []
    with Work([1, 2, 3], worker_type="thread") as w:
        @w.job
        def handle(item: int) -> None:
            ran.append(item)
    assert sorted(ran) == [1, 2, 3]


def test_with_block_does_not_run_when_it_raises() -> None:
    ran: list[int] = []
    with pytest.raises(KeyError):
        with Work([1], worker_type="thread") as w:
            @w.job
            def handle(item: int) -> None:
                ran.append(item)
            raise KeyError("stop")
    assert ran == []


def test_jobs_run_in_worker_processes_by_default() -> None:
    w = Work([1], worker_num=1)
    assert w.worker_type == "process"

    @w.job
    def handle(item: int) -> int:
        return os.getpid()

    assert w.run() != [os.getpid()]


@pytest.mark.parametrize("kind", ["thread", "inline"])
def test_thread_and_inline_workers_stay_in_this_process(kind: str) -> None:
    main_pid = os.getpid()
    w = Work([1], worker_type=kind)

    @w.init
    def main_pid_again() -> None:
        assert os.getpid() == main_pid

    @w.job
    def handle(item: int) -> int:
        return os.getpid()

    assert w.run() == [main_pid]


def test_map(worker_type: str) -> None:
    assert inline.map(lambda x: x + 1, [8, 9], worker_type=worker_type) == [9, 10]


def test_map_big(worker_type: str) -> None:
    assert inline.map(lambda x: x ** 2, range(100), worker_type=worker_type) == \
        [x ** 2 for x in range(100)]


def test_map_multiple(worker_type: str) -> None:
    assert inline.map(lambda a, b: a * b, range(5), range(3, 8), worker_type=worker_type) \
        == list(map(lambda a, b: a * b, range(5), range(3, 8)))


def test_map_raises_the_error_of_a_failing_item() -> None:
    with pytest.raises(PiperError):
        inline.map(lambda x: 1 // x, [1, 0, 2], worker_type="thread")


# -- errors in place ---------------------------------------------------------------------
def test_a_failing_item_is_an_error_in_place_and_the_run_goes_on(worker_type: str) -> None:
    w = work(range(10), worker_type)

    @w.job
    def invert(x: int) -> float:
        return 12 / (x - 3)

    results = w.run()
    assert sorted(results) == sorted(12 / (x - 3) for x in range(10) if x != 3)
    assert len(w.errors) == 1 and isinstance(w.errors[0], PiperError)


def test_errors_reaching_a_reducer_are_listed_not_folded(worker_type: str) -> None:
    w = work(range(10), worker_type)

    @w.job
    def check(x: int) -> int:
        if x in (2, 7):
            raise ValueError(x)
        return x

    @w.reduce(emit=lambda store: store.total)
    def total(store: Any, works: list[int], others: list[Any]) -> None:
        store.total = getattr(store, "total", 0) + sum(works) + sum(
            getattr(o, "total", 0) for o in others)

    assert w.run() == [sum(range(10)) - 2 - 7]
    assert len(w.errors) == 2


def test_a_failing_frame_ends_its_loop_only(worker_type: str) -> None:
    w = work([1, 2, 3], worker_type)

    @w.frame(emit=lambda store: store.first)
    def begin(store: Any, first: int) -> Any:
        if first == 2:
            raise RuntimeError("no")
        if not hasattr(store, "first"):
            store.first = first
            return first
        return None

    @w.frame_end
    def end(store: Any, item: int) -> None:
        pass

    assert sorted(w.run()) == [1, 3]
    assert len(w.errors) == 1


def test_a_failing_result_handler_stops_the_run_and_raises() -> None:
    w = Work(range(1000), worker_type="thread")

    @w.job
    def same(x: int) -> int:
        return x

    @w.result
    def fail(x: int) -> None:
        raise LookupError(x)

    with pytest.raises(LookupError):
        w.run()


# -- decoration-time checks --------------------------------------------------------------
def test_two_results_raise_naming_the_function() -> None:
    w = Work()

    @w.result
    def first(r: Any) -> None:
        pass

    with pytest.raises(ValueError, match="second"):
        @w.result
        def second(r: Any) -> None:
            pass


@pytest.mark.parametrize("ender", ["result", "finish"])
@pytest.mark.parametrize("stage", ["job", "reduce", "frame", "finish", "init"])
def test_nothing_after_result_or_finish(ender: str, stage: str) -> None:
    w = Work()
    getattr(w, ender)(lambda r: r)
    arities = {"job": 1, "reduce": 3, "frame": 2, "finish": 1, "init": 0}
    func = {0: lambda: None, 1: lambda a: a, 2: lambda a, b: a, 3: lambda a, b, c: a}[
        arities[stage]]
    with pytest.raises(ValueError, match="lambda"):
        getattr(w, stage)(func)


def test_frame_end_after_result_raises() -> None:
    w = Work()

    @w.frame
    def f(store: Any, first: Any) -> None:
        pass

    with pytest.raises(ValueError, match="handle"):
        @w.result
        def handle(r: Any) -> None:
            pass


@pytest.mark.parametrize("kind, func", [
    ("job", lambda: 1),
    ("reduce", lambda store, works: 1),
    ("reduce", lambda store, works, others, extra: 1),
    ("frame", lambda store: 1),
    ("frame_end", lambda store: 1),
    ("init", lambda x: 1),
    ("finish", lambda: 1),
    ("finish", lambda a, b: 1),
])
def test_wrong_arities_raise_at_decoration(kind: str, func: Any) -> None:
    w = Work()
    if kind == "frame_end":
        w.frame(lambda store, first: None)
    with pytest.raises(ValueError, match="lambda"):
        getattr(w, kind)(func)


def test_varargs_take_any_number() -> None:
    w = Work([1], worker_type="thread")
    w.init(lambda *args: None)
    w.job(lambda *args: args[0])
    w.frame(lambda *args: None)
    w.frame_end(lambda *args: None)
    w.reduce(lambda *args: None, emit=lambda store: 5)
    assert w.run() == [5]


def test_frame_end_without_frame_and_reduce_inside_a_frame_raise() -> None:
    w = Work()
    with pytest.raises(ValueError, match="lonely"):
        @w.frame_end
        def lonely(store: Any, item: Any) -> None:
            pass
    w.frame(lambda store, first: None)
    with pytest.raises(ValueError, match="inside"):
        w.reduce(lambda store, works, others: None)
    with pytest.raises(ValueError, match="not ended"):
        w.run()


def test_frameend_is_job_streams_name() -> None:
    assert Work.frameEnd is Work.frame_end


def test_object_is_an_attribute_bag() -> None:
    store = Object(total=1)
    store.count = 2
    assert (store.total, store.count) == (1, 2)
    assert Object(a=1) == Object(a=1) != Object(a=2)
