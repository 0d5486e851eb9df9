"""A pipeline with a cache on every Piper, killed halfway (SIGKILL) and started again,
recomputes only what had not finished: every result that reached the end of the pipeline
was stored before it left its Worker (issue 13 item 3)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import cache_functions as cf
import pytest

from papy import Cache, IMap, Piper, Plumber, Worker

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)
ITEMS = 40
BLOCK_AT = 30

PIPELINE = textwrap.dedent("""
    import sys
    from papy import Cache, IMap, Piper, Plumber, Worker
    import cache_functions as cf

    def pipeline(root, marks, block_at, kind):
        cache = Cache(root, ignore=("folder", "block_at"))
        pool = IMap(worker_type=kind, worker_num=2, buffer=4)
        first = Piper(Worker(cf.stage_inc, (), {"folder": marks}), parallel=pool,
                      cache=cache, name="inc")
        last = Piper(Worker(cf.stage_blocks_at, (), {"folder": marks, "block_at": block_at}),
                     parallel=pool, cache=cache, name="blocks")
        plumber = Plumber()
        plumber.add_pipe((first, last))
        return plumber, last, pool

    if __name__ == "__main__":
        root, marks, items, block_at, kind = sys.argv[1:]
        plumber, last, pool = pipeline(root, marks, int(block_at), kind)
        plumber.start([range(int(items))])
        for result in last:
            print(result, flush=True)
""")


def run_until_blocked(root: str, marks: str, kind: str) -> list[int]:
    """Run the pipeline in a child (its own session) until an item blocks and some outputs
    were printed, then SIGKILL the child and everything it started; what it printed."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, TESTS]))
    child = subprocess.Popen(
        [sys.executable, "-c", PIPELINE, root, marks, str(ITEMS), str(BLOCK_AT), kind],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True,
        start_new_session=True)
    printed: list[int] = []
    some = threading.Event()

    def read() -> None:
        for line in child.stdout:
            printed.append(int(line))
            some.set()
    reader = threading.Thread(target=read)
    reader.start()
    try:
        deadline = time.monotonic() + 120                 # a hang guard only
        while not os.path.exists(os.path.join(marks, "blocked")) \
                and time.monotonic() < deadline and child.poll() is None:
            time.sleep(0.02)
        assert some.wait(max(1.0, deadline - time.monotonic())), "nothing was printed"
    finally:
        os.killpg(child.pid, signal.SIGKILL)
        _, errors = child.communicate(timeout=60)
        reader.join()
    assert child.returncode == -signal.SIGKILL, errors
    return list(printed)


@pytest.mark.parametrize("kind", ["process", "thread"])
def test_killed_halfway_the_rerun_computes_only_what_had_not_finished(tmp_path, kind):
    root, marks = str(tmp_path / "cache"), tmp_path / "marks"
    marks.mkdir()
    printed = run_until_blocked(root, str(marks), kind)
    # in order, and only items before the blocked one (stage 1 adds 1, stage 2 blocks at
    # its input BLOCK_AT, the item BLOCK_AT - 1)
    assert printed == [3 * (x + 1) for x in range(len(printed))]
    assert 0 < len(printed) < BLOCK_AT
    for name in os.listdir(marks):
        os.unlink(marks / name)

    cache = Cache(root, ignore=("folder", "block_at"))
    with IMap(worker_type="process", worker_num=2) as pool:
        first = Piper(Worker(cf.stage_inc, (), {"folder": str(marks)}), parallel=pool,
                      cache=cache, name="inc")
        last = Piper(Worker(cf.stage_blocks_at, (), {"folder": str(marks)}), parallel=pool,
                     cache=cache, name="blocks")
        plumber = Plumber()
        plumber.add_pipe((first, last))
        plumber.start([range(ITEMS)])
        results = list(last)
        plumber.stop()
    assert results == [3 * (x + 1) for x in range(ITEMS)]
    # every output printed before the kill was stored on its way: no stage computes it again
    again = {stage: cf.evaluated(str(marks), stage) for stage in ("inc", "blocks")}
    assert not {repr(x) for x in range(len(printed))} & set(again["inc"])
    assert not {repr(x + 1) for x in range(len(printed))} & set(again["blocks"])
    record = plumber.stats["cache"]
    assert record["blocks"]["cached"] >= len(printed)
    assert record["blocks"]["executed"] == len(again["blocks"]) <= ITEMS - len(printed)
    assert record["inc"]["cached"] + record["inc"]["executed"] == ITEMS
