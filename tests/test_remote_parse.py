"""worker_remote, remote_tls and remote_timeout validation (no server needed)."""
import pytest

from imap.backends import remote
from imap.backends.remote import (DEFAULT_PORT, RemoteHandle, make_remote_handles,
                                  parse_worker_remote)


@pytest.mark.parametrize("given, expected", [
    ([["node1", 4]], [("node1", DEFAULT_PORT, 4)]),
    ([("node1", 4), ("node2:6666", 2)], [("node1", 18812, 4), ("node2", 6666, 2)]),
    ((("10.0.0.5:18813", 1),), [("10.0.0.5", 18813, 1)]),
    ([("[::1]:18813", 1), ("[::1]", 2), ("::1", 3)],
     [("::1", 18813, 1), ("::1", 18812, 2), ("::1", 18812, 3)]),
    ([], []),
    (None, []),
])
def test_valid_worker_remote(given, expected):
    assert parse_worker_remote(given) == expected


@pytest.mark.parametrize("given", [
    "node1", b"node1", {"node1": 2}, 3, [("node1",)], [("node1", 2, 3)], ["node1", 2],
    [(1234, 2)], [("node1", "2")], [("node1", 2.0)], [("node1", True)],
])
def test_wrong_types_raise_type_error_saying_what_is_allowed(given):
    with pytest.raises(TypeError, match=r"\[host, n\] or \(host, n\) pairs.*'name:port'"):
        parse_worker_remote(given)


@pytest.mark.parametrize("given", [
    [("node1", 0)], [("node1", -1)], [("", 1)], [("node1:", 1)], [("node1:0", 1)],
    [("node1:65536", 1)], [("node1:http", 1)], [("a b", 1)], [("[::1", 1)],
    [("[::1]x", 1)], [(":::zz", 1)],
])
def test_bad_values_raise_value_error_saying_what_is_allowed(given):
    with pytest.raises(ValueError, match=r"default port 18812"):
        parse_worker_remote(given)


def test_one_handle_per_slot_named_by_host_port_and_slot():
    handles = make_remote_handles([("h1", 2), ("h2:7000", 1), ("h1", 1)])
    assert [h.name for h in handles] == ["h1:18812 slot 1", "h1:18812 slot 2",
                                         "h2:7000 slot 1", "h1:18812 slot 3"]
    assert make_remote_handles(parse_worker_remote([("h1", 2)]))[1].name == "h1:18812 slot 2"
    assert all(isinstance(h, RemoteHandle) for h in handles)


def test_timeout_defaults_and_validation():
    handle = make_remote_handles([("h", 1)])[0]
    assert handle.timeout == remote.DEFAULT_TIMEOUT
    assert handle.interval <= handle.timeout / 4
    assert make_remote_handles([("h", 1)], timeout=2)[0].timeout == 2.0
    for bad in (0, -1, "5", True):
        with pytest.raises(ValueError, match="remote_timeout must be a positive number"):
            make_remote_handles([("h", 1)], timeout=bad)


def test_tls_validation(tmp_path):
    files = {}
    for key in ("keyfile", "certfile", "cafile"):
        files[key] = tmp_path / f"{key}.pem"
        files[key].write_text("x")
    assert make_remote_handles([("h", 1)], tls=files)[0].tls["cafile"] == str(files["cafile"])
    with pytest.raises(TypeError, match="remote_tls must be None or a dict"):
        make_remote_handles([("h", 1)], tls=("k", "c", "a"))
    with pytest.raises(ValueError, match=r"missing: \['cafile'\]"):
        make_remote_handles([("h", 1)], tls={"keyfile": files["keyfile"],
                                             "certfile": files["certfile"]})
    with pytest.raises(ValueError, match=r"unknown: \['password'\]"):
        make_remote_handles([("h", 1)], tls=dict(files, password="x"))
    with pytest.raises(ValueError, match="no such file"):
        make_remote_handles([("h", 1)], tls=dict(files, cafile=str(tmp_path / "nope.pem")))
