"""The iterators a Piper is made of, from its inputs to its output.

    upstream Pipers' Branches, Feeds        (one per input, in join order)
            |
        inboxes()      strict zip: one inbox [x0, x1, ...] per item; inputs of different
            |          lengths are a failure of the run, missing items errors in place
        consume()      n inboxes per evaluation, stride-interleaved
            |
        TaskInput      what an IMap's feeder thread pulls (``__imap_chained__`` when it reads
            |          results of the same IMap); linear Pipers use ``map`` in the caller
        spawn tasks    the Worker added ``spawn`` times, all pulling the same TaskInput;
            |          read_task() reads each (a timeout or an imap error: an error in place)
        round_robin()  ``stride`` results from each spawned task in turn (restores order)
            |
        Settled        errors wrapped, timing, tracking, counters (papy._settle)
            |
        produce()      n items per result, stride-interleaved (or the result n times)
            |
        PassThrough    the only downstream reader iterates the output stream itself
        or Tee         one Branch per downstream Piper, thread-safe

Who reads what: a Piper's streams are pulled by exactly one thread at a time (the IMap feeder
of the downstream Piper, or the thread reading a linear Piper); the Tee lets several readers
in different threads share one stream. It never holds its lock while pulling the source, so a
reader blocked on a slow upstream does not block a reader with buffered items (a feeder of a
shared IMap may be that second reader). Tee buffers are not bounded by the Tee: each is
bounded by how far its reader can run ahead, i.e. by the downstream IMap buffers.
"""
from __future__ import annotations

import collections
import functools
import itertools
import logging
import threading
from dataclasses import dataclass, field
from typing import Callable, Iterator

from imap import IMapError

from ._errors import PiperError
from ._runtime import Feed

log = logging.getLogger("papy")

__all__ = ["PiperCounters", "ReaderCounters", "inboxes", "fast_inboxes", "consume", "produce", "round_robin", "read_task",
           "read_error", "READ_ERRORS",
           "TaskInput", "ChainedTaskInput", "Tee", "PassThrough", "Branch"]


@dataclass(slots=True)      # slots: updated per item, on the hot path
class PiperCounters:
    """Per-Piper counters: inboxes taken, items given out, error items, seconds the Worker
    was busy (measured where it ran). ``counters['items_in']`` works too."""

    items_in: int = 0
    items_out: int = 0
    errors: int = 0
    time_busy: float = 0.0
    #: the IMap task iterators of a parallel Piper, for time_waiting
    waits_on: tuple = field(default=(), repr=False, compare=False)
    #: an output Piper's results handed to its reader and not read yet (see ReaderCounters)
    unread: object = field(default=None, repr=False, compare=False)

    @property
    def time_waiting(self) -> float:
        """Seconds this Piper's results were waited for (blocked reads of its IMap tasks);
        0.0 for a linear Piper."""
        return sum(task.time_waiting for task in self.waits_on)

    def __getitem__(self, key: str):
        return getattr(self, key)


_ITEMS_OUT = PiperCounters.items_out      # the slot of the base class


class ReaderCounters(PiperCounters):
    """The counters of an output Piper read through its reader (``Piper._output``), which
    takes ready results a list at a time: ``items_out`` leaves out those of the current
    list not read yet (``unread``, its iterator), so it counts what the reader gave out."""

    __slots__ = ()

    @property
    def items_out(self) -> int:
        unread = self.unread
        out = _ITEMS_OUT.__get__(self)
        return out if unread is None else out - unread.__length_hint__()

    @items_out.setter
    def items_out(self, value: int) -> None:
        _ITEMS_OUT.__set__(self, value)


def fast_inboxes(inputs: list, piper, context):
    """The *items* of a Piper with one input, read at C speed where that keeps the
    behaviour of ``inboxes``: ``(stream, counts_items_in)``, or ``(None, False)`` to use
    ``inboxes``. The Piper's call (``BoxingCall``) makes each inbox ``[item]`` where it
    runs.

    - a steady Feed (a list, range, count, ... behind the gate): ``Feed.gated`` (``Gated``),
      which an IMap reads in bulk (``__imap_take__``); the gate counts ``items_in``;
    - an upstream Piper read by this Piper only, whose output is its plain stream (its
      ``Settled``, see ``Piper._iterator_for``): that stream. Which it is is known only
      when reading starts (every downstream Piper connected), so the choice is made then,
      behind ``Bound`` (which lets an IMap read the stream in bulk); ``items_in`` is
      counted by the caller (``Settled``: one inbox per result when ``consume == 1``).
    """
    if len(inputs) != 1:
        return None, False
    source = inputs[0]
    if isinstance(source, Feed):
        return source.gated(piper.counters), True
    if isinstance(source, Branch):
        bound = Bound.from_iterable(_bind(source, piper, context))
        bound.branch = source
        return bound, False
    return None, False


