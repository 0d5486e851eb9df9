"""The views of a progress display: how the progress thread shows the figures.

``make_view(mode, stream, outputs, totals)`` gives the view of a ``papy._progress.Progress``:
``_LogLines`` (mode 'log': a timestamped line per output Piper), ``_TqdmBars`` (mode 'bar'
with tqdm installed: a bar per output Piper) or ``_TerminalBars`` (mode 'bar' without tqdm:
a block of lines redrawn in place with ANSI escapes). A view is called from the progress
thread only: ``update(rows, final)`` at every interval and once more at ``stop()``, then
``close()``.
"""
from __future__ import annotations

import importlib
import shutil
import time
from typing import IO, TYPE_CHECKING, Any, Callable, Protocol, TypeAlias

if TYPE_CHECKING:
    from ._piper import Piper
    from ._progress import PiperFigures

__all__ = ["View", "Rows", "make_view"]


def _describe(f: PiperFigures, elapsed: float) -> str:
    rate = f.items_out / elapsed if elapsed > 0 else 0.0
    text = f"{f.items_out} out ({rate:.1f}/s overall), {f.items_in} in, {f.errors} errors"
    if f.time_waiting is not None:
        text += f", waited {f.time_waiting:.1f} s"
    if f.buffer_used is not None and f.buffer_size:
        text += f", buffer {f.buffer_used}/{f.buffer_size}"
    return text


#: what a view is given at each update: the figures of its Pipers and the seconds elapsed
Rows: TypeAlias = "tuple[list[PiperFigures], float]"


class View(Protocol):
    """How the progress thread shows figures (_LogLines, _TerminalBars, _TqdmBars)."""

    pipers: list[Piper]

    def update(self, rows: Rows, final: bool) -> None: ...

    def close(self) -> None: ...


def make_view(mode: str, stream: IO[str], outputs: list[Piper], totals: dict[Piper, int]
              ) -> View:
    if mode == "log":
        return _LogLines(stream, outputs)
    try:
        # optional, not a dependency (and untyped: its attributes are Any)
        tqdm = importlib.import_module("tqdm")
    except ImportError:
        return _TerminalBars(stream, outputs, totals)
    return _TqdmBars(tqdm.tqdm, stream, outputs, totals)


class _LogLines:
    """mode 'log': one timestamped line per output Piper per update, with the rate since
    the previous line."""

    def __init__(self, stream: IO[str], pipers: list[Piper]):
        self.stream, self.pipers = stream, pipers
        self._last = (0.0, [0] * len(pipers))

    def update(self, rows: Rows, final: bool) -> None:
        items, elapsed = rows
        stamp = time.strftime("%H:%M:%S")
        word = "done" if final else "progress"
        before, counts = self._last
        span = elapsed - before
        for f, count in zip(items, counts, strict=True):
            recent = (f.items_out - count) / span if span > 0 else 0.0
            self.stream.write(f"{stamp} papy {word}: {f.name}: {_describe(f, elapsed)}; "
                              f"{recent:.1f}/s lately\n")
        self.stream.flush()
        self._last = (elapsed, [f.items_out for f in items])

    def close(self) -> None:
        pass


class _TerminalBars:
    """mode 'bar' without tqdm: a line with a bar per output Piper, the block redrawn in
    place with ANSI escapes (cursor up N lines, clear each line)."""

    NAME_WIDTH = 16

    def __init__(self, stream: IO[str], pipers: list[Piper], totals: dict[Piper, int]):
        self.stream, self.pipers, self.totals = stream, pipers, totals
        self._drawn = 0                 # lines of the block on the screen

    def update(self, rows: Rows, final: bool) -> None:
        items, elapsed = rows
        width = shutil.get_terminal_size((100, 20)).columns - 1
        lines = [self._line(piper, f, elapsed, width) for piper, f in
                 zip(self.pipers, items, strict=True)]
        up = f"\x1b[{self._drawn}F" if self._drawn else ""
        self.stream.write(up + "".join(f"\x1b[2K{line}\n" for line in lines))
        self.stream.flush()
        self._drawn = len(lines)

    def _line(self, piper: Piper, f: PiperFigures, elapsed: float, width: int) -> str:
        total = self.totals.get(piper)
        rate = f.items_out / elapsed if elapsed > 0 else 0.0
        head = f"{f.name[:self.NAME_WIDTH]:<{self.NAME_WIDTH}} "
        count = f"{f.items_out}/{total}" if total else f"{f.items_out}"
        tail = f" {count} items, {rate:.0f}/s, {f.errors} errors"
        if total:
            room = max(10, width - len(head) - len(tail) - 2)
            done = min(room, room * f.items_out // total)
            head += "[" + "#" * done + "." * (room - done) + "]"
        return (head + tail)[:width]

    def close(self) -> None:
        pass                            # the block ends with a newline already


class _TqdmBars:
    """mode 'bar' with tqdm: one bar per output Piper."""

    def __init__(self, make_bar: Callable[..., Any], stream: IO[str], pipers: list[Piper],
                 totals: dict[Piper, int]):
        self.pipers = pipers
        self.bars = [make_bar(total=totals.get(p), desc=p.name, unit="item", position=k,
                              leave=True, file=stream, dynamic_ncols=True)
                     for k, p in enumerate(pipers)]

    def update(self, rows: Rows, final: bool) -> None:
        items, _ = rows
        for bar, f in zip(self.bars, items, strict=True):
            bar.n = f.items_out
            bar.set_postfix_str(f"{f.errors} errors", refresh=False)
            bar.refresh()

    def close(self) -> None:
        for bar in self.bars:
            bar.close()
