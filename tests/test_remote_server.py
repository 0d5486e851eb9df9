"""The launcher: python -m imap.server / imap-server."""
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import types

import pytest
import rpyc
from remote_servers import (ROOT, group_members, make_task, open_handle, servers,  # noqa: F401
                            wait_for)

from imap import server as launcher
from imap.backends.base import Batch

pytestmark = pytest.mark.timeout(60)


def _run_launcher(*args, timeout=30):
    return subprocess.run([sys.executable, "-m", "imap.server", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT, stdin=subprocess.DEVNULL)


def test_defaults():
    args = launcher._parser().parse_args([])
    assert (args.host, args.port, args.mode, args.quiet, args.insecure) == (
        "127.0.0.1", 18812, "forking", False, False)
    assert args.ssl_keyfile is args.ssl_certfile is args.ssl_cafile is args.logfile is None


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.1"])
def test_refuses_a_non_loopback_address_without_tls(host):
    result = _run_launcher("--host", host, "--port", "0")
    assert result.returncode == 2 and result.stdout == ""
    message = result.stderr
    assert f"refusing to listen on {host} without TLS" in message
    for hint in ("runs any code", "--ssl-cafile", "SSH tunnel", "ssh -N -L", "--insecure"):
        assert hint in message


@pytest.mark.parametrize("args, message", [
    (["--ssl-keyfile", "k.pem"], "needs all of --ssl-keyfile, --ssl-certfile and --ssl-cafile"),
    (["--ssl-keyfile", "k", "--ssl-certfile", "c", "--ssl-cafile", "a"], "no such file"),
    (["--port", "70000"], "--port must be 0..65535"),
    (["--mode", "oneshot"], "invalid choice"),
])
def test_bad_options_are_refused(args, message):
    result = _run_launcher(*args)
    assert result.returncode == 2 and message in result.stderr


def test_a_port_in_use_is_an_error():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        result = _run_launcher("--port", str(busy.getsockname()[1]))
    assert result.returncode == 1 and "cannot listen on 127.0.0.1:" in result.stderr


def test_module_prints_one_listening_line_and_stops_on_sigterm(tmp_path):
    log = tmp_path / "server.log"
    proc = subprocess.Popen([sys.executable, "-m", "imap.server", "--port", "0", "--logfile",
                             str(log)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, text=True, cwd=ROOT,
                            start_new_session=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("listening on 127.0.0.1:")
        port = int(line.rsplit(":", 1)[1])
        conn = rpyc.classic.connect("127.0.0.1", port)     # accepted as soon as printed
        assert conn.eval("1 + 1") == 2
        conn.close()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
        assert proc.returncode == 0 and out == "" and err == ""
        text = log.read_text()
        assert "accepted" in text and "stopped" in text
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()


@pytest.mark.skipif(shutil.which("imap-server") is None, reason="package not installed")
def test_console_command(tmp_path):
    proc = subprocess.Popen(["imap-server", "--port", "0", "--mode", "threaded", "--quiet",
                             "--logfile", str(tmp_path / "log")], stdout=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, text=True, start_new_session=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("listening on 127.0.0.1:")
        conn = rpyc.classic.connect("127.0.0.1", int(line.rsplit(":", 1)[1]))
        conn.close()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0
        assert proc.stdout.read() == "" and (tmp_path / "log").read_text() == ""   # --quiet
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        proc.stdout.close()


@pytest.mark.parametrize("mode", ["forking", "threaded"])
def test_accepted_sockets_have_tcp_nodelay(servers, mode):  # noqa: F811
    server = servers("imap", mode)
    conn = rpyc.classic.connect("127.0.0.1", server.port)
    try:
        sock = conn.root.getconn()._channel.stream.sock                # the server's socket
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        conn._config["sync_request_timeout"] = 1
        conn.close()


@pytest.mark.parametrize("mode, signum", [("forking", signal.SIGTERM),
                                          ("forking", signal.SIGINT),
                                          ("threaded", signal.SIGTERM)])
def test_a_signal_stops_the_server_and_every_forked_child_within_2_s(servers, mode,  # noqa: F811
                                                                       signum):
    server = servers("imap", mode)
    conns = [rpyc.classic.connect("127.0.0.1", server.port) for _ in range(3)]
    try:
        if mode == "forking":
            assert wait_for(lambda: len(server.group_pids()) == 4)  # the server + 3 children
            conns[0].modules.signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a stubborn child
        conns[1].execute("import threading, time\n"                # a thread that would
                         "threading.Thread(target=time.sleep, args=(60,)).start()")  # hold on
        started = time.monotonic()
        os.kill(server.pid, signum)
        assert server.proc.wait(10) == 0
        assert wait_for(lambda: not group_members(server.pid), timeout=10)
        assert time.monotonic() - started < 2.0
        assert server.stdout_lines == [f"listening on 127.0.0.1:{server.port}"]
    finally:
        for conn in conns:
            conn._config["sync_request_timeout"] = 0.5
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - the server is gone
                pass


FAKE_SSH = """#!/usr/bin/env bash
# stands for ssh in tests: drops the options (the tunnel is the identity: same port), runs
# the remote command on this machine
while [[ $1 == -* ]]; do case $1 in -o|-L|-p) shift 2 ;; *) shift ;; esac; done
shift
exec bash -c "$*"
"""


def test_start_remote_servers_script_with_a_fake_ssh(tmp_path):
    fake = tmp_path / "ssh"
    fake.write_text(FAKE_SSH)
    fake.chmod(0o755)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = dict(os.environ, PATH=f"{tmp_path}{os.pathsep}{os.environ['PATH']}", PYTHONPATH=ROOT)
    proc = subprocess.Popen(
        ["bash", os.path.join(ROOT, "scripts", "start_remote_servers.sh"), "-n", "3", "-p",
         str(port), "-l", str(port), "-P", sys.executable, "node1"], stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL, text=True, env=env, start_new_session=True)
    try:
        lines = [proc.stdout.readline() for _ in range(2)]
        assert lines[1].strip() == f"worker_remote=[('127.0.0.1:{port}', 3)]", lines
        handle = open_handle(types.SimpleNamespace(port=port), timeout=10)
        try:
            assert handle.run(Batch(make_task(lambda x: x * 2), 0, [21]))[0] == [42]
        finally:
            handle.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 143
        assert wait_for(lambda: not group_members(proc.pid), timeout=10)
    finally:
        if proc.poll() is None or group_members(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        proc.stdout.close()
