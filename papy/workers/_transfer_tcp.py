"""The tcp place of papy.workers.transfer: a socket that serves one item to one loader.

    dumping process                                    loading process (any host that
    a socket listening on ``host`` (loopback by        can reach the address)
    default) and a server thread, until the deadline   connect, send the token, read up
    the first peer with the token gets the item        to the end

The server thread owns the listener: it closes it as soon as a peer presented the token
(nobody else can connect then), or when the deadline passes (the item is gone). The token
is compared in constant time; a peer without it is refused and logged.
"""
from __future__ import annotations

import hmac
import logging
import secrets
import socket
import threading
import time

from ._transfer_item import (CHUNK, LOAD_TIMEOUT, ItemRef, Payload, TransferError, address_of,
                             gone)

__all__ = ["dump_tcp", "load_tcp", "HANDSHAKE_SECONDS"]

log = logging.getLogger(__name__)

HANDSHAKE_SECONDS = 10.0       #: a tcp loader must send its token within this time


def dump_tcp(payload: Payload, deadline: float | None, host: str
             ) -> tuple[tuple[str, int], str]:
    """Listen on ``host`` and serve ``payload`` once; ((host, port), token) for the ref."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.create_server((host, 0), family=family)
    token = secrets.token_hex(16)
    port: int = listener.getsockname()[1]
    advertised = socket.gethostname() if host in ("", "0.0.0.0", "::") else host
    server = _TcpServer(listener, token.encode(), bytes(payload), deadline)
    try:
        threading.Thread(target=server.serve, name=f"papy-item-tcp-{port}", daemon=True).start()
    except BaseException:
        listener.close()
        raise
    return (advertised, port), token


class _TcpServer:
    """Serves one item to the first connection that presents the token, until a deadline."""

    def __init__(self, listener: socket.socket, token: bytes, payload: bytes,
                 deadline: float | None) -> None:
        self.listener, self.token, self.deadline = listener, token, deadline
        self.payload: bytes | None = payload

    def serve(self) -> None:
        """The server thread: accept until the item is taken or the deadline passes."""
        try:
            while True:
                remaining = None if self.deadline is None else self.deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return  # expired: nobody came
                self.listener.settimeout(remaining)
                try:
                    connection, peer = self.listener.accept()
                except TimeoutError:
                    continue
                with connection:
                    if self._send(connection, peer):
                        return
        finally:
            self.listener.close()
            self.payload = None

    def _send(self, connection: socket.socket, peer: object) -> bool:
        """Send the item if the peer knows the token; True when the item is gone."""
        connection.settimeout(HANDSHAKE_SECONDS)
        try:
            token = _receive(connection, len(self.token))
        except OSError:
            token = b""
        if not hmac.compare_digest(token, self.token):
            log.warning("tcp item: refused a connection from %s (wrong token)", peer)
            return False
        self.listener.close()  # taken: closed before the loader can see the end of it
        connection.settimeout(LOAD_TIMEOUT)
        try:
            view = memoryview(self.payload or b"").cast("B")
            for start in range(0, len(view), CHUNK):
                connection.sendall(view[start:start + CHUNK])
            connection.shutdown(socket.SHUT_WR)
        except OSError as exc:
            log.warning("tcp item: sending to %s failed (%s)", peer, exc)
        return True


def _receive(connection: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = connection.recv(count - len(data))
        if not chunk:
            break
        data += chunk
    return data


def load_tcp(ref: ItemRef, timeout: float | None) -> bytearray:
    address = address_of(ref)
    try:
        connection = socket.create_connection(address, timeout=timeout)
    except ConnectionRefusedError:
        raise gone(ref, "nobody listens there") from None
    with connection:
        connection.sendall(ref.token.encode())
        data, got = bytearray(ref.size), 0
        view = memoryview(data)
        try:
            while got < ref.size:
                count = connection.recv_into(view[got:])
                if not count:
                    break
                got += count
            more = connection.recv(1)
        except TimeoutError:
            raise TransferError(f"tcp item {address!r}: no data for {timeout} s after "
                                f"{got} of {ref.size} bytes") from None
    if got != ref.size or more:
        raise gone(ref, f"{got}{'+' if more else ''} of {ref.size} bytes came through")
    return data
