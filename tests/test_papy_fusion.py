"""Fusion (papy._fuse): a chain of Pipers on one IMap runs as one task, with the results,
error items and counters of the unfused pipeline; and the output reader's bulk path.

Results are checked on every kind of IMap (``pool_options``); what the plan decides (which
Pipers fuse) does not depend on the kind, and is checked on threads."""
import os
import time

import pytest

from papy import IMap, Piper, PiperError, Plumber, WorkerError


def inc(inbox):
    return inbox[0] + 1


def fails_on_5(inbox):
    if inbox[0] == 5:
        raise ValueError("five")
    return inbox[0]


def double(inbox):
    return inbox[0] * 2


def dec(inbox):
    return inbox[0] - 1


def as_list(inbox):
    return [inbox[0], inbox[0]]


def first(inbox):
    return inbox[0][0]


def join_sum(inbox):
    return inbox[0] + inbox[1]


def nap_10ms(inbox):
    time.sleep(0.01)
    return inbox[0]


def nap_30ms(inbox):
    time.sleep(0.03)
    return inbox[0]


def dies_on_3(inbox):
    if inbox[0] == 3:
        os._exit(7)
    return inbox[0]


def run_chain(functions, data, fuse, **imap_options):
    """Run functions as a chain of Pipers on one IMap; (results, counters, owner's absorbs
    while running)."""
    with IMap(**imap_options) as imap:
        pipers = [Piper(f, parallel=imap, name=f"{k}-{f.__name__}")
                  for k, f in enumerate(functions)]
        plumber = Plumber()
        plumber.fuse = fuse
        plumber.add_pipe(tuple(pipers))
        plumber.start([data])
        absorbed = [p.name for p in absorbed_by(plumber, pipers[-1])]
        results = list(pipers[-1])
        plumber.stop()
        counters = {p.name: (c.items_in, c.items_out, c.errors)
                    for p, c in plumber.stats["pipers"].items()}
    return results, counters, absorbed


def absorbed_by(plumber, last):
    """The Pipers fused into ``last``'s call (head first), () when none."""
    return next((chain[:-1] for chain in plumber.fused_chains() if chain[-1] is last), ())


def described(results):
    return [repr(r) if isinstance(r, PiperError) else r for r in results]


def test_a_fused_chain_gives_the_results_errors_and_counters_of_the_unfused(pool_options):
    functions = (inc, fails_on_5, double, dec)
    fused = run_chain(functions, range(20), True, **pool_options)
    plain = run_chain(functions, range(20), False, **pool_options)
    assert fused[2] == ["0-inc", "1-fails_on_5", "2-double"] and plain[2] == []
    assert described(fused[0]) == described(plain[0])
    assert fused[0][:4] == [1, 3, 5, 7] and fused[0][5] == 11
    error = fused[0][4]     # inc(4) == 5 fails in the second stage, passed on twice
    assert isinstance(error, PiperError)
    assert isinstance(error.args[0].args[0].args[0], WorkerError)
    assert fused[1] == plain[1] == {"0-inc": (20, 20, 0), "1-fails_on_5": (20, 20, 1),
                                    "2-double": (20, 20, 1), "3-dec": (20, 20, 1)}


def test_a_list_result_between_fused_stages_is_boxed_as_unfused(pool_options):
    results, _, absorbed = run_chain((as_list, first, inc), [1, 2, 3], True, **pool_options)
    assert absorbed and results == [2, 3, 4]


@pytest.mark.parametrize("change", ["track", "timeout", "produce", "spawn", "debug",
                                    "consume", "fan-out", "other IMap"])
def test_no_fusion_where_the_parent_has_work_between_two_pipers(change):
    with IMap(worker_type="thread", worker_num=2) as imap, \
            IMap(worker_type="thread", worker_num=1) as other:
        options = {"track": dict(track=True), "timeout": dict(timeout=30),
                   "produce": dict(produce=2, repeat=True), "spawn": dict(spawn=2),
                   "debug": dict(debug=True), "other IMap": {}}.get(change, {})
        a = Piper(inc, parallel=imap, **options)
        b = Piper(inc, parallel=other if change == "other IMap" else imap,
                  consume=2 if change in ("consume", "produce") else 1,
                  spawn=2 if change == "spawn" else 1)
        plumber = Plumber()
        plumber.add_pipe((a, b))
        if change == "fan-out":
            plumber.add_pipe((a, Piper(inc, parallel=imap)))
        plumber.start([range(8)])
        assert absorbed_by(plumber, b) == () and plumber.fused_chains() == []
        outputs = plumber.get_outputs()
        results = [list(p) for p in outputs]
        plumber.stop()
    assert all(results)


def test_a_join_then_a_chain_fuses_behind_the_join(pool_options):
    with IMap(**pool_options) as imap:
        left, right = Piper(inc, parallel=imap), Piper(double, parallel=imap)
        joined = Piper(join_sum, parallel=imap)
        last = Piper(dec, parallel=imap)
        plumber = Plumber()
        plumber.add_pipe((left, joined, last))
        plumber.add_pipe((right, joined))
        plumber.start([range(10), range(10)])
        assert absorbed_by(plumber, last) == (joined,)
        results = list(last)
        plumber.stop()
    assert results == [(x + 1) + 2 * x - 1 for x in range(10)]


