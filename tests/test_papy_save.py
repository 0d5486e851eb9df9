"""Plumber.save / Plumber.load: a pipeline written as a runnable module and read back."""
import os
import subprocess
import sys
import textwrap

import pytest

from papy import IMap, Piper, Plumber, PlumberError, Worker

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def scale(inbox, factor, offset=0):
    return inbox[0] * factor + offset


def square(inbox):
    return inbox[0] * inbox[0]


def join_pair(inbox):
    return (inbox[0], inbox[1])


def build(pool):
    source = Piper(Worker((scale, square), ((2,), ()), ({"offset": 1}, {})), parallel=pool,
                   name="source", track=True)
    left = Piper(square, parallel=pool, name="left", branch=1)
    right = Piper(Worker(scale, (3,)), name="right", branch=2)
    join = Piper(join_pair, parallel=pool, name="join", track=True)
    plumber = Plumber()
    plumber.add_pipes([(source, left, join), (source, right, join)])
    plumber.add_piper(join, xtra={"note": "output"})
    return plumber


def run(plumber, data):
    plumber.start([data])
    plumber.run()
    plumber.wait()
    plumber.pause()
    plumber.stop()
    return {p.name: dict(t) for p, t in plumber.stats["pipers_tracked"].items()}


def by_name(plumber, name):
    return next(p for p in plumber if p.name == name)


@pytest.mark.parametrize("worker_type", ["thread", "process"])
def test_round_trip_gives_the_same_results(tmp_path, worker_type):
    filename = tmp_path / "saved_pipeline.py"
    pool = IMap(worker_type=worker_type, worker_num=2, stride=3, name="the_pool")
    original = build(pool)
    original.save(filename)
    expected = run(original, range(25))
    loaded = Plumber()
    loaded.load(filename)
    assert sorted(p.name for p in loaded) == ["join", "left", "right", "source"]
    join = by_name(loaded, "join")
    assert loaded.get_upstream(join) == [by_name(loaded, "left"), by_name(loaded, "right")]
    assert loaded._xtras[id(join)] == {"note": "output"}
    new_pool = join.parallel
    assert new_pool is not pool and new_pool.name == "the_pool"
    assert (new_pool.worker_type, new_pool.worker_num, new_pool.stride) == (worker_type, 2, 3)
    assert by_name(loaded, "right").parallel is False
    assert by_name(loaded, "source").worker == by_name(original, "source").worker
    try:
        assert run(loaded, range(25)) == expected
    finally:
        new_pool.stop()
        pool.stop()
    text = filename.read_text()
    assert "from test_papy_save import" in text and "def pipeline():" in text


def test_remote_workers_are_saved(tmp_path):
    filename = tmp_path / "remote_pipeline.py"
    pool = IMap(worker_type="process", worker_num=1, worker_remote=[("node1:18813", 2)],
                stride=2)
    plumber = Plumber()
    plumber.add_piper(Piper(square, parallel=pool))
    plumber.save(filename)
    loaded = Plumber()
    loaded.load(filename)
    assert loaded.nodes()[0].parallel.worker_remote == [("node1", 18813, 2)]


@pytest.mark.parametrize("target", ["address", "client", None])
def test_dask_imaps_are_saved_with_the_scheduler_address(tmp_path, dask_client, target):
    """A Client is saved as its scheduler's address (the loaded IMap connects there)."""
    if dask_client is None:
        pytest.skip("distributed is not installed (pip install 'papy[dask]')")
    client = dask_client if target == "client" else None
    address = client.scheduler.address if client is not None else "tcp://127.0.0.1:8786"
    remote = {"address": address, "client": client, None: None}[target]
    filename = tmp_path / "dask_pipeline.py"
    plumber = Plumber()
    plumber.add_piper(Piper(square, parallel=IMap(worker_type="dask", worker_remote=remote,
                                                  worker_num=2)))
    plumber.save(filename)
    loaded = Plumber()
    loaded.load(filename)
    pool = loaded.nodes()[0].parallel
    assert pool.worker_type == "dask"
    assert pool.worker_remote == (None if target is None else address)


def test_what_cannot_be_saved(tmp_path):
    plumber = Plumber()
    plumber.add_piper(Piper(Worker(scale, (object(),))))
    with pytest.raises(PlumberError, match="literal"):
        plumber.save(tmp_path / "x.py")

    def nested(inbox):
        return inbox[0]

    plumber = Plumber()
    plumber.add_piper(Piper(nested))
    with pytest.raises(PlumberError, match="nested"):
        plumber.save(tmp_path / "y.py")


def test_load_errors(tmp_path):
    broken = tmp_path / "broken.py"
    broken.write_text("def pipeline():\n    raise RuntimeError('no')\n")
    with pytest.raises(PlumberError, match="no"):
        Plumber().load(broken)


SCRIPT = '''
import sys
from papy import *

@imports(['re'])
def shout(inbox):
    return re.sub('a', 'A', inbox[0])

def exclaim(inbox, mark='!'):
    return inbox[0] + mark

if __name__ == '__main__':
    pool = IMap(worker_type='process', worker_num=2, stride=2)
    plumber = Plumber()
    plumber.add_pipe((Piper(shout, parallel=pool, name='shout'),
                      Piper(Worker(exclaim, kwargs={'mark': '?'}), name='exclaim', track=True)))
    plumber.save(sys.argv[1])
'''

LOADER = '''
import sys
from papy import *
if __name__ == '__main__':
    plumber = Plumber()
    plumber.load(sys.argv[1])
    plumber.start([['banana', 'kiwi']]); plumber.run(); plumber.wait(); plumber.pause()
    plumber.stop()
    exclaim = [p for p in plumber if p.name == 'exclaim'][0]
    print(plumber.stats['pipers_tracked'][exclaim])
    plumber.save(sys.argv[2])     # a loaded pipeline saves again
'''


def test_functions_of_main_are_saved_by_source(tmp_path):
    script, loader, saved = tmp_path / "make.py", tmp_path / "load.py", tmp_path / "saved.py"
    script.write_text(textwrap.dedent(SCRIPT))
    loader.write_text(textwrap.dedent(LOADER))
    env = dict(os.environ, PYTHONPATH=ROOT)
    subprocess.run([sys.executable, str(script), str(saved)], check=True, env=env,
                   timeout=60)
    text = saved.read_text()
    assert "def shout(inbox):" in text and "@imports(['re'])" in text
    again = tmp_path / "again.py"
    result = subprocess.run([sys.executable, str(loader), str(saved), str(again)], check=True,
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "{0: 'bAnAnA?', 1: 'kiwi?'}"
    assert "def shout(inbox):" in again.read_text()
    result = subprocess.run([sys.executable, str(loader), str(again), str(saved)], check=True,
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "{0: 'bAnAnA?', 1: 'kiwi?'}"
    subprocess.run([sys.executable, str(saved)], check=True, env=env, timeout=60)
