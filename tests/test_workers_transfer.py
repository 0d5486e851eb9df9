"""papy.workers.transfer: dump_item / load_item of every kind, in one process.

Round trips for each kind and item type, the descriptor, errors with their remedies, and
clean-up: nothing may remain in the temp directory or /dev/shm after a load, after a
timeout, or (test_workers_transfer_pools.py) when the dumping process exits.
"""
import os
import pickle
import re
import socket
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from papy.workers.transfer import (KINDS, SHM_PREFIX, ItemRef, TransferError, dump_item,
                                   load_item)

BOUND = 20.0  # seconds: only against hangs


_NAME = re.compile(r"papy_(?:item_|fifo_)?(\d+)_")


def _is_ours(pid: int) -> bool:
    """This process, a descendant of it, or a process that is gone (it may have been ours).

    Entries of other live processes (another test session on this host) are not ours.
    """
    while pid > 1:
        if pid == os.getpid():
            return True
        try:
            with open(f"/proc/{pid}/stat") as handle:
                stat = handle.read()
        except OSError:
            return True  # gone
        pid = int(stat[stat.rfind(")") + 2:].split()[1])
    return False


def papy_entries() -> set:
    """What papy items of this test session may leave: files and FIFOs in the temp
    directory, shm segments (their names carry the pid of the process that made them)."""
    temp = tempfile.gettempdir()
    found = {os.path.join(temp, name) for name in os.listdir(temp)} | \
        {"/dev/shm/" + name for name in os.listdir("/dev/shm")}
    return {path for path in found if (match := _NAME.match(os.path.basename(path)))
            and _is_ours(int(match.group(1)))}


def location_exists(ref: ItemRef) -> bool:
    if ref.kind == "shm":
        return os.path.exists("/dev/shm" + ref.location)
    if ref.kind == "tcp":
        try:
            socket.create_connection(tuple(ref.location), timeout=1).close()
        except ConnectionRefusedError:
            return False
        return True
    return os.path.exists(ref.location)


def item_threads() -> list:
    return [t for t in threading.enumerate() if t.name.startswith("papy-item-")]


def wait_until(condition, bound=BOUND) -> bool:
    deadline = time.monotonic() + bound
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.fixture
def nothing_left():
    """The temp directory and /dev/shm hold no new papy entries after the test."""
    before = papy_entries()
    yield
    assert papy_entries() - before == set()


ITEMS = [
    pytest.param(b"\x00\xffbinary" * 300_000, id="bytes-3MB"),
    pytest.param(b"", id="empty-bytes"),
    pytest.param("text with ünïcode and a lone surrogate \ud800", id="str"),
    pytest.param("", id="empty-str"),
    pytest.param(bytearray(b"mutable"), id="bytearray"),
    pytest.param({"any": ["picklable", 1, 2.5, None]}, id="pickled"),
]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("item", ITEMS)
def test_round_trip(kind, item, nothing_left):
    ref = dump_item([item], type=kind)
    assert isinstance(ref, ItemRef) and ref.kind == kind
    loaded = load_item([ref])
    assert loaded == item and type(loaded) is type(item)
    assert wait_until(lambda: not item_threads())   # a tcp server closes, then ends
    assert not location_exists(ref)


@pytest.mark.parametrize("kind", KINDS)
def test_memoryview_comes_back_as_bytes(kind, nothing_left):
    view = memoryview(b"abcdef")
    assert load_item([dump_item([view], type=kind)]) == b"abcdef"
    assert load_item([dump_item([view[::2]], type=kind)]) == b"ace"    # not contiguous


@pytest.mark.parametrize("kind", ["fifo", "tcp"])
def test_a_bytearray_changed_after_the_dump_does_not_change_the_item(kind, nothing_left):
    data = bytearray(b"before")
    ref = dump_item([data], type=kind)
    data[:] = b"after!"
    assert load_item([ref]) == bytearray(b"before")


@pytest.mark.parametrize("kind", KINDS)
def test_the_descriptor_is_small_and_picklable(kind, nothing_left):
    ref = dump_item([b"x" * 2_000_000], type=kind)
    wire = pickle.dumps(ref)
    assert len(wire) < 400
    assert pickle.loads(wire) == ref
    assert ref.size == 2_000_000 and ref.encoding == "bytes"
    assert load_item([tuple(ref)]) == b"x" * 2_000_000      # a plain tuple works too


def test_names_and_addresses(tmp_path, nothing_left):
    shm = dump_item(["x"], type="shm")
    assert shm.location.startswith(f"{SHM_PREFIX}{os.getpid()}_")
    tcp = dump_item(["x"], type="tcp")
    assert tcp.location[0] == "127.0.0.1" and len(tcp.token) == 32   # loopback by default
    fifo = dump_item(["x"], type="fifo", dir=str(tmp_path), prefix="my_", suffix=".in")
    file = dump_item(["x"], type="file", dir=str(tmp_path), prefix="my_", suffix=".in")
    for ref in (fifo, file):
        name = os.path.basename(ref.location)
        assert os.path.dirname(ref.location) == str(tmp_path)
        assert name.startswith("my_") and name.endswith(".in")
        assert os.stat(ref.location).st_mode & 0o777 == 0o600
    assert [load_item([ref]) for ref in (shm, tcp, fifo, file)] == ["x"] * 4
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("kind", ["file", "shm"])
def test_loading_twice_says_it_was_loaded_already(kind, nothing_left):
    ref = dump_item(["once"], type=kind)
    assert load_item([ref]) == "once"
    with pytest.raises(TransferError, match="loaded already .*remove=False"):
        load_item([ref])


