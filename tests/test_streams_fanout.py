"""Variable fan-out in papy's model: papy.Multiple results, Piper(drop_none=True), on linear
Pipers, thread and process pools, fused and not."""
from __future__ import annotations

import pickle
from typing import Any

import pytest

from papy import Args, IMap, Multiple, Piper, PiperError, Plumber

pytestmark = pytest.mark.timeout(120)


def spread(inbox: list[int]) -> Multiple:
    """n -> 0 .. n-1 (nothing for 0); 3 fails."""
    if inbox[0] == 3:
        raise ValueError("three")
    return Multiple(range(inbox[0]))


def plus_ten_or_none(inbox: list[int]) -> int | None:
    return None if inbox[0] == 2 else inbox[0] + 10


def fail_on_eleven(inbox: list[int]) -> int:
    if inbox[0] == 11:
        raise KeyError(11)
    return inbox[0]


def sequential(items: range) -> list[Any]:
    out: list[Any] = []
    for n in items:
        if n == 3:
            out.append("error")
            continue
        for k in range(n):
            if k == 2:
                continue
            out.append("error" if k + 10 == 11 else k + 10)
    return out


def shown(items: list[Any]) -> list[Any]:
    return ["error" if isinstance(x, PiperError) else x for x in items]


@pytest.mark.parametrize("fuse", [True, False])
def test_multiple_and_dropped_none_through_a_chain(worker_type: str, fuse: bool) -> None:
    with IMap(worker_type=worker_type, worker_num=2) as pool:
        a = Piper(spread, parallel=pool)
        b = Piper(plus_ten_or_none, parallel=pool, drop_none=True)
        c = Piper(fail_on_eleven, parallel=pool)
        plumber = Plumber()
        plumber.fuse = fuse
        plumber.add_pipe((a, b, c))
        out = plumber.collect([range(7)])[c]
        assert bool(plumber.fused_chains()) is False     # disconnected after collect
    assert shown(out) == sequential(range(7))


def test_linear_pipers_fan_out() -> None:
    a = Piper(spread)
    b = Piper(plus_ten_or_none, drop_none=True)
    plumber = Plumber()
    plumber.add_pipe((a, b))
    out = plumber.collect([[0, 1, 2, 4]])[b]
    assert out == [10, 10, 11, 10, 11, 13]
    assert plumber.stats["pipers"][a].items_out == len([0] + [0, 1] + [0, 1, 2, 3])


def test_none_goes_on_without_drop_none() -> None:
    p = Piper(plus_ten_or_none).connect([[1, 2, 3]])
    p.start()
    assert list(p) == [11, None, 13]


def test_a_generator_in_a_multiple_is_read_where_the_worker_runs(worker_type: str) -> None:
    def gen(inbox: list[int]) -> Multiple:
        return Multiple(x for x in (inbox[0], None, inbox[0] * 2))

    with IMap(worker_type=worker_type, worker_num=2) as pool:
        p = Piper(gen, parallel=pool)
        plumber = Plumber()
        plumber.add_piper(p)
        assert plumber.collect([[1, 2, 3]])[p] == [1, 2, 2, 4, 3, 6]


def test_multiple_keeps_order_within_an_item_on_an_unordered_pool() -> None:
    def pairs(inbox: list[int]) -> Multiple:
        return Multiple((inbox[0], k) for k in range(5))

    with IMap(worker_type="thread", worker_num=2, ordered=False) as pool:
        p = Piper(pairs, parallel=pool)
        plumber = Plumber()
        plumber.add_piper(p)
        out = plumber.collect([range(50)])[p]
    for n in range(50):
        assert [x for x in out if x[0] == n] == [(n, k) for k in range(5)]


def fail_on_one(inbox: list[int]) -> int:
    return 10 // (inbox[0] - 1)


def test_errors_inside_a_multiple_are_settled() -> None:
    with IMap(worker_type="thread", worker_num=2) as pool:
        a = Piper(spread, parallel=pool)
        b = Piper(fail_on_one, parallel=pool)
        plumber = Plumber()
        plumber.add_pipe((a, b))
        out = plumber.collect([[2, 3]])[b]
    assert shown(out) == [10 // (0 - 1), "error", "error"]      # 2 -> 0, 1; 3 fails
    assert plumber.stats["pipers"][b].errors == 2
    assert plumber.stats["pipers"][a].errors == 1


def test_multiple_and_args_pickle_and_compare() -> None:
    m = Multiple([1, None, 2])
    assert list(m) == [1, 2] and len(m) == 2
    assert pickle.loads(pickle.dumps(m)) == m
    a = Args(1, 2, c=3)
    assert pickle.loads(pickle.dumps(a)) == a
    assert a.call(lambda x, y, c: x + y + c) == 6
    assert repr(a) == "Args(1, 2, c=3)"


def test_a_multiple_mid_chain_in_a_join_group() -> None:
    """src -> (left, right) -> join, fused on one pool: each element of src's Multiple
    goes through both branches, the join zips them."""
    def left(inbox: list[int]) -> int:
        return inbox[0] * 2

    def right(inbox: list[int]) -> int:
        return inbox[0] + 1

    def join(inbox: list[int]) -> tuple[int, int]:
        return inbox[0], inbox[1]

    with IMap(worker_type="thread", worker_num=2) as pool:
        src = Piper(spread, parallel=pool)
        lp, rp = Piper(left, parallel=pool), Piper(right, parallel=pool)
        jp = Piper(join, parallel=pool)
        plumber = Plumber()
        plumber.add_pipe((src, lp, jp))
        plumber.add_pipe((src, rp, jp))
        out = plumber.collect([[2, 4]])[jp]
    assert out == [(k * 2, k + 1) for n in (2, 4) for k in range(n)]


def test_save_keeps_drop_none_and_refuses_composites(tmp_path: Any) -> None:
    from papy import PlumberError, Reducer
    plumber = Plumber()
    plumber.add_piper(Piper(plus_ten_or_none, drop_none=True, name="p"))
    path = str(tmp_path / "saved.py")
    plumber.save(path)
    loaded = Plumber()
    loaded.load(path)
    assert [p.drop_none for p in loaded.nodes()] == [True]
    composite = Plumber()
    composite.add_piper(Reducer(lambda store, works, others: None))
    with pytest.raises(PlumberError, match="Reducer"):
        composite.save(path + "2")
