"""The RPyC classic server for IMap remote workers: ``python -m imap.server`` or ``imap-server``.

    main thread: accept loop --forking--> one child process per connection (the default)
                             --threaded--> one thread per connection, all in this process
    SIGTERM / SIGINT / SIGHUP (handled in the main thread): stop accepting

It serves rpyc's classic ``SlaveService``, exactly like ``rpyc_classic``, plus: it prints one
line ``listening on HOST:PORT`` on stdout once it accepts connections (``--port 0`` picks a
free port), sets TCP_NODELAY on accepted sockets, refuses to listen on a non-loopback address
without mutual TLS unless ``--insecure`` is given, and stops with all its children on a
signal. Classic mode runs any code a client sends: see docs/remote.md.

The forking server tracks its children itself (its SIGCHLD handler reaps them and forgets
their pids; SIGCHLD is blocked from fork until the pid is recorded), so it never signals a
pid that was already reaped and possibly reused.

Shutdown order:
 1. a signal arrives: the listener is shut down, so the accept loop ends
 2. the server closes its sockets; SIGCHLD goes back to the default (no more reaping)
 3. forking: SIGTERM to every child; after STOP_GRACE seconds SIGKILL to the survivors;
    every child is reaped; exit status 0
"""
from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import select
import signal
import socket
import ssl
import sys
import threading
import time
from types import FrameType
from typing import Any, NoReturn

from rpyc.core.service import SlaveService
from rpyc.utils.authenticators import SSLAuthenticator
from rpyc.utils.server import ForkingServer, ThreadedServer

from .backends._prctl import die_with_parent
from .backends._remote_args import DEFAULT_PORT

__all__ = ["main", "DEFAULT_PORT"]

# not __name__: run as `python -m imap.server`, __name__ is "__main__"
log = logging.getLogger("imap.server")

#: the signals the server handles: stop on the first three, reap children on SIGCHLD
_HANDLED = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD}
#: seconds the children get to exit after SIGTERM before SIGKILL
STOP_GRACE = 1.0

_INSECURE = """\
imap-server: refusing to listen on {host} without TLS.
An RPyC classic server runs any code sent by anyone who can reach its port: on a network
address that is a shell, with this user's rights, for everybody on that network. Instead:
  - keep the default --host 127.0.0.1 and reach the server through an SSH tunnel:
      ssh -N -L 18812:127.0.0.1:18812 user@host    then worker_remote=[('127.0.0.1', n)]
  - or use mutual TLS: --ssl-keyfile, --ssl-certfile and --ssl-cafile (clients then need
    a certificate signed by that CA; docs/remote.md shows how to make them)
  - or, only on a network you fully trust, add --insecure"""


def _nodelay(sock: socket.socket) -> None:
    try:  # replies over 64 KB otherwise meet ~40 ms Nagle / delayed-ACK stalls
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        pass


class _Threaded(ThreadedServer):  # type: ignore[misc]  # rpyc ships no types: it is Any
    def _accept_method(self, sock: socket.socket) -> None:
        _nodelay(sock)
        super()._accept_method(sock)


