"""Random pipelines against a sequential run of the same functions (hypothesis).

A drawn pipeline: Piper 0 reads the input; each later Piper takes one or two earlier Pipers
as its upstream (one: a chain or a fan-out; two: a join). Every Piper computes
``(a * sum(inbox) + b) % 1009`` with its own a, b, so the oracle is a plain loop over the
items. Each Piper runs linearly or on one of the drawn IMaps (of the kind under test, or of
a drawn local kind; random stride, buffer and ``ordered``), which Pipers may share. The
tracked outputs must equal the oracle: in order when every IMap is ordered; as multisets
when an IMap is unordered (then the drawn pipeline has no join, since an unordered join
pairs unrelated items).
"""
from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from papy import IMap, Piper, Plumber, Worker

MOD = 1009


def affine(inbox, a, b):
    return (a * sum(inbox) + b) % MOD


@st.composite
def pipelines(draw, kinds, most_pools=1):
    ordered = draw(st.booleans())
    pools = []
    for _ in range(draw(st.integers(1, most_pools))):
        stride = draw(st.integers(1, 6))
        buffer = draw(st.one_of(st.none(), st.integers(stride, 4 * stride)))
        pools.append(dict(kind=draw(st.sampled_from(kinds)), stride=stride, buffer=buffer,
                          ordered=ordered if draw(st.booleans()) else True))
    any_unordered = any(not p["ordered"] for p in pools)
    nodes = []
    for i in range(draw(st.integers(1, 6))):
        if i == 0:
            upstream = ()
        elif any_unordered or draw(st.integers(0, 2)) > 0 or i == 1:
            upstream = (draw(st.integers(0, i - 1)),)
        else:
            upstream = tuple(draw(st.lists(st.integers(0, i - 1), min_size=2, max_size=2,
                                           unique=True)))
        # any IMap for any Piper: chains that return to an earlier IMap (A -> B -> A)
        # included, which hung the old stream layer
        pool = draw(st.sampled_from([-1, *range(len(pools))]))   # -1: linear
        nodes.append(dict(upstream=upstream, a=draw(st.integers(1, 50)),
                          b=draw(st.integers(0, 50)), pool=pool))
    items = draw(st.lists(st.integers(0, 1000), min_size=1, max_size=40))
    return pools, nodes, items


def sequential(nodes, items):
    """The oracle: {node index: [value for each item]} for the nodes without downstream."""
    values = []
    for node in nodes:
        if not node["upstream"]:
            inbox_rows = [[x] for x in items]
        else:
            inbox_rows = [[values[u][k] for u in node["upstream"]] for k in range(len(items))]
        values.append([affine(row, node["a"], node["b"]) for row in inbox_rows])
    used = {u for node in nodes for u in node["upstream"]}
    return {i: values[i] for i in range(len(nodes)) if i not in used}


def run_pipeline(pools, nodes, items, options_of):
    """``options_of(kind)``: the IMap options of a pool kind (its workers, where they are)."""
    imaps = [IMap(**options_of(p["kind"]), stride=p["stride"], buffer=p["buffer"],
                  ordered=p["ordered"]) for p in pools]
    try:
        pipers = [Piper(Worker(affine, (node["a"], node["b"])),
                        parallel=imaps[node["pool"]] if node["pool"] >= 0 else False,
                        name=f"p{i}", branch=i + 1, track=True)
                  for i, node in enumerate(nodes)]
        plumber = Plumber()
        plumber.add_piper(pipers[0])
        for i, node in enumerate(nodes):
            for u in node["upstream"]:
                plumber.add_pipe((pipers[u], pipers[i]))
        plumber.start([items])
        plumber.run()
        assert plumber.wait(timeout=120), "the pipeline did not finish (a hang)"
        plumber.pause()
        plumber.stop()
        tracked = plumber.stats["pipers_tracked"]
        return {i: [tracked[piper][k] for k in sorted(tracked[piper])]
                for i, piper in enumerate(pipers)}
    finally:
        for imap in imaps:
            imap.stop()


def local(kind):
    return dict(worker_type=kind, worker_num=2)


def check(pools, nodes, items, options_of=local):
    expected = sequential(nodes, items)
    got = run_pipeline(pools, nodes, items, options_of)
    ordered = all(p["ordered"] for p in pools)
    for i, values in expected.items():
        if ordered:
            assert got[i] == values, f"output p{i}"
        else:
            assert Counter(got[i]) == Counter(values), f"output p{i} (as a multiset)"


SETTINGS = dict(deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])


#: examples per kind: a process, remote or Dask pool costs tens of milliseconds to start
EXAMPLES = {"inline": 40, "thread": 60, "process": 8, "remote": 6, "dask": 6}


def test_random_pipelines_match_a_sequential_run(pool_options):
    """Diamonds, fan-outs, joins and chains over up to three IMaps of one kind with random
    strides and buffers, in any assignment of Pipers to IMaps, chains back to an earlier
    IMap included (issue 11: every shape completes)."""
    @settings(max_examples=EXAMPLES[pool_options.kind], **SETTINGS)
    @given(pipelines(kinds=(pool_options.kind,), most_pools=3))
    def matches(pipeline):
        check(*pipeline, options_of=lambda kind: pool_options)
    matches()


@settings(max_examples=8, **SETTINGS)
@given(pipelines(kinds=("inline", "thread", "process"), most_pools=3))
def test_random_pipelines_on_mixed_local_kinds_match_a_sequential_run(pipeline):
    check(*pipeline)


def inc(inbox):
    return inbox[0] + 1


def test_imap_a_then_b_then_a(pool_options):
    a = IMap(**pool_options, stride=1)
    b = IMap(**pool_options, stride=1)
    try:
        pipers = [Piper(inc, parallel=a), Piper(inc, parallel=b),
                  Piper(inc, parallel=a, track=True)]
        plumber = Plumber()
        plumber.add_pipe(tuple(pipers))
        plumber.start([[0, 1]])
        plumber.run()
        try:
            assert plumber.wait(timeout=60)
        finally:
            plumber.pause()
            plumber.stop()
        assert plumber.stats["pipers_tracked"][pipers[2]] == {0: 3, 1: 4}
    finally:
        a.stop()
        b.stop()


