"""Produce / spawn / consume / repeat: the exact stride-interleaved orderings of the original
(test_Internal and the PSC cases of test_core), on linear Pipers and every kind of IMap.

Parallel Pipers here use an explicit stride of 3 (the default stride is large); a linear
Piper interleaves with stride 1.
"""
import pytest

from papy import IMap, Piper, PiperError, Plumber, Worker

STRIDE = 3


def ipasser(inbox):
    return inbox[0]


def mul2(inbox):
    return inbox[0] * 2


def sum2(inbox):
    # a consume=2 inbox: [[a], [b]]
    return inbox[0][0] + inbox[1][0]


def sum_all(inbox):
    return sum(group[0] for group in inbox)


def concat(inbox):
    return "".join(group[0] for group in inbox)


def boxes(inbox):
    return inbox


def pair_or_not(inbox):
    return (inbox[0], -inbox[0]) if inbox[0] % 2 else inbox[0]     # odd: a pair; even: bad


@pytest.fixture
def pools(make_parallel):
    """make() -> a fresh IMap of each kind with stride 3 (False: linear; tests/conftest.py)."""
    def make(stride=STRIDE, worker_num=2):
        return make_parallel(stride=stride, workers=worker_num)

    make.stride = 1 if make_parallel.kind == "linear" else STRIDE
    return make


def run_chain(pipers, data):
    """start(datas), read the output to its end, stop(): the manual way."""
    plumber = Plumber()
    plumber.add_pipe(tuple(pipers))
    plumber.start([data])
    try:
        return list(pipers[-1])
    finally:
        plumber.stop()


def interleave(results, n, stride):
    """The reference ordering of produce=n: per block of `stride` results, element k of each."""
    out = []
    for start in range(0, len(results), stride):
        block = results[start:start + stride]
        for k in range(n):
            out.extend(r[k] for r in block)
    return out


PAIRS = [(11, 12), (21, 22), (31, 32), (41, 42), (51, 52), (61, 62)]


def test_canonical_produce_spawn_consume(pools):
    pool = pools()
    pipers = [Piper(ipasser, parallel=pool, produce=2), Piper(mul2, parallel=pool, spawn=2),
              Piper(sum2, parallel=pool, consume=2)]
    assert run_chain(pipers, PAIRS) == [46, 86, 126, 166, 206, 246]


@pytest.mark.parametrize("count", [1, 2, 4, 7, 11])
def test_canonical_with_a_short_last_round(pools, count):
    pairs = [(10 * i + 1, 10 * i + 2) for i in range(1, count + 1)]
    pool = pools()
    pipers = [Piper(ipasser, parallel=pool, produce=2), Piper(mul2, parallel=pool, spawn=2),
              Piper(sum2, parallel=pool, consume=2)]
    assert run_chain(pipers, pairs) == [2 * (a + b) for a, b in pairs]


def test_canonical_on_separate_pools(pools):
    pipers = [Piper(ipasser, parallel=pools(), produce=2), Piper(mul2, parallel=pools(), spawn=2),
              Piper(sum2, parallel=pools(), consume=2)]
    assert run_chain(pipers, PAIRS) == [46, 86, 126, 166, 206, 246]


def test_produce_order(pools):
    result = run_chain([Piper(ipasser, parallel=pools(), produce=2)], PAIRS)
    assert result == interleave(PAIRS, 2, pools.stride)
    if pools.stride == 3:
        assert result[:6] == [11, 21, 31, 12, 22, 32]
    else:
        assert result[:4] == [11, 12, 21, 22]


def test_produce_takes_the_first_n_elements_and_a_short_last_block(pools):
    data = [(i, i + 100, i + 200) for i in range(7)]        # 7 = 2 strides of 3, plus 1
    result = run_chain([Piper(ipasser, parallel=pools(), produce=2)], data)
    assert result == interleave([d[:2] for d in data], 2, pools.stride)
    assert result[-2:] == [6, 106]      # a short last block: only its own results


def test_repeat(pools):
    result = run_chain([Piper(ipasser, parallel=pools(), produce=2, repeat=True)], range(7))
    if pools.stride == 3:
        assert result == [0, 1, 2, 0, 1, 2, 3, 4, 5, 3, 4, 5, 6, 6]
    else:
        assert result == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6]


