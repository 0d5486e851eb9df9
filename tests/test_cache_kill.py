"""A run killed halfway (SIGKILL) and started again recomputes only what was not finished:
an entry is written before its result leaves the function or the Worker."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading

import cache_functions as cf

from papy import Cache, IMap, Worker

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)
ITEMS = 20
BLOCK_AT = 7

DECORATED = textwrap.dedent("""
    import sys
    from papy import Cache
    import cache_functions as cf
    step = Cache(sys.argv[1], ignore=("block_at",))(cf.kill_step)
    for x in range(int(sys.argv[2])):
        print(step(x, block_at=int(sys.argv[3])), flush=True)
""")

ON_AN_IMAP = textwrap.dedent("""
    import sys
    from papy import Cache, IMap, Worker
    import cache_functions as cf
    cache = Cache(sys.argv[1], ignore=("block_at",))
    worker = Worker(cf.kill_step_inbox, (), {"block_at": int(sys.argv[3])}, cache=cache)
    with IMap(worker_type="thread", worker_num=2, buffer=2) as pool:   # results one by one
        task = pool.add_task(worker, ([x] for x in range(int(sys.argv[2]))))
        pool.start()
        for result in task:
            print(result, flush=True)
""")


def run_until_blocked(script: str, root: str) -> list[int]:
    """Run ``script`` in a child, read what it prints up to the blocked item, SIGKILL it."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, TESTS]))
    child = subprocess.Popen([sys.executable, "-c", script, root, str(ITEMS), str(BLOCK_AT)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    guard = threading.Timer(60, child.kill)        # a hang guard only
    guard.start()
    try:
        printed = [int(child.stdout.readline() or -1) for _ in range(BLOCK_AT)]
    finally:
        guard.cancel()
        guard.join()
        child.send_signal(signal.SIGKILL)
        child.communicate(timeout=60)
    assert child.returncode == -signal.SIGKILL
    return printed


def test_killed_halfway_the_rerun_computes_only_the_rest(tmp_path):
    printed = run_until_blocked(DECORATED, str(tmp_path))
    assert printed == [3 * x for x in range(BLOCK_AT)]
    cache = Cache(tmp_path, ignore=("block_at",))
    step = cache(cf.kill_step)
    assert [step(x) for x in range(ITEMS)] == [3 * x for x in range(ITEMS)]
    stats = cache.stats()
    assert (stats["hits"], stats["misses"]) == (BLOCK_AT, ITEMS - BLOCK_AT)


def test_killed_halfway_on_an_imap_every_result_seen_is_a_hit(tmp_path):
    printed = run_until_blocked(ON_AN_IMAP, str(tmp_path))
    assert printed == [3 * x for x in range(BLOCK_AT)]
    cache = Cache(tmp_path, ignore=("block_at",))
    recorded = cf.Recorded(Worker(cf.kill_step_inbox, cache=cache))
    with IMap(worker_type="thread", worker_num=2) as pool:
        task = pool.add_task(recorded, ([x] for x in range(ITEMS)))
        pool.start()
        results = list(task)
    assert [value for value, _ in results] == [3 * x for x in range(ITEMS)]
    # the items printed before the kill are hits; others that had finished may be too
    assert all(delta.cached == 1 for _, delta in results[:BLOCK_AT])
    assert results[BLOCK_AT][1].executed == 1       # the blocked item never finished
    stats = cache.stats()
    assert stats["hits"] >= BLOCK_AT and stats["hits"] + stats["misses"] == ITEMS
