"""Mutual TLS between RemoteHandle and the servers, with a throw-away CA made by
scripts/make_certs.sh (the commands docs/remote.md shows)."""
import os
import shutil
import subprocess

import pytest
from remote_servers import ROOT, make_task, open_handle, servers  # noqa: F401

from imap import WorkerStartError
from imap.backends import remote
from imap.backends.base import Batch

pytestmark = [pytest.mark.timeout(60),
              pytest.mark.skipif(shutil.which("openssl") is None,
                                 reason="needs the openssl command to make certificates")]


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """Our CA with a server and a client certificate, and a rogue CA with its client."""
    base = tmp_path_factory.mktemp("pki")
    script = os.path.join(ROOT, "scripts", "make_certs.sh")
    for name, members in (("ours", ["server", "client"]), ("rogue", ["client"])):
        subprocess.run(["bash", script, str(base / name), *members], check=True,
                       capture_output=True, env=dict(os.environ, DAYS="2"))
    return base


def _client(pki, ca="ours", member="ours"):
    return {"keyfile": str(pki / member / "client.key"),
            "certfile": str(pki / member / "client.pem"), "cafile": str(pki / ca / "ca.pem")}


def _server_args(pki):
    ours = pki / "ours"
    return ["--ssl-keyfile", str(ours / "server.key"), "--ssl-certfile",
            str(ours / "server.pem"), "--ssl-cafile", str(ours / "ca.pem")]


@pytest.fixture(scope="module", params=["imap", "rpyc"])
def tls_server(request, pki):
    from remote_servers import ServerProcess
    server = ServerProcess(request.param, "forking", _server_args(pki))
    yield server
    server.stop()


def test_a_client_with_a_certificate_of_the_ca_is_accepted(tls_server, pki):
    handle = open_handle(tls_server, tls=_client(pki), timeout=10)
    try:
        offset = 2
        values, errors, _ = handle.run(Batch(make_task(lambda x: x * offset), 0, [1, 2, 3]))
        assert (values, errors) == ([2, 4, 6], None)
    finally:
        handle.close()


def test_kill_ends_a_run_under_tls(tls_server, pki):
    import threading
    import time

    from imap.backends.base import WorkerLost
    handle = open_handle(tls_server, tls=_client(pki), timeout=10)
    started = threading.Event()
    killer = threading.Thread(target=lambda: (started.wait(10), time.sleep(0.3), handle.kill()))
    killer.start()
    try:
        started.set()
        with pytest.raises(WorkerLost, match="was killed"):
            handle.run(Batch(make_task(time.sleep), 0, [5]))
    finally:
        killer.join()
        handle.close()


def test_a_client_without_a_certificate_is_refused(tls_server):
    handle = remote.RemoteHandle("127.0.0.1", tls_server.port, timeout=5)
    with pytest.raises(WorkerStartError, match=f"127.0.0.1:{tls_server.port}.*remote_tls"):
        handle.open()


def test_a_client_certificate_of_another_ca_is_refused(tls_server, pki):
    handle = remote.RemoteHandle("127.0.0.1", tls_server.port, timeout=5,
                                 tls=_client(pki, ca="ours", member="rogue"))
    with pytest.raises(WorkerStartError, match=f"127.0.0.1:{tls_server.port}"):
        handle.open()


def test_a_server_certificate_of_another_ca_is_refused(tls_server, pki):
    handle = remote.RemoteHandle("127.0.0.1", tls_server.port, timeout=5,
                                 tls=_client(pki, ca="rogue", member="rogue"))
    with pytest.raises(WorkerStartError, match="CERTIFICATE_VERIFY_FAILED"):
        handle.open()


def test_a_tls_client_on_a_plain_server_is_refused(servers, pki):  # noqa: F811
    server = servers("imap")
    handle = remote.RemoteHandle("127.0.0.1", server.port, timeout=1, tls=_client(pki))
    with pytest.raises(WorkerStartError, match=f"127.0.0.1:{server.port}"):
        handle.open()
