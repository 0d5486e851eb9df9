"""An IMap and its task iterators are iterators (``iter(it) is it``), not hybrids that hand
out another object: next() and iteration share one position, an item's error is raised
in its place and reading goes on, the end is raised again on every later call."""
import pytest

from imap import IMap


def fails_on_2(x):
    if x == 2:
        raise ValueError("two")
    return x * 10


def test_a_task_iterator_is_an_iterator(pool_options):
    with IMap(**pool_options) as pool:
        results = pool.add_task(fails_on_2, range(5))
        pool.start()
        assert iter(results) is results
        assert next(results) == 0
        seen = []
        with pytest.raises(ValueError, match="two"):
            for value in results:          # the same position as next()
                seen.append(value)
        assert seen == [10]
        assert list(results) == [30, 40]   # reading goes on after the error
        with pytest.raises(StopIteration):
            next(results)
        with pytest.raises(StopIteration):
            results.next()


def test_an_imap_is_an_iterator_over_its_first_task(pool_options):
    with IMap(fails_on_2, [0, 1, 3], **pool_options) as pool:
        assert iter(pool) is pool
        assert next(pool) == 0
        assert list(pool) == [10, 30]
    with pytest.raises(RuntimeError, match="not started"):
        next(pool)                        # after stop(): the tasks are gone
