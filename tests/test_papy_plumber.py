"""Plumber: the state machine, both ways to drive it, lossless stops, failures, stats
(the original test_Plumber, on linear Pipers and on every kind of IMap)."""
import itertools

import pytest

from papy import Dagger, Piper, PiperError, Plumber, PlumberError


def inc(inbox):
    return inbox[0] + 1


def double(inbox):
    return inbox[0] * 2


def join_sum(inbox):
    return inbox[0] + inbox[1]


def pair_or_not(inbox):
    return (inbox[0], -inbox[0]) if inbox[0] % 2 else inbox[0]


class Counted:
    """An infinite input that says how many items were taken from it."""

    def __init__(self):
        self.taken = 0

    def __iter__(self):
        return self

    def __next__(self):
        self.taken += 1
        return self.taken - 1


def raising_input(count, exc):
    yield from range(count)
    raise exc


@pytest.fixture
def pool(parallel):
    """A Piper's ``parallel=``: linear, then an IMap of every kind (tests/conftest.py)."""
    return parallel


def two_stage(pool, track=True):
    first = Piper(inc, parallel=pool, name="inc")
    second = Piper(double, parallel=pool, name="double", track=track)
    plumber = Plumber()
    plumber.add_pipe((first, second))
    return plumber, first, second


def test_plumber_is_a_dagger():
    assert issubclass(Plumber, Dagger)
    assert Plumber().state.value == "idle"


def test_documented_sequence_and_illegal_moves(pool):
    plumber, _, output = two_stage(pool)
    for illegal in (plumber.run, plumber.wait, plumber.pause, plumber.stop, plumber.chinkup):
        with pytest.raises(PlumberError, match="idle"):
            illegal()
    plumber.start([range(20)])
    with pytest.raises(PlumberError, match="started"):
        plumber.start([range(20)])
    for illegal in (plumber.wait, plumber.pause):
        with pytest.raises(PlumberError, match="started"):
            illegal()
    plumber.run()
    for illegal in (plumber.run, plumber.stop, lambda: plumber.start([range(3)])):
        with pytest.raises(PlumberError, match="running|finished"):
            illegal()
    assert plumber.wait() is True
    assert plumber.state.value == "finished"
    with pytest.raises(PlumberError, match="finished"):
        plumber.stop()
    plumber.pause()
    with pytest.raises(PlumberError, match="paused"):
        plumber.wait()
    plumber.stop()
    assert plumber.state.value == "idle"
    assert plumber.stats["pipers_tracked"][output] == {i: 2 * (i + 1) for i in range(20)}


def test_restart(pool):
    plumber, _, output = two_stage(pool)
    for size in (5, 9):
        plumber.start([range(size)])
        plumber.run()
        plumber.wait()
        plumber.pause()
        plumber.stop()
        assert plumber.stats["pipers_tracked"][output] == {i: 2 * (i + 1) for i in range(size)}


def test_read_outputs_by_hand_without_run(pool):
    plumber, _, output = two_stage(pool, track=False)
    plumber.start([range(10)])
    assert list(output) == [2 * (i + 1) for i in range(10)]
    plumber.stop()


def test_pause_an_infinite_input_then_stop_loses_nothing(pool):
    plumber, _, output = two_stage(pool)
    data = Counted()
    plumber.start([data])
    plumber.run()
    assert plumber.wait(0.2) is False          # an infinite input never finishes
    plumber.pause()
    plumber.run()
    plumber.pause()
    plumber.stop()
    tracked = plumber.stats["pipers_tracked"][output]
    assert data.taken > 0
    assert tracked == {i: 2 * (i + 1) for i in range(data.taken)}


def test_plunge_and_chinkup(pool):
    plumber, _, output = two_stage(pool)
    data = Counted()
    plumber.set_inputs([data])
    plumber.plunge()
    plumber.chinkup()
    assert plumber.state.value == "idle"
    assert plumber.stats["pipers_tracked"][output] == \
        {i: 2 * (i + 1) for i in range(data.taken)}
    with pytest.raises(PlumberError, match="idle"):
        plumber.chinkup()


def test_plunge_finite_then_chinkup(pool):
    plumber, _, output = two_stage(pool)
    plumber.plunge([range(30)])
    plumber.wait()
    plumber.chinkup()
    assert plumber.stats["pipers_tracked"][output] == {i: 2 * (i + 1) for i in range(30)}


