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
from collections.abc import Iterator, Sequence
from typing import IO, Any, AnyStr

from imap import imports

__all__ = ["DEFAULT_DELIMITER", "dump_stream", "load_stream", "dump_pickle_stream",
           "load_pickle_stream", "pickle_dumps", "pickle_loads", "json_dumps", "json_loads"]

#: the delimiter line used when ``delimiter`` is None
DEFAULT_DELIMITER = "%%"


def dump_stream(inbox: Sequence[Any], handle: IO[Any],
                delimiter: str | bytes | None = None) -> None:
    """Write the item (``str`` to a text handle, ``bytes`` to a binary one) and a
    delimiter line to ``handle``; read the items back with :func:`load_stream`.

    >>> import io
    >>> out = io.StringIO()
    >>> dump_stream(['first\\n\\nparagraph'], out); dump_stream(['second'], out)
    >>> list(load_stream(io.StringIO(out.getvalue())))
    ['first\\n\\nparagraph', 'second']
    """
    item = inbox[0]
    if isinstance(item, str):
        handle.write(_dumped(item, _delimiter(delimiter, "\n"), "\n"))
    elif isinstance(item, (bytes, bytearray)):
        handle.write(_dumped(bytes(item), _delimiter(delimiter, b"\n"), b"\n"))
    else:
        raise TypeError(f"dump_stream writes str or bytes items, not {type(item).__name__}; "
                        f"serialise it first (json_dumps, pickle_dumps) or use "
                        f"dump_pickle_stream")


def load_stream(handle: IO[AnyStr], delimiter: str | bytes | None = None
                ) -> Iterator[AnyStr]:
    """Yield the items that :func:`dump_stream` wrote with the same ``delimiter``
    (``str`` from a text handle, ``bytes`` from a binary one).

    Text written but not followed by a delimiter line (a stream cut short) is yielded
    as a last item.

    >>> import io
    >>> list(load_stream(io.StringIO('one\\n%%\\ntwo\\n\\nlines\\n%%\\n')))
    ['one', 'two\\n\\nlines']
    """
    empty = handle.read(0)
    newline = _newline(empty)
    separator = _delimiter(delimiter, newline)
    lines: list[AnyStr] = []
    for line in iter(handle.readline, empty):
        body, ending = (line[:-1], newline) if line.endswith(newline) else (line, empty)
        if body == separator:
            yield empty.join(lines)[:-1]
            lines = []
        else:
            lines.append(_unescape(body, separator) + ending)
    if lines:  # a stream cut short: the last item, without the newline dump_stream adds
        last = empty.join(lines)
        yield last[:-1] if last.endswith(newline) else last


@imports(["pickle"])
def dump_pickle_stream(inbox: Sequence[Any], handle: IO[bytes]) -> None:
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
def load_pickle_stream(handle: IO[bytes]) -> Iterator[Any]:
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
def pickle_dumps(inbox: Sequence[Any], protocol: int = pickle.HIGHEST_PROTOCOL) -> bytes:
    """Return the item pickled (highest protocol by default).

    >>> pickle_loads([pickle_dumps([{'a': 1}])])
    {'a': 1}
    """
    return pickle.dumps(inbox[0], protocol)


@imports(["pickle"])
def pickle_loads(inbox: Sequence[bytes]) -> Any:
    """Return the object pickled in the item (``bytes``); only load pickles you trust.

    >>> pickle_loads([pickle_dumps([(1, 'a')])])
    (1, 'a')
    """
    return pickle.loads(inbox[0])


@imports(["json"])
def json_dumps(inbox: Sequence[Any], **kwargs: Any) -> str:
    """Return the item as a JSON string; ``kwargs`` go to ``json.dumps`` (e.g. ``indent``).

    >>> json_dumps([{'a': [1, 2]}])
    '{"a": [1, 2]}'
    """
    return json.dumps(inbox[0], **kwargs)


@imports(["json"])
def json_loads(inbox: Sequence[str | bytes], **kwargs: Any) -> Any:
    """Return the object of the JSON text in the item; ``kwargs`` go to ``json.loads``.

    >>> json_loads(['{"a": [1, 2]}'])
    {'a': [1, 2]}
    """
    return json.loads(inbox[0], **kwargs)


# -- the delimited format ---------------------------------------------------------------

def _newline(empty: AnyStr) -> AnyStr:
    """The newline of the handle whose ``read(0)`` gave ``empty``."""
    if isinstance(empty, bytes):
        return b"\n"
    return "\n"


def _delimiter(delimiter: str | bytes | None, newline: AnyStr) -> AnyStr:
    """The delimiter line (without its newline) as ``str`` or ``bytes``, like ``newline``."""
    given = DEFAULT_DELIMITER if delimiter is None else delimiter
    value: AnyStr
    if isinstance(newline, bytes):
        value = given.encode() if isinstance(given, str) else given
        breaks, backslash = (b"\n", b"\r"), b"\\"
    else:
        value = given.decode() if isinstance(given, bytes) else given
        breaks, backslash = ("\n", "\r"), "\\"
    if any(line_break in value for line_break in breaks):
        raise ValueError(f"a stream delimiter is one line without line breaks, "
                         f"not {value!r}")
    if value.startswith(backslash):
        raise ValueError(f"a stream delimiter cannot start with a backslash (the escape "
                         f"character of the format), as {value!r} does")
    return value


def _dumped(item: AnyStr, separator: AnyStr, newline: AnyStr) -> AnyStr:
    """The item as it is written: its lines (escaped), then the separator line."""
    lines = item.split(newline)
    return newline.join(_escape(line, separator) for line in lines) + newline + separator \
        + newline


def _backslash(text: AnyStr) -> AnyStr:
    if isinstance(text, bytes):
        return b"\\"
    return "\\"


def _escape(line: AnyStr, separator: AnyStr) -> AnyStr:
    """A line that reads as the separator gets one more backslash in front."""
    backslash = _backslash(line)
    return backslash + line if line.lstrip(backslash) == separator else line


def _unescape(body: AnyStr, separator: AnyStr) -> AnyStr:
    backslash = _backslash(body)
    if body.startswith(backslash) and body.lstrip(backslash) == separator:
        return body[1:]
    return body