class Bound(itertools.chain):
    """The items of an upstream Piper for its only reader, bound at the first read (see
    ``fast_inboxes``). ``__imap_read__``: an IMap feeder reads the upstream's settled
    results in bulk when they come from an IMap task (``papy._settle.Settled``)."""

    def __imap_read__(self, count: int):
        stream = self.branch.bound      # None until the first item (read item by item)
        read = getattr(type(stream), "__imap_read__", None)
        return None if read is None else read(stream, count)


def _bind(branch, piper, context):
    stream = iter(branch)
    if stream is not branch:        # the upstream's own output stream
        branch.owner._bound_reader = piper      # its failures are this Piper's input's
        branch.bound = stream
        yield stream
    else:
        yield inboxes([branch], piper, context, count=False, box=False)


def inboxes(inputs: list, piper, context, count: bool = True,
            box: bool = True) -> Iterator[list]:
    """Zip the inputs strictly: ``[x0, x1, ...]``; counts ``items_in`` on ``piper``
    (unless ``count`` is False: the caller counts). ``box=False`` (one input only): the
    items themselves, for a call that boxes them (``BoxingCall``).

    Never reads ahead of the normal pace (that could wait for a round of a shared IMap that
    only the reading thread can feed), so failures are put *in place* and reading goes on:

    - an input that raises (an upstream Piper with ``debug=True``): the exception is a
      failure of the run and a ``PiperError`` takes that item's place;
    - inputs that end at different positions: a failure of the run (which ends the
      inputs), and a ``PiperError`` saying so takes the place of each missing item until
      the longer inputs end too.
    """
    counters = piper.counters if count else PiperCounters()
    iterators = [iter(i) for i in inputs]
    if len(iterators) == 1:
        source = iterators[0]
        while True:
            try:
                for item in source:
                    counters.items_in += 1
                    yield [item] if box else item
                return
            except Exception as exc:  # noqa: BLE001 - an upstream raised (debug=True)
                context.fail(exc, f"the input of piper {piper.name!r} raised")
                counters.items_in += 1
                yield [PiperError(exc)] if box else PiperError(exc)
    live = [True] * len(iterators)
    mismatch = None
    while True:
        inbox = []
        for k, iterator in enumerate(iterators):
            if not live[k]:
                inbox.append(_GAP)
                continue
            try:
                inbox.append(next(iterator))
            except StopIteration:
                live[k] = False
                inbox.append(_GAP)
            except Exception as exc:  # noqa: BLE001
                context.fail(exc, f"input {k} of piper {piper.name!r} raised")
                inbox.append(PiperError(exc))
        if not any(live):
            return
        if not all(live):
            if mismatch is None:
                mismatch = _mismatch(piper, inputs, live.index(False), counters.items_in)
                context.fail(mismatch)
            inbox = [mismatch if x is _GAP else x for x in inbox]
        counters.items_in += 1
        yield inbox


_GAP = object()


def _mismatch(piper, inputs, ended_at: int, count: int) -> PiperError:
    names = [getattr(getattr(i, "owner", None), "name", None) or f"input {k}"
             for k, i in enumerate(inputs)]
    return PiperError(
        f"the inputs of piper {piper.name!r} have different lengths: input {ended_at} "
        f"({names[ended_at]!r}) ended after {count} items while others went on "
        f"(inputs in join order: {names}); the missing items are errors in place. Every "
        f"input of a join must give the same number of items; check the inputs and the "
        f"produce/consume settings upstream.")


def consume(stream: Iterator, n: int, stride: int) -> Iterator:
    """Group ``n`` items per evaluation; from each block of ``n * stride`` items, group
    ``g`` takes positions ``g, g + stride, ..., g + (n - 1) * stride``. A short last block
    of m items is read as ``ceil(m / n)`` rounds (the inverse of ``produce`` on a short
    block); only the last groups may be short."""
    if n == 1:
        return stream
    return _consume(iter(stream), n, stride)


