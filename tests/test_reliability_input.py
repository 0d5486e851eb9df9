"""Bad input: each a clear exception naming the cause and the remedy, raised at construction
or at the end of the run, never a hang (every run is bounded by ``wait(timeout)``)."""
import pytest

from papy import DaggerError, IMap, Piper, PiperError, Plumber


def same(inbox):
    return inbox[0]


def join(inbox):
    return inbox[0] + inbox[1]


def run(plumber, datas):
    plumber.start(datas)
    plumber.run()
    try:
        assert plumber.wait(timeout=60), "the pipeline did not finish (a hang)"
    finally:
        if plumber.state.value in ("running", "finished"):
            plumber.pause()
        if plumber.state.value in ("started", "paused"):
            plumber.stop()


def test_a_cycle_is_refused_with_the_pipers_on_it():
    a, b, c = Piper(same, name="a"), Piper(same, name="b"), Piper(same, name="c")
    plumber = Plumber()
    plumber.add_pipe((a, b, c))
    with pytest.raises(DaggerError, match="cycle: a -> b -> c -> a"):
        plumber.add_pipe((c, a))
    assert plumber.pipes() == [(a, b), (b, c)] or len(plumber.pipes()) == 2


@pytest.mark.parametrize("datas, message", [([[1], [2]], "2 input iterables for 1 input"),
                                            ([], "0 input iterables for 1 input")])
def test_a_wrong_number_of_inputs_names_the_input_pipers(datas, message):
    plumber = Plumber()
    plumber.add_piper(Piper(same, name="x"))
    with pytest.raises(DaggerError, match=message) as caught:
        plumber.start(datas)
    assert "'x'" in str(caught.value)
    assert plumber.state.value == "idle"


def test_an_input_that_is_not_iterable_is_refused_at_start():
    plumber = Plumber()
    plumber.add_piper(Piper(same, name="x"))
    with pytest.raises(TypeError, match="not iterable"):
        plumber.start([5])
    assert plumber.state.value == "idle"


def test_an_input_that_is_not_iterable_names_the_piper():
    plumber = Plumber()
    plumber.add_piper(Piper(same, name="x"))
    with pytest.raises(TypeError, match="'x'"):
        plumber.start([5])


def test_an_input_that_raises_ends_the_run_and_is_raised_at_the_end():
    def broken():
        yield 1
        raise OSError("disk gone")
    plumber = Plumber()
    output = Piper(same, name="x", track=True)
    plumber.add_piper(output)
    with pytest.raises(OSError, match="disk gone") as caught:
        run(plumber, [broken()])
    assert any("input of piper 'x' raised" in note for note in caught.value.__notes__)
    assert plumber.stats["pipers_tracked"][output] == {0: 1}


@pytest.mark.parametrize("pool", [False, "thread", "process"])
def test_joined_inputs_of_different_lengths(pool):
    """The shorter input ends the join: its missing items are errors in place, and the end
    of the run raises a PiperError that names the join, the input and the remedy."""
    imap = IMap(worker_type=pool, worker_num=2, stride=2) if pool else False
    try:
        x, y = Piper(same, name="x", parallel=imap), Piper(same, name="y", parallel=imap)
        z = Piper(join, name="z", parallel=imap, track=True)
        plumber = Plumber()
        plumber.add_pipes([(x, z), (y, z)])
        with pytest.raises(PiperError) as caught:
            run(plumber, [range(5), range(9)])
    finally:
        if imap:
            imap.stop()
    text = str(caught.value)
    assert "inputs of piper 'z' have different lengths" in text
    assert "('x') ended after 5 items" in text
    assert "Every input of a join must give the same number of items" in text
    tracked = plumber.stats["pipers_tracked"][z]
    assert [tracked[i] for i in range(5)] == [2 * i for i in range(5)]
    assert all(isinstance(tracked[i], PiperError) for i in tracked if i >= 5)


@pytest.mark.parametrize("options, error, message", [
    (dict(worker_type="gpu"), ValueError,
     "worker_type must be 'process', 'thread', 'inline' or 'dask'"),
    (dict(worker_num=-1), ValueError, "worker_num must be >= 0, not -1"),
    (dict(worker_num="2"), TypeError, "worker_num must be an int"),
    (dict(worker_num=0), ValueError, "worker_num=0 needs worker_remote"),
    (dict(stride=0), ValueError, "stride must be >= 1, not 0"),
    (dict(buffer=2, stride=4), ValueError, r"buffer \(2\) must be >= stride \(4\)"),
    (dict(worker_remote="nonsense"), TypeError, "worker_remote takes a list of"),
    (dict(worker_remote=[("localhost", 0)]), ValueError, "is a positive int"),
    (dict(start_method="bogus"), ValueError, "start_method must be one of"),
    (dict(shm_threshold=-5), ValueError, "shm_threshold must be >= 0"),
], ids=lambda v: str(v) if isinstance(v, dict) else "")
def test_invalid_pool_settings_are_refused_at_construction(options, error, message):
    with pytest.raises(error, match=message):
        IMap(**options)


def test_a_negative_remote_timeout_is_refused():
    with pytest.raises(ValueError, match="remote_timeout"):
        IMap(worker_num=1, remote_timeout=-1)


@pytest.mark.parametrize("options, message", [
    (dict(parallel=5), "parallel must be an IMap or False"),
    (dict(consume=0), "consume must be an int >= 1"),
])
def test_invalid_piper_settings_are_refused_at_construction(options, message):
    with pytest.raises((PiperError, ValueError), match=message):
        Piper(same, **options)
