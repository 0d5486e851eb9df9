"""Dagger: building the graph, resolving, cycles, deterministic orders, connect/disconnect
(the original test_Dagger)."""
import pytest

from papy import Dagger, DaggerError, IMap, Piper, PiperError, Worker


def ipasser(inbox):
    return inbox[0]


def square(inbox):
    return inbox[0] * inbox[0]


def times4(inbox):
    return inbox[0] * 4


def join_all(inbox):
    return tuple(inbox)


def named(name, **kwargs):
    return Piper(ipasser, name=name, **kwargs)


def test_resolve_by_object_and_id():
    piper = named("a")
    dagger = Dagger(pipers=[piper])
    assert dagger.resolve(piper) is piper
    assert dagger.resolve(id(piper)) is piper
    assert dagger.resolve(named("b"), forgive=True) is False
    with pytest.raises(DaggerError):
        dagger.resolve(named("b"))
    assert piper in dagger and len(dagger) == 1


def test_add_piper_is_idempotent_and_creates():
    dagger = Dagger()
    piper = named("a")
    assert dagger.add_piper(piper) == (True, piper)
    assert dagger.add_piper(piper) == (False, piper)
    assert dagger.add_piper(id(piper)) == (False, piper)
    created, made = dagger.add_piper(Worker(square))
    assert created and isinstance(made, Piper) and made.worker == Worker(square)
    created, made = dagger.add_piper(square, branch="b")
    assert created and made.branch == "b"
    assert len(dagger) == 3
    with pytest.raises(DaggerError):
        dagger.add_piper(1)
    with pytest.raises(DaggerError):
        dagger.add_piper([1])
    with pytest.raises(DaggerError):
        dagger.add_piper(square, create=False)


def test_del_piper():
    a, b = named("a"), named("b")
    dagger = Dagger(pipes=[(a, b)])
    with pytest.raises(DaggerError, match="feeds"):
        dagger.del_piper(a)
    dagger.del_piper(id(b))
    assert dagger.nodes() == [a] and dagger.pipes() == []
    dagger.add_pipe((a, b))
    dagger.del_piper(a, forced=True)
    assert dagger.nodes() == [b] and dagger.pipes() == []
    with pytest.raises(DaggerError):
        dagger.del_piper(a)


def test_add_and_del_pipes_count():
    a, b, c, d = (named(n) for n in "abcd")
    dagger = Dagger()
    dagger.add_pipe((a, b, c))
    assert len(dagger) == 3 and dagger.pipes() == [(a, b), (b, c)]
    dagger.add_pipe((a, b))                     # the same pipe twice: one pipe
    assert len(dagger.edges()) == 2
    dagger.add_pipe((b, d))
    assert len(dagger) == 4 and len(dagger.pipes()) == 3
    dagger.del_pipe((b, d))                     # d is left alone: removed
    assert len(dagger) == 3 and d not in dagger
    dagger.del_pipe((a, b, c))                  # every piper orphaned: all removed
    assert len(dagger) == 0
    with pytest.raises(DaggerError):
        dagger.add_pipe(a)                      # not a sequence


def test_del_pipe_keeps_pipers_still_in_use():
    a, b, c = (named(n) for n in "abc")
    dagger = Dagger(pipes=[(a, b, c)])
    dagger.del_pipe((b, c))
    assert dagger.nodes() == [a, b] and dagger.pipes() == [(a, b)]
    with pytest.raises(DaggerError, match="no pipe"):
        dagger.del_pipe((b, a))


def test_add_pipes_del_pipes_and_pipers():
    a, b, c = (named(n) for n in "abc")
    dagger = Dagger()
    dagger.add_pipes([(a, b), (b, c)])
    assert len(dagger.pipes()) == 2
    dagger.del_pipes([(a, b), (b, c)])
    assert len(dagger) == 0
    dagger.add_pipers([a, b, c])
    dagger.del_pipers([a, b, c])
    assert len(dagger) == 0


def test_cycles_are_refused_and_named():
    a, b, c = (named(n) for n in "abc")
    dagger = Dagger(pipes=[(a, b, c)])
    with pytest.raises(DaggerError, match="cycle") as info:
        dagger.add_pipe((c, a))
    assert all(name in str(info.value) for name in "abc")
    assert dagger.pipes() == [(a, b), (b, c)]   # the refused pipe left nothing behind
    with pytest.raises(DaggerError, match="cycle"):
        dagger.add_pipe((a, a))
    new = named("new")
    with pytest.raises(DaggerError, match="cycle"):
        dagger.add_pipe((c, new, b))
    assert new not in dagger


