"""The duck-typed protocols an IMap honours: ``__imap_batch__`` on a function's class (whole
batches), ``__imap_take__`` (bulk reads of an input that never waits) and ``__imap_read__``
(the ready items of an input that may wait), and ``imap.preload``."""
import threading

import pytest

import imap
from imap import IMap


class BatchDoubler:
    """Doubles each item; raises for 13; records the batch sizes it was given."""

    def __init__(self):
        self.sizes = []

    def __imap_batch__(self, items):
        self.sizes.append(len(items))
        values, errors = [], None
        for position, item in enumerate(items):
            if item == 13:
                errors = errors or {}
                errors[position] = ValueError("thirteen")
                values.append(None)
            else:
                values.append(item * 2)
        return values, errors

    def __call__(self, item):       # one item (the IMap's tracked mode)
        values, errors = self.__imap_batch__([item])
        if errors:
            raise errors[0]
        return values[0]


class Broken(BatchDoubler):
    def __imap_batch__(self, items):
        raise RuntimeError("broken batch")


class Short(BatchDoubler):
    def __imap_batch__(self, items):
        return [0] * (len(items) - 1), None


def test_a_batch_function_gets_whole_batches_and_its_errors_are_in_place():
    function = BatchDoubler()
    with IMap(function, range(3000), worker_type="thread", worker_num=2) as pool:
        results = []
        iterator = iter(pool)
        while True:
            try:
                results.append(next(iterator))
            except StopIteration:
                break
            except ValueError as exc:
                results.append(str(exc))
                iterator = iter(pool)
    expected = [x * 2 for x in range(3000)]
    expected[13] = "thirteen"
    assert results == expected
    assert max(function.sizes) > 16       # batches, not one call per item


@pytest.mark.parametrize("function, message", [(Broken(), "broken batch"),
                                               (Short(), "returned 1 values for 2 items")])
def test_a_failing_batch_function_fails_every_item_of_its_batch(function, message):
    from imap._evaluate import evaluate
    values, errors, elapsed = evaluate(function, [1, 2])
    assert values == [None, None] and sorted(errors) == [0, 1] and elapsed >= 0
    assert all(message in str(error) for error in errors.values())


class Taker:
    """A steady input read in bulk: ``__imap_take__`` gives lists, a short one ends it."""

    def __init__(self, n):
        self.left = list(range(n))
        self.calls = []
        self.lock = threading.Lock()

    def __iter__(self):
        return self

    def __next__(self):
        raise AssertionError("read item by item")

    def __imap_take__(self, count):
        with self.lock:
            self.calls.append(count)
            items, self.left = self.left[:count], self.left[count:]
        return items


def test_an_input_with_imap_take_is_read_in_bulk(worker_type):
    source = Taker(5000)
    with IMap(abs, source, worker_type=worker_type, worker_num=2) as pool:
        assert list(pool) == list(range(5000))
    assert len(source.calls) < 5000 / 16


class Reader:
    """An input that may wait: ``__imap_read__`` gives what is ready, raises once, then
    says None for good (read item by item: the fallback, to its end)."""

    def __init__(self):
        self.chunks = [[1, 2, 3], [4, 5], "fail", [6], None]
        self.fallback = iter([10, 11])

    def __iter__(self):
        return self

    def __next__(self):
        return next(self.fallback)

    def __imap_read__(self, count):
        chunk = self.chunks.pop(0) if len(self.chunks) > 1 else self.chunks[0]
        if chunk == "fail":
            raise KeyError("seven")
        return chunk


def test_an_input_with_imap_read_gives_ready_items_none_and_errors_in_place(worker_type):
    with IMap(abs, Reader(), worker_type=worker_type, worker_num=1, stride=8) as pool:
        results, iterator = [], iter(pool)
        while True:
            try:
                results.append(next(iterator))
            except StopIteration:
                break
            except KeyError as exc:
                results.append(exc.args[0])
                iterator = iter(pool)
    assert results == [1, 2, 3, 4, 5, "seven", 6, 10, 11]


def test_preload_checks_its_arguments_and_remembers_modules(monkeypatch):
    from imap import _config
    monkeypatch.setattr(_config, "PRELOAD", list(_config.PRELOAD))
    imap.preload("json", "json")
    assert _config.PRELOAD.count("json") == 1
    with pytest.raises(TypeError, match="module names"):
        imap.preload(None)