def test_time_busy_is_measured_per_fused_stage():
    with IMap(worker_type="thread", worker_num=2) as imap:
        a, b = Piper(nap_10ms, parallel=imap), Piper(nap_30ms, parallel=imap)
        plumber = Plumber()
        plumber.add_pipe((a, b))
        plumber.start([range(20)])
        assert absorbed_by(plumber, b) == (a,)
        assert list(b) == list(range(20))
        busy_a, busy_b = a.counters.time_busy, b.counters.time_busy
        plumber.stop()
    # 20 items each; the last few milliseconds of a run may not be reported
    assert 20 * 0.01 * 0.7 <= busy_a < 20 * 0.03 * 0.7
    assert busy_b >= 20 * 0.03 * 0.7


def test_a_worker_lost_in_a_fused_chain_is_an_error_in_place_of_the_chain():
    """Which stage the worker was in is not known: the error is the last Piper's."""
    with IMap(worker_type="process", worker_num=2) as imap:
        pipers = [Piper(f, parallel=imap) for f in (inc, dies_on_3, double)]
        plumber = Plumber()
        plumber.add_pipe(tuple(pipers))
        plumber.start([range(6)])
        results = list(pipers[-1])
        errors = [p.counters.errors for p in pipers]
        plumber.stop()
    assert [r for k, r in enumerate(results) if k != 2] == [2, 4, 8, 10, 12]
    assert isinstance(results[2], PiperError)
    assert errors == [0, 0, 1]
    assert not isinstance(results[2].args[0], PiperError)      # one PiperError, not three


def test_a_fused_plumber_runs_twice():
    with IMap(worker_type="thread", worker_num=2) as imap:
        pipers = [Piper(f, parallel=imap) for f in (inc, double, dec)]
        plumber = Plumber()
        plumber.add_pipe(tuple(pipers))
        for data in (range(5), range(100, 103)):
            plumber.start([data])
            assert list(pipers[-1]) == [(x + 1) * 2 - 1 for x in data]
            plumber.stop()
            assert plumber.fused_chains() == []


def test_an_absorbed_piper_says_it_cannot_be_read():
    with IMap(worker_type="thread", worker_num=2) as imap:
        a, b = Piper(inc, parallel=imap), Piper(inc, parallel=imap)
        plumber = Plumber()
        plumber.add_pipe((a, b))
        plumber.start([range(3)])
        with pytest.raises(PiperError, match="read by downstream Pipers"):
            next(a)
        assert list(b) == [2, 3, 4]
        plumber.stop()


def test_next_and_iteration_of_an_output_share_one_position(pool_options):
    with IMap(**pool_options, stride=4) as imap:
        piper = Piper(inc, parallel=imap)
        plumber = Plumber()
        plumber.add_pipe((piper,))
        plumber.start([range(50)])
        head = [next(piper), next(piper)]
        iterator = iter(piper)
        middle = [next(iterator) for _ in range(10)]
        tail = [next(piper)] + list(piper)
        assert piper.counters.items_out == 50 and piper.finished
        plumber.stop()
    assert head + middle + tail == [x + 1 for x in range(50)]


def leaves_on_7(inbox):
    if inbox[0] == 7:
        raise SystemExit(3)
    return inbox[0]


def test_a_non_exception_fails_only_its_item_in_a_batch():
    """As when items are evaluated one by one: SystemExit is that item's error (imap's),
    the others of the batch keep their results; a fused item that raised skips the rest."""
    from papy import Worker
    from papy._fuse import FusedCall, StagesFailed
    from papy._timed import BoxingCall
    values, raised = BoxingCall(Worker(leaves_on_7)).call_batch(list(range(10)))
    assert list(raised) == [7] and isinstance(raised[7], SystemExit)
    assert values[:7] == list(range(7)) and values[8:] == [8, 9]
    fused = FusedCall([Worker(fails_on_5), Worker(inc), Worker(leaves_on_7)], True)
    values, raised = fused.call_batch(list(range(10)))
    assert list(raised) == [6] and isinstance(raised[6], SystemExit)   # inc(6) == 7
    assert isinstance(values[5], StagesFailed) and list(values[5].errors) == [0]
    assert [v for k, v in enumerate(values) if k not in (5, 6)] == [1, 2, 3, 4, 5, 8, 9, 10]
    with pytest.raises(SystemExit):
        fused(6)


def test_an_output_read_by_hand_counts_what_it_gave_out():
    with IMap(worker_type="thread", worker_num=2) as imap:
        piper = Piper(inc, parallel=imap)
        plumber = Plumber()
        plumber.add_pipe((piper,))
        plumber.start([range(5000)])
        for _ in range(3001):
            next(piper)
        assert plumber.stats["pipers"][piper].items_out == 3001
        plumber.stop()


