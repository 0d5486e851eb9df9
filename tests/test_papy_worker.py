"""Worker: composition, arguments, equality, errors as values (the original test_Worker)."""
import functools
import operator
import pickle

import pytest

from papy import IMap, PiperError, Worker, WorkerError


def ipasser(inbox):
    return inbox[0]


def double(inbox):
    return inbox[0] * 2


def plus(inbox, n):
    return inbox[0] + n


def power(inbox, exponent=1):
    return inbox[0] ** exponent


def join_two(inbox):
    return inbox[0] + inbox[1]


def test_single_function():
    worker = Worker(double)
    assert worker([21]) == 42
    assert worker.task == (double,)
    assert worker.args == ((),)
    assert worker.kwargs == ({},)
    assert worker.__name__ == "double"


def test_chain_is_left_to_right():
    worker = Worker((plus, double), ((1,), ()))
    assert worker([20]) == 42           # double(plus(20)), not plus(double(20))
    assert worker.__name__ == "plus>double"
    assert repr(worker) == f"plus>double({id(worker)})"
    assert worker.name.startswith("plus>double_")


def test_join_inbox():
    assert Worker(join_two)([1, 2]) == 3


def test_nested_workers_and_init_from_worker():
    inner = Worker((plus, double), ((1,), ()))
    outer = Worker([inner, Worker(power, kwargs={"exponent": 2})])
    assert outer.task == (plus, double, power)
    assert outer([1]) == 16              # ((1 + 1) * 2) ** 2
    copy = Worker(inner)
    assert copy == inner and copy is not inner
    from_list = Worker([plus, double], [(1,), ()])
    assert from_list == inner


def test_positional_and_keyword_arguments_per_function():
    worker = Worker((plus, power), ((3,), ()), ({}, {"exponent": 3}))
    assert worker([-1]) == 8


def test_seed_form():
    def grep(inbox, pattern):
        return inbox[0] if pattern in inbox[0] else None
    worker = Worker(grep, ("papy",))
    assert worker(["a papy line"]) == "a papy line"
    assert worker(["another line"]) is None


def test_builtins_and_partials_are_functions():
    assert Worker(len)([1, 2]) == 2
    assert Worker(functools.partial(plus, n=5))([1]) == 6
    with pytest.raises(TypeError):
        Worker(operator.itemgetter(0))      # a callable object is not a function
    with pytest.raises(TypeError):
        Worker(dict)                        # nor is a class


def test_unhashable_and_equality():
    with pytest.raises(TypeError):
        hash(Worker(double))
    assert Worker(double) == Worker(double)
    assert Worker(plus, (1,)) != Worker(plus, (2,))
    assert Worker(double) != Worker(ipasser)
    assert Worker(double) != double


@pytest.mark.parametrize("bad", [1, [1], "double", [], None, (double, 1)])
def test_not_functions_are_type_errors(bad):
    with pytest.raises(TypeError):
        Worker(bad)


def test_argument_count_mismatch():
    with pytest.raises(TypeError, match="2 functions, 1 argument tuples"):
        Worker((plus, double), ((1,),))
    with pytest.raises(TypeError, match="tuple of positional"):
        Worker(plus, 1)


def test_exception_is_returned_as_worker_error():
    error = Worker((double, plus), ((), ("x",)))([1])   # 2 + 'x' raises TypeError
    assert isinstance(error, WorkerError)
    exc, function, inbox = error.args
    assert isinstance(exc, TypeError) and error.exception is exc
    assert function == "plus" and error.function == "plus"
    assert inbox == [1] and error.inbox == [1]
    assert "plus" in str(error) and "TypeError" in str(error)
    assert "Traceback" in error.traceback_text


def test_upstream_error_skips_evaluation():
    calls = []

    def record(inbox):
        calls.append(inbox)
        return inbox

    upstream = PiperError(WorkerError(ValueError("x"), "f", [1]))
    result = Worker(record)([upstream, 2])
    assert calls == []
    assert isinstance(result, PiperError) and result.args == (upstream,)
    grouped = Worker(record)([[1], [upstream]])     # an inbox of a consume=2 Piper
    assert isinstance(grouped, PiperError) and grouped.args == (upstream,)


def test_worker_error_pickles_with_its_parts():
    error = Worker(double)([None])
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is WorkerError
    assert type(again.exception) is TypeError and again.function == "double"
    assert again.traceback_text == error.traceback_text


@pytest.mark.parametrize("worker_type", ["thread", "process"])
def test_worker_runs_inside_an_imap(worker_type):
    worker = Worker((plus, double), ((1,), ()))
    with IMap(worker_type=worker_type, worker_num=2) as pool:
        task = pool.add_task(worker, ([i] for i in range(20)))
        pool.start()
        assert list(task) == [(i + 1) * 2 for i in range(20)]


def divide_by(inbox, divisor, exit_on=None):
    if inbox[0] == exit_on:
        raise SystemExit(3)
    return inbox[0] // divisor


@pytest.mark.parametrize("worker", [
    Worker(divide_by, (2,)), Worker(divide_by, (), {"divisor": 2}),
    Worker(divide_by, (2,), {"exit_on": 5})], ids=["args", "kwargs", "both"])
def test_a_batch_of_a_worker_with_arguments_is_what_each_call_gives(worker):
    """map_stage calls a Worker of one function with arguments directly for a batch of
    plain items: the same results, error items (inbox ``[item]``) in place, and a
    BaseException only for its own position, the rest of the batch evaluated."""
    from papy._worker import map_stage
    items = [4, "x", 6, 5, 8]
    values, raised = map_stage(worker, None, items, True)
    exits = worker.kwargs[0].get("exit_on") is not None
    assert values[0] == 2 and values[2] == 3 and values[4] == 4
    assert isinstance(values[1], WorkerError) and values[1].inbox == ["x"]
    assert str(values[1].exception) == str(worker(["x"]).exception)
    if exits:
        assert values[3] is None and isinstance(raised[3], SystemExit)
        assert list(raised) == [3]
    else:
        assert raised is None and values[3] == 2
    for position, item in enumerate(items):
        if position == 1 or (exits and position == 3):
            continue
        assert values[position] == worker([item])


def test_a_batch_with_an_upstream_error_goes_through_the_worker():
    """An item that is an error item is settled by the Worker (not evaluated), in a batch
    of a Worker with arguments too."""
    from papy._worker import map_stage
    upstream = PiperError(WorkerError(ValueError("bad"), "f", [1]))
    values, raised = map_stage(Worker(divide_by, (2,)), None, [4, upstream], True)
    assert raised is None and values[0] == 2
    assert isinstance(values[1], PiperError)