def test_consume_groups_are_stride_interleaved(pools):
    stream = [0, 1, 2, 0, 1, 2, 3, 4, 5, 3, 4, 5] if pools.stride == 3 else \
        [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    result = run_chain([Piper(boxes, parallel=pools(), consume=2)], stream)
    assert result == [[[i], [i]] for i in range(6)]


def test_consume_on_a_flat_stream(pools):
    result = run_chain([Piper(concat, parallel=pools(), consume=2)], ["s"] * 6)
    assert result == ["ss"] * 3


def test_consume_short_last_group(pools):
    result = run_chain([Piper(boxes, parallel=pools(), consume=2)], range(10))
    if pools.stride == 3:   # the last block [6, 7, 8, 9] is read as 2 rounds of 2
        assert result[-2:] == [[[6], [8]], [[7], [9]]] and len(result) == 5
    else:
        assert result == [[[i], [i + 1]] for i in range(0, 10, 2)]


def test_produce_then_consume(pools):
    pool = pools()
    pipers = [Piper(ipasser, parallel=pool, produce=2), Piper(sum2, parallel=pool, consume=2)]
    assert run_chain(pipers, PAIRS) == [a + b for a, b in PAIRS]


def test_repeat_then_consume(pools):
    pool = pools()
    pipers = [Piper(ipasser, parallel=pool, produce=3, repeat=True),
              Piper(sum_all, parallel=pool, consume=3)]
    assert run_chain(pipers, range(9)) == [3 * i for i in range(9)]


def test_spawn_keeps_the_order(pools):
    pipers = [Piper(ipasser, parallel=pools()), Piper(mul2, parallel=pools(), spawn=3)]
    assert run_chain(pipers, range(20)) == [2 * i for i in range(20)]


def test_repeat_spawn_consume_on_one_imap(pools):
    pool = pools()
    pipers = [Piper(ipasser, parallel=pool, produce=3, repeat=True),
              Piper(mul2, parallel=pool, spawn=3), Piper(sum_all, parallel=pool, consume=3)]
    assert run_chain(pipers, range(10)) == [6 * i for i in range(10)]


def test_produce_without_consume_on_separate_pools(pools):
    pipers = [Piper(ipasser, parallel=pools(), produce=2), Piper(mul2, parallel=pools())]
    assert run_chain(pipers, PAIRS * 5) == [2 * x for x in interleave(PAIRS * 5, 2,
                                                                        pools.stride)]


def test_reading_more_than_made_on_a_shared_imap(pools):
    """spawn=3 or consume=2 after a plain Piper on one IMap: the IMap feeds out of turn."""
    pool = pools()
    pipers = [Piper(ipasser, parallel=pool), Piper(mul2, parallel=pool, spawn=3)]
    assert run_chain(pipers, range(20)) == [2 * i for i in range(20)]
    pool = pools()
    pipers = [Piper(ipasser, parallel=pool), Piper(boxes, parallel=pool, consume=2)]
    stride = pools.stride
    expected = [[[i] for i in range(20)][b:b + 2 * stride][g::stride]
                for b in range(0, 18, 2 * stride) for g in range(stride)]
    assert run_chain(pipers, range(20))[:len(expected)] == expected


def repeated(data, n, stride):
    """The reference ordering of produce=n with repeat: each block of `stride` items n times."""
    data, out = list(data), []
    for start in range(0, len(data), stride):
        out += data[start:start + stride] * n
    return out


@pytest.mark.parametrize("up, down", [({"produce": 2}, {}),
                                      ({"produce": 3, "spawn": 2}, {"spawn": 5})])
def test_making_more_than_read_on_a_shared_imap(pool_options, up, down):
    """The original refused these (the IMap's buffer would fill with results nobody reads);
    the run takes every result out of the IMap as it comes, so they simply work."""
    with IMap(**pool_options, stride=3) as pool:
        first = Piper(ipasser, parallel=pool, repeat=True, **up)
        assert run_chain([first, Piper(mul2, parallel=pool, **down)], range(10)) == \
            [2 * x for x in repeated(range(10), up["produce"], 3)]


@pytest.mark.parametrize("up, down, fan_out", [({"spawn": 2}, {"spawn": 3}, False),
                                               ({}, {"spawn": 2}, True)])
def test_reading_more_than_made_on_any_path(pool_options, up, down, fan_out):
    """Spawned copies upstream and another reader of the upstream Piper (refused by the
    original's out-of-turn feeding) keep the order."""
    with IMap(**pool_options.with_workers(1), stride=3) as pool:
        first = Piper(ipasser, parallel=pool, **up)
        second = Piper(mul2, parallel=pool, **down)
        plumber = Plumber()
        plumber.add_pipe((first, second))
        side = Piper(mul2, track=True)
        if fan_out:
            plumber.add_pipe((first, side))
        plumber.start([range(10)])
        try:
            assert list(second) == [2 * x for x in range(10)]
        finally:
            plumber.stop()
        if fan_out:
            assert plumber.stats["pipers_tracked"][side] == {x: 2 * x for x in range(10)}


def test_bad_produce_result_fills_every_slot(pools):
    result = run_chain([Piper(pair_or_not, parallel=pools(), produce=2)], range(4))
    errors = [r for r in result if isinstance(r, PiperError)]
    values = [r for r in result if not isinstance(r, PiperError)]
    assert len(result) == 8 and len(errors) == 4        # items 0 and 2, twice each
    assert sorted(values) == [-3, -1, 1, 3]
    assert isinstance(errors[0].args[0], ValueError)
    assert "produce=2" in str(errors[0].args[0])


def test_bad_produce_result_raises_in_debug_mode():
    piper = Piper(pair_or_not, produce=2, debug=True)
    piper.connect([[1, 2]])
    piper.start()
    assert [next(piper), next(piper)] == [1, -1]
    with pytest.raises(PiperError):
        next(piper)


def test_an_error_item_occupies_all_produced_positions(pools):
    def_worker = Worker(mul2)
    result = run_chain([Piper(def_worker, parallel=pools(), produce=2, repeat=True)],
                       [1, None, 3])
    errors = [r for r in result if isinstance(r, PiperError)]
    assert len(result) == 6 and len(errors) == 2
    assert [r for r in result if not isinstance(r, PiperError)] == [2, 6, 2, 6] or \
        [r for r in result if not isinstance(r, PiperError)] == [2, 2, 6, 6]


def test_tee_fan_out_read_in_lockstep(pools):
    pool = pools()
    source = Piper(ipasser, parallel=pool)
    plus2 = Piper(Worker(lambda_free_plus2), parallel=pool)
    times2 = Piper(mul2, parallel=pool)
    plumber = Plumber()
    plumber.add_pipes([(source, plus2), (source, times2)])
    plumber.start([range(10)])
    try:
        assert list(zip(plus2, times2, strict=False)) == [    # read in step
            (i + 2, i * 2) for i in range(10)]
    finally:
        plumber.stop()


def lambda_free_plus2(inbox):
    return inbox[0] + 2