def test_iterating_an_output_after_it_was_stopped_says_so():
    with IMap(worker_type="thread", worker_num=2) as imap:
        piper = Piper(inc, parallel=imap)
        plumber = Plumber()
        plumber.add_pipe((piper,))
        plumber.start([range(100000)])
        seen = 0
        with pytest.raises(PiperError, match="not started"):
            for _ in piper:
                seen += 1
                if seen == 3000:
                    piper.stop(forced=True)
        plumber.stop()


def pair(inbox):
    return [inbox[0], inbox[0] + 100]


def total(inbox):          # consume=2: the inbox holds two inboxes
    return sum(group[0] for group in inbox)


@pytest.mark.parametrize("fuse", [True, False])
def test_a_chain_whose_first_piper_consumes_groups(fuse):
    with IMap(worker_type="thread", worker_num=2, stride=3) as other, \
            IMap(worker_type="thread", worker_num=2, stride=3) as imap:
        a = Piper(pair, parallel=other, produce=2)
        b = Piper(total, parallel=imap, consume=2)
        c = Piper(inc, parallel=imap)
        plumber = Plumber()
        plumber.fuse = fuse
        plumber.add_pipe((a, b, c))
        plumber.start([range(7)])
        assert absorbed_by(plumber, c) == ((b,) if fuse else ())
        results = list(c)
        plumber.stop()
    assert results == [2 * x + 101 for x in range(7)]


def test_the_plunger_goes_on_from_where_a_hand_reader_stopped():
    with IMap(worker_type="thread", worker_num=2) as imap:
        piper = Piper(inc, parallel=imap, track=True)
        plumber = Plumber()
        plumber.add_pipe((piper,))
        plumber.start([range(5000)])
        assert [next(piper), next(piper)] == [1, 2]
        plumber.run()
        assert plumber.wait(60)
        counters = plumber.stats["pipers"][piper]
        assert counters.items_out == 5000
        plumber.pause()
        plumber.stop()
    assert plumber.stats["pipers_tracked"][piper] == {k: k + 1 for k in range(5000)}


@pytest.mark.parametrize("fuse", [True, False])
def test_system_exit_in_a_thread_worker_is_an_error_item(fuse):
    """imap hands a thread worker's SystemExit to the reader as that item's exception;
    papy puts it in place instead of letting it end the reader."""
    with IMap(worker_type="thread", worker_num=2) as imap:
        pipers = [Piper(inc, parallel=imap), Piper(leaves_on_7, parallel=imap)]
        plumber = Plumber()
        plumber.fuse = fuse
        plumber.add_pipe(tuple(pipers))
        plumber.start([range(10)])
        results = list(pipers[-1])
        plumber.stop()
    assert [r for k, r in enumerate(results) if k != 6] == [1, 2, 3, 4, 5, 6, 8, 9, 10]
    assert isinstance(results[6], PiperError)


def fails_on_4(inbox):
    if inbox[0] == 4:
        raise ValueError("four")
    return inbox[0]


def diamond(imap, fuse, left_fn=inc, right_fn=double):
    src = Piper(inc, parallel=imap, name="src")
    left = Piper(left_fn, parallel=imap, name="left", branch=1)
    right = Piper(right_fn, parallel=imap, name="right", branch=2)
    join = Piper(join_sum, parallel=imap, name="join")
    plumber = Plumber()
    plumber.fuse = fuse
    plumber.add_pipes([(src, left, join), (src, right, join)])
    return plumber, (src, left, right, join)


def run_diamond(fuse, data, **options):
    with IMap(**options) as imap:
        plumber, pipers = diamond(imap, fuse, left_fn=fails_on_5, right_fn=fails_on_4)
        plumber.start([data])
        chains = plumber.fused_chains()
        results = list(pipers[-1])
        plumber.stop()
        counters = {p.name: (c.items_in, c.items_out, c.errors)
                    for p, c in plumber.stats["pipers"].items()}
    return results, counters, chains


def test_a_fan_out_and_join_on_one_imap_is_one_call(pool_options):
    """src -> (left, right) -> join on one IMap: one fused group, the same results, error
    items and error counts as unfused (src(3) == 4 fails right, src(4) == 5 fails left)."""
    fused = run_diamond(True, range(10), **pool_options)
    plain = run_diamond(False, range(10), **pool_options)
    assert [[p.name for p in chain] for chain in fused[2]] == [["src", "left", "right",
                                                               "join"]]
    assert plain[2] == []
    assert described(fused[0]) == described(plain[0])
    assert fused[0][:3] == [2, 4, 6]
    for position in (3, 4):
        error = fused[0][position]
        assert isinstance(error, PiperError) and isinstance(error.args[0], PiperError)
    assert {name: errors for name, (_, _, errors) in fused[1].items()} == \
        {name: errors for name, (_, _, errors) in plain[1].items()} == \
        {"src": 0, "left": 1, "right": 1, "join": 2}
