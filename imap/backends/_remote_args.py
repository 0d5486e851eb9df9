"""Where and how a RemoteHandle connects: ``worker_remote``, ``remote_tls`` and the socket.

    worker_remote --parse_worker_remote--> [(host, port, n), ...] --> one RemoteHandle per slot
    remote_tls    --_check_tls-----------> dict(keyfile=, certfile=, cafile=) or None
    RemoteHandle.open --_open_stream(host, port, tls, timeout)--> _Stream (TCP, or mutual TLS)

Validation happens once, up front, with a TypeError or ValueError saying what is allowed.
The stream is only ever read by the handle's slot thread (see ``remote.py``); nothing here
keeps state.
"""
from __future__ import annotations

import errno
import ipaddress
import os
import socket
from typing import TYPE_CHECKING

from rpyc.core.stream import SocketStream

if TYPE_CHECKING:
    import ssl

#: the port of ``rpyc_classic`` and of ``python -m imap.server``
DEFAULT_PORT = 18812

_ALLOWED = ("worker_remote takes a list of [host, n] or (host, n) pairs: host is 'name' or "
            f"'name:port' (default port {DEFAULT_PORT}; IPv6 as '[addr]:port') and n, the number "
            "of workers on that host, is a positive int; e.g. [('node1', 4), ('node2:18813', 2)]")
_TLS_KEYS = ("keyfile", "certfile", "cafile")


# -- arguments --------------------------------------------------------------------------

def parse_worker_remote(worker_remote: object) -> list[tuple[str, int, int]]:
    """Validate ``worker_remote``; return ``[(host, port, n), ...]``.

    >>> parse_worker_remote([('node1', 4), ['node2:18813', 2]])
    [('node1', 18812, 4), ('node2', 18813, 2)]

    Raises TypeError for a value of the wrong type and ValueError for a bad value, with a
    message saying what is allowed.
    """
    if worker_remote is None:
        return []
    if isinstance(worker_remote, (str, bytes, dict)) or not isinstance(worker_remote,
                                                                          (list, tuple)):
        raise TypeError(f"{_ALLOWED}; got {worker_remote!r}")
    specs: list[tuple[str, int, int]] = []
    for entry in worker_remote:
        if not isinstance(entry, (list, tuple)) or len(entry) != 2:
            raise TypeError(f"{_ALLOWED}; got the entry {entry!r}")
        address, count = entry
        if not isinstance(address, str):
            raise TypeError(f"{_ALLOWED}; got the host {address!r}")
        if isinstance(count, bool) or not isinstance(count, int):
            raise TypeError(f"{_ALLOWED}; got n = {count!r} for {address!r}")
        if count < 1:
            raise ValueError(f"{_ALLOWED}; got n = {count} for {address!r}")
        host, port = _split_address(address)
        specs.append((host, port, count))
    return specs


def _split_address(address: str) -> tuple[str, int]:
    text = address.strip()
    host, port_text = text, None
    if text.startswith("["):                      # [IPv6] or [IPv6]:port
        end = text.find("]")
        host, rest = text[1:end], text[end + 1:]
        if end < 0 or (rest and not rest.startswith(":")):
            raise ValueError(f"{_ALLOWED}; got the host {address!r}")
        port_text = rest[1:] if rest else None
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    elif text.count(":") > 1:                     # a bare IPv6 address
        _check_ipv6(text, address)
    if not host or any(c.isspace() for c in host) or "/" in host:
        raise ValueError(f"{_ALLOWED}; got the host {address!r}")
    if port_text is None:
        return host, DEFAULT_PORT
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"{_ALLOWED}; the port must be 1..65535, got {address!r}")
    return host, int(port_text)


def _check_ipv6(text: str, address: str) -> None:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        raise ValueError(f"{_ALLOWED}; got the host {address!r}") from None


def _check_tls(tls: object) -> dict[str, str] | None:
    if tls is None:
        return None
    if not isinstance(tls, dict):
        raise TypeError(f"remote_tls must be None or a dict(keyfile=..., certfile=..., "
                        f"cafile=...) for mutual TLS, not {type(tls).__name__}")
    unknown = sorted(set(tls) - set(_TLS_KEYS))
    missing = [key for key in _TLS_KEYS if not tls.get(key)]
    if unknown or missing:
        raise ValueError(f"remote_tls takes exactly keyfile (this client's private key), "
                         f"certfile (its certificate) and cafile (the CA that signed the "
                         f"servers' certificates); unknown: {unknown}, missing: {missing}")
    for key in _TLS_KEYS:
        if not os.path.isfile(tls[key]):
            raise ValueError(f"remote_tls[{key!r}]: no such file {tls[key]!r}")
    return {key: os.fspath(tls[key]) for key in _TLS_KEYS}


# -- the socket --------------------------------------------------------------------------

class _Stream(SocketStream):  # type: ignore[misc]  # rpyc ships no types: SocketStream is Any
    """rpyc's SocketStream, but a stall inside a message is an error, not an endless wait.

    The socket's timeout is the handle's timeout: a message that stops arriving halfway
    (a server stopped mid-reply) ends as EOFError. ``write`` slices a memoryview instead
    of copying the rest of the buffer for every 64 KB chunk.
    """

    __slots__ = ()

    def read(self, count: int) -> bytes:
        data: list[bytes] = []
        while count > 0:
            try:
                buf = self.sock.recv(min(self.MAX_IO_CHUNK, count))
            except socket.timeout as exc:
                self.close()
                raise EOFError("the server stopped sending in the middle of a message") from exc
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR):
                    continue
                self.close()
                raise EOFError(exc) from exc
            if not buf:
                self.close()
                raise EOFError("connection closed by peer")
            data.append(buf)
            count -= len(buf)
        return b"".join(data)

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        try:
            while view:
                view = view[self.sock.send(view[:self.MAX_IO_CHUNK]):]
        except OSError as exc:
            self.close()
            raise EOFError(exc) from exc


def _open_stream(host: str, port: int, tls: dict[str, str] | None, timeout: float
                 ) -> _Stream:
    """Connect (and do the TLS handshake) within ``timeout``; the socket is closed on error.

    rpyc's own connect leaks the socket when the connection is refused, and its factories
    give no way to turn compression off or to bound the connect time.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    address = socket.getaddrinfo(host, port, family, socket.SOCK_STREAM)[0][-1]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.connect(address)
        if tls is not None:
            try:
                sock = _tls_context(tls).wrap_socket(sock, server_hostname=host)
            except OSError as exc:
                raise _HandshakeFailedError(exc) from exc
        return _Stream(sock)
    except BaseException:
        sock.close()
        raise


class _HandshakeFailedError(Exception):
    pass


def _tls_context(tls: dict[str, str]) -> ssl.SSLContext:
    """Client side of mutual TLS: show our certificate, require one signed by the CA.

    Only the chain is checked, not the host name: any certificate of the private CA is
    accepted (so use a CA dedicated to one cluster).
    """
    import ssl
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=tls["cafile"])
    context.check_hostname = False
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_cert_chain(tls["certfile"], keyfile=tls["keyfile"])
    return context


def _tls_hint(tls: dict[str, str] | None) -> str:
    if tls is None:
        return ("; if the server uses TLS (--ssl-cafile), give remote_tls=dict(keyfile=, "
                "certfile=, cafile=); a server of another rpyc major version also fails here")
    return ("; check remote_tls: remote_tls['certfile'] must be signed by the CA the server "
            "trusts (its --ssl-cafile)")
