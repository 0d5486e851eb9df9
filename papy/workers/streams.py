"""Streams and serialisers: write items to an open file, read them back, (de)serialise.

Worker functions (inbox convention, the item is ``inbox[0]``):

- ``dump_stream(inbox, handle, delimiter=None)``: write a text (or bytes) item followed by a
  delimiter line; ``dump_pickle_stream(inbox, handle)``: write a pickle;
- ``pickle_dumps`` / ``pickle_loads``, ``json_dumps`` / ``json_loads``.

Input generators (give them to ``plumber.start``/``set_inputs``, not to a Piper):
``load_stream(handle, delimiter=None)`` and ``load_pickle_stream(handle)``.

An open file cannot be sent to another process: use the dumps in linear Pipers (no
``parallel=``) and the loads as inputs. The delimited stream format is::

    <item text>\\n<delimiter>\\n        for every item

where a line of the item that equals the delimiter, or the delimiter preceded by
backslashes, is written with one more backslash in front (and read back without it). So
any item survives the round trip: blank lines, delimiter-like lines, a trailing newline.
"""
from __future__ import annotations

import json
import pickle
from typing import IO, Any, Iterator

from imap import imports

__all__ = ["DEFAULT_DELIMITER", "dump_stream", "load_stream", "dump_pickle_stream",
           "load_pickle_stream", "pickle_dumps", "pickle_loads", "json_dumps", "json_loads"]

#: the delimiter line used when ``delimiter`` is None
DEFAULT_DELIMITER = "%%"


def dump_stream(inbox, handle: IO, delimiter: str | None = None) -> None:
    """Write the item (``str`` to a text handle, ``bytes`` to a binary one) and a
    delimiter line to ``handle``; read the items back with :func:`load_stream`.

    >>> import io
    >>> out = io.StringIO()
    >>> dump_stream(['first\\n\\nparagraph'], out); dump_stream(['second'], out)
    >>> list(load_stream(io.StringIO(out.getvalue())))
    ['first\\n\\nparagraph', 'second']
    """
    item = inbox[0]
    if not isinstance(item, (str, bytes, bytearray)):
        raise TypeError(f"dump_stream writes str or bytes items, not {type(item).__name__}; "
                        f"serialise it first (json_dumps, pickle_dumps) or use "
                        f"dump_pickle_stream")
    binary = not isinstance(item, str)
    separator = _delimiter(delimiter, binary)
    newline = b"\n" if binary else "\n"
    lines = item.split(newline)
    handle.write(newline.join(_escape(line, separator, binary) for line in lines)
                 + newline + separator + newline)


def load_stream(handle: IO, delimiter: str | None = None) -> Iterator:
    """Yield the items that :func:`dump_stream` wrote with the same ``delimiter``
    (``str`` from a text handle, ``bytes`` from a binary one).

    Text written but not followed by a delimiter line (a stream cut short) is yielded
    as a last item.

    >>> import io
    >>> list(load_stream(io.StringIO('one\\n%%\\ntwo\\n\\nlines\\n%%\\n')))
    ['one', 'two\\n\\nlines']
    """
    lines: list = []
    separator = newline = None
    for line in iter(handle.readline, handle.read(0)):
        if separator is None:
            binary = isinstance(line, bytes)
            separator, newline = _delimiter(delimiter, binary), (b"\n" if binary else "\n")
        body, ending = (line[:-1], newline) if line.endswith(newline) else (line, line[:0])
        if body == separator:
            yield newline[:0].join(lines)[:-1]
            lines = []
        else:
            lines.append(_unescape(body, separator) + ending)
    if lines:  # a stream cut short: the last item, without the newline dump_stream adds
        last = newline[:0].join(lines)
        yield last[:-1] if last.endswith(newline) else last


@imports(["pickle"])
def dump_pickle_stream(inbox, handle: IO) -> None:
    """Write the item as a pickle (highest protocol) to a binary ``handle`` and flush;
    read the items back with :func:`load_pickle_stream`.

    >>> import io
    >>> out = io.BytesIO()
    >>> for item in ({'a': 1}, [2, 3]): dump_pickle_stream([item], out)
    >>> list(load_pickle_stream(io.BytesIO(out.getvalue())))
    [{'a': 1}, [2, 3]]
    """
    pickle.dump(inbox[0], handle, pickle.HIGHEST_PROTOCOL)
    handle.flush()


@imports(["pickle"])
def load_pickle_stream(handle: IO) -> Iterator:
    """Yield the objects pickled back to back in a binary ``handle``, up to its end.

    Only load pickles you trust: unpickling runs code.

    >>> import io
    >>> list(load_pickle_stream(io.BytesIO(pickle.dumps(1) + pickle.dumps('a'))))
    [1, 'a']
    """
    while True:
        try:
            yield pickle.load(handle)
        except EOFError:
            return


@imports(["pickle"])
def pickle_dumps(inbox, protocol: int = pickle.HIGHEST_PROTOCOL) -> bytes:
    """Return the item pickled (highest protocol by default).

    >>> pickle_loads([pickle_dumps([{'a': 1}])])
    {'a': 1}
    """
    return pickle.dumps(inbox[0], protocol)


@imports(["pickle"])
def pickle_loads(inbox) -> Any:
    """Return the object pickled in the item (``bytes``); only load pickles you trust.

    >>> pickle_loads([pickle_dumps([(1, 'a')])])
    (1, 'a')
    """
    return pickle.loads(inbox[0])


@imports(["json"])
def json_dumps(inbox, **kwargs) -> str:
    """Return the item as a JSON string; ``kwargs`` go to ``json.dumps`` (e.g. ``indent``).

    >>> json_dumps([{'a': [1, 2]}])
    '{"a": [1, 2]}'
    """
    return json.dumps(inbox[0], **kwargs)


@imports(["json"])
def json_loads(inbox, **kwargs) -> Any:
    """Return the object of the JSON text in the item; ``kwargs`` go to ``json.loads``.

    >>> json_loads(['{"a": [1, 2]}'])
    {'a': [1, 2]}
    """
    return json.loads(inbox[0], **kwargs)


# -- the delimited format ---------------------------------------------------------------

def _delimiter(delimiter: str | bytes | None, binary: bool):
    delimiter = DEFAULT_DELIMITER if delimiter is None else delimiter
    if isinstance(delimiter, str) and binary:
        delimiter = delimiter.encode()
    elif isinstance(delimiter, bytes) and not binary:
        delimiter = delimiter.decode()
    if ("\n" if not binary else b"\n") in delimiter or \
            ("\r" if not binary else b"\r") in delimiter:
        raise ValueError(f"a stream delimiter is one line without line breaks, "
                         f"not {delimiter!r}")
    if delimiter.startswith(b"\\" if binary else "\\"):
        raise ValueError(f"a stream delimiter cannot start with a backslash (the escape "
                         f"character of the format), as {delimiter!r} does")
    return delimiter


def _escape(line, separator, binary: bool):
    """A line that reads as the separator gets one more backslash in front."""
    backslash = b"\\" if binary else "\\"
    return backslash + line if line.lstrip(backslash) == separator else line


def _unescape(body, separator):
    backslash = b"\\" if isinstance(body, bytes) else "\\"
    if body.startswith(backslash) and body.lstrip(backslash) == separator:
        return body[1:]
    return body