def _consume(iterator, n, stride):
    size = n * stride
    while True:
        block = list(itertools.islice(iterator, size))
        if len(block) < size:
            # the tail: an upstream produce=n emitted its last k < stride results as
            # n rounds of k, so group g takes g, g + k, ... (the inverse of that)
            stride = -(-len(block) // n)
        for g in range(stride):
            group = block[g::stride]
            if not group:
                return
            yield group
        if len(block) < size:
            return


def produce(results: Iterator, n: int, stride: int, repeat: bool,
            explode: Callable[[object, int, bool], list]) -> Iterator:
    """Emit ``n`` items per result, stride-interleaved: for results ``r1..rs`` of a block,
    ``r1[0] .. rs[0], r1[1] .. rs[1], ...``. A short last block emits only its results."""
    if n == 1:
        return results
    return _produce(iter(results), n, stride, repeat, explode)


def _produce(iterator, n, stride, repeat, explode):
    while True:
        block = [explode(r, n, repeat) for r in itertools.islice(iterator, stride)]
        for k in range(n):
            for values in block:
                yield values[k]
        if len(block) < stride:
            return


def round_robin(tasks: list, stride: int) -> Iterator:
    """``stride`` results from each task in turn, until one of them ends.

    The spawned tasks read one shared input, ``stride`` items per turn and in turn, so this
    gives the results in input order. The first task that ends found the input exhausted:
    the tasks before it have given their last round, those after it have nothing left
    (asking them again would wait for a round that never comes).
    """
    while True:
        for task in tasks:
            for _ in range(stride):
                try:
                    result = next(task)
                except StopIteration:
                    return
                yield result


def read_task(task, timeout, name: str) -> Iterator:
    """The results of one IMap task; a timeout or an imap error is a PiperError in its
    place. Iterating the task is its fast path; after an exception (which ends that
    generator) a new iteration goes on from the next position."""
    while True:
        try:
            if timeout is None:
                yield from task
            else:
                while True:
                    yield next(task)
            return
        except StopIteration:
            return
        except READ_ERRORS as exc:
            yield read_error(exc, name, timeout)


# what reading an IMap task puts in place; SystemExit: raised by a function on a thread pool
# (imap hands it to the reader as that item's exception), it must not end the reader
READ_ERRORS = (TimeoutError, IMapError, SystemExit)


def read_error(exc: BaseException, name: str, timeout=None) -> PiperError:
    """The error item that takes the place of a result a task could not give (logged)."""
    if isinstance(exc, TimeoutError):
        log.warning("piper %r: no result within %ss; a PiperError takes its place",
                    name, timeout)
    else:
        log.error("piper %r: %s: %s", name, type(exc).__name__, exc)
    return PiperError(exc)


class TaskInput:
    """The iterable a Piper gives to ``IMap.add_task`` (all its spawned tasks share it).

    ``iter()`` gives the stream itself, so the IMap's feeder reads it without a layer in
    between; the class only tells the IMap whether the stream reads results of the same IMap
    (``__imap_chained__``, see the imap contract). ``inboxes()`` keeps exceptions of the
    inputs from reaching the feeder.
    """

    __imap_chained__ = False

    def __init__(self, stream: Iterator):
        self._stream = iter(stream)

    def __iter__(self):
        return self._stream


class ChainedTaskInput(TaskInput):
    """A TaskInput that reads results of a task of the same IMap."""

    __imap_chained__ = True


class PassThrough:
    """The output of a Piper with a single reader: no buffering, no lock."""

    def __init__(self, source: Callable):
        self._source = source
        self.readers = 1

    def reader(self, index: int) -> Callable:
        return self._source


class Tee:
    """Share one stream among ``readers`` readers, each of which sees every item once.

    ``source()`` returns the next item or raises StopIteration. Only one reader pulls the
    source at a time; the others take buffered items or wait on the condition. An exception
    from the source is raised to the reader that pulled and handed to the others as a value.
    """

    def __init__(self, source: Callable, readers: int):
        self._source = source
        self.readers = readers
        self._buffers = [collections.deque() for _ in range(readers)]
        self._condition = threading.Condition()
        self._pulling = False
        self._ended = False

    def reader(self, index: int) -> Callable:
        return functools.partial(self.pull, index)

    def pull(self, index: int):
        buffer = self._buffers[index]
        with self._condition:
            while not buffer:
                if self._ended:
                    raise StopIteration
                if not self._pulling:
                    self._pulling = True
                    break
                self._condition.wait()
            else:
                return buffer.popleft()
        raised = None
        try:
            item = self._source()
        except StopIteration:
            item = _END
        except Exception as exc:  # noqa: BLE001 - raised below, shared as a value
            item = raised = exc
        with self._condition:
            self._pulling = False
            if item is _END:
                self._ended = True
            else:
                for k, other in enumerate(self._buffers):
                    if k != index:
                        other.append(item)
            self._condition.notify_all()
        if item is _END:
            raise StopIteration
        if raised is not None:
            raise raised
        return item


_END = object()


class Branch:
    """One downstream reader's view of a Piper's output (see ``papy._streams.Tee``)."""

    __slots__ = ("owner", "reader", "index", "_next", "bound")

    def __init__(self, owner, reader):
        self.owner, self.reader, self.index, self._next = owner, reader, 0, None
        self.bound = None       # the upstream's output stream, once read directly

    def __iter__(self):
        # the only reader of a plain stream reads the stream itself (no layer per item)
        return self.owner._iterator_for(self)

    def __next__(self):
        if self._next is None:      # the first read: bind to the outlet (made once)
            self._next = self.owner._outlet_reader(self.index)
        return self._next()