def test_inputs_outputs_and_postorder():
    a, b, c, d, e = (named(n) for n in "abcde")
    dagger = Dagger(pipes=[(a, b, d), (c, d), (b, e)])
    assert dagger.get_inputs() == [a, c]
    assert dagger.get_outputs() == [e, d] or dagger.get_outputs() == [d, e]
    order = dagger.postorder()
    for up, down in dagger.pipes():
        assert order.index(up) < order.index(down)
    assert dagger.get_downstream(b) == [d, e]


def test_join_order_is_by_branch_then_insertion():
    a, b, c = named("a"), named("b"), named("c")
    join = named("join")
    dagger = Dagger(pipes=[(b, join), (a, join), (c, join)])
    assert dagger.get_upstream(join) == [b, a, c]           # the order pipes were added
    a.branch, b.branch = 2, 1
    assert dagger.get_upstream(join) == [c, b, a]           # no branch first, then 1, 2
    c.branch = 3
    assert dagger.get_upstream(join) == [b, a, c]
    assert dagger.get_inputs() == [b, a, c]
    a.branch = "x"
    with pytest.raises(DaggerError, match="compared"):
        dagger.get_upstream(join)


def test_add_pipe_sets_branch_on_new_pipers():
    a, b = named("a"), named("b")
    dagger = Dagger(pipers=[a])
    dagger.add_pipe((a, b), branch=7)
    assert a.branch is None and b.branch == 7


def test_str_and_repr():
    a, b = named("a"), named("b")
    dagger = Dagger(pipes=[(a, b)])
    assert repr(dagger) == f"Dagger({id(dagger)})"
    assert "a>>>b" in str(dagger)


def test_connect_start_stop_diamond(pool_options):
    """The original startstop: a diamond with pipers on two IMaps, ((x ** 2) * 4)."""
    with IMap(**pool_options, stride=2) as one, \
            IMap(**pool_options, stride=2) as two:
        source = Piper(ipasser, parallel=one, name="source")
        left = Piper(square, parallel=two, name="left", branch=1)
        right = Piper(times4, parallel=one, name="right", branch=2)
        join = Piper(join_all, parallel=two, name="join")
        final = Piper(times4, parallel=one, name="final")
        dagger = Dagger(pipes=[(source, left, join), (source, right, join)])
        dagger.add_pipe((left, final))
        dagger.connect([range(6)])
        assert all(p.connected for p in dagger)
        dagger.start()
        results = [(next(join), next(final)) for _ in range(6)]
        assert results == [((x * x, 4 * x), 4 * x * x) for x in range(6)]
        dagger.stop()
        assert not one.started and not two.started
        dagger.disconnect()
        assert not any(p.connected for p in dagger)


def test_connect_errors():
    a, b = named("a"), named("b")
    dagger = Dagger(pipes=[(a, b)])
    with pytest.raises(DaggerError, match="2 input iterables for 1"):
        dagger.connect([[1], [2]])
    with pytest.raises(DaggerError, match="no input"):
        dagger.connect()
    assert not a.connected and not b.connected


def test_disconnect_removes_the_imap_tasks():
    with IMap(worker_type="thread", worker_num=2, stride=2) as pool:
        a, b, c = (Piper(ipasser, parallel=pool, name=n) for n in "abc")
        dagger = Dagger(pipes=[(a, b), (a, c)])
        dagger.connect([range(3)])
        assert len(pool._tasks) == 3
        dagger.disconnect()
        assert pool._tasks == [] and not any(p.connected for p in dagger)
        dagger.connect([range(3)])          # and the graph can be connected again
        dagger.start()
        assert list(zip(b, c, strict=False)) == [(0, 0), (1, 1), (2, 2)]   # read in step
        dagger.stop()
        dagger.disconnect()


def test_connect_is_undone_when_it_fails():
    with IMap(worker_type="thread", worker_num=2, stride=2) as busy:
        busy.add_task(square, range(3))
        busy.start()                        # a started IMap takes no more tasks
        a, b = named("a"), Piper(square, parallel=busy, name="b")
        dagger = Dagger(pipes=[(a, b)])
        with pytest.raises(PiperError, match="already started"):
            dagger.connect([range(3)])
        assert not a.connected and not b.connected
