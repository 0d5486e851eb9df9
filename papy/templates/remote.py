"""The same pipeline on the local pool or on remote workers (RPyC servers given as host:port).

    numbers --> [work] on an IMap: local processes, or remote slots, or both --> [tally]
                   returns (item, result, host, pid)                               linear

``work`` does some arithmetic and says where it ran (host name and process id, like the
original PaPy's ``hid`` example); ``tally`` prints one line per item and counts the items
per host and process. Only the IMap changes between a local and a remote run.

    python -m papy run papy/templates/remote.py                         # local processes
    python -m papy serve --port 18812 &                            # a server (this host)
    python -m papy run papy/templates/remote.py --remote 127.0.0.1:18812 --per-host 2
    python -m papy run papy/templates/remote.py --remote node1:18812 --remote node2:18812 --local 2

Remote hosts need the same Python minor version and the same rpyc and dill versions, and this
package for papy pipelines (docs/remote.md). A classic RPyC server runs any code its clients
send: keep servers on loopback behind SSH tunnels, or use mutual TLS (--tls-* options).
"""
from __future__ import annotations

import argparse
import collections
import os
import socket
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from papy import (
    IMap, Piper, Plumber, Worker, add_run_options, imports, run_options, run_plumber)

Where = tuple[int, int, str, int]      # (item, result, host name, process id)

# -- 1. the functions (inbox convention) ------------------------------------------------


@imports(["os", "socket"])  # what a worker on another host must import
def work(inbox: Sequence[int], rounds: int = 2000) -> Where:
    """An item -> (item, a checksum of some arithmetic on it, host name, process id)."""
    item = inbox[0]
    value = item
    for k in range(rounds):
        value = (value * 1103515245 + 12345 + k) % 2147483648
    return item, value, socket.gethostname(), os.getpid()


def tally(inbox: Sequence[Where], counts: collections.Counter[str], out: TextIO) -> Where:
    """The output Piper (runs here): print the item's line and count it per host:pid."""
    item, value, host, pid = inbox[0]
    counts[f"{host}:{pid}"] += 1
    out.write(f"item {item:>4} -> {value:>10} on host {host}, process {pid}\n")
    out.flush()
    return inbox[0]


# -- 2. the pipeline ---------------------------------------------------------------------


def pipeline(imap: IMap[Any] | None = None, counts: collections.Counter[str] | None = None,
             out: TextIO | None = None) -> Plumber:
    """``work`` on ``imap`` (default: local processes), ``tally`` here into ``counts``."""
    imap = imap if imap is not None else IMap(worker_type="process")
    counts = counts if counts is not None else collections.Counter()
    out = out if out is not None else sys.stdout
    worker = Piper(work, parallel=imap, name="work")
    printer = Piper(Worker(tally, (counts, out)), name="tally")
    plumber = Plumber()
    plumber.add_pipe((worker, printer))
    return plumber


def make_imap(remote: Sequence[str] = (), per_host: int = 2, local: int | None = None,
              tls: dict[str, str] | None = None, timeout: float | None = None) -> IMap[Any]:
    """Local processes only (no ``remote``), or ``per_host`` slots on each ``host:port`` of
    ``remote`` plus ``local`` local processes (default 0 when remote hosts are given)."""
    if not remote:
        return IMap(worker_type="process", worker_num=local)
    return IMap(worker_type="process", worker_num=local or 0,
                worker_remote=[(address, per_host) for address in remote],
                remote_tls=tls, remote_timeout=timeout)


# -- 3. options, run ---------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="remote", description="Run one pipeline on local worker processes or on remote "
        "RPyC servers (python -m papy serve on each host), and show where each item ran.")
    parser.add_argument("--items", type=int, default=20, help="how many items (default 20)")
    parser.add_argument("--remote", action="append", default=[], metavar="HOST:PORT",
                        help="a remote server; repeat for several hosts")
    parser.add_argument("--per-host", type=int, default=2, metavar="N",
                        help="worker slots on each remote host (default 2)")
    parser.add_argument("--local", type=int, default=None, metavar="N",
                        help="local worker processes (default: one per CPU without --remote, "
                             "none with it)")
    parser.add_argument("--remote-timeout", type=float, default=None, metavar="SECONDS",
                        help="silence after which a remote worker counts as lost (default 30)")
    parser.add_argument("--tls-keyfile", help="this client's key (mutual TLS)")
    parser.add_argument("--tls-certfile", help="this client's certificate")
    parser.add_argument("--tls-cafile", help="the CA that signed the servers' certificates")
    return add_run_options(parser, progress="log").parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    tls_files = (args.tls_keyfile, args.tls_certfile, args.tls_cafile)
    if any(tls_files) and not all(tls_files):
        print("remote: mutual TLS needs --tls-keyfile, --tls-certfile and --tls-cafile",
              file=sys.stderr)
        return 2
    tls = dict(zip(("keyfile", "certfile", "cafile"), tls_files, strict=True)) \
        if all(tls_files) else None
    try:
        imap = make_imap(args.remote, args.per_host, args.local, tls, args.remote_timeout)
    except ValueError as exc:
        print(f"remote: {exc}", file=sys.stderr)
        return 2
    counts: collections.Counter[str] = collections.Counter()
    where = ", ".join(args.remote) if args.remote else "local processes"
    print(f"running {args.items} items on {where}", file=sys.stderr)
    status = run_plumber(pipeline(imap, counts), [range(args.items)], **run_options(args))
    for worker, count in sorted(counts.items()):
        print(f"{worker}: {count} items")
    return status


if __name__ == "__main__":
    sys.exit(main())