class _Forking(ForkingServer):  # type: ignore[misc]  # rpyc ships no types: it is Any
    """ForkingServer that knows its children, so it can stop them."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.children: set[int] = set()
        super().__init__(*args, **kwargs)    # installs self._handle_sigchld

    def _handle_sigchld(self, signum: int, frame: FrameType | None) -> None:
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid <= 0:
                return
            self.children.discard(pid)

    def _accept_method(self, sock: socket.socket) -> None:
        _nodelay(sock)
        parent = os.getpid()
        # blocked from fork until the pid is recorded (parent) or the handlers are reset
        # (child): no reaping of an unrecorded pid, no parent handler run in the child
        signal.pthread_sigmask(signal.SIG_BLOCK, _HANDLED)
        try:
            pid = os.fork()
            if pid == 0:
                self._serve_in_child(sock, parent)        # never returns
            self.children.add(pid)
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _HANDLED)
        sock.close()
        self.clients.discard(sock)

    def _serve_in_child(self, sock: socket.socket, parent: int) -> NoReturn:
        status = 0
        try:
            for signum in _HANDLED:
                signal.signal(signum, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _HANDLED)
            die_with_parent(parent, exit_code=0)
            self.listener.close()
            self.clients.clear()
            self._authenticate_and_serve_client(sock)
        except BaseException:  # a child must never return into the accept loop
            self.logger.exception("connection process failed")
            status = 1
        finally:
            logging.shutdown()
            os._exit(status)

    def stop_children(self, grace: float = STOP_GRACE) -> None:
        """SIGTERM every child, SIGKILL those still alive after ``grace`` s, reap all."""
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)   # from now on we reap
        pending = set(self.children)
        for pid in pending:
            _signal(pid, signal.SIGTERM)
        pending = _wait_children(pending, time.monotonic() + grace)
        for pid in pending:
            _signal(pid, signal.SIGKILL)
        _wait_children(pending, None)
        self.children.clear()


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _reap(pid: int, block: bool) -> bool:
    try:
        done, _ = os.waitpid(pid, 0 if block else os.WNOHANG)
    except ChildProcessError:
        return True
    return done == pid


def _wait_children(pids: set[int], deadline: float | None) -> set[int]:
    """Reap ``pids`` until ``deadline`` (None: until all are gone); return the survivors."""
    pending = {pid for pid in pids if not _reap(pid, False)}
    if deadline is None:
        for pid in pending:
            _reap(pid, True)
        return set()
    poller, by_fd = select.poll(), {}
    for pid in pending:
        try:
            fd = os.pidfd_open(pid)
        except (OSError, AttributeError):
            continue                                # gone already, or no pidfd: checked below
        by_fd[fd] = pid
        poller.register(fd, select.POLLIN)
    try:
        while by_fd and (left := deadline - time.monotonic()) > 0:
            for fd, _ in poller.poll(left * 1000):
                poller.unregister(fd)
                _reap(by_fd.pop(fd), True)
                os.close(fd)
    finally:
        for fd in by_fd:
            os.close(fd)
    return {pid for pid in pending if not _reap(pid, False)}


# -- command line --------------------------------------------------------------------------

def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="imap-server",
        description="Run an RPyC classic server for IMap remote workers on this host "
                    "(worker_remote=[('this-host:PORT', n)]). Classic mode runs any code a "
                    "client sends: keep it on loopback (SSH tunnel) or use mutual TLS.")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1; another address needs "
                             "TLS or --insecure)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help=f"TCP port (default {DEFAULT_PORT}; 0 picks a free port)")
    parser.add_argument("--mode", choices=("forking", "threaded"), default="forking",
                        help="forking: one process per connection, uses every CPU (default); "
                             "threaded: one thread per connection, one process")
    parser.add_argument("--ssl-keyfile", help="this server's private key (PEM)")
    parser.add_argument("--ssl-certfile", help="this server's certificate (PEM)")
    parser.add_argument("--ssl-cafile", help="CA certificate: clients must show a certificate "
                                             "signed by it (mutual TLS)")
    parser.add_argument("--quiet", action="store_true", help="log warnings and errors only")
    parser.add_argument("--logfile", help="append the log to this file instead of stderr")
    parser.add_argument("--insecure", action="store_true",
                        help="allow a non-loopback address without TLS (trusted networks only)")
    return parser


def _check_args(parser: argparse.ArgumentParser, args: argparse.Namespace
                ) -> SSLAuthenticator | None:
    if not 0 <= args.port <= 65535:
        parser.error(f"--port must be 0..65535, not {args.port}")
    tls = (args.ssl_keyfile, args.ssl_certfile, args.ssl_cafile)
    if any(tls) and not all(tls):
        parser.error("TLS needs all of --ssl-keyfile, --ssl-certfile and --ssl-cafile "
                     "(mutual TLS: without a CA any client could connect)")
    if not all(tls):
        return None
    for option, path in zip(("--ssl-keyfile", "--ssl-certfile", "--ssl-cafile"), tls,
                            strict=True):
        if not os.path.isfile(path):
            parser.error(f"{option}: no such file {path!r}")
    try:  # fail now rather than at every connection
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.ssl_certfile, keyfile=args.ssl_keyfile)
        context.load_verify_locations(args.ssl_cafile)
    except (ssl.SSLError, OSError) as exc:
        parser.error(f"cannot use the TLS files: {exc}")
    return SSLAuthenticator(args.ssl_keyfile, args.ssl_certfile, ca_certs=args.ssl_cafile,
                            cert_reqs=ssl.CERT_REQUIRED)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0]).is_loopback for info in infos)


def _preload() -> None:
    """Import once what every IMap connection needs, so forked children start warm."""
    for module in ("dill", "pickle", "traceback", "importlib"):
        try:
            __import__(module)
        except ImportError:  # reported to the client, which needs dill, at connect
            log.warning("cannot import %s: IMap clients will refuse this server", module)


def _setup_logging(quiet: bool, logfile: str | None) -> None:
    handler = logging.FileHandler(logfile) if logfile else logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(process)d %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.WARNING if quiet else logging.INFO)


def main(argv: list[str] | None = None) -> int:
    """Run the server until SIGTERM, SIGINT or SIGHUP; return the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    authenticator = _check_args(parser, args)
    if authenticator is None and not args.insecure and not _is_loopback(args.host):
        print(_INSECURE.format(host=args.host), file=sys.stderr)
        return 2
    _setup_logging(args.quiet, args.logfile)
    _preload()
    factory = _Forking if args.mode == "forking" else _Threaded
    try:
        server = factory(SlaveService, hostname=args.host, port=args.port,
                         ipv6=":" in args.host, authenticator=authenticator, logger=log,
                         auto_register=False)
        server._listen()                  # bound and listening: connections are accepted now
    except OSError as exc:
        print(f"imap-server: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1

    def stop(signum: int, frame: FrameType | None) -> None:
        server.active = False
        try:
            server.listener.shutdown(socket.SHUT_RDWR)   # wakes the accept loop at once
        except OSError:
            pass

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):   # SIGHUP: ssh hang-up
        signal.signal(signum, stop)
    host = f"[{server.host}]" if ":" in server.host else server.host
    print(f"listening on {host}:{server.port}", flush=True)
    log.info("serving IMap workers in %s mode on %s:%s%s", args.mode, host, server.port,
             " with mutual TLS" if authenticator else "")
    try:
        # our own accept loop, not server.start(): start() would call _listen() again,
        # which sets ``active`` back to True and loses a SIGTERM that came before it
        while server.active:
            server.accept()
    except EOFError:
        pass                              # the listener was shut down by stop()
    finally:
        server.close()
        if isinstance(server, _Forking):
            server.stop_children()
        log.info("stopped")
    if any(not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        # threaded mode: a client started a thread that would keep the process alive
        log.warning("exiting with client threads still running")
        logging.shutdown()
        os._exit(0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
