"""Ready-made worker functions, one theme per module.

    core       passers, zippers, joiners (plumbing between Pipers)
    maths      wrappers of operator and math (unary, binary with a constant, binary joins)
    io         printing, reading files (tail -f), streams, serialisers, moving items aside
    streams    delimited and pickle streams, pickle/json (also reachable through io)
    transfer   dump_item/load_item through a file, FIFO, TCP socket or shared memory
    script     external programs as workers

Every function follows the inbox convention: the item is ``inbox[0]``.
"""
from . import core, io, maths, script, streams, transfer

__all__ = ["core", "io", "maths", "script", "streams", "transfer"]