def test_plunge_needs_inputs():
    plumber, _, _ = two_stage(False)
    with pytest.raises(PlumberError, match="set_inputs"):
        plumber.plunge()


def test_stats(pool):
    plumber, first, second = two_stage(pool)
    plumber.start([range(12)])
    plumber.run()
    plumber.wait()
    plumber.pause()
    plumber.stop()
    stats = plumber.stats
    assert stats["start_time"] > 0 and stats["run_time"] >= 0
    assert set(stats["pipers_tracked"]) == {second}
    for piper in (first, second):
        counters = stats["pipers"][piper]
        assert (counters.items_in, counters.items_out, counters.errors) == (12, 12, 0)


def test_join_of_different_lengths_is_a_clear_error(pool):
    left, right = Piper(inc, parallel=pool, name="left"), Piper(inc, parallel=pool,
                                                                 name="right")
    join = Piper(join_sum, parallel=pool, name="join", track=True)
    plumber = Plumber()
    plumber.add_pipes([(left, join), (right, join)])
    plumber.start([range(10), range(7)])
    plumber.run()
    with pytest.raises(PiperError, match="different lengths") as info:
        plumber.wait()
    assert "'join'" in str(info.value)
    plumber.pause()
    plumber.stop()
    tracked = plumber.stats["pipers_tracked"][join]
    assert [tracked[i] for i in range(7)] == [2 * i + 2 for i in range(7)]
    assert 7 < len(tracked) <= 10       # left's extra items taken before the stop
    for i in range(7, len(tracked)):
        assert isinstance(tracked[i], PiperError)
        assert "different lengths" in str(tracked[i].args[0])


def test_an_input_that_raises_is_a_failure(pool, caplog):
    plumber, _, output = two_stage(pool)
    plumber.start([raising_input(5, ValueError("broken input"))])
    plumber.run()
    with pytest.raises(ValueError, match="broken input"):
        plumber.wait()
    plumber.pause()
    plumber.stop()
    assert plumber.stats["pipers_tracked"][output] == {i: 2 * (i + 1) for i in range(5)}
    assert "broken input" in caplog.text


def test_several_failures_come_as_an_exception_group():
    piper = Piper(pair_or_not, produce=2, debug=True, name="debugged")
    plumber = Plumber()
    plumber.add_piper(piper)
    plumber.start([[0]])                # 0 is not a pair: two error items, both raised
    plumber.run()
    with pytest.raises(ExceptionGroup) as info:
        plumber.wait()
    assert len(info.value.exceptions) == 2
    assert all(isinstance(e, PiperError) for e in info.value.exceptions)
    plumber.pause()
    plumber.stop()


def test_failures_are_raised_once_by_chinkup():
    plumber = Plumber()
    left, right, join = Piper(inc), Piper(inc), Piper(join_sum)
    plumber.add_pipes([(left, join), (right, join)])
    plumber.plunge([range(3), range(4)])
    with pytest.raises(PiperError, match="different lengths"):
        plumber.chinkup()
    plumber.plunge([range(3), range(3)])
    plumber.chinkup()                   # nothing left over from the previous run


def test_fan_out_join_and_several_outputs_run_to_the_end(pool):
    source = Piper(inc, parallel=pool)
    left, right = Piper(double, parallel=pool, branch=1), Piper(inc, parallel=pool, branch=2)
    join = Piper(join_sum, parallel=pool, track=True)
    side = Piper(double, track=True)
    plumber = Plumber()
    plumber.add_pipes([(source, left, join), (source, right, join), (right, side)])
    plumber.start([range(40)])
    plumber.run()
    plumber.wait()
    plumber.pause()
    plumber.stop()
    xs = [x + 1 for x in range(40)]
    assert plumber.stats["pipers_tracked"][join] == {i: 2 * x + x + 1 for i, x in enumerate(xs)}
    assert plumber.stats["pipers_tracked"][side] == {i: 2 * (x + 1) for i, x in enumerate(xs)}


def test_counted_input_is_exact():
    data = Counted()
    assert list(itertools.islice(data, 3)) == [0, 1, 2] and data.taken == 3