@pytest.mark.parametrize("kind", ["file", "shm"])
def test_remove_false_keeps_the_item_for_other_loaders(kind, nothing_left):
    ref = dump_item(["shared"], type=kind)
    assert load_item([ref], remove=False) == "shared"
    assert load_item([ref], remove=False) == "shared"
    assert location_exists(ref)
    assert load_item([ref]) == "shared"
    assert not location_exists(ref)


@pytest.mark.parametrize("kind", ["fifo", "tcp"])
def test_remove_false_is_refused_for_fifo_and_tcp(kind, nothing_left):
    ref = dump_item(["x"], type=kind)
    with pytest.raises(ValueError, match="loaded once only"):
        load_item([ref], remove=False)
    assert load_item([ref]) == "x"


@pytest.mark.parametrize("kind", KINDS)
def test_an_item_nobody_loads_is_removed_after_its_timeout(kind, nothing_left):
    ref = dump_item([b"forgotten" * 1000], type=kind, timeout=0.2)
    assert location_exists(ref) or kind == "tcp"  # (probing a tcp item would load it)
    assert wait_until(lambda: not location_exists(ref) and not item_threads())
    with pytest.raises(TransferError, match="expired"):
        load_item([ref], timeout=5)


def test_timeout_none_keeps_the_item_until_it_is_loaded(nothing_left):
    refs = [dump_item(["kept"], type=kind, timeout=None) for kind in KINDS]
    assert all(ref.expires is None for ref in refs)
    assert [load_item([ref]) for ref in refs] == ["kept"] * 4
    assert wait_until(lambda: not item_threads())


@pytest.mark.parametrize("kind", ["file", "shm"])
def test_the_janitor_forgets_items_loaded_by_another_process(kind, nothing_left):
    ref = dump_item(["x"], type=kind, timeout=None)
    # what another process does when it loads the item: it removes the file or segment
    if kind == "file":
        os.unlink(ref.location)
    else:
        os.unlink("/dev/shm" + ref.location)
    assert wait_until(lambda: not item_threads())   # the janitor ends: nothing pending


def test_tcp_refuses_a_loader_without_the_token(nothing_left):
    ref = dump_item([b"secret"], type="tcp")
    with socket.create_connection(tuple(ref.location), timeout=BOUND) as intruder:
        intruder.sendall(b"0" * 32)
        assert intruder.recv(100) == b""            # closed without a byte of the item
    assert load_item([ref]) == b"secret"


def test_a_fifo_whose_writer_is_gone_fails_after_the_load_timeout(tmp_path, nothing_left):
    path = str(tmp_path / "stale")
    os.mkfifo(path, 0o600)      # what a dumping process killed by SIGKILL leaves behind
    ref = ItemRef("fifo", path, 10, "bytes", None)
    with pytest.raises(TransferError, match="no data for 0.2 s"):
        load_item([ref], timeout=0.2)
    assert not os.path.exists(path)                 # and the stale FIFO is removed


def test_a_tcp_item_whose_server_is_gone_is_explained(nothing_left):
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    ref = ItemRef("tcp", ("127.0.0.1", port), 3, "bytes", None, "0" * 32)
    with pytest.raises(TransferError, match="nobody listens .*process that dumped it"):
        load_item([ref])


def test_bad_arguments_are_refused_with_the_choices():
    with pytest.raises(ValueError, match="'file', 'fifo', 'tcp', 'shm'"):
        dump_item(["x"], type="udp")
    with pytest.raises(ValueError, match="timeout"):
        dump_item(["x"], timeout=0)
    with pytest.raises(TypeError, match="picklable"):
        dump_item([lambda: None])
    with pytest.raises(TypeError, match="descriptor that dump_item returned"):
        load_item(["/tmp/some/path"])


@pytest.mark.parametrize("kind", KINDS)
def test_many_items_loaded_concurrently_from_threads(kind, nothing_left):
    items = [bytes([i]) * (1000 * i + 1) for i in range(40)]
    refs = [dump_item([item], type=kind) for item in items]
    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(lambda ref: load_item([ref]), reversed(refs))) == items[::-1]
    assert wait_until(lambda: not item_threads())


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(item=st.one_of(st.binary(max_size=5000), st.text(max_size=200), st.lists(st.integers()),
                      st.dictionaries(st.text(max_size=5), st.floats())),
       kind=st.sampled_from(KINDS))
def test_round_trip_property(item, kind, nothing_left):
    loaded = load_item([dump_item([item], type=kind)])
    assert type(loaded) is type(item)
    assert pickle.dumps(loaded) == pickle.dumps(item)   # NaN-safe equality


def test_sweep_leftovers_spares_the_items_of_running_processes(nothing_left):
    from papy.workers.transfer import sweep_leftovers
    refs = [dump_item(["alive"], type=kind) for kind in ("file", "fifo", "shm")]
    removed = sweep_leftovers()
    assert not {ref.location for ref in refs} & {path.replace("/dev/shm", "") for path in removed}
    assert [load_item([ref]) for ref in refs] == ["alive"] * 3
