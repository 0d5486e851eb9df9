"""Piper(combine='product'): the cross product of a join's inputs (issue 13 item 6)."""
from __future__ import annotations

import itertools

import cache_functions as cf
import pytest

from papy import Cache, IMap, Piper, PiperError, Plumber
from papy._product import PRODUCT_AHEAD


def run_product(inputs, function=cf.as_pair, pool_options=None, upstream=None, **options):
    """A product Piper fed by one Piper per input (``upstream[k]``, default first_item);
    its outputs."""
    pool = IMap(**pool_options) if pool_options is not None else None
    parallel = pool if pool is not None else False
    try:
        product = Piper(function, parallel=parallel, combine="product", name="product",
                        **options)
        plumber = Plumber()
        for k in range(len(inputs)):
            func = (upstream or {}).get(k, cf.first_item)
            plumber.add_pipe((Piper(func, parallel=parallel, name=f"input{k}",
                                    branch=k), product))
        plumber.start([list(values) for values in inputs])
        outputs = list(product)
        plumber.stop()
    finally:
        if pool is not None:
            pool.stop()
    return outputs


def shown(outputs):
    return [("error" if isinstance(o, PiperError) else o) for o in outputs]


def test_pacers_join_example(pool_options):
    outputs = run_product([["a", "bc", "def"], [1, 2]], cf.multiply, pool_options,
                          upstream={0: cf.length})
    assert outputs == [1, 2, 2, 4, 3, 6]


def test_row_major_order_of_three_inputs(worker_type):
    inputs = [range(4), "xy", [True, None, 2.5]]
    outputs = run_product(inputs, pool_options={"worker_type": worker_type, "worker_num": 2})
    assert outputs == list(itertools.product(*inputs))


def test_linear_and_larger_than_what_it_makes_ahead():
    inputs = [range(3), range(PRODUCT_AHEAD + 7)]
    assert run_product(inputs) == list(itertools.product(*inputs))


def test_an_upstream_failure_is_an_error_in_each_combination_it_touches(worker_type):
    options = {"worker_type": worker_type, "worker_num": 2}
    fails = {0: cf.fails_on_odd, 1: cf.fails_on_odd}
    outputs = run_product([range(3), [10, 11, 12]], pool_options=options, upstream=fails)
    expected = [("error" if x % 2 or y % 2 else (x, y))
                for x, y in itertools.product(range(3), [10, 11, 12])]
    assert shown(outputs) == expected


def test_an_empty_later_input_gives_nothing_and_ends():
    assert run_product([range(5), []]) == []
    assert run_product([[], range(5)]) == []


def test_one_source_feeding_every_input_does_not_hang(worker_type):
    """A diamond: the later input comes from the same source as input 0, which the product
    must not hold back; far more items than the run's window."""
    with IMap(worker_type=worker_type, worker_num=2) as pool:
        source = Piper(cf.first_item, parallel=pool, name="source")
        left = Piper(cf.first_item, parallel=pool, name="left", branch=0)
        right = Piper(cf.first_item, parallel=pool, name="right", branch=1)
        product = Piper(cf.as_pair, parallel=pool, combine="product", name="product")
        plumber = Plumber()
        plumber.add_pipe((source, left, product))
        plumber.add_pipe((source, right, product))
        plumber.start([range(150)])
        outputs = list(product)
        plumber.stop()
    assert outputs == list(itertools.product(range(150), range(150)))


def test_a_product_with_a_cache_is_cached(tmp_path, worker_type):
    cache = Cache(tmp_path)
    options = {"worker_type": worker_type, "worker_num": 2}
    first = run_product([range(4), "abc"], pool_options=options, cache=cache)
    assert cache.stats(reset=True)["misses"] == 12
    assert run_product([range(4), "abc"], pool_options=options, cache=cache) == first
    assert cache.stats()["hits"] == 12 and cache.stats()["misses"] == 0


def test_combine_is_checked():
    with pytest.raises(ValueError, match="combine"):
        Piper(cf.first_item, combine="cross")
    assert Piper(cf.first_item).combine == "zip"


def test_a_product_of_one_input_is_that_input():
    product = Piper(cf.first_item, combine="product")
    plumber = Plumber()
    plumber.add_pipe((Piper(cf.first_item), product))
    plumber.start([range(5)])
    assert list(product) == list(range(5))
    plumber.stop()
